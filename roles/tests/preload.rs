//! `POST /preload` on the agents of a cluster in one process: an image of three layers pushed
//! through the proxy is preloaded onto three agents at once, each streaming its progress to
//! `done`; the pulls that follow, of the manifest and every blob through every agent, send
//! nothing to the origins (their requests and pieces, the agents' pieces and the backend's
//! reads stay where they were) and still work once the origins are gone. A second preload is
//! a no-op; an unknown tag is a 404 and a malformed reference a 400, both in the registry's
//! error envelope. Nothing sleeps to synchronize: every wait polls with a deadline.

mod common;

use std::time::Duration;

use common::proxy_setup::{push_blob, start_proxy};
use common::{Cluster, Node, Spec, digest_of, noise, poll_until};
use shoal_metrics::parse::Scrape;
use shoal_roles::agent::preload::{CONTENT_TYPE, PATH, PreloadEvent, PreloadRequest};

const REPO: &str = "team/preload";

/// Pushes an image of three layers (3, 4 and 5 MiB) through the proxy at `proxy`, tagged
/// `v1`: the manifest's digest and the blobs' digests, config first.
async fn push_three_layers(
    cluster: &Cluster,
    proxy: std::net::SocketAddr,
) -> (String, Vec<String>) {
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let layers: Vec<Vec<u8>> = (0..3u8)
        .map(|i| noise((3 + i as usize) << 20, 40 + i))
        .collect();
    let config_d = push_blob(&cluster.http, proxy, REPO, config.clone()).await;
    let mut blobs = vec![config_d.clone()];
    let mut descs = Vec::new();
    for layer in &layers {
        let d = push_blob(&cluster.http, proxy, REPO, layer.clone()).await;
        descs.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{}}}"#,
            layer.len()
        ));
        blobs.push(d);
    }
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_d}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        descs.join(",")
    );
    let resp = cluster
        .http
        .put(format!("http://{proxy}/v2/{REPO}/manifests/v1"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(manifest.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text().await);
    (digest_of(manifest.as_bytes()), blobs)
}

/// What a preload answered: its status, and the lines of its stream (or the error body).
struct Answer {
    status: u16,
    events: Vec<PreloadEvent>,
    body: String,
}

/// `POST /preload` of `image` at `agent`, read line by line as the agent streams it.
async fn preload(cluster: &Cluster, agent: &Node, image: &str) -> Answer {
    let url = cluster.url(agent.http, PATH);
    let request = PreloadRequest {
        image: image.to_owned(),
        platform: None,
    };
    let mut resp = cluster
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&request).unwrap())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status().as_u16();
    if status != 200 {
        let body = resp.text().await.unwrap();
        return Answer {
            status,
            events: Vec::new(),
            body,
        };
    }
    assert_eq!(resp.headers()["content-type"], CONTENT_TYPE);
    let (mut events, mut pending): (Vec<PreloadEvent>, Vec<u8>) = (Vec::new(), Vec::new());
    while let Some(chunk) = resp.chunk().await.expect("the stream broke off") {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let event = serde_json::from_slice(&line)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&line)));
            events.push(event);
        }
    }
    assert!(pending.is_empty(), "a partial last line");
    Answer {
        status,
        events,
        body: String::new(),
    }
}

/// The requests an origin served that a pull could have caused: everything but the probes
/// (`/health` from the other origin's ring check, `/ready`, `/metrics` from this test) and the
/// replica copies the push queued (PUTs from the other origin).
fn pull_requests(s: &Scrape) -> f64 {
    s.matching("shoal_http_requests_total", &[])
        .filter(|x| {
            let route = x.labels.get("route").map(String::as_str);
            let method = x.labels.get("method").map(String::as_str);
            !matches!(route, Some("/health" | "/ready" | "/metrics")) && method != Some("PUT")
        })
        .map(|x| x.value)
        .sum()
}

/// What the origins, the agents and the backend have done that a pull would move.
#[derive(Debug, PartialEq)]
struct Ledger {
    origin_requests: Vec<f64>,
    origin_pieces_sent: Vec<f64>,
    agent_pieces_received: Vec<f64>,
    agent_cache_misses: Vec<f64>,
    backend_reads: u64,
}

async fn ledger(cluster: &Cluster) -> Ledger {
    let mut l = Ledger {
        origin_requests: Vec::new(),
        origin_pieces_sent: Vec::new(),
        agent_pieces_received: Vec::new(),
        agent_cache_misses: Vec::new(),
        backend_reads: cluster.backend.downloads(),
    };
    for o in &cluster.origins {
        let s = cluster.scrape(o).await;
        l.origin_requests.push(pull_requests(&s));
        l.origin_pieces_sent
            .push(s.sum("shoal_p2p_piece_bytes_sent_total", &[]));
    }
    for a in &cluster.agents {
        let s = cluster.scrape(a).await;
        l.agent_pieces_received
            .push(s.sum("shoal_p2p_piece_bytes_received_total", &[]));
        l.agent_cache_misses
            .push(s.sum("shoal_registry_cache_misses_total", &[]));
    }
    l
}

/// The stream of a preload that fetched `blobs` (in any order): resolved first, one `blob`
/// line each with `done` counting up, `done` last with `fetched` of them fetched now.
fn assert_streamed(agent: &str, answer: &Answer, manifest: &str, blobs: &[String], fetched: u32) {
    assert_eq!(answer.status, 200, "{agent}: {}", answer.body);
    let events = &answer.events;
    let n = blobs.len() as u32;
    let PreloadEvent::Resolved {
        repository,
        digest,
        manifests,
        blobs: count,
        total,
    } = &events[0]
    else {
        panic!("{agent}: the stream began with {:?}", events[0]);
    };
    assert_eq!(
        (repository.as_str(), digest.to_string(), *manifests, *count),
        (REPO, manifest.to_owned(), 1, n),
        "{agent}"
    );
    let mut seen = Vec::new();
    let mut last_bytes = 0;
    for e in &events[1..events.len() - 1] {
        match e {
            PreloadEvent::Blob {
                digest,
                done,
                bytes,
                total: t,
                fetched: now,
                ..
            } => {
                seen.push(digest.to_string());
                assert_eq!(*done as usize, seen.len(), "{agent}: {e:?}");
                assert_eq!((t, *now), (total, fetched > 0), "{agent}: {e:?}");
                assert!(*bytes >= last_bytes && bytes <= total, "{agent}: {e:?}");
                last_bytes = *bytes;
            }
            PreloadEvent::Progress {
                bytes, total: t, ..
            } => {
                assert!(*bytes >= last_bytes && t == total, "{agent}: {e:?}");
                last_bytes = *bytes;
            }
            other => panic!("{agent}: {other:?} in the middle of the stream"),
        }
    }
    seen.sort();
    let mut want = blobs.to_vec();
    want.sort();
    assert_eq!(seen, want, "{agent}: the blobs reported");
    assert_eq!(
        events.last(),
        Some(&PreloadEvent::Done {
            total: *total,
            blobs: n,
            fetched
        }),
        "{agent}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preload_fills_every_agent_so_the_pull_that_follows_sends_nothing_to_the_origins() {
    let mut cluster = Cluster::start(Spec::default()).await;
    let origins: Vec<_> = cluster.origins.iter().map(|o| o.http).collect();
    let proxy = start_proxy(&cluster, &origins).await;
    assert!(
        poll_until(Duration::from_secs(20), || async {
            let url = format!("http://{}/v2/", proxy.http);
            cluster.http.get(url).send().await.is_ok()
        })
        .await,
        "the proxy never answered"
    );
    let (manifest, blobs) = push_three_layers(&cluster, proxy.http).await;
    let image = format!("{REPO}:v1");

    // All three agents at once: the layers spread over P2P while each streams its progress.
    let answers =
        futures_util::future::join_all(cluster.agents.iter().map(|a| preload(&cluster, a, &image)))
            .await;
    for (a, answer) in cluster.agents.iter().zip(&answers) {
        assert_streamed(&a.name, answer, &manifest, &blobs, blobs.len() as u32);
    }

    // The pulls: the manifest by tag (the tag still asks the build-index) and every blob,
    // through every agent, each the bytes pushed.
    let before = ledger(&cluster).await;
    for (i, a) in cluster.agents.iter().enumerate() {
        let (status, body) = cluster.get(i, &format!("/v2/{REPO}/manifests/v1")).await;
        assert_eq!(
            status,
            200,
            "{}: {}",
            a.name,
            String::from_utf8_lossy(&body)
        );
        assert_eq!(digest_of(&body), manifest, "{}", a.name);
        for d in &blobs {
            let (status, body) = cluster.get(i, &format!("/v2/{REPO}/blobs/{d}")).await;
            assert_eq!(status, 200, "{}: {d}", a.name);
            assert_eq!(&digest_of(&body), d, "{}", a.name);
        }
    }
    let after = ledger(&cluster).await;
    assert_eq!(before, after, "the pulls reached past the agents");
    for a in &cluster.agents {
        let s = cluster.scrape(a).await;
        assert_eq!(
            s.sum("shoal_agent_preloads_total", &[("result", "done")]),
            1.0,
            "{}",
            a.name
        );
        assert!(
            s.sum("shoal_agent_preload_fetched_bytes_total", &[]) >= (12 << 20) as f64,
            "{}",
            a.name
        );
        // The request log and its counters name the route by its template.
        assert_eq!(
            s.sum(
                "shoal_http_requests_total",
                &[("method", "POST"), ("route", PATH), ("status", "200")]
            ),
            1.0,
            "{}",
            a.name
        );
    }

    // Preloading again fetches nothing and asks no origin.
    let again = preload(&cluster, &cluster.agents[0], &image).await;
    assert_streamed("agent0, again", &again, &manifest, &blobs, 0);
    assert_eq!(
        ledger(&cluster).await,
        after,
        "a second preload reached past the agent"
    );

    // With every origin gone the agents serve the image all the same.
    for o in &mut cluster.origins {
        o.kill().await;
    }
    for i in 0..cluster.agents.len() {
        let (status, body) = cluster.get(i, &format!("/v2/{REPO}/manifests/v1")).await;
        assert_eq!(status, 200, "agent{i}: {}", String::from_utf8_lossy(&body));
        let last = blobs.last().unwrap();
        let (status, body) = cluster.get(i, &format!("/v2/{REPO}/blobs/{last}")).await;
        assert_eq!((status, &digest_of(&body)), (200, last), "agent{i}");
    }
}

/// The OCI error code of an error body.
fn code(body: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_tag_is_a_404_and_a_malformed_reference_a_400() {
    let cluster = Cluster::start(Spec {
        origins: 1,
        agents: 1,
        max_replica: 1,
        ..Spec::default()
    })
    .await;
    let agent = &cluster.agents[0];
    let unknown = preload(&cluster, agent, "team/nothing:v1").await;
    assert_eq!(
        (unknown.status, code(&unknown.body).as_str()),
        (404, "MANIFEST_UNKNOWN"),
        "{}",
        unknown.body
    );
    assert!(unknown.body.contains("v1"), "{}", unknown.body);
    for bad in ["Team/App:v1", "team/app:", "team/app@sha256:123", ""] {
        let answer = preload(&cluster, agent, bad).await;
        assert_eq!(answer.status, 400, "{bad:?}: {}", answer.body);
        assert!(!code(&answer.body).is_empty(), "{bad:?}: {}", answer.body);
    }
    let s = cluster.scrape(agent).await;
    assert_eq!(
        s.sum("shoal_agent_preloads_total", &[("result", "refused")]),
        5.0
    );
    assert_eq!(
        s.sum(
            "shoal_http_requests_total",
            &[("route", PATH), ("status", "400")]
        ),
        4.0
    );
}
