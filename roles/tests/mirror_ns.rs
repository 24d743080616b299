//! containerd's `?ns=` through one agent: `ghcr.io`'s `org/app` and Docker Hub's `org/app`
//! are different images, and each request gets the one its `ns` names; with
//! `registry.mirrors` set, a host not listed is 404 so containerd falls back to its next host.

mod common;

use common::{Cluster, Spec};

const PATH: &str = "/v2/org/app/manifests/v1";

/// The manifest digest agent `agent` serves for `PATH` with `query`.
async fn at(cluster: &Cluster, agent: usize, query: &str) -> Result<String, (u16, String)> {
    cluster.manifest_at(agent, &format!("{PATH}{query}")).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_upstream_host_gets_its_own_image_through_one_agent() {
    let mut cluster = Cluster::start(Spec {
        origins: 1,
        agents: 1,
        max_replica: 1,
        ..Spec::default()
    })
    .await;
    // Default mapping: ghcr.io's names under `ghcr.io/`, Docker Hub's as they are.
    let ghcr = cluster.store_image("ghcr.io/org/app", 1);
    let hub = cluster.store_image("org/app", 2);
    assert_eq!(
        cluster
            .put_tag("ghcr.io/org/app", "v1", &ghcr.manifest)
            .await,
        200
    );
    assert_eq!(cluster.put_tag("org/app", "v1", &hub.manifest).await, 200);

    assert_eq!(
        at(&cluster, 0, "?ns=ghcr.io").await,
        Ok(ghcr.manifest.clone())
    );
    assert_eq!(
        at(&cluster, 0, "?ns=docker.io").await,
        Ok(hub.manifest.clone())
    );
    assert_eq!(
        at(&cluster, 0, "").await,
        Ok(hub.manifest.clone()),
        "no ns: Docker Hub's"
    );
    // A blob of ghcr.io's image is there for ghcr.io. For Docker Hub's name the agent answers
    // what its origins answer (blobs are content-addressed; the origins serve a digest they
    // hold): the same as an agent that never held the blob, so what an agent has cached never
    // changes its answers.
    let blob = |query: &str| format!("/v2/org/app/blobs/{}{query}", ghcr.config);
    assert_eq!(cluster.get(0, &blob("?ns=ghcr.io")).await.0, 200);
    let fresh = cluster.add_agent("").await;
    assert_eq!(
        cluster.get(0, &blob("?ns=docker.io")).await.0,
        cluster.get(fresh, &blob("?ns=docker.io")).await.0,
        "an agent holding the blob answers as one that does not"
    );

    // Listed hosts only: ghcr.io under `ghcr.io/`, Docker Hub as it is, nothing else.
    let listed = cluster
        .add_agent("  mirrors:\n    ghcr.io: ghcr.io\n    docker.io: \"\"\n")
        .await;
    assert_eq!(
        at(&cluster, listed, "?ns=ghcr.io").await,
        Ok(ghcr.manifest.clone())
    );
    assert_eq!(
        at(&cluster, listed, "?ns=docker.io").await,
        Ok(hub.manifest.clone())
    );
    for host in ["quay.io", "registry-1.docker.io"] {
        match cluster
            .manifest_at(listed, &format!("{PATH}?ns={host}"))
            .await
        {
            Err((404, body)) => assert!(body.contains("NAME_UNKNOWN"), "{host}: {body}"),
            other => panic!("{host} is not mirrored, yet: {other:?}"),
        }
    }
}
