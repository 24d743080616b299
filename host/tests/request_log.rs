//! `shoal dev` with `log.format: json`: every line it writes is one JSON object, and a push with
//! skopeo and pulls over plain HTTP each leave one request line per request, with the route's
//! repository, digest or tag, the status, the OCI error code of a refusal, and the request id
//! the response carried in `X-Request-Id`.

mod common;

use std::time::{Duration, Instant};

use common::http::ACCEPT_MANIFESTS;
use common::image;
use common::skopeo::skopeo_push;
use common::{DevServer, block_on, require, tempdir};
use serde_json::Value;

/// Every line the server wrote so far, parsed; a line that is not JSON fails the test.
fn lines(server: &DevServer) -> Vec<Value> {
    server
        .log()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The request lines so far.
fn requests(server: &DevServer) -> Vec<Value> {
    lines(server)
        .into_iter()
        .filter(|l| l["target"] == "shoal::request")
        .collect()
}

/// The one request line with `id`, waited for (up to 20 s): it is written once the response
/// is sent, which may be just after the client has read it.
fn request(server: &DevServer, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found: Vec<Value> = requests(server)
            .into_iter()
            .filter(|l| l["request_id"] == id)
            .collect();
        match found.len() {
            1 => return found.into_iter().next().unwrap(),
            0 if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            n => panic!("{n} request lines with id {id}:\n{:#?}", requests(server)),
        }
    }
}

/// `method path` with `headers`: the status, the response's request id, and the body.
fn call(
    server: &DevServer,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> (u16, String, Vec<u8>) {
    block_on(async {
        let mut req = reqwest::Client::new().request(method.parse().unwrap(), server.url(path));
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let r = req.body(body).send().await.expect("the request is sent");
        let status = r.status().as_u16();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        (status, id, r.bytes().await.unwrap().to_vec())
    })
}

#[test]
fn a_push_and_pulls_leave_one_json_request_line_each() {
    if !require("skopeo") {
        return;
    }
    let work = tempdir("shoal-request-log-");
    let config = work.path().join("dev.yaml");
    std::fs::write(&config, "log:\n  format: json\n").unwrap();
    let server = DevServer::start_with_config(&work.path().join("data"), &config);
    let src = work.path().join("src");
    let built = image::write_image_layout(&src, "v1", "request-log");

    // A push by a real client: its manifest PUT and its blob uploads are each a line.
    skopeo_push(&server, &src, "v1", "team/app:v1", false);
    // The manifest PUT is the push's last request; its line is written once its response is.
    let is_manifest_put =
        |l: &Value| l["method"] == "PUT" && l["route"] == "/v2/{name}/manifests/{reference}";
    assert!(
        server.logged(|l| serde_json::from_str::<Value>(l).is_ok_and(|l| is_manifest_put(&l))),
        "no manifest PUT line:\n{:#?}",
        requests(&server)
    );
    let pushed = requests(&server);
    let manifest_put = pushed
        .iter()
        .find(|l| is_manifest_put(l))
        .unwrap_or_else(|| panic!("no manifest PUT line:\n{pushed:#?}"));
    assert_eq!(manifest_put["status"], 201, "{manifest_put}");
    assert_eq!(manifest_put["repository"], "team/app");
    assert_eq!(manifest_put["tag"], "v1");
    assert_eq!(manifest_put["bytes_in"], built.manifest.len() as u64);
    for line in &pushed {
        assert_eq!(line["level"], "INFO", "{line}");
        for field in [
            "method",
            "status",
            "bytes_out",
            "duration_ms",
            "client",
            "request_id",
        ] {
            assert!(line.get(field).is_some(), "no {field}: {line}");
        }
        assert!(
            line["client"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{line}"
        );
    }
    let ids: std::collections::BTreeSet<&str> = pushed
        .iter()
        .map(|l| l["request_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), pushed.len(), "request ids repeat: {pushed:#?}");

    // A pull by tag, with the client's own id: kept, and on the line.
    let (status, id, body) = call(
        &server,
        "GET",
        "/v2/team/app/manifests/v1",
        &[("accept", ACCEPT_MANIFESTS), ("x-request-id", "pull-e2e-1")],
        Vec::new(),
    );
    assert_eq!((status, id.as_str()), (200, "pull-e2e-1"));
    assert_eq!(body, built.manifest);
    let line = request(&server, "pull-e2e-1");
    assert_eq!(line["message"], "request");
    assert_eq!(
        (line["method"].as_str(), line["status"].as_u64()),
        (Some("GET"), Some(200))
    );
    assert_eq!(line["repository"], "team/app");
    assert_eq!(line["tag"], "v1");
    assert_eq!(line["bytes_out"], built.manifest.len() as u64);
    assert!(line.get("error").is_none(), "{line}");

    // A layer by digest, with an id the server makes.
    let layer = &built.layer_digests[0];
    let (status, id, body) = call(
        &server,
        "GET",
        &format!("/v2/team/app/blobs/{layer}"),
        &[],
        Vec::new(),
    );
    assert_eq!(status, 200);
    let line = request(&server, &id);
    assert_eq!(line["route"], "/v2/{name}/blobs/{digest}");
    assert_eq!(line["digest"], layer.as_str());
    assert_eq!(line["bytes_out"], body.len() as u64);
    assert!(line.get("aborted").is_none(), "sent whole: {line}");

    // A refused push and a miss: their OCI codes.
    let (status, id, _) = call(
        &server,
        "PUT",
        "/v2/team/app/manifests/broken",
        &[("content-type", image::OCI_MANIFEST)],
        b"{not json".to_vec(),
    );
    assert_eq!(status, 400);
    let line = request(&server, &id);
    assert_eq!(
        (line["status"].as_u64(), line["error"].as_str()),
        (Some(400), Some("MANIFEST_INVALID"))
    );
    assert_eq!(line["tag"], "broken");
    let (status, id, _) = call(&server, "GET", "/v2/team/app/manifests/v2", &[], Vec::new());
    assert_eq!(status, 404);
    assert_eq!(request(&server, &id)["error"], "MANIFEST_UNKNOWN");

    // Ready: the store takes writes.
    let (status, _, body) = call(&server, "GET", "/ready", &[], Vec::new());
    assert_eq!((status, body.as_slice()), (200, b"ready\n".as_slice()));
    // Everything the server wrote is JSON, the listening line included.
    assert!(
        lines(&server).iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("listening on http://"))),
        "{:#?}",
        lines(&server)
    );
}

/// A backend whose upstream refuses connections: the log says so once per attempt, naming the
/// plugin, the upstream and the cause, and wasi-http's own line (which names neither) is gone.
#[test]
fn a_backend_that_cannot_connect_names_its_upstream_and_the_cause() {
    let work = tempdir("shoal-cause-log-");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = closed.local_addr().unwrap();
    drop(closed);
    let config = work.path().join("dev.yaml");
    std::fs::write(
        &config,
        format!(
            "log:\n  format: json\nbackends:\n  - namespace: .*\n    backend:\n      http:\n        \
             download_url: http://{upstream}/blobs/%s\n"
        ),
    )
    .unwrap();
    let server = DevServer::start_with_config(&work.path().join("data"), &config);
    let digest = format!("sha256:{}", "ab".repeat(32));
    let (status, _, _) = call(
        &server,
        "GET",
        &format!("/v2/x/blobs/{digest}"),
        &[],
        vec![],
    );
    assert!(status >= 400, "{status}");
    let failed = |l: &Value| l["message"] == "plugin request failed";
    let deadline = Instant::now() + Duration::from_secs(20);
    while !lines(&server).iter().any(failed) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = lines(&server);
    let line = all.iter().find(|l| failed(l)).unwrap_or_else(|| {
        panic!("no `plugin request failed` line:\n{all:#?}");
    });
    let fields = line;
    assert_eq!(fields["upstream"], format!("http://{upstream}"), "{line}");
    let error = fields["error"].as_str().unwrap().to_lowercase();
    assert!(error.contains("connection refused"), "{line}");
    assert!(fields["plugin"].as_str().is_some(), "{line}");
    let wasi: Vec<&Value> = all
        .iter()
        .filter(|l| l["target"].as_str().unwrap_or("").starts_with("wasmtime"))
        .collect();
    assert!(wasi.is_empty(), "wasmtime lines: {wasi:#?}");
}
