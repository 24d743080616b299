//! The built-in `registry_blob` / `registry_tag` plugin against a real Distribution registry
//! (Debian's `docker-registry`): htpasswd Basic auth, the Bearer token flow behind a token
//! server, tags, Range reads, a registry that goes away and comes back, and ECR logins
//! against a fake ECR API; and `registry_blob` through the shared read-only conformance
//! suite (tests/conformance). Each test skips when docker-registry (or htpasswd, openssl) is
//! missing, unless SHOAL_REQUIRE_PEERS=1.

mod common;
mod conformance;
mod registry_peers;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use futures_util::StreamExt;
use registry_peers::{Auth, FakeEcr, Registry, SigningKey, TokenServer, misbehaving, seed};
use shoal_config::Backend as BackendConfig;
use shoal_host::plugin::{
    Backend, BackendError, ByteRange, ByteStream, PluginEngine, PluginLimits, WasmBackend,
};

fn engine() -> PluginEngine {
    PluginEngine::new(PluginLimits::default(), None).expect("engine")
}

fn backend(engine: &PluginEngine, yaml: &str, secrets: &[(&str, &str)]) -> WasmBackend {
    let config: BackendConfig = serde_yaml_ng::from_str(yaml).expect("backend yaml");
    let secrets: BTreeMap<String, String> = secrets
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    engine.backend(&config, secrets).expect("plugin loads")
}

/// A `registry_blob` or `registry_tag` block for a plain-HTTP registry at `addr`.
fn yaml(kind: &str, addr: std::net::SocketAddr, extra: &str) -> String {
    format!(
        "{kind}:\n  address: {addr}\n  timeout: 10s\n  security:\n    tls:\n      client:\n        disabled: true\n{extra}"
    )
}

fn basic(user: &str, password: &str) -> String {
    format!("    basic:\n      username: {user}\n      password: {password}\n")
}

fn peers(tools: &[&str]) -> bool {
    tools.iter().all(|t| common::require(t))
}

async fn read_all(mut body: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("body chunk"));
    }
    out
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

/// Seeds `repo` on an open registry in `dir`, then serves the same storage with `auth`.
async fn seeded_registry(
    dir: &std::path::Path,
    repo: &str,
    tags: &[&str],
    auth: &Auth,
) -> (Registry, registry_peers::Seeded) {
    let open = Registry::start(dir, 0, &Auth::Open);
    let seeded = seed(open.addr, repo, (1 << 20) + 123, tags).await;
    open.stop();
    (Registry::start(dir, 0, auth), seeded)
}

/// The read-only conformance suite every backend passes, on docker-registry: each blob it
/// seeds is pushed to the repository it reads (its namespace) over the Distribution API,
/// and named by its digest's hex, as the origin asks for blobs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_blob_passes_the_readable_conformance_suite() {
    if !peers(&["docker-registry"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), 0, &Auth::Open);
    let engine = engine();
    let blobs = backend(&engine, &yaml("registry_blob", registry.addr, ""), &[]);
    let client = reqwest::Client::new();
    let missing = registry_peers::digest(b"never pushed");
    let addr = registry.addr;
    conformance::readable(&blobs, hex(&missing), |content| {
        let client = client.clone();
        async move {
            registry_peers::push_blob(&client, addr, conformance::NAMESPACE, &content).await;
            hex(&registry_peers::digest(&content)).to_owned()
        }
    })
    .await;
    registry.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_through_htpasswd_basic_auth() {
    if !peers(&["docker-registry", "htpasswd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let auth = Auth::Htpasswd {
        user: "alice".into(),
        password: "wonderland".into(),
    };
    let (registry, s) = seeded_registry(dir.path(), "team/app", &["v1"], &auth).await;
    let engine = engine();
    let blobs = backend(
        &engine,
        &yaml(
            "registry_blob",
            registry.addr,
            &basic("alice", "wonderland"),
        ),
        &[],
    );

    let layer = hex(&s.layer_digest);
    assert_eq!(
        blobs.stat("team/app", layer).await.unwrap().size,
        s.layer.len() as u64
    );
    let whole = blobs.download("team/app", layer, None).await.unwrap();
    assert_eq!(whole.length, Some(s.layer.len() as u64));
    assert_eq!(read_all(whole.body).await, s.layer);
    // The prefixed form names the same blob.
    let prefixed = blobs
        .download("team/app", &s.layer_digest, None)
        .await
        .unwrap();
    assert_eq!(read_all(prefixed.body).await, s.layer);

    let range = ByteRange {
        offset: 1000,
        length: Some(500_000),
    };
    let part = blobs
        .download("team/app", layer, Some(range))
        .await
        .unwrap();
    assert_eq!(part.length, Some(500_000));
    assert_eq!(read_all(part.body).await, &s.layer[1000..501_000]);
    let tail = ByteRange {
        offset: s.layer.len() as u64 - 10,
        length: None,
    };
    let tail = blobs.download("team/app", layer, Some(tail)).await.unwrap();
    assert_eq!(read_all(tail.body).await, &s.layer[s.layer.len() - 10..]);

    // A manifest is not a blob to the registry, but it is to Kraken: the plugin falls back.
    let manifest = hex(&s.manifest_digest);
    assert_eq!(
        blobs.stat("team/app", manifest).await.unwrap().size,
        s.manifest.len() as u64
    );
    let m = blobs.download("team/app", manifest, None).await.unwrap();
    assert_eq!(read_all(m.body).await, s.manifest);
    let m_range = ByteRange {
        offset: 2,
        length: Some(10),
    };
    let m = blobs
        .download("team/app", manifest, Some(m_range))
        .await
        .unwrap();
    assert_eq!(read_all(m.body).await, &s.manifest[2..12]);

    let missing = "ab".repeat(32);
    for r in [
        blobs.stat("team/app", &missing).await.map(|_| ()),
        blobs.download("team/app", &missing, None).await.map(|_| ()),
    ] {
        assert!(matches!(r, Err(BackendError::NotFound { .. })), "{r:?}");
    }
    let bad = blobs.stat("team/app", "not-a-digest").await;
    assert!(matches!(bad, Err(BackendError::Invalid { .. })), "{bad:?}");

    // Read-only, and no blob listing in the registry API.
    let up = blobs
        .upload(
            "team/app",
            layer,
            1,
            Box::pin(futures_util::stream::empty()),
        )
        .await;
    match up {
        Err(BackendError::Invalid { message, .. }) => {
            assert!(message.contains("read-only"), "{message}")
        }
        other => panic!("upload: {other:?}"),
    }
    let del = blobs.delete("team/app", layer).await;
    assert!(matches!(del, Err(BackendError::Invalid { .. })), "{del:?}");
    let list = blobs.list("team/app", "", None, 10).await;
    assert!(
        matches!(list, Err(BackendError::Invalid { .. })),
        "{list:?}"
    );

    // Wrong password, and none at all: the registry's 401 becomes Unauthorized.
    for security in [basic("alice", "wrong"), String::new()] {
        let refused = backend(
            &engine,
            &yaml("registry_blob", registry.addr, &security),
            &[],
        );
        let r = refused.stat("team/app", layer).await;
        assert!(
            matches!(r, Err(BackendError::Unauthorized { .. })),
            "{security:?}: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_resolve_to_digests_and_list_in_pages() {
    if !peers(&["docker-registry", "htpasswd"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let auth = Auth::Htpasswd {
        user: "bob".into(),
        password: "builder".into(),
    };
    let tags = ["1.0", "1.1", "2.0", "latest", "nightly"];
    let (registry, s) = seeded_registry(dir.path(), "team/tool", &tags, &auth).await;
    let engine = engine();
    let tag = backend(
        &engine,
        &yaml("registry_tag", registry.addr, &basic("bob", "builder")),
        &[],
    );

    let resolved = tag
        .download("team/tool", "team/tool:latest", None)
        .await
        .unwrap();
    assert_eq!(resolved.length, Some(s.manifest_digest.len() as u64));
    assert_eq!(
        String::from_utf8(read_all(resolved.body).await).unwrap(),
        s.manifest_digest,
        "a tag downloads as its manifest digest, as Kraken's registry_tag does"
    );
    assert_eq!(
        tag.stat("team/tool", "team/tool:1.0").await.unwrap().size,
        s.manifest_digest.len() as u64
    );
    let missing = tag.download("team/tool", "team/tool:nope", None).await;
    assert!(
        matches!(missing, Err(BackendError::NotFound { .. })),
        "{missing:?}"
    );
    let bad = tag.stat("team/tool", "no-tag-here").await;
    assert!(matches!(bad, Err(BackendError::Invalid { .. })), "{bad:?}");

    let mut pages = Vec::new();
    let mut continuation = None;
    loop {
        let page = tag
            .list("team/tool", "", continuation.clone(), 2)
            .await
            .unwrap();
        assert!(page.names.len() <= 2, "{page:?}");
        pages.push(page.names.clone());
        continuation = page.continuation;
        if continuation.is_none() {
            break;
        }
        assert!(pages.len() < 10, "paging does not end: {pages:?}");
    }
    let all: Vec<String> = pages.concat();
    let want: Vec<String> = tags.iter().map(|t| format!("team/tool:{t}")).collect();
    assert_eq!(all, want);
    assert!(pages.len() >= 3, "{pages:?}");
    let filtered = tag
        .list("team/tool", "team/tool:1.", None, 100)
        .await
        .unwrap();
    assert_eq!(filtered.names, ["team/tool:1.0", "team/tool:1.1"]);
    assert_eq!(filtered.continuation, None);

    let wrong = backend(
        &engine,
        &yaml("registry_tag", registry.addr, &basic("bob", "nope")),
        &[],
    );
    let r = wrong.download("team/tool", "team/tool:latest", None).await;
    assert!(matches!(r, Err(BackendError::Unauthorized { .. })), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_from_a_token_server() {
    if !peers(&["docker-registry", "openssl"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(dir.path());
    let cert = key.cert.clone();
    let tokens = TokenServer::new(key, "carol", "s3cret");
    let requests = tokens.requests.clone();
    let realm = tokens.start().await;
    // The registry names its token server; the operator grants it like any other host.
    let token_host = realm
        .trim_start_matches("http://")
        .trim_end_matches("/token")
        .to_owned();
    let auth = Auth::Token { realm, cert };
    let open = Registry::start(dir.path(), 0, &Auth::Open);
    let public = seed(open.addr, "public/base", 300_000, &["v1"]).await;
    let private = seed(open.addr, "private/app", 200_000, &["v1"]).await;
    open.stop();
    let registry = Registry::start(dir.path(), 0, &auth);
    let engine = engine();
    let yaml = |kind: &str, security: &str| {
        format!(
            "{}  allowed_hosts: [\"{token_host}\"]\n",
            yaml(kind, registry.addr, security)
        )
    };

    // Anonymous: the token server grants pull on public/ only.
    let anonymous = backend(&engine, &yaml("registry_blob", ""), &[]);
    let body = anonymous
        .download("public/base", hex(&public.layer_digest), None)
        .await
        .unwrap();
    assert_eq!(read_all(body.body).await, public.layer);
    assert!(
        requests
            .lock()
            .unwrap()
            .contains(&("-".into(), "repository:public/base:pull".into())),
        "{:?}",
        requests.lock().unwrap()
    );
    let denied = anonymous
        .stat("private/app", hex(&private.layer_digest))
        .await;
    assert!(
        matches!(denied, Err(BackendError::Unauthorized { .. })),
        "{denied:?}"
    );

    // With credentials the token carries pull on the private repository too.
    let carol = backend(
        &engine,
        &yaml("registry_blob", &basic("carol", "s3cret")),
        &[],
    );
    let part = carol
        .download(
            "private/app",
            hex(&private.layer_digest),
            Some(ByteRange {
                offset: 10,
                length: Some(20),
            }),
        )
        .await
        .unwrap();
    assert_eq!(read_all(part.body).await, &private.layer[10..30]);
    assert!(
        requests
            .lock()
            .unwrap()
            .contains(&("carol".into(), "repository:private/app:pull".into()))
    );
    let tag = backend(
        &engine,
        &yaml("registry_tag", &basic("carol", "s3cret")),
        &[],
    );
    let digest = tag
        .download("private/app", "private/app:v1", None)
        .await
        .unwrap();
    assert_eq!(
        read_all(digest.body).await,
        private.manifest_digest.as_bytes()
    );

    // A wrong password: the token server says 401, the plugin says Unauthorized.
    let wrong = backend(
        &engine,
        &yaml("registry_blob", &basic("carol", "guess")),
        &[],
    );
    let r = wrong.stat("public/base", hex(&public.layer_digest)).await;
    match r {
        Err(BackendError::Unauthorized { message, .. }) => {
            assert!(message.contains("token server"), "{message}")
        }
        other => panic!("expected Unauthorized, got {other:?}"),
    }
    let missing = carol.stat("private/app", &"cd".repeat(32)).await;
    assert!(
        matches!(missing, Err(BackendError::NotFound { .. })),
        "{missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_is_down_is_unavailable_until_it_is_back() {
    if !peers(&["docker-registry"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), 0, &Auth::Open);
    let s = seed(registry.addr, "team/app", 1000, &["v1"]).await;
    let addr = registry.addr;
    registry.stop();

    let engine = engine();
    let blobs = backend(&engine, &yaml("registry_blob", addr, ""), &[]);
    let layer = hex(&s.layer_digest);
    match blobs.stat("team/app", layer).await {
        Err(BackendError::Unavailable { message, .. }) => {
            assert!(message.contains("gave up"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let back = Registry::start(dir.path(), addr.port(), &Auth::Open);
    assert_eq!(
        blobs.stat("team/app", layer).await.unwrap().size,
        s.layer.len() as u64
    );
    drop(back);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecr_login_signs_get_authorization_token() {
    if !peers(&["docker-registry", "htpasswd"]) {
        return;
    }
    let fake = FakeEcr {
        access_key: "AKIDSHOALTEST".into(),
        secret_key: "shoal/test+secret".into(),
        region: "eu-central-1".into(),
        password: "ecr-token-of-the-day".into(),
        calls: Default::default(),
        refused: Default::default(),
    };
    let calls = fake.calls.clone();
    let refused = fake.refused.clone();
    let ecr = fake.start().await;
    let dir = tempfile::tempdir().unwrap();
    let auth = Auth::Htpasswd {
        user: "AWS".into(),
        password: "ecr-token-of-the-day".into(),
    };
    let (registry, s) = seeded_registry(dir.path(), "ecr-images/app", &["v1"], &auth).await;
    let engine = engine();
    let ecr_yaml = |kind: &str| {
        yaml(
            kind,
            registry.addr,
            &format!(
                "    credsStore: ecr-login\n    ecr:\n      endpoint: http://{ecr}/\n      region: eu-central-1\n"
            ),
        )
    };
    let secrets = [
        ("aws_access_key_id", "AKIDSHOALTEST"),
        ("aws_secret_access_key", "shoal/test+secret"),
        ("aws_session_token", "session-token"),
    ];
    let tag = backend(&engine, &ecr_yaml("registry_tag"), &secrets);
    let digest = tag
        .download("ecr-images/app", "ecr-images/app:v1", None)
        .await
        .unwrap();
    assert_eq!(read_all(digest.body).await, s.manifest_digest.as_bytes());
    assert!(calls.load(Ordering::SeqCst) >= 1);
    assert_eq!(*refused.lock().unwrap(), Vec::<String>::new());
    let blobs = backend(&engine, &ecr_yaml("registry_blob"), &secrets);
    let body = blobs
        .download("ecr-images/app", hex(&s.layer_digest), None)
        .await
        .unwrap();
    assert_eq!(read_all(body.body).await, s.layer);

    // A wrong secret key: the fake refuses the signature, the plugin says Unauthorized.
    let wrong = backend(
        &engine,
        &ecr_yaml("registry_blob"),
        &[
            ("aws_access_key_id", "AKIDSHOALTEST"),
            ("aws_secret_access_key", "not-the-secret"),
        ],
    );
    let r = wrong.stat("ecr-images/app", hex(&s.layer_digest)).await;
    assert!(matches!(r, Err(BackendError::Unauthorized { .. })), "{r:?}");
    assert!(
        refused
            .lock()
            .unwrap()
            .iter()
            .any(|why| why.contains("signature")),
        "{:?}",
        refused.lock().unwrap()
    );
    // No AWS credentials at all: a clear Unauthorized before any request.
    let before = calls.load(Ordering::SeqCst);
    let none = backend(&engine, &ecr_yaml("registry_blob"), &[]);
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        match none.stat("ecr-images/app", hex(&s.layer_digest)).await {
            Err(BackendError::Unauthorized { message, .. }) => {
                assert!(message.contains("aws_access_key_id"), "{message}");
                assert_eq!(calls.load(Ordering::SeqCst), before);
            }
            other => panic!("expected Unauthorized, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_registries_map_to_clear_errors() {
    let fake = misbehaving::Fake::default();
    let (addr, cdn) = fake.start().await;
    let engine = engine();
    let digest = "ef".repeat(32);
    let blobs = backend(&engine, &yaml("registry_blob", addr, ""), &[]);

    match blobs.stat("busy", &digest).await {
        Err(BackendError::Throttled { message, .. }) => {
            assert!(
                message.contains("429") && message.contains("gave up"),
                "{message}"
            )
        }
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert_eq!(fake.hits("busy"), 4, "429 is retried, then reported");

    let flaky = blobs.download("flaky", &digest, None).await.unwrap();
    assert_eq!(read_all(flaky.body).await, b"finally");
    assert_eq!(fake.hits("flaky"), 3, "two 500s, then the answer");

    let range = ByteRange {
        offset: 1,
        length: Some(2),
    };
    let ignored = blobs.download("norange", &digest, Some(range)).await;
    assert!(
        matches!(ignored, Err(BackendError::Invalid { .. })),
        "a whole body for a range must not pass as the range: {ignored:?}"
    );

    // The redirect target must be granted like any host; the credentials stay with the
    // registry.
    let moved_yaml = format!(
        "{}  allowed_hosts: [\"{cdn}\"]\n",
        yaml("registry_blob", addr, &basic("u", "p"))
    );
    let moved = backend(&engine, &moved_yaml, &[]);
    let body = moved.download("moved", &digest, None).await.unwrap();
    assert_eq!(read_all(body.body).await, b"from the cdn");
    assert_eq!(*fake.cdn_auth.lock().unwrap(), [None]);
    let ungranted = backend(&engine, &yaml("registry_blob", addr, &basic("u", "p")), &[]);
    let denied = ungranted.download("moved", &digest, None).await;
    assert!(
        matches!(&denied, Err(BackendError::HostDenied { url, .. }) if url.contains("/blob")),
        "{denied:?}"
    );

    let tags = backend(&engine, &yaml("registry_tag", addr, ""), &[]);
    let computed = tags
        .download("nodigest", "nodigest:v1", None)
        .await
        .unwrap();
    assert_eq!(
        read_all(computed.body).await,
        registry_peers::digest(misbehaving::MANIFEST.as_bytes()).as_bytes()
    );
    let mut all = Vec::new();
    let mut continuation = None;
    let mut pages = 0;
    loop {
        let page = tags.list("paged", "", continuation, 2).await.unwrap();
        all.extend(page.names);
        pages += 1;
        continuation = page.continuation;
        if continuation.is_none() || pages > 10 {
            break;
        }
    }
    let want: Vec<String> = misbehaving::TAGS
        .iter()
        .map(|t| format!("paged:{t}"))
        .collect();
    assert_eq!(all, want);
    assert_eq!(pages, 3);
}
