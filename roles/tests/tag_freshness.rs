//! Tags never go stale: `app:latest` pushed again (a PUT at the build-index, as the proxy
//! sends) is served with its new digest by every agent on the very next request; deleted at
//! the build-index, it is unknown at every agent; with the build-index gone, every agent
//! serves the last digest it knew and says so in its log and its `/metrics`.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use common::{Cluster, Spec};

const NS: &str = "team/app";
const LATEST: &str = "/v2/team/app/manifests/latest";
const STALE: &str = "shoal_agent_stale_tags_served_total ";

/// Everything logged at WARN and above in this test binary.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || Capture(sink.clone()))
            .init();
        buffer
    })
    .clone()
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Asserts every agent serves `want` for `latest` (or the error `want` is).
fn assert_everywhere(got: &[Result<String, (u16, String)>], want: &str) {
    for (i, g) in got.iter().enumerate() {
        match g {
            Ok(d) => assert_eq!(d, want, "agent{i}"),
            Err((status, body)) => panic!("agent{i}: {status}: {body}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retagged_image_is_served_everywhere_at_once_and_the_last_one_when_build_index_is_gone() {
    let logs = logs();
    let mut cluster = Cluster::start(Spec {
        origins: 1,
        max_replica: 1,
        ..Spec::default()
    })
    .await;
    let (a, b) = (cluster.store_image(NS, 1), cluster.store_image(NS, 2));
    assert_eq!(cluster.put_tag(NS, "latest", &a.manifest).await, 200);
    assert_everywhere(&cluster.manifest_everywhere(LATEST).await, &a.manifest);

    // Pushed again: the very next request at every agent gets the new digest, no waiting.
    assert_eq!(cluster.put_tag(NS, "latest", &b.manifest).await, 200);
    let retagged = Instant::now();
    assert_everywhere(&cluster.manifest_everywhere(LATEST).await, &b.manifest);
    eprintln!(
        "every agent served the new digest {:?} after the PUT",
        retagged.elapsed()
    );

    // Deleted at the build-index: unknown at every agent.
    assert_eq!(cluster.delete_tag(NS, "latest").await, 204);
    assert_eq!(cluster.delete_tag(NS, "latest").await, 404);
    for (i, got) in cluster.manifest_everywhere(LATEST).await.iter().enumerate() {
        match got {
            Err((404, body)) => assert!(body.contains("MANIFEST_UNKNOWN"), "agent{i}: {body}"),
            other => panic!("agent{i}: a deleted tag served: {other:?}"),
        }
    }

    // Tagged again, then the build-index dies: the last digest, said to be stale.
    assert_eq!(cluster.put_tag(NS, "latest", &b.manifest).await, 200);
    assert_everywhere(&cluster.manifest_everywhere(LATEST).await, &b.manifest);
    for agent in &cluster.agents {
        assert_eq!(
            cluster.metric(agent, STALE).await,
            Some(0),
            "{}",
            agent.name
        );
    }
    cluster.build_index.kill().await;
    assert_everywhere(&cluster.manifest_everywhere(LATEST).await, &b.manifest);
    for agent in &cluster.agents {
        assert_eq!(
            cluster.metric(agent, STALE).await,
            Some(1),
            "{}",
            agent.name
        );
    }
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("serving a stale tag") && l.contains(&b.manifest))
        .collect();
    assert_eq!(warnings.len(), cluster.agents.len(), "{text}");
    assert!(warnings.iter().all(|l| l.contains("tag=latest")), "{text}");
    // The tag lists fall back on the tags each agent served (they are the build-index's
    // while it answers; see proxy.rs).
    for i in 0..cluster.agents.len() {
        let (status, body) = cluster.get(i, "/v2/team/app/tags/list").await;
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            (status, body),
            (200, serde_json::json!({"name": NS, "tags": ["latest"]})),
            "agent{i}"
        );
    }
    // A tag no agent has served has no last digest: unavailable.
    for i in 0..cluster.agents.len() {
        let got = cluster.manifest_at(i, "/v2/team/app/manifests/never").await;
        assert!(matches!(got, Err((503, _))), "agent{i}: {got:?}");
    }
}

/// `registry.tag_ttl` on an agent: a tag it resolved is served without asking the build-index
/// again for that long, so an agent with `tag_ttl: 1h` keeps the old digest after a re-push
/// while an agent with the default (0s, ask every time) serves the new one at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_with_a_tag_ttl_serves_the_digest_it_resolved_until_the_ttl_ends() {
    let mut cluster = Cluster::start(Spec {
        origins: 1,
        max_replica: 1,
        ..Spec::default()
    })
    .await;
    let cached = cluster.add_agent("  tag_ttl: 1h\n").await;
    let (a, b) = (cluster.store_image(NS, 1), cluster.store_image(NS, 2));
    assert_eq!(cluster.put_tag(NS, "latest", &a.manifest).await, 200);
    assert_eq!(
        cluster.manifest_at(cached, LATEST).await,
        Ok(a.manifest.clone())
    );
    assert_eq!(cluster.put_tag(NS, "latest", &b.manifest).await, 200);
    assert_eq!(
        cluster.manifest_at(0, LATEST).await,
        Ok(b.manifest.clone()),
        "an agent with the default tag_ttl asks every time"
    );
    assert_eq!(
        cluster.manifest_at(cached, LATEST).await,
        Ok(a.manifest.clone()),
        "within its tag_ttl the agent serves the digest it resolved"
    );
}
