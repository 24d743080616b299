//! The origin's and the build-index's queues on disk, in a whole cluster in one process: what
//! a push was promised (its write-back to the backend, a copy on every member of its replica
//! set, a tag's copy at the remote build-index) arrives even when the backend fails for a
//! while, the member or the remote is down at the time, or the role itself is killed right
//! after it acknowledged. A kill is the service future dropped; a restart is the same config
//! and data directory. Every wait polls with a deadline.

mod common;

use std::time::Duration;

use common::{Cluster, Spec, noise, poll_until};

const NS: &str = "team/app";

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

fn queue_metric(kind: &str, state: &str) -> String {
    format!("shoal_origin_queue_jobs{{kind=\"{kind}\",state=\"{state}\"}} ")
}

/// Two origins that each hold every blob (max_replica 2), no agents.
fn two_origins() -> Spec {
    Spec {
        origins: 2,
        agents: 0,
        max_replica: 2,
        ..Spec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_down_during_a_push_receives_its_copy_once_it_is_back() {
    let mut cluster = Cluster::start(two_origins()).await;
    cluster.origins[1].kill().await;
    let digest = cluster.push(0, NS, noise(3 << 20, 1)).await;
    assert!(
        poll_until(Duration::from_secs(30), || async {
            cluster.backend.get(NS, hex(&digest)).is_some()
        })
        .await,
        "the push was not written back"
    );
    // The copy for the dead member waits in the queue, without using up its retries.
    assert!(cluster.until_judged(0, 1, false).await);
    let origin = &cluster.origins[0];
    assert_eq!(
        cluster
            .metric(origin, &queue_metric("replicate", "pending"))
            .await,
        Some(1)
    );
    assert!(!cluster.holds(&cluster.origins[1], NS, &digest).await);

    cluster.restart_origin(1).await;
    let arrived = poll_until(Duration::from_secs(30), || async {
        cluster.holds(&cluster.origins[1], NS, &digest).await
    })
    .await;
    assert!(
        arrived,
        "the restarted origin never received the copy it missed"
    );
    let drained = poll_until(Duration::from_secs(10), || async {
        cluster
            .metric(&cluster.origins[0], &queue_metric("replicate", "pending"))
            .await
            == Some(0)
    })
    .await;
    assert!(drained, "the copy's job stayed in the queue");
    assert_eq!(
        cluster
            .metric(&cluster.origins[0], &queue_metric("replicate", "failed"))
            .await,
        Some(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_back_is_retried_until_the_backend_holds_the_blob() {
    let cluster = Cluster::start(two_origins()).await;
    // The backend refuses the next three uploads: the push is acknowledged all the same.
    cluster.flaky.fail_uploads(3);
    let digest = cluster.push(0, NS, noise(1 << 20, 2)).await;
    let written = poll_until(Duration::from_secs(30), || async {
        cluster.backend.get(NS, hex(&digest)).is_some()
    })
    .await;
    assert!(written, "the write-back was never retried to success");
    assert_eq!(cluster.flaky.failed_uploads(), 3);
    let bytes = cluster.backend.get(NS, hex(&digest)).unwrap();
    assert_eq!(common::digest_of(&bytes), digest);
    let drained = poll_until(Duration::from_secs(10), || async {
        cluster
            .metric(&cluster.origins[0], &queue_metric("writeback", "pending"))
            .await
            == Some(0)
    })
    .await;
    assert!(drained);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_killed_after_acknowledging_a_push_finishes_its_jobs_after_a_restart() {
    let mut cluster = Cluster::start(two_origins()).await;
    // Nothing can complete before the kill: the backend is down and so is the other member.
    cluster.origins[1].kill().await;
    cluster.flaky.fail_uploads(u32::MAX);
    let digest = cluster.push(0, NS, noise(2 << 20, 3)).await;
    cluster.origins[0].kill().await;

    // What the acknowledgement promised is on disk: a write-back and a copy.
    let pending = cluster.origin_data(0).join("store/queue/pending");
    let files = std::fs::read_dir(&pending).unwrap().count();
    assert_eq!(files, 2, "job files in {}", pending.display());
    assert!(cluster.backend.get(NS, hex(&digest)).is_none());

    cluster.flaky.fail_uploads(0);
    cluster.restart_origin(1).await;
    cluster.restart_origin(0).await;
    let done = poll_until(Duration::from_secs(30), || async {
        cluster.backend.get(NS, hex(&digest)).is_some()
            && cluster.holds(&cluster.origins[1], NS, &digest).await
    })
    .await;
    assert!(
        done,
        "the restarted origin did not finish what it had acknowledged"
    );
    let emptied = poll_until(Duration::from_secs(10), || async {
        std::fs::read_dir(&pending).unwrap().count() == 0
    })
    .await;
    let left: Vec<String> = std::fs::read_dir(&pending)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(
        emptied,
        "job files were left in {}: {left:?}",
        pending.display()
    );
}

/// Sets `NS:tag` to `digest` at the build-index, as the proxy does.
async fn put_tag(cluster: &Cluster, tag: &str, digest: &str) {
    let url = format!(
        "http://{}/tags/{}/digest/{digest}",
        cluster.build_index.http,
        shoal_roles::http::segment(&format!("{NS}:{tag}"))
    );
    let resp = cluster
        .http
        .put(url)
        .send()
        .await
        .expect("PUT to build-index");
    assert_eq!(resp.status().as_u16(), 200, "{:?}", resp.text().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_reach_a_remote_build_index_that_was_down_across_a_restart() {
    let mut cluster = Cluster::start(Spec {
        origins: 1,
        agents: 0,
        max_replica: 1,
        remote_build_index: true,
        ..Spec::default()
    })
    .await;
    cluster.remote.as_mut().unwrap().kill().await;
    let (old, new, other) = (
        common::digest_of(b"old"),
        common::digest_of(b"new"),
        common::digest_of(b"other"),
    );
    put_tag(&cluster, "v1", &old).await;
    put_tag(&cluster, "v2", &other).await;
    // Acknowledged: in the local backend, and queued for the remote.
    assert_eq!(
        cluster.backend.get(NS, &format!("{NS}:v1")).as_deref(),
        Some(old.as_bytes())
    );
    cluster.restart_build_index(false).await;
    // v1 moves on while its first copy still waits: the remote must end with the newer one.
    put_tag(&cluster, "v1", &new).await;
    cluster.restart_build_index(false).await;
    assert!(
        cluster
            .remote_backend
            .get(NS, &format!("{NS}:v1"))
            .is_none()
    );

    cluster.restart_build_index(true).await;
    let arrived = poll_until(Duration::from_secs(30), || async {
        cluster
            .remote_backend
            .get(NS, &format!("{NS}:v1"))
            .as_deref()
            == Some(new.as_bytes())
            && cluster
                .remote_backend
                .get(NS, &format!("{NS}:v2"))
                .as_deref()
                == Some(other.as_bytes())
    })
    .await;
    assert!(arrived, "the remote never received the tags it missed");
    // The remote answers with them, and copied nothing back (a copy is not copied again).
    let url = format!(
        "http://{}/tags/{}",
        cluster.remote.as_ref().unwrap().http,
        shoal_roles::http::segment(&format!("{NS}:v1"))
    );
    let body = cluster
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, new);
    let metric = "shoal_build_index_queue_jobs{kind=\"replicate\",state=\"pending\"} ";
    let drained = poll_until(Duration::from_secs(10), || async {
        cluster.metric(&cluster.build_index, metric).await == Some(0)
    })
    .await;
    assert!(drained, "copies stayed in the build-index's queue");
    assert_eq!(
        cluster
            .metric(cluster.remote.as_ref().unwrap(), metric)
            .await,
        Some(0)
    );
}
