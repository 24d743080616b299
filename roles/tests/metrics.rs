//! `/metrics` on every role of a cluster in one process (tracker, origin, build-index, agent,
//! proxy): each scrape parses with the strict reader, shows the process's start time and
//! build, and a push through the proxy and two pulls through an agent move the request,
//! backend, cache, tag and P2P series as they should. The example Grafana dashboard
//! (`examples/grafana/shoal.json`) names only families some role shows.

mod common;

use std::time::Duration;

use common::proxy_setup::{push_image, start_proxy};
use common::{Cluster, Node, Spec, poll_until};
use shoal_metrics::parse::Scrape;

const MANIFEST: &str = "/v2/{name}/manifests/{reference}";
const BLOB: &str = "/v2/{name}/blobs/{digest}";

/// The requests `node` counted for `method` on `route` with `status`.
fn requests(s: &Scrape, method: &str, route: &str, status: &str) -> f64 {
    s.sum(
        "shoal_http_requests_total",
        &[("method", method), ("route", route), ("status", status)],
    )
}

/// What every role shows whatever it did.
fn shows_its_process(s: &Scrape, node: &Node) {
    let started = s.sum("shoal_process_start_time_seconds", &[]);
    assert!(started > 1.6e9, "{}: start time {started}", node.name);
    assert_eq!(
        s.value(
            "shoal_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0),
        "{}",
        node.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_and_two_pulls_move_every_roles_series() {
    let cluster = Cluster::start(Spec {
        trackers: 1,
        origins: 1,
        agents: 1,
        max_replica: 1,
        ..Spec::default()
    })
    .await;
    let origin_addrs = [cluster.origins[0].http];
    let proxy = start_proxy(&cluster, &origin_addrs).await;
    let (tracker, origin, build_index, agent) = (
        &cluster.trackers[0],
        &cluster.origins[0],
        &cluster.build_index,
        &cluster.agents[0],
    );
    let nodes = [tracker, origin, build_index, agent];
    assert!(
        poll_until(Duration::from_secs(20), || async {
            cluster
                .http
                .get(format!("http://{}/v2/", proxy.http))
                .send()
                .await
                .is_ok()
        })
        .await
    );
    for node in nodes.iter().copied().chain([&proxy]) {
        shows_its_process(&cluster.scrape(node).await, node);
    }
    let before_agent = cluster.scrape(agent).await;

    // A push through the proxy: blobs to the origin (and its backend), the tag to the
    // build-index.
    let (layer_d, layer, _) = push_image(&cluster.http, proxy.http, "team/metrics", "v1", 3).await;
    let proxied = cluster.scrape(&proxy).await;
    assert_eq!(requests(&proxied, "PUT", MANIFEST, "201"), 1.0);
    assert!(
        proxied.sum(
            "shoal_http_request_bytes_total",
            &[("method", "POST"), ("route", "/v2/{name}/blobs/uploads/")]
        ) >= layer.len() as f64
    );
    assert_eq!(
        proxied.sum(
            "shoal_http_request_duration_seconds_count",
            &[("method", "PUT"), ("route", MANIFEST)]
        ),
        1.0
    );
    let stored = cluster.scrape(origin).await;
    assert!(
        requests(&stored, "PUT", "/namespace/{ns}/blobs/{digest}", "201") >= 3.0,
        "the layer, the config and the manifest"
    );
    // The write-back to the backend runs after the push is acknowledged.
    assert!(
        poll_until(Duration::from_secs(20), || async {
            let s = cluster.scrape(origin).await;
            s.sum(
                "shoal_backend_calls_total",
                &[("operation", "upload"), ("result", "ok")],
            ) >= 3.0
                && s.sum(
                    "shoal_backend_uploaded_bytes_total",
                    &[("plugin", "memory")],
                ) >= layer.len() as f64
        })
        .await,
        "the origin's write-backs never showed"
    );
    let tagged = cluster.scrape(build_index).await;
    assert_eq!(
        requests(&tagged, "PUT", "/tags/{tag}/digest/{digest}", "200"),
        1.0
    );

    // A pull through the agent: the tag from the build-index, the blobs from peers.
    let (status, _) = cluster.get(0, "/v2/team/metrics/manifests/v1").await;
    assert_eq!(status, 200);
    let path = format!("/v2/team/metrics/blobs/{layer_d}");
    let (status, body) = cluster.get(0, &path).await;
    assert_eq!((status, body.len()), (200, layer.len()));
    let pulled = cluster.scrape(agent).await;
    let moved = |s: &Scrape, name: &str, labels: &[(&str, &str)]| {
        s.sum(name, labels) - before_agent.sum(name, labels)
    };
    assert_eq!(
        moved(
            &pulled,
            "shoal_http_requests_total",
            &[("route", BLOB), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        moved(
            &pulled,
            "shoal_http_response_bytes_total",
            &[("route", BLOB)]
        ),
        layer.len() as f64
    );
    assert_eq!(
        moved(
            &pulled,
            "shoal_registry_cache_misses_total",
            &[("kind", "blob")]
        ),
        1.0
    );
    assert!(
        moved(
            &pulled,
            "shoal_p2p_pieces_received_total",
            &[("result", "verified")]
        ) >= 3.0
    );
    assert!(moved(&pulled, "shoal_p2p_announces_total", &[("result", "ok")]) >= 1.0);
    assert_eq!(
        moved(
            &pulled,
            "shoal_p2p_pieces_received_total",
            &[("result", "corrupt")]
        ),
        0.0
    );

    // The second pull of the blob is the agent's own, once the first pull's download is in
    // the agent's registry store: the client got its last byte when the blob verified, and
    // the store links it in a moment later.
    let linked = cluster
        .dir
        .path()
        .join("agent0/store/registry/repositories/team/metrics/_layers/sha256")
        .join(layer_d.trim_start_matches("sha256:"));
    assert!(
        poll_until(Duration::from_secs(20), || async { linked.exists() }).await,
        "{} never appeared",
        linked.display()
    );
    let (status, _) = cluster.get(0, &path).await;
    assert_eq!(status, 200);
    let again = cluster.scrape(agent).await;
    assert_eq!(
        again.sum("shoal_registry_cache_hits_total", &[("kind", "blob")])
            - pulled.sum("shoal_registry_cache_hits_total", &[("kind", "blob")]),
        1.0
    );

    // The origin seeded the pieces, the tracker took the announces, the build-index
    // answered the tag.
    let seeded = cluster.scrape(origin).await;
    assert!(seeded.sum("shoal_p2p_pieces_sent_total", &[]) >= 3.0);
    assert!(seeded.sum("shoal_p2p_piece_bytes_sent_total", &[]) >= layer.len() as f64);
    let announced = cluster.scrape(tracker).await;
    assert!(requests(&announced, "POST", "/announce/{info_hash}", "200") >= 2.0);
    let looked_up = cluster.scrape(build_index).await;
    let mut families: Vec<String> = Vec::new();
    for node in nodes.iter().copied().chain([&proxy]) {
        families.extend(cluster.scrape(node).await.families.into_keys());
    }
    dashboard_names_only(&families);
    assert!(
        looked_up.sum(
            "shoal_build_index_tag_lookups_total",
            &[("result", "cached")]
        ) + looked_up.sum(
            "shoal_build_index_tag_lookups_total",
            &[("result", "found")]
        ) >= 1.0
    );
}

/// Every `shoal_...` name in the dashboard's queries is a family in `families` (a histogram's
/// `_bucket`, `_sum` and `_count` are its family's).
fn dashboard_names_only(families: &[String]) {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/grafana/shoal.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    let mut names = Vec::new();
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("shoal_") {
            let tail = &rest[at..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    assert!(names.len() >= 20, "{names:?}");
    for name in names {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|base| families.iter().any(|f| f == base))
            .unwrap_or(&name);
        assert!(
            families.iter().any(|f| f == family),
            "the dashboard queries {name}, which no role shows"
        );
    }
}
