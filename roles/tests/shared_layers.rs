//! A layer two repositories share (a common base image) pulled through one agent for each of
//! them: the second pull is served from what the agent holds, byte for byte.

mod common;

use common::{Cluster, Spec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_shared_by_two_repositories_is_served_for_both_through_one_agent() {
    let cluster = Cluster::start(Spec {
        origins: 1,
        agents: 1,
        max_replica: 1,
        ..Spec::default()
    })
    .await;
    let base: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let digest = cluster.push(0, "team/one", base.clone()).await;
    assert_eq!(cluster.push(0, "team/two", base.clone()).await, digest);
    for repo in ["team/one", "team/two"] {
        let (status, body) = cluster.get(0, &format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(
            status,
            200,
            "{repo}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        );
        assert!(body == base, "{repo}: the bytes differ");
    }
}
