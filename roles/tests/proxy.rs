//! The proxy in front of an in-process cluster: a push through its registry API lands on the
//! origin that owns each digest (and in the shared backend), the tag at the build-index, and
//! every agent then serves the image; a dead owner costs nothing but a hop.

mod common;

use std::net::SocketAddr;

use common::proxy_setup::{push_blob, push_image, start_proxy, start_proxy_with};
use common::{Cluster, Spec, digest_of, noise, poll_until};
use shoal_config::HostPort;
use shoal_p2p::HashRing;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_through_the_proxy_reaches_the_owning_origin_the_backend_and_every_agent() {
    let cluster = Cluster::start(Spec {
        origins: 2,
        agents: 2,
        max_replica: 1,
        ..Spec::default()
    })
    .await;
    let origins: Vec<SocketAddr> = cluster.origins.iter().map(|o| o.http).collect();
    let proxy = start_proxy(&cluster, &origins).await;
    let http = &cluster.http;
    let (layer_d, layer, manifest_d) = push_image(http, proxy.http, "team/app", "v1", 1).await;

    // The blob is on exactly one origin (max_replica 1), and in the shared backend.
    let mut holders = 0;
    for o in &cluster.origins {
        if cluster.holds(o, "team/app", &layer_d).await {
            holders += 1;
        }
    }
    assert_eq!(holders, 1, "the layer is on {holders} origins");
    let hex = layer_d.trim_start_matches("sha256:");
    assert!(
        poll_until(std::time::Duration::from_secs(10), || async {
            cluster.backend.get("team/app", hex).is_some()
        })
        .await,
        "the layer never reached the backend"
    );

    // Every agent resolves the tag at the build-index and serves the image.
    for agent in 0..cluster.agents.len() {
        let (status, body) = cluster.get(agent, "/v2/team/app/manifests/v1").await;
        assert_eq!(
            status,
            200,
            "agent {agent}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(digest_of(&body), manifest_d, "agent {agent}");
        let (status, body) = cluster
            .get(agent, &format!("/v2/team/app/blobs/{layer_d}"))
            .await;
        assert_eq!(status, 200, "agent {agent}");
        assert!(body == layer, "agent {agent} served other bytes");
    }

    // Pulls through the proxy work too, from a fresh proxy that staged nothing.
    drop(proxy);
    let fresh = start_proxy(&cluster, &origins).await;
    let resp = http
        .get(format!("http://{}/v2/team/app/blobs/{layer_d}", fresh.http))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.bytes().await.unwrap() == layer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_falls_over_to_the_next_origin_when_the_owner_is_down() {
    let mut cluster = Cluster::start(Spec {
        origins: 2,
        agents: 1,
        max_replica: 1,
        ..Spec::default()
    })
    .await;
    let origins: Vec<SocketAddr> = cluster.origins.iter().map(|o| o.http).collect();
    let proxy = start_proxy(&cluster, &origins).await;
    let ready = format!("http://{}/ready", proxy.http);
    let is_ready = || async {
        let r = cluster.http.get(&ready).send().await;
        r.is_ok_and(|r| r.status() == 200)
    };
    assert!(
        poll_until(std::time::Duration::from_secs(30), is_ready).await,
        "the proxy is not ready"
    );
    cluster.origins[0].kill().await;
    let dead = HostPort::new(origins[0].ip().to_string(), origins[0].port());
    let ring = HashRing::new(
        origins
            .iter()
            .map(|a| HostPort::new(a.ip().to_string(), a.port())),
    )
    .unwrap();
    // Blobs until two were owned by the dead origin: each push must still succeed.
    let mut owned_by_dead = 0;
    for seed in 0..64u8 {
        let bytes = noise(64 << 10, seed);
        let digest: shoal_registry::Digest = digest_of(&bytes).parse().unwrap();
        let first = ring.ranked(&digest)[0] == &dead;
        let d = push_blob(&cluster.http, proxy.http, "team/app", bytes).await;
        assert!(
            cluster.holds(&cluster.origins[1], "team/app", &d).await,
            "{d} is not on the live origin"
        );
        owned_by_dead += usize::from(first);
        if owned_by_dead == 2 {
            return;
        }
    }
    panic!("no blob of 64 was owned by the dead origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_without_origins_refuses_pushes_with_a_clear_error() {
    let cluster = Cluster::start(Spec {
        origins: 1,
        agents: 0,
        ..Spec::default()
    })
    .await;
    let proxy = start_proxy(&cluster, &[]).await;
    let bytes = noise(1024, 9);
    let d = digest_of(&bytes);
    let resp = cluster
        .http
        .post(format!(
            "http://{}/v2/team/app/blobs/uploads/?digest={d}",
            proxy.http
        ))
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("UNAVAILABLE") && body.contains("origin.hosts"),
        "{body}"
    );
    // Not ready either, and saying why.
    let ready = cluster
        .http
        .get(format!("http://{}/ready", proxy.http))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status().as_u16(), 503);
    let body = ready.text().await.unwrap();
    assert_eq!(
        body,
        "origins: origin.hosts is not set: pushes have nowhere to go\n"
    );
}

/// Files under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() { files_under(&path) } else { 1 }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_drops_staged_content_and_still_serves_it_from_the_cluster() {
    let cluster = Cluster::start(Spec {
        origins: 1,
        agents: 1,
        max_replica: 1,
        ..Spec::default()
    })
    .await;
    let origins: Vec<SocketAddr> = cluster.origins.iter().map(|o| o.http).collect();
    let proxy = start_staging_proxy(&cluster, &origins).await;
    let http = &cluster.http;
    // The push takes milliseconds: well inside the 3 s a staged blob is kept for, as
    // `staging.ttl` must exceed the longest push.
    let (layer_d, layer, manifest_d) = push_image(http, proxy.http, "team/app", "v1", 7).await;
    staging_emptied(&cluster).await;

    // The cluster still has everything, through the proxy and through the agent.
    let resp = http
        .get(format!("http://{}/v2/team/app/manifests/v1", proxy.http))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(digest_of(&resp.bytes().await.unwrap()), manifest_d);
    let (status, body) = cluster
        .get(0, &format!("/v2/team/app/blobs/{layer_d}"))
        .await;
    assert_eq!(status, 200);
    assert!(body == layer);
}

/// A signature (a manifest with a `subject`) pushed through the proxy is listed by every
/// agent's referrers API, filtered by `artifactType` as asked, and gone from the list once
/// deleted through the proxy (after its staging store dropped it): the proxy keeps the
/// subject's referrers index under the referrers tag schema (`sha256-<hex>`) at the
/// build-index and the origins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn referrers_pushed_through_the_proxy_are_listed_at_every_agent() {
    let cluster = Cluster::start(Spec {
        origins: 1,
        agents: 2,
        max_replica: 1,
        ..Spec::default()
    })
    .await;
    let origins: Vec<SocketAddr> = cluster.origins.iter().map(|o| o.http).collect();
    // Staging drops what it holds after 3 s: the delete below goes through a proxy that no
    // longer holds the signature.
    let proxy = start_staging_proxy(&cluster, &origins).await;
    let http = &cluster.http;
    let (_, _, subject) = push_image(http, proxy.http, "team/app", "v1", 7).await;
    let subject_len = http
        .get(format!(
            "http://{}/v2/team/app/manifests/{subject}",
            proxy.http
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    let empty = push_blob(http, proxy.http, "team/app", b"{}".to_vec()).await;
    let mut pushed = Vec::new();
    for kind in [
        "application/vnd.example.sig",
        "application/vnd.example.sbom",
    ] {
        let artifact = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"{kind}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}}],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{subject}","size":{subject_len}}}}}"#
        );
        let d = digest_of(artifact.as_bytes());
        let resp = http
            .put(format!("http://{}/v2/team/app/manifests/{d}", proxy.http))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(artifact)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
        pushed.push((kind, d));
    }
    let listed = |agent: usize, query: &'static str| {
        let cluster = &cluster;
        let subject = subject.clone();
        async move {
            let (status, body) = cluster
                .get(agent, &format!("/v2/team/app/referrers/{subject}{query}"))
                .await;
            assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let mut found: Vec<(String, String)> = v["manifests"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| {
                    (
                        m["artifactType"].as_str().unwrap_or_default().to_owned(),
                        m["digest"].as_str().unwrap().to_owned(),
                    )
                })
                .collect();
            found.sort();
            found
        }
    };
    let mut both: Vec<(String, String)> = pushed
        .iter()
        .map(|(k, d)| (k.to_string(), d.clone()))
        .collect();
    both.sort();
    for agent in 0..2 {
        assert_eq!(listed(agent, "").await, both, "agent {agent}");
        assert_eq!(
            listed(agent, "?artifactType=application/vnd.example.sbom").await,
            vec![(pushed[1].0.to_string(), pushed[1].1.clone())],
            "agent {agent}, filtered"
        );
    }
    // An agent can pull the signature it was told of.
    let (status, _) = cluster
        .get(0, &format!("/v2/team/app/manifests/{}", pushed[0].1))
        .await;
    assert_eq!(status, 200);

    // Deleted through the proxy, once its staging store dropped everything: gone from every
    // agent's list, the other one stays.
    staging_emptied(&cluster).await;
    let resp = http
        .delete(format!(
            "http://{}/v2/team/app/manifests/{}",
            proxy.http, pushed[0].1
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202, "{:?}", resp.text().await);
    for agent in 0..2 {
        assert_eq!(
            listed(agent, "").await,
            vec![(pushed[1].0.to_string(), pushed[1].1.clone())],
            "agent {agent} after the delete"
        );
    }
}

/// A proxy whose staging store drops what it holds after 3 s (checked every 100 ms).
async fn start_staging_proxy(cluster: &Cluster, origins: &[SocketAddr]) -> common::Node {
    start_proxy_with(cluster, origins, "staging:\n  ttl: 3s\n  interval: 100ms\n").await
}

/// Waits until the proxy's staging store holds no blob.
async fn staging_emptied(cluster: &Cluster) {
    let blobs = cluster.dir.path().join("proxy/proxy/blobs");
    let emptied = poll_until(std::time::Duration::from_secs(20), || async {
        files_under(&blobs) == 0
    })
    .await;
    assert!(emptied, "{} files still staged", files_under(&blobs));
}

/// `GET path` at `addr`: the status, the `tags` of a tag list (empty otherwise), the `Link`
/// header and, for an error, its code.
async fn tag_list(
    http: &reqwest::Client,
    addr: SocketAddr,
    path: &str,
) -> (u16, Vec<String>, Option<String>, String) {
    let resp = http
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let link = resp
        .headers()
        .get("link")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: serde_json::Value =
        serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or_default();
    let tags = body["tags"]
        .as_array()
        .map(|a| a.iter().map(|t| t.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    let code = body["errors"][0]["code"].as_str().unwrap_or("").to_owned();
    (status, tags, link, code)
}

/// Tags pushed through the proxy are listed by every agent's `tags/list`, pulled there or not,
/// as the build-index lists them (`GET /repositories/{repo}/tags`); a tag deleted through the
/// proxy leaves every list, also at an agent that had served it. Before, an agent listed only
/// what it had pulled itself: `NAME_UNKNOWN` for the rest, and deleted tags forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_agent_lists_the_tags_pushed_through_the_proxy_and_drops_deleted_ones() {
    let cluster = Cluster::start(Spec {
        origins: 1,
        agents: 2,
        max_replica: 1,
        ..Spec::default()
    })
    .await;
    let origins: Vec<SocketAddr> = cluster.origins.iter().map(|o| o.http).collect();
    let proxy = start_proxy(&cluster, &origins).await;
    let http = &cluster.http;
    push_image(http, proxy.http, "team/app", "v1", 1).await;
    push_image(http, proxy.http, "team/app", "v2", 2).await;
    let both = vec!["v1".to_owned(), "v2".to_owned()];

    let index = cluster.build_index.http;
    let resp = http
        .get(format!("http://{index}/repositories/team%2Fapp/tags"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&resp.bytes().await.unwrap()).unwrap(),
        serde_json::json!({"tags": ["v1", "v2"]})
    );

    // Agent 0 serves v1 first, so it has seen that tag itself.
    let (status, _) = cluster.get(0, "/v2/team/app/manifests/v1").await;
    assert_eq!(status, 200);
    for agent in &cluster.agents {
        let (status, tags, _, code) = tag_list(http, agent.http, "/v2/team/app/tags/list").await;
        assert_eq!((status, tags, code), (200, both.clone(), String::new()));
        let (status, tags, link, _) =
            tag_list(http, agent.http, "/v2/team/app/tags/list?n=1").await;
        assert_eq!((status, tags), (200, vec!["v1".to_owned()]));
        assert_eq!(
            link.as_deref(),
            Some("</v2/team/app/tags/list?n=1&last=v1>; rel=\"next\"")
        );
        let (status, _, _, code) = tag_list(http, agent.http, "/v2/team/other/tags/list").await;
        assert_eq!((status, code.as_str()), (404, "NAME_UNKNOWN"));
    }

    let resp = http
        .delete(format!("http://{}/v2/team/app/manifests/v1", proxy.http))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    for agent in &cluster.agents {
        let (status, tags, _, _) = tag_list(http, agent.http, "/v2/team/app/tags/list").await;
        assert_eq!(
            (status, tags),
            (200, vec!["v2".to_owned()]),
            "{}",
            agent.http
        );
    }
    let (status, tags, _, _) = tag_list(http, proxy.http, "/v2/team/app/tags/list").await;
    assert_eq!((status, tags), (200, vec!["v2".to_owned()]), "the proxy");
}
