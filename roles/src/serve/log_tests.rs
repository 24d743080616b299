//! The request log and the request id, read from a JSON subscriber that writes into a buffer.
//! Each test runs on one thread (tokio's current-thread runtime), so the subscriber set for
//! that thread sees the server's lines as well as the client's.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, put};
use serde_json::Value;
use shoal_registry::{LocalStore, Registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Log output, shared with the subscriber.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    /// Every line so far, parsed.
    fn lines(&self) -> Vec<Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// The request lines so far.
    fn requests(&self) -> Vec<Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["target"] == log::REQUEST_TARGET)
            .collect()
    }

    /// Waits (up to 10 s) for the request line with `id`: it is written once the response has
    /// been handed to the connection, which can be just after the client has read it.
    async fn request(&self, id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found: Vec<Value> = self
                .requests()
                .into_iter()
                .filter(|l| l["request_id"] == id)
                .collect();
            match found.len() {
                0 if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                1 => return found.into_iter().next().unwrap(),
                n => panic!("{n} request lines for {id}: {:?}", self.lines()),
            }
        }
    }
}

/// Sets a JSON subscriber writing into the returned buffer for this thread, as
/// `log.format: json` does for the process.
fn capture() -> (Buffer, tracing::subscriber::DefaultGuard) {
    let buffer = Buffer::default();
    let sink = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || sink.clone())
        .finish();
    (buffer, tracing::subscriber::set_default(subscriber))
}

/// A registry over an empty store, and a role-style router beside it.
async fn app(dir: &std::path::Path) -> Router {
    let store = LocalStore::open(dir.join("store")).await.unwrap();
    let roles = Router::new()
        .route(
            "/namespace/{ns}/blobs/{digest}",
            put(|body: axum::body::Bytes| async move {
                tracing::warn!("inside the handler");
                body.len().to_string()
            }),
        )
        .route("/mib/{n}", get(mebibytes));
    shoal_registry::router(Arc::new(Registry::new(store))).merge(roles)
}

/// `n` MiB in 64 KiB chunks with its length, as a blob streams.
async fn mebibytes(
    axum::extract::Path(n): axum::extract::Path<usize>,
) -> impl axum::response::IntoResponse {
    let chunk = bytes::Bytes::from(vec![7u8; 64 << 10]);
    let chunks = std::iter::repeat_n(chunk, n * 16).map(Ok::<_, io::Error>);
    (
        [(axum::http::header::CONTENT_LENGTH, (n << 20).to_string())],
        axum::body::Body::from_stream(futures_util::stream::iter(chunks)),
    )
}

async fn start(router: Router, options: ServeOptions) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { serve(listener, router, &options, std::future::pending()).await });
    addr
}

fn id_of(r: &reqwest::Response) -> String {
    r.headers()[X_REQUEST_ID].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_oci_error_is_one_line_with_route_fields_code_and_the_id_of_the_header() {
    let (logs, _guard) = capture();
    let dir = tempfile::tempdir().unwrap();
    let addr = start(app(dir.path()).await, ServeOptions::default()).await;
    let http = reqwest::Client::new();
    let r = http
        .get(format!("http://{addr}/v2/library/alpine/manifests/3.19"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let id = id_of(&r);
    assert_eq!(id.len(), 16, "a generated id: {id}");
    let body = r.bytes().await.unwrap();
    let line = logs.request(&id).await;
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["message"], "request");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["route"], "/v2/{name}/manifests/{reference}");
    assert_eq!(line["repository"], "library/alpine");
    assert_eq!(line["tag"], "3.19");
    assert_eq!(line["status"], 404);
    assert_eq!(line["error"], "MANIFEST_UNKNOWN");
    assert_eq!(line["bytes_in"], 0);
    assert_eq!(line["bytes_out"], body.len() as u64);
    assert!(line["duration_ms"].as_f64().unwrap() >= 0.0, "{line}");
    assert!(
        line["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{line}"
    );
    assert!(
        line.get("digest").is_none() && line.get("aborted").is_none(),
        "{line}"
    );

    // A blob by digest names the digest; a success has no error code.
    let r = http
        .head(format!("http://{addr}/v2/library/alpine/blobs/{D}"))
        .send()
        .await
        .unwrap();
    let line = logs.request(&id_of(&r)).await;
    assert_eq!(line["route"], "/v2/{name}/blobs/{digest}");
    assert_eq!(line["digest"], D);
    assert_eq!(line["error"], "BLOB_UNKNOWN");
    assert!(
        line.get("aborted").is_none(),
        "a HEAD has no body to send: {line}"
    );
}

#[tokio::test]
async fn a_clients_id_is_kept_and_marks_the_handlers_own_lines() {
    let (logs, _guard) = capture();
    let dir = tempfile::tempdir().unwrap();
    let addr = start(app(dir.path()).await, ServeOptions::default()).await;
    let r = reqwest::Client::new()
        .put(format!("http://{addr}/namespace/team%2Fapp/blobs/{D}"))
        .header("x-request-id", "ci-run-42")
        .body(vec![1u8; 3000])
        .send()
        .await
        .unwrap();
    assert_eq!(id_of(&r), "ci-run-42");
    assert_eq!(r.text().await.unwrap(), "3000");
    let line = logs.request("ci-run-42").await;
    assert_eq!(line["route"], "/namespace/{ns}/blobs/{digest}");
    assert_eq!(line["repository"], "team/app");
    assert_eq!(line["digest"], D);
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_in"], 3000);
    assert_eq!(line["bytes_out"], 4);
    assert!(line.get("error").is_none(), "{line}");
    let inside: Vec<Value> = logs
        .lines()
        .into_iter()
        .filter(|l| l["message"] == "inside the handler")
        .collect();
    assert_eq!(inside.len(), 1, "{:?}", logs.lines());
    assert_eq!(inside[0]["span"]["request_id"], "ci-run-42");

    // An id that could forge a log line is replaced.
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/v2/"))
        .header("x-request-id", "a\" forged=1")
        .send()
        .await
        .unwrap();
    let id = id_of(&r);
    assert_ne!(id, "a\" forged=1");
    assert_eq!(logs.request(&id).await["route"], "/v2/");
}

#[tokio::test]
async fn refusals_unknown_paths_and_probes() {
    let (logs, _guard) = capture();
    let dir = tempfile::tempdir().unwrap();
    let router = app(dir.path()).await;
    let http = reqwest::Client::new();

    let addr = start(
        router.clone(),
        ServeOptions::default().allowing(Some(vec!["10.0.0.0/8".parse().unwrap()])),
    )
    .await;
    let r = http
        .get(format!("http://{addr}/v2/a/tags/list"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let line = logs.request(&id_of(&r)).await;
    assert_eq!(
        (line["status"].as_u64(), line["error"].as_str()),
        (Some(403), Some("DENIED"))
    );
    assert_eq!(line["repository"], "a");

    let addr = start(router, ServeOptions::default()).await;
    let r = http
        .get(format!("http://{addr}/nowhere?x=1"))
        .send()
        .await
        .unwrap();
    let line = logs.request(&id_of(&r)).await;
    assert_eq!(line["status"], 404);
    assert_eq!(line["path"], "/nowhere", "the query is not logged: {line}");
    assert!(line.get("route").is_none(), "{line}");

    // A successful probe is a debug line; the request lines of the others are info.
    let r = http
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap();
    let line = logs.request(&id_of(&r)).await;
    assert_eq!(
        (line["level"].as_str(), line["route"].as_str()),
        (Some("DEBUG"), Some("/health"))
    );
}

#[tokio::test]
async fn a_response_the_client_stops_reading_is_logged_as_aborted() {
    let (logs, _guard) = capture();
    let dir = tempfile::tempdir().unwrap();
    let addr = start(app(dir.path()).await, ServeOptions::default()).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /mib/64 HTTP/1.1\r\nhost: t\r\nx-request-id: gone\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 64];
    conn.read_exact(&mut head).await.unwrap();
    // Closed with unread bytes, the connection is reset: the server's next writes fail.
    drop(conn);
    let line = logs.request("gone").await;
    assert_eq!(line["status"], 200);
    assert_eq!(line["aborted"], true);
    assert!(line["bytes_out"].as_u64().unwrap() < 64 << 20, "{line}");

    // Read whole, the same response is not.
    let r = reqwest::get(format!("http://{addr}/mib/1")).await.unwrap();
    let id = id_of(&r);
    assert_eq!(r.bytes().await.unwrap().len(), 1 << 20);
    let line = logs.request(&id).await;
    assert_eq!(line["bytes_out"], 1 << 20);
    assert!(line.get("aborted").is_none(), "{line}");
}

#[tokio::test]
async fn the_text_line_holds_the_same_fields() {
    let buffer = Buffer::default();
    let sink = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let dir = tempfile::tempdir().unwrap();
    let addr = start(app(dir.path()).await, ServeOptions::default()).await;
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/v2/library/alpine/manifests/3.19"))
        .header("x-request-id", "text-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        if let Some(line) = text.lines().find(|l| l.contains("shoal::request")) {
            break line.to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request line: {text}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    for field in [
        " INFO shoal::request: request method=GET route=",
        "route=\"/v2/{name}/manifests/{reference}\"",
        "repository=\"library/alpine\"",
        "tag=\"3.19\"",
        "status=404",
        "error=\"MANIFEST_UNKNOWN\"",
        "request_id=\"text-1\"",
        "client=127.0.0.1:",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
}
