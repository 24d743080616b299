//! `shoal dev`'s `/metrics`, on its registry port and on `metrics.listen`: the scrape parses
//! with the strict reader, a push and pulls move the request, backend and cache series, and a
//! pull through a second `shoal dev` over the first one's backend folder is a cache miss that
//! downloads from the backend. The example Grafana dashboard names only series that exist.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{DevServer, block_on, poll_until, tempdir};
use sha2::Digest as _;
use shoal_metrics::parse::{Scrape, parse};

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// `method url` with `body`: the status and the response body.
fn call(method: &str, url: &str, content_type: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
    block_on(async {
        let r = reqwest::Client::new()
            .request(method.parse().unwrap(), url)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
    })
}

fn scrape_at(addr: SocketAddr) -> Scrape {
    let (status, body) = call("GET", &format!("http://{addr}/metrics"), "", Vec::new());
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Pushes a blob and a manifest naming it under `repo:tag`; returns the blob's digest.
fn push(server: &DevServer, repo: &str, tag: &str, blob: &[u8]) -> String {
    let d = digest(blob);
    let (status, _) = call(
        "POST",
        &server.url(&format!("/v2/{repo}/blobs/uploads/?digest={d}")),
        "application/octet-stream",
        blob.to_vec(),
    );
    assert_eq!(status, 201);
    let config = b"{}".to_vec();
    let cd = digest(&config);
    let (status, _) = call(
        "POST",
        &server.url(&format!("/v2/{repo}/blobs/uploads/?digest={cd}")),
        "application/octet-stream",
        config,
    );
    assert_eq!(status, 201);
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{d}","size":{}}}]}}"#,
        blob.len()
    );
    let (status, _) = call(
        "PUT",
        &server.url(&format!("/v2/{repo}/manifests/{tag}")),
        "application/vnd.oci.image.manifest.v1+json",
        manifest.into_bytes(),
    );
    assert_eq!(status, 201);
    d
}

/// The address `metrics.listen` was bound to, from the server's log.
fn metrics_addr(server: &DevServer) -> SocketAddr {
    let mut found = None;
    let logged = poll_until(Duration::from_secs(20), || {
        found = server.log().iter().find_map(|l| {
            if !l.contains("metrics listening") {
                return None;
            }
            let at = l.split("addr=").nth(1)?;
            at.split_whitespace().next()?.parse().ok()
        });
        found.is_some()
    });
    assert!(
        logged,
        "no metrics listening line:\n{}",
        server.log().join("\n")
    );
    found.unwrap()
}

#[test]
fn dev_counts_requests_backend_calls_and_cache_reads_on_both_ports() {
    let work = tempdir("shoal-metrics-");
    let config = work.path().join("dev.yaml");
    std::fs::write(&config, "metrics:\n  listen: 127.0.0.1:0\n").unwrap();
    let data = work.path().join("data");
    let server = DevServer::start_with_config(&data, &config);
    let blob = vec![7u8; 100_000];
    let d = push(&server, "team/app", "v1", &blob);
    let (status, body) = call(
        "GET",
        &server.url(&format!("/v2/team/app/blobs/{d}")),
        "",
        vec![],
    );
    assert_eq!((status, body.len()), (200, blob.len()));

    let s = scrape_at(server.addr());
    let requests = |method: &str, route: &str, status: &str| {
        s.sum(
            "shoal_http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(
        requests("PUT", "/v2/{name}/manifests/{reference}", "201"),
        1.0
    );
    assert_eq!(requests("POST", "/v2/{name}/blobs/uploads/", "201"), 2.0);
    assert_eq!(requests("GET", "/v2/{name}/blobs/{digest}", "200"), 1.0);
    assert!(
        s.sum(
            "shoal_http_request_bytes_total",
            &[("route", "/v2/{name}/blobs/uploads/")]
        ) >= blob.len() as f64
    );
    assert_eq!(
        s.sum("shoal_registry_cache_hits_total", &[("kind", "blob")]),
        1.0
    );
    // The default backend is the embedded `fs` plugin: every blob and the tag written through.
    assert!(
        s.sum(
            "shoal_backend_calls_total",
            &[("plugin", "fs"), ("operation", "upload"), ("result", "ok")]
        ) >= 1.0,
        "{:#?}",
        s.samples
    );
    assert_eq!(
        s.value("shoal_plugin_traps_total", &[("plugin", "fs")]),
        Some(0.0)
    );
    assert_eq!(
        s.value("shoal_plugin_breaker_open", &[("plugin", "fs")]),
        Some(0.0)
    );
    assert!(s.sum("shoal_process_start_time_seconds", &[]) > 1.6e9);

    // metrics.listen: the same metrics, and nothing else.
    let at = metrics_addr(&server);
    let again = scrape_at(at);
    assert!(again.sum("shoal_http_requests_total", &[("route", "/metrics")]) >= 1.0);
    assert_eq!(
        again.sum(
            "shoal_http_requests_total",
            &[
                ("method", "PUT"),
                ("route", "/v2/{name}/manifests/{reference}")
            ]
        ),
        1.0
    );
    let (status, _) = call("GET", &format!("http://{at}/v2/"), "", vec![]);
    assert_eq!(status, 404, "metrics.listen serves /metrics alone");
    server.stop();

    // A second registry over the first one's backend folder: its reads are misses, fetched
    // from the backend.
    let second = work.path().join("second.yaml");
    std::fs::write(
        &second,
        format!(
            "backends:\n  - namespace: .*\n    backend:\n      fs:\n        root: {}\n",
            data.join("backend").display()
        ),
    )
    .unwrap();
    let server = DevServer::start_with_config(&work.path().join("data2"), &second);
    let (status, _) = call("GET", &server.url("/v2/team/app/manifests/v1"), "", vec![]);
    assert_eq!(status, 200);
    let (status, body) = call(
        "GET",
        &server.url(&format!("/v2/team/app/blobs/{d}")),
        "",
        vec![],
    );
    assert_eq!((status, body.len()), (200, blob.len()));
    let s = scrape_at(server.addr());
    assert_eq!(
        s.sum("shoal_registry_cache_misses_total", &[("kind", "blob")]),
        1.0
    );
    assert_eq!(
        s.sum("shoal_registry_cache_misses_total", &[("kind", "manifest")]),
        1.0
    );
    assert!(
        s.sum("shoal_backend_downloaded_bytes_total", &[("plugin", "fs")]) >= blob.len() as f64
    );
    assert!(
        s.sum(
            "shoal_backend_call_duration_seconds_count",
            &[("plugin", "fs"), ("operation", "download")]
        ) >= 1.0
    );
    server.stop();
}
