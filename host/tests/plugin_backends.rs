//! The built-in `fs` and `http` plugins, driven through the native `Backend` trait: a round
//! trip against a temporary folder, and reads from a real HTTP server on 127.0.0.1:0.

use shoal_host::plugin;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use futures_util::StreamExt;
use plugin::{
    Backend, BackendError, ByteRange, ByteStream, PluginEngine, PluginLimits, WasmBackend,
};
use shoal_config::Backend as BackendConfig;

fn engine() -> PluginEngine {
    PluginEngine::new(PluginLimits::default(), None).expect("engine")
}

fn backend(engine: &PluginEngine, yaml: &str) -> WasmBackend {
    let config: BackendConfig = serde_yaml_ng::from_str(yaml).expect("backend yaml");
    engine
        .backend(&config, BTreeMap::new())
        .expect("plugin loads")
}

/// `data` as a stream of 64 KiB chunks, as an upload arrives from a client.
fn chunks(data: &[u8]) -> ByteStream {
    let parts: Vec<std::io::Result<bytes::Bytes>> = data
        .chunks(64 << 10)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    Box::pin(futures_util::stream::iter(parts))
}

async fn read_all(mut body: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("body chunk"));
    }
    out
}

/// Bytes that differ at every offset a bug could confuse.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_plugin_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine();
    let fs = backend(&engine, &format!("fs:\n  root: {}\n", dir.path().display()));

    let missing = fs.stat("ns", "blobs/nothing").await;
    assert!(
        matches!(missing, Err(BackendError::NotFound { .. })),
        "{missing:?}"
    );

    // Three chunks of the plugin's 1 MiB reads and a bit.
    let big = pattern((3 << 20) + 123);
    fs.upload("ns", "blobs/big", big.len() as u64, chunks(&big))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(dir.path().join("blobs/big")).unwrap(),
        big,
        "stored under the root as named"
    );
    assert_eq!(
        fs.stat("ns", "blobs/big").await.unwrap().size,
        big.len() as u64
    );

    let whole = fs.download("ns", "blobs/big", None).await.unwrap();
    assert_eq!(whole.length, Some(big.len() as u64));
    assert_eq!(read_all(whole.body).await, big);

    let range = ByteRange {
        offset: 1_000_000,
        length: Some(2_000_000),
    };
    let part = fs.download("ns", "blobs/big", Some(range)).await.unwrap();
    assert_eq!(part.length, Some(2_000_000));
    assert_eq!(read_all(part.body).await, &big[1_000_000..3_000_000]);

    // A range running past the end is cut at the end.
    let over = ByteRange {
        offset: 3_000_000,
        length: Some(1 << 30),
    };
    let over = fs.download("ns", "blobs/big", Some(over)).await.unwrap();
    assert_eq!(over.length, Some(big.len() as u64 - 3_000_000));
    assert_eq!(read_all(over.body).await, &big[3_000_000..]);

    let tail = ByteRange {
        offset: big.len() as u64 - 10,
        length: None,
    };
    let tail = fs.download("ns", "blobs/big", Some(tail)).await.unwrap();
    assert_eq!(read_all(tail.body).await, &big[big.len() - 10..]);

    let past = ByteRange {
        offset: big.len() as u64 + 1,
        length: None,
    };
    let past = fs.download("ns", "blobs/big", Some(past)).await;
    assert!(
        matches!(past, Err(BackendError::Invalid { .. })),
        "{past:?}"
    );

    for name in ["p/a", "p/b", "p/c", "q/x"] {
        fs.upload("ns", name, 1, chunks(b"x")).await.unwrap();
    }
    let first = fs.list("ns", "p/", None, 2).await.unwrap();
    assert_eq!(first.names, ["p/a", "p/b"]);
    let next = fs
        .list("ns", "p/", first.continuation.clone(), 2)
        .await
        .unwrap();
    assert_eq!(
        (next.names.as_slice(), next.continuation),
        (&["p/c".to_owned()][..], None)
    );
    let all = fs.list("ns", "", None, 100).await.unwrap();
    assert_eq!(all.names, ["blobs/big", "p/a", "p/b", "p/c", "q/x"]);

    fs.delete("ns", "p/a").await.unwrap();
    assert!(matches!(
        fs.stat("ns", "p/a").await,
        Err(BackendError::NotFound { .. })
    ));
    assert!(matches!(
        fs.delete("ns", "p/a").await,
        Err(BackendError::NotFound { .. })
    ));
    assert!(matches!(
        fs.download("ns", "p/a", None).await,
        Err(BackendError::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_plugin_refuses_bad_uploads_and_names() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine();
    let fs = backend(&engine, &format!("fs:\n  root: {}\n", dir.path().display()));

    let short = fs.upload("ns", "short", 10, chunks(b"12345")).await;
    assert!(
        matches!(short, Err(BackendError::Invalid { .. })),
        "{short:?}"
    );
    let long = fs.upload("ns", "long", 2, chunks(b"12345")).await;
    assert!(
        matches!(long, Err(BackendError::Invalid { .. })),
        "{long:?}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(
        left.is_empty(),
        "a failed upload left files behind: {left:?}"
    );

    for escape in ["../escape", "a/../../escape", "/etc/passwd"] {
        let r = fs.upload("ns", escape, 1, chunks(b"x")).await;
        assert!(
            matches!(r, Err(BackendError::Invalid { .. })),
            "{escape}: {r:?}"
        );
    }
    assert!(!dir.path().parent().unwrap().join("escape").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_plugin_names_files_by_name_path() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine();
    let yaml = format!(
        "fs:\n  root: {}\n  name_path: sharded_docker_blob\n",
        dir.path().display()
    );
    let fs = backend(&engine, &yaml);
    let hex = "ab".repeat(32);
    fs.upload("library/x", &hex, 3, chunks(b"abc"))
        .await
        .unwrap();
    let stored = dir
        .path()
        .join(format!("docker/registry/v2/blobs/sha256/ab/{hex}/data"));
    assert_eq!(std::fs::read(stored).unwrap(), b"abc");
    assert_eq!(
        fs.list("library/x", "", None, 10).await.unwrap().names,
        [hex]
    );
    let bad = fs.stat("library/x", "not-a-digest").await;
    assert!(matches!(bad, Err(BackendError::Invalid { .. })), "{bad:?}");
}

/// A blob server fixture: Range support, 404s, a blob that fails twice with 503 before it
/// answers, one that always fails, and PUT uploads. Counts requests per name.
#[derive(Clone, Default)]
struct Server {
    blobs: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
    total: Arc<AtomicUsize>,
}

impl Server {
    fn hit(&self, name: &str) -> usize {
        self.total.fetch_add(1, Ordering::SeqCst);
        let mut hits = self.hits.lock().unwrap();
        let n = hits.entry(name.to_owned()).or_default();
        *n += 1;
        *n
    }

    fn hits(&self, name: &str) -> usize {
        self.hits.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    async fn start(self) -> std::net::SocketAddr {
        let app = Router::new()
            .route("/blobs/{name}", get(serve_blob).head(serve_blob))
            .route("/uploads/{name}", put(take_upload))
            // Blobs are bigger than axum's default 2 MB body limit.
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }
}

async fn serve_blob(
    State(s): State<Server>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let n = s.hit(&name);
    if name == "down" || (name == "flaky" && n <= 2) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let data = if name == "flaky" {
        Some(b"finally".to_vec())
    } else {
        s.blobs.lock().unwrap().get(&name).cloned()
    };
    let Some(data) = data else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .map(|(a, b)| {
            let start: usize = a.parse().unwrap();
            let end: usize = if b.is_empty() {
                data.len() - 1
            } else {
                b.parse().unwrap()
            };
            (start, end.min(data.len() - 1))
        });
    match range {
        Some((start, end)) => {
            let len = data.len();
            let body = data[start..=end].to_vec();
            (
                StatusCode::PARTIAL_CONTENT,
                [
                    (header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}")),
                    (header::CONTENT_LENGTH, body.len().to_string()),
                ],
                body,
            )
                .into_response()
        }
        None => ([(header::CONTENT_LENGTH, data.len().to_string())], data).into_response(),
    }
}

async fn take_upload(State(s): State<Server>, Path(name): Path<String>, body: Bytes) -> StatusCode {
    s.hit(&name);
    s.blobs.lock().unwrap().insert(name, body.to_vec());
    StatusCode::CREATED
}

fn http_yaml(addr: std::net::SocketAddr) -> String {
    format!(
        "http:
  download_url: http://{addr}/blobs/%s
  upload_url: http://{addr}/uploads/%s
  timeout: 5s
  download_backoff:
    enabled: true
    initial_interval: 10ms
    max_interval: 40ms
    max_elapsed_time: 300ms
    multiplier: 2.0
"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_plugin_reads_blobs_and_ranges_from_a_real_server() {
    let server = Server::default();
    let big = pattern((2 << 20) + 7);
    server
        .blobs
        .lock()
        .unwrap()
        .insert("big".into(), big.clone());
    let addr = server.clone().start().await;
    let engine = engine();
    let http = backend(&engine, &http_yaml(addr));

    assert_eq!(http.stat("ns", "big").await.unwrap().size, big.len() as u64);
    let whole = http.download("ns", "big", None).await.unwrap();
    assert_eq!(whole.length, Some(big.len() as u64));
    assert_eq!(read_all(whole.body).await, big);

    let range = ByteRange {
        offset: 100,
        length: Some(1 << 20),
    };
    let part = http.download("ns", "big", Some(range)).await.unwrap();
    assert_eq!(part.length, Some(1 << 20));
    assert_eq!(read_all(part.body).await, &big[100..100 + (1 << 20)]);

    let open = ByteRange {
        offset: big.len() as u64 - 5,
        length: None,
    };
    let open = http.download("ns", "big", Some(open)).await.unwrap();
    assert_eq!(read_all(open.body).await, &big[big.len() - 5..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_plugin_maps_404_to_not_found_without_retrying() {
    let server = Server::default();
    let addr = server.clone().start().await;
    let engine = engine();
    let http = backend(&engine, &http_yaml(addr));
    let missing = http.download("ns", "missing", None).await;
    assert!(
        matches!(missing, Err(BackendError::NotFound { .. })),
        "{missing:?}"
    );
    assert!(matches!(
        http.stat("ns", "missing").await,
        Err(BackendError::NotFound { .. })
    ));
    assert_eq!(
        server.hits("missing"),
        2,
        "a 404 is final: one request per call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_plugin_retries_503_with_backoff_then_gives_up_clearly() {
    let server = Server::default();
    let addr = server.clone().start().await;
    let engine = engine();
    let http = backend(&engine, &http_yaml(addr));

    let flaky = http.download("ns", "flaky", None).await.unwrap();
    assert_eq!(read_all(flaky.body).await, b"finally");
    assert_eq!(server.hits("flaky"), 3, "two 503s, then the answer");

    let down = http.download("ns", "down", None).await;
    match down {
        Err(BackendError::Unavailable { plugin, message }) => {
            assert_eq!(plugin, "http");
            assert!(
                message.contains("503") && message.contains("gave up"),
                "{message}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // 10 + 20 + 40 + 40 + ... ms until 300 ms are spent: several tries, bounded.
    let tries = server.hits("down");
    assert!((3..=12).contains(&tries), "{tries} tries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_plugin_uploads_by_splicing_the_host_stream() {
    let server = Server::default();
    let addr = server.clone().start().await;
    let engine = engine();
    let http = backend(&engine, &http_yaml(addr));
    let data = pattern((3 << 20) + 11);
    http.upload("ns", "pushed", data.len() as u64, chunks(&data))
        .await
        .unwrap();
    assert_eq!(server.blobs.lock().unwrap().get("pushed"), Some(&data));

    let listed = http.list("ns", "", None, 10).await;
    assert!(
        matches!(listed, Err(BackendError::Invalid { .. })),
        "{listed:?}"
    );
    let deleted = http.delete("ns", "pushed").await;
    assert!(
        matches!(deleted, Err(BackendError::Invalid { .. })),
        "{deleted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_plugin_without_upload_url_is_read_only() {
    let server = Server::default();
    let addr = server.clone().start().await;
    let engine = engine();
    let yaml = format!("http:\n  download_url: http://{addr}/blobs/%s\n");
    let http = backend(&engine, &yaml);
    let r = http.upload("ns", "x", 1, chunks(b"x")).await;
    assert!(matches!(r, Err(BackendError::Invalid { .. })), "{r:?}");
    assert_eq!(server.total.load(Ordering::SeqCst), 0);
}

/// A server that accepts connections and never answers: only the backend's `timeout` ends a
/// request to it. Each backend kind with an HTTP `timeout` gives up with an error that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_and_registry_backends_give_up_on_a_silent_upstream_after_their_timeout() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            open.push(socket);
        }
    });
    let engine = engine();
    let security = "  security:\n    tls:\n      client:\n        disabled: true\n";
    let digest = format!("sha256:{}", "ab".repeat(32));
    for yaml in [
        format!("http:\n  download_url: http://{addr}/blobs/%s\n  timeout: 1s\n"),
        format!("registry_blob:\n  address: {addr}\n  timeout: 1s\n{security}"),
        format!("registry_tag:\n  address: {addr}\n  timeout: 1s\n{security}"),
    ] {
        let b = backend(&engine, &yaml);
        let name = if yaml.starts_with("registry_tag") {
            "library/x:latest"
        } else {
            &digest
        };
        // The guard only keeps a broken build from hanging the suite; the timeout is 1s.
        let outcome = tokio::time::timeout(
            std::time::Duration::from_secs(60),
            b.stat("library/x", name),
        )
        .await
        .unwrap_or_else(|_| panic!("{yaml}: still waiting after 60s"));
        let err = outcome
            .expect_err("a silent upstream is an error")
            .to_string();
        assert!(
            err.to_lowercase().contains("timeout") || err.contains("timed out"),
            "{yaml}: {err}"
        );
    }
    held.abort();
}
