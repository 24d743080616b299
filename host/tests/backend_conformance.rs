//! The backend conformance suite (tests/conformance) run against each built-in writable
//! backend: `fs` on a temporary folder and `s3` on a real moto server on 127.0.0.1; plus the
//! s3 plugin's failure modes (bad credentials, a server that is down, one that says slow
//! down).
//!
//! moto is `moto[server]` from PyPI (scripts/install-test-deps installs it). Without it the
//! s3 tests skip with a note, unless `SHOAL_REQUIRE_PEERS=1` makes that a failure.

mod common;
mod conformance;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::daemons::{Moto, MotoKeys};
use conformance::Writable;
use shoal_config::Backend as BackendConfig;
use shoal_host::plugin::{Backend, BackendError, PluginEngine, PluginLimits, WasmBackend};

const BUCKET: &str = "shoal-conformance";

fn engine() -> PluginEngine {
    PluginEngine::new(PluginLimits::default(), None).expect("engine")
}

fn load(engine: &PluginEngine, yaml: &str, secrets: BTreeMap<String, String>) -> WasmBackend {
    let config: BackendConfig = serde_yaml_ng::from_str(yaml).expect("backend yaml");
    engine.backend(&config, secrets).expect("plugin loads")
}

/// An `s3:` block for `endpoint`, with keys as the host grants them from `auth.s3`.
fn s3(engine: &PluginEngine, endpoint: &str, bucket: &str, keys: &MotoKeys) -> WasmBackend {
    s3_under(engine, endpoint, bucket, keys, "/shoal/root/")
}

fn s3_under(
    engine: &PluginEngine,
    endpoint: &str,
    bucket: &str,
    keys: &MotoKeys,
    root: &str,
) -> WasmBackend {
    let yaml = format!(
        "s3:\n  region: us-east-1\n  bucket: {bucket}\n  root_directory: \"{root}\"\n  \
         username: tester\n  endpoint: {endpoint}\n  disable_ssl: true\n  \
         force_path_style: true\n  upload_part_size: 16777216\n"
    );
    let secrets = BTreeMap::from([
        ("aws_access_key_id".to_owned(), keys.access_key_id.clone()),
        (
            "aws_secret_access_key".to_owned(),
            keys.secret_access_key.clone(),
        ),
    ]);
    load(engine, &yaml, secrets)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine();
    let fs = load(
        &engine,
        &format!("fs:\n  root: {}\n", dir.path().display()),
        BTreeMap::new(),
    );
    conformance::writable(&fs, Writable::default()).await;
}

/// The whole suite against moto. moto's signature checks stay off here: moto recomputes the
/// signature over the URL as werkzeug decoded it (`%2F`, `%2B`, `%25`, `%3D` and UTF-8
/// escapes come back as the characters), so names with those fail its check even when signed
/// as AWS specifies (the plugin's unit tests check AWS's documented examples). The next test
/// has moto verify every operation's signature with plain names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_passes_the_conformance_suite_on_moto() {
    if !Moto::available() {
        return;
    }
    let moto = Moto::start();
    let keys = moto.setup(BUCKET, false);
    let engine = engine();
    let backend = s3(&engine, &moto.endpoint(), BUCKET, &keys);
    let options = Writable {
        // 16 MiB parts (the config above): the big blob takes 7 parts, the racing
        // uploads 2 each.
        concurrent_blob: (16 << 20) + (1 << 20),
        ..Writable::default()
    };
    conformance::writable(&backend, options).await;
}

/// moto with its signature checks on: every operation signed with the key moto issued
/// passes, and a wrong secret or an unknown key id is `Unauthorized`, naming the plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_signatures_pass_moto_and_bad_credentials_are_unauthorized() {
    if !Moto::available() {
        return;
    }
    let moto = Moto::start();
    let keys = moto.setup(BUCKET, true);
    let engine = engine();

    let wrong_secret = MotoKeys {
        secret_access_key: format!("{}x", keys.secret_access_key),
        ..keys.clone()
    };
    let unknown_key = MotoKeys {
        access_key_id: "AKIAUNKNOWNKEY000000".to_owned(),
        ..keys.clone()
    };
    for (what, bad, code) in [
        ("a wrong secret", wrong_secret, "SignatureDoesNotMatch"),
        ("an unknown key id", unknown_key, "InvalidAccessKeyId"),
    ] {
        let backend = s3(&engine, &moto.endpoint(), BUCKET, &bad);
        // GET answers with an error document naming the code; HEAD has only the status.
        match backend.download("ns", "blob", None).await {
            Err(BackendError::Unauthorized { plugin, message }) => {
                assert_eq!(plugin, "s3", "{what}");
                assert!(message.contains(code), "{what}: {message}");
            }
            other => panic!("{what}: download gave {other:?}"),
        }
        let stat = backend.stat("ns", "blob").await;
        assert!(
            matches!(&stat, Err(BackendError::Unauthorized { plugin, .. }) if plugin == "s3"),
            "{what}: stat gave {stat:?}"
        );
        let list = backend.list("ns", "", None, 10).await;
        assert!(
            matches!(&list, Err(BackendError::Unauthorized { .. })),
            "{what}: list gave {list:?}"
        );
    }

    // The right keys pass moto's checks on every operation, multipart upload included: the
    // failures above were the keys'. No root directory, so no `/` in the list prefix.
    let good = s3_under(&engine, &moto.endpoint(), BUCKET, &keys, "");
    conformance::upload(&good, "blob", b"fine").await;
    assert_eq!(
        conformance::download(&good, "blob", None).await,
        b"fine".to_vec()
    );
    let size = (16 << 20) + 5;
    good.upload("ns", "parts", size, conformance::generated(7, size))
        .await
        .expect("multipart upload with good keys");
    assert_eq!(good.stat("ns", "parts").await.expect("stat").size, size);
    let range = shoal_host::plugin::ByteRange {
        offset: size - 10,
        length: None,
    };
    assert_eq!(
        conformance::download(&good, "parts", Some(range)).await,
        conformance::generate(7, size - 10, size)
    );
    assert_eq!(conformance::list_all(&good, "", 1).await, ["blob", "parts"]);
    good.delete("ns", "blob")
        .await
        .expect("delete with good keys");
    assert_eq!(conformance::list_all(&good, "", 10).await, ["parts"]);

    // No keys granted at all: refused before any request, naming the auth entry.
    let yaml = format!(
        "s3:\n  region: us-east-1\n  bucket: {BUCKET}\n  username: nobody\n  endpoint: {}\n  \
         force_path_style: true\n",
        moto.endpoint()
    );
    let none = load(&engine, &yaml, BTreeMap::new());
    match none.stat("ns", "blob").await {
        Err(BackendError::Unauthorized { message, .. }) => {
            assert!(message.contains("auth.s3.nobody"), "{message}")
        }
        other => panic!("no credentials: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_reports_a_server_that_is_down_and_recovers_when_it_is_back() {
    if !Moto::available() {
        return;
    }
    let mut moto = Moto::start();
    let keys = moto.setup(BUCKET, false);
    let engine = engine();
    let backend = s3(&engine, &moto.endpoint(), BUCKET, &keys);
    conformance::upload(&backend, "before", b"stored").await;

    moto.stop();
    for (op, result) in [
        ("stat", backend.stat("ns", "before").await.err()),
        (
            "download",
            backend.download("ns", "before", None).await.err(),
        ),
        ("list", backend.list("ns", "", None, 10).await.err()),
    ] {
        match result {
            Some(BackendError::Unavailable { plugin, message }) => {
                assert_eq!(plugin, "s3");
                // The plugin retried with backoff before it gave up.
                assert!(message.contains("gave up after 4 tries"), "{op}: {message}");
            }
            other => panic!("{op} with the server down: {other:?}"),
        }
    }
    let upload = backend
        .upload("ns", "while-down", 3, conformance::generated(1, 3))
        .await;
    assert!(
        matches!(upload, Err(BackendError::Unavailable { .. })),
        "upload with the server down: {upload:?}"
    );

    // Back (empty: moto keeps its state in memory): the same backend works at once.
    moto.restart();
    moto.setup(BUCKET, false);
    let after = backend.stat("ns", "before").await;
    assert!(
        matches!(after, Err(BackendError::NotFound { .. })),
        "stat once the server is back: {after:?}"
    );
    conformance::upload(&backend, "after", b"stored again").await;
    assert_eq!(
        conformance::download(&backend, "after", None).await,
        b"stored again".to_vec()
    );
}

/// A server that answers every request with 503 SlowDown, as S3 does under request-rate
/// limits: the plugin retries, then reports `Throttled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_reports_slow_down_as_throttled_after_retries() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async {
            let doc = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                       <Message>Please reduce your request rate.</Message></Error>";
            (StatusCode::SERVICE_UNAVAILABLE, doc).into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let engine = engine();
    let keys = MotoKeys {
        access_key_id: "AKIAEXAMPLE".into(),
        secret_access_key: "secret".into(),
    };
    let backend = s3(&engine, &format!("http://{addr}"), BUCKET, &keys);
    match backend.download("ns", "blob", None).await {
        Err(BackendError::Throttled { plugin, message }) => {
            assert_eq!(plugin, "s3");
            assert!(message.contains("SlowDown"), "{message}");
            assert!(message.contains("gave up after 4 tries"), "{message}");
        }
        other => panic!("download from a throttling server: {other:?}"),
    }
    assert_eq!(hits.load(Ordering::SeqCst), 4, "one try and three retries");
    let stat = backend.stat("ns", "blob").await;
    assert!(
        matches!(stat, Err(BackendError::Throttled { .. })),
        "stat (HEAD, no error document) from a throttling server: {stat:?}"
    );
    server.abort();
}
