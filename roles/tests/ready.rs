//! `/ready` across a cluster: every role is ready once up; an agent turns unready, naming the
//! tracker, when its only tracker dies, and ready again once it is back; the same for its
//! build-index. `/health` stays 200 throughout: it is liveness only.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Cluster, Spec, poll_until};

/// `GET /ready` on `addr`: the status and the body.
async fn ready(cluster: &Cluster, addr: SocketAddr) -> (u16, String) {
    match cluster
        .http
        .get(format!("http://{addr}/ready"))
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Polls `addr`'s `/ready` (up to 30 s) until `want` holds; the last answer.
async fn until_ready(
    cluster: &Cluster,
    addr: SocketAddr,
    want: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let last = std::sync::Mutex::new((0, String::new()));
    poll_until(Duration::from_secs(30), || async {
        let (status, body) = ready(cluster, addr).await;
        let ok = want(status, &body);
        *last.lock().unwrap() = (status, body);
        ok
    })
    .await;
    last.into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_is_unready_while_its_tracker_or_build_index_is_down() {
    let mut cluster = Cluster::start(Spec {
        trackers: 1,
        origins: 1,
        agents: 1,
        max_replica: 1,
        ..Spec::default()
    })
    .await;
    let agent = cluster.agents[0].http;
    let tracker = cluster.trackers[0].http;
    let index = cluster.build_index.http;
    for node in [agent, tracker, index, cluster.origins[0].http] {
        assert_eq!(
            ready(&cluster, node).await,
            (200, "ready\n".to_owned()),
            "{node}"
        );
    }

    cluster.trackers[0].kill().await;
    let (status, body) = until_ready(&cluster, agent, |s, _| s == 503).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with(&format!("tracker: no tracker answered ({tracker}: ")),
        "{body}"
    );
    assert_eq!(body.lines().count(), 1, "only the tracker is down: {body}");
    let health = cluster.http.get(format!("http://{agent}/health")).send();
    assert_eq!(
        health.await.unwrap().status(),
        200,
        "liveness is not readiness"
    );

    cluster.restart_tracker(0).await;
    let answer = until_ready(&cluster, agent, |s, _| s == 200).await;
    assert_eq!(answer, (200, "ready\n".to_owned()));

    cluster.build_index.kill().await;
    let (status, body) = until_ready(&cluster, agent, |s, _| s == 503).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with(&format!("build-index: no build-index answered ({index}: ")),
        "{body}"
    );
    cluster.restart_build_index(false).await;
    let answer = until_ready(&cluster, agent, |s, _| s == 200).await;
    assert_eq!(answer, (200, "ready\n".to_owned()));
}
