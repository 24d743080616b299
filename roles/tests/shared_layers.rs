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

/// Content no origin holds is unknown at an agent, as at any registry: 404 with `BLOB_UNKNOWN`
/// (or `MANIFEST_UNKNOWN` for a manifest), not a 503 that clients retry and that tells an
/// operator something is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_no_origin_holds_is_unknown_at_an_agent() {
    let cluster = Cluster::start(Spec {
        origins: 1,
        agents: 1,
        max_replica: 1,
        ..Spec::default()
    })
    .await;
    let missing = common::digest_of(b"no origin holds this");
    let blob = cluster.url(
        cluster.agents[0].http,
        &format!("/v2/team/one/blobs/{missing}"),
    );
    let code = |body: &[u8]| -> String {
        let v: serde_json::Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
        v["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let (status, body) = cluster
        .get(0, &format!("/v2/team/one/blobs/{missing}"))
        .await;
    assert_eq!((status, code(&body).as_str()), (404, "BLOB_UNKNOWN"));
    let ranged = cluster
        .http
        .get(&blob)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status().as_u16(), 404);
    assert_eq!(code(&ranged.bytes().await.unwrap()), "BLOB_UNKNOWN");
    let head = cluster.http.head(&blob).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 404);
    let (status, body) = cluster
        .get(0, &format!("/v2/team/one/manifests/{missing}"))
        .await;
    assert_eq!((status, code(&body).as_str()), (404, "MANIFEST_UNKNOWN"));
}
