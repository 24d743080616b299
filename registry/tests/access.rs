//! Access control in front of the registry API, driven in-process through
//! `tower::ServiceExt::oneshot`: challenges, Basic and bearer credentials, the token endpoint,
//! anonymous pull, mounts, and the login throttle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use http_body_util::BodyExt;
use shoal_config::{AccessConfig, HtpasswdUsers, NamespacePattern, TokenConfig};
use shoal_registry::access::scope::AccessEntry;
use shoal_registry::access::token::TokenKey;
use shoal_registry::{Access, Digest, LocalStore, Registry};
use tower::ServiceExt;

struct Server {
    _dir: tempfile::TempDir,
    app: Router,
    /// `access.token.expiry`, in seconds: what `/token` answers as `expires_in`.
    expiry: u64,
}

struct Resp {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    fn code(&self) -> String {
        self.json()["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

const CLIENT: &str = "127.0.0.1:40000";

/// A registry behind access control with users alice (secret) and bob (hunter2), hashed at
/// bcrypt's least cost so the tests stay quick.
async fn server(tweak: impl FnOnce(&mut AccessConfig)) -> Server {
    let mut users = HtpasswdUsers::new();
    users.insert("alice".into(), bcrypt::hash("secret", 4).unwrap());
    users.insert("bob".into(), bcrypt::hash("hunter2", 4).unwrap());
    let mut config = AccessConfig::default();
    config.token.service = "test-registry".into();
    config.anonymous_pull = vec![NamespacePattern::new("public/.*").unwrap()];
    tweak(&mut config);
    let access = Access::new(users, vec![9; 32], &config);
    serve(access, &config).await
}

/// A registry of its own behind `access` (built from `config`).
async fn serve(access: Access, config: &AccessConfig) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).await.unwrap();
    let app = shoal_registry::protect(
        shoal_registry::router(Arc::new(Registry::new(store))),
        Arc::new(access),
    );
    Server {
        _dir: dir,
        app,
        expiry: config.token.expiry.get().as_secs(),
    }
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

impl Server {
    async fn call_from(
        &self,
        client: &str,
        method: Method,
        uri: &str,
        auth: Option<&str>,
        body: Vec<u8>,
    ) -> Resp {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "registry.test:5000");
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let mut req = req.body(Body::from(body)).unwrap();
        let addr: SocketAddr = client.parse().unwrap();
        req.extensions_mut().insert(ConnectInfo(addr));
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        Resp {
            status,
            headers,
            body,
        }
    }

    async fn call(&self, method: Method, uri: &str, auth: Option<&str>, body: Vec<u8>) -> Resp {
        self.call_from(CLIENT, method, uri, auth, body).await
    }

    /// A token from `GET /token` for `scopes`, with Basic credentials or none.
    async fn token(&self, auth: Option<&str>, scopes: &[&str]) -> String {
        let mut uri = "/token?service=test-registry&client_id=test".to_owned();
        for s in scopes {
            uri.push_str(&format!(
                "&scope={}",
                s.replace(':', "%3A").replace('/', "%2F")
            ));
        }
        let r = self.call(Method::GET, &uri, auth, vec![]).await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        let json = r.json();
        assert_eq!(json["token"], json["access_token"]);
        assert_eq!(json["expires_in"], self.expiry);
        assert!(json["issued_at"].as_str().unwrap().ends_with('Z'));
        json["token"].as_str().unwrap().to_owned()
    }

    /// Pushes a blob as alice, monolithically.
    async fn push_blob(&self, repo: &str, data: &[u8]) -> Digest {
        let d = Digest::sha256_of(data);
        let r = self
            .call(
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={d}"),
                Some(&basic("alice", "secret")),
                data.to_vec(),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::CREATED,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        d
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn anonymous_callers_get_the_challenge_docker_expects() {
    let s = server(|_| {}).await;
    let r = s.call(Method::GET, "/v2/", None, vec![]).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "UNAUTHORIZED");
    assert_eq!(
        r.header("www-authenticate"),
        r#"Bearer realm="http://registry.test:5000/token",service="test-registry""#
    );
    assert_eq!(r.header("docker-distribution-api-version"), "registry/2.0");

    let r = s
        .call(Method::POST, "/v2/team/app/blobs/uploads/", None, vec![])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.header("www-authenticate"),
        r#"Bearer realm="http://registry.test:5000/token",service="test-registry",scope="repository:team/app:pull,push""#
    );
    assert_eq!(
        r.json()["errors"][0]["detail"],
        serde_json::json!([
            {"Type": "repository", "Name": "team/app", "Action": "pull"},
            {"Type": "repository", "Name": "team/app", "Action": "push"},
        ])
    );
    let r = s
        .call(Method::DELETE, "/v2/team/app/manifests/v1", None, vec![])
        .await;
    assert!(
        r.header("www-authenticate")
            .contains(r#"scope="repository:team/app:delete""#)
    );
    let r = s.call(Method::GET, "/v2/_catalog", None, vec![]).await;
    assert!(
        r.header("www-authenticate")
            .contains(r#"scope="registry:catalog:*""#)
    );
    // Paths outside the API are not open either; /health is.
    assert_eq!(
        s.call(Method::GET, "/v2/x/unknown/y", None, vec![])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let r = s.call(Method::GET, "/health", None, vec![]).await;
    assert_eq!((r.status, r.body.as_slice()), (StatusCode::OK, &b"ok"[..]));
}

#[tokio::test]
async fn a_configured_realm_is_used_as_written() {
    let s = server(|c| c.token.realm = Some("https://auth.example/token".into())).await;
    let r = s.call(Method::GET, "/v2/", None, vec![]).await;
    assert!(
        r.header("www-authenticate")
            .starts_with(r#"Bearer realm="https://auth.example/token""#),
        "{}",
        r.header("www-authenticate")
    );
}

#[tokio::test]
async fn basic_credentials_push_and_wrong_ones_are_refused() {
    let s = server(|_| {}).await;
    let d = s.push_blob("team/app", b"layer").await;
    let r = s
        .call(
            Method::GET,
            &format!("/v2/team/app/blobs/{d}"),
            Some(&basic("bob", "hunter2")),
            vec![],
        )
        .await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (StatusCode::OK, &b"layer"[..])
    );
    for auth in [
        basic("alice", "wrong"),
        basic("mallory", "secret"),
        "Basic !!!".into(),
        "Digest x".into(),
    ] {
        let r = s.call(Method::GET, "/v2/", Some(&auth), vec![]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{auth}");
        assert!(
            r.header("www-authenticate").starts_with("Bearer realm="),
            "{auth}"
        );
    }
}

#[tokio::test]
async fn a_pull_token_cannot_push() {
    let s = server(|_| {}).await;
    let d = s.push_blob("team/app", b"layer").await;
    let token = s
        .token(
            Some(&basic("alice", "secret")),
            &["repository:team/app:pull"],
        )
        .await;
    let auth = bearer(&token);
    assert_eq!(
        s.call(Method::GET, "/v2/", Some(&auth), vec![])
            .await
            .status,
        StatusCode::OK
    );
    let r = s
        .call(
            Method::GET,
            &format!("/v2/team/app/blobs/{d}"),
            Some(&auth),
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .call(
            Method::POST,
            "/v2/team/app/blobs/uploads/",
            Some(&auth),
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.code(), "UNAUTHORIZED");
    assert!(
        r.header("www-authenticate")
            .ends_with(r#",scope="repository:team/app:pull,push",error="insufficient_scope""#),
        "{}",
        r.header("www-authenticate")
    );
    // Nor pull another repository, nor delete, nor list the catalog.
    let r = s
        .call(
            Method::GET,
            &format!("/v2/other/blobs/{d}"),
            Some(&auth),
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = s
        .call(
            Method::DELETE,
            &format!("/v2/team/app/blobs/{d}"),
            Some(&auth),
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.call(Method::GET, "/v2/_catalog", Some(&auth), vec![])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // A push token pushes.
    let token = s
        .token(
            Some(&basic("alice", "secret")),
            &["repository:team/app:pull,push", "registry:catalog:*"],
        )
        .await;
    let data = b"pushed with a token".to_vec();
    let digest = Digest::sha256_of(&data);
    let r = s
        .call(
            Method::POST,
            &format!("/v2/team/app/blobs/uploads/?digest={digest}"),
            Some(&bearer(&token)),
            data,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = s
        .call(Method::GET, "/v2/_catalog", Some(&bearer(&token)), vec![])
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn tampered_and_foreign_tokens_are_invalid() {
    let s = server(|_| {}).await;
    let token = s
        .token(Some(&basic("alice", "secret")), &["repository:a:pull"])
        .await;
    let mut forged = token.clone().into_bytes();
    let at = forged.len() / 2;
    forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    // Another registry's key signs tokens this one refuses, for the same service.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let everything = vec![AccessEntry {
        kind: "repository".into(),
        name: "a".into(),
        actions: vec!["pull".into(), "push".into()],
    }];
    let foreign =
        TokenKey::new(vec![1; 32], "test-registry").issue("alice", everything.clone(), now, 300);
    // And this registry's own key, with an expired token.
    let expired =
        TokenKey::new(vec![9; 32], "test-registry").issue("alice", everything, now - 600, 300);
    for bad in [forged.as_str(), &foreign, &expired, "not-a-token", ""] {
        let r = s
            .call(Method::GET, "/v2/a/tags/list", Some(&bearer(bad)), vec![])
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert!(
            r.header("www-authenticate")
                .ends_with(r#"error="invalid_token""#),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn anonymous_pull_is_allowed_only_where_listed() {
    let s = server(|_| {}).await;
    let d = s.push_blob("public/app", b"open layer").await;
    s.push_blob("private/app", b"closed layer").await;
    // Straight, without a token.
    let r = s
        .call(
            Method::GET,
            &format!("/v2/public/app/blobs/{d}"),
            None,
            vec![],
        )
        .await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (StatusCode::OK, &b"open layer"[..])
    );
    let r = s
        .call(
            Method::GET,
            &format!("/v2/private/app/blobs/{d}"),
            None,
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // But not push, even there.
    let r = s
        .call(Method::POST, "/v2/public/app/blobs/uploads/", None, vec![])
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Through the token flow, as docker does it: the token holds only what may be had.
    let token = s
        .token(
            None,
            &[
                "repository:public/app:pull,push",
                "repository:private/app:pull",
                "registry:catalog:*",
            ],
        )
        .await;
    let auth = bearer(&token);
    assert_eq!(
        s.call(Method::GET, "/v2/", Some(&auth), vec![])
            .await
            .status,
        StatusCode::OK
    );
    let r = s
        .call(
            Method::GET,
            &format!("/v2/public/app/blobs/{d}"),
            Some(&auth),
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = s
        .call(
            Method::GET,
            "/v2/private/app/tags/list",
            Some(&auth),
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = s
        .call(
            Method::POST,
            "/v2/public/app/blobs/uploads/",
            Some(&auth),
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        s.call(Method::GET, "/v2/_catalog", Some(&auth), vec![])
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_mount_needs_pull_on_its_source() {
    let s = server(|_| {}).await;
    let d = s.push_blob("src/app", b"shared layer").await;
    let mount = format!("/v2/dst/app/blobs/uploads/?mount={d}&from=src%2Fapp");
    // With pull on the source, the blob is mounted: 201.
    let both = s
        .token(
            Some(&basic("alice", "secret")),
            &["repository:dst/app:pull,push", "repository:src/app:pull"],
        )
        .await;
    let r = s
        .call(Method::POST, &mount, Some(&bearer(&both)), vec![])
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    // Without it, a plain upload session starts: 202, and nothing is linked.
    let only_dst = s
        .token(
            Some(&basic("alice", "secret")),
            &["repository:other/app:pull,push"],
        )
        .await;
    let r = s
        .call(
            Method::POST,
            &mount.replace("dst/app", "other/app"),
            Some(&bearer(&only_dst)),
            vec![],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::ACCEPTED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let r = s
        .call(
            Method::HEAD,
            &format!("/v2/other/app/blobs/{d}"),
            Some(&basic("alice", "secret")),
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_oauth_form_gives_a_token_and_refresh_grants_are_refused() {
    let s = server(|_| {}).await;
    let form = "grant_type=password&username=alice&password=secret&service=test-registry&client_id=containerd-client&scope=repository%3Ateam%2Fapp%3Apull%2Cpush";
    let r = s
        .call(Method::POST, "/token", None, form.as_bytes().to_vec())
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let json = r.json();
    assert_eq!(json["scope"], "repository:team/app:pull,push");
    let token = json["access_token"].as_str().unwrap();
    let r = s
        .call(
            Method::POST,
            "/v2/team/app/blobs/uploads/",
            Some(&bearer(token)),
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);

    let r = s
        .call(
            Method::POST,
            "/token",
            None,
            b"grant_type=refresh_token&refresh_token=x".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.json()["error"], "unsupported_grant_type");
    let r = s
        .call(
            Method::POST,
            "/token",
            None,
            b"grant_type=password&username=alice&password=nope".to_vec(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = s
        .call(
            Method::GET,
            "/token?scope=repository%3Aa%3Apull",
            Some(&basic("alice", "nope")),
            vec![],
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "UNAUTHORIZED")
    );
}

#[tokio::test]
async fn failed_logins_are_throttled_per_client() {
    let s = server(|c| c.max_failed_logins = 5).await;
    let wrong = basic("alice", "wrong");
    let right = basic("alice", "secret");
    for i in 0..5 {
        let r = s.call(Method::GET, "/v2/", Some(&wrong), vec![]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // The token endpoint and the API share the count, and the right password does not help.
    for (uri, auth) in [("/v2/", &wrong), ("/v2/", &right), ("/token", &right)] {
        let r = s.call(Method::GET, uri, Some(auth), vec![]).await;
        assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{uri}");
        assert_eq!(r.code(), "TOOMANYREQUESTS");
        let retry: u64 = r.header("retry-after").parse().unwrap();
        assert!((1..=60).contains(&retry), "{retry}");
    }
    // Another client, and bearer tokens issued earlier, are not affected.
    let r = s
        .call_from("127.0.0.2:40000", Method::GET, "/v2/", Some(&right), vec![])
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn logins_sent_at_once_are_counted_before_they_are_checked() {
    let s = Arc::new(server(|c| c.max_failed_logins = 10).await);
    let wrong = basic("bob", "guess");
    let mut calls = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let s = Arc::clone(&s);
        let wrong = wrong.clone();
        calls.spawn(async move {
            s.call(Method::GET, "/v2/", Some(&wrong), vec![])
                .await
                .status
        });
    }
    let statuses: Vec<StatusCode> = calls.join_all().await;
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let throttled = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!((checked, throttled), (10, 90));
}

/// Calls `call` every 100 ms until it answers `want`; panics saying `what` after `within`.
async fn until_status<F, Fut>(within: Duration, what: &str, want: StatusCode, mut call: F) -> Resp
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Resp>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let r = call().await;
        if r.status == want {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {} after {within:?}: {what}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn token_expiry_is_the_lifetime_of_issued_tokens() {
    // `expires_in` and the token's own claims say the configured lifetime.
    let s = server(|c| c.token.expiry = Duration::from_secs(90).into()).await;
    let token = s
        .token(Some(&basic("alice", "secret")), &["repository:a:pull"])
        .await;
    let claims = TokenKey::new(vec![9; 32], "test-registry")
        .verify(&token, unix_now())
        .unwrap();
    assert_eq!(claims.exp - claims.iat, 90);

    // A token of 2s (below the 60s `config check` asks for, which Access::new does not
    // enforce) works, then is refused once its expiry has passed.
    let s = server(|c| c.token.expiry = Duration::from_secs(2).into()).await;
    let token = s
        .token(Some(&basic("alice", "secret")), &["repository:a:pull"])
        .await;
    let auth = bearer(&token);
    let r = s.call(Method::GET, "/v2/", Some(&auth), vec![]).await;
    assert_eq!(r.status, StatusCode::OK, "a fresh token was refused");
    let r = until_status(
        Duration::from_secs(15),
        "a token with expiry 2s is refused",
        StatusCode::UNAUTHORIZED,
        || s.call(Method::GET, "/v2/", Some(&auth), vec![]),
    )
    .await;
    assert!(
        r.header("www-authenticate")
            .ends_with(r#"error="invalid_token""#),
        "{}",
        r.header("www-authenticate")
    );
}

/// Two registries loaded from one config, as after a restart or beside a replica.
async fn two_replicas(dir: &std::path::Path, key_file: Option<std::path::PathBuf>) -> [Server; 2] {
    let htpasswd = dir.join("htpasswd");
    let line = format!("alice:{}\n", bcrypt::hash("secret", 4).unwrap());
    std::fs::write(&htpasswd, line).unwrap();
    let config = AccessConfig {
        htpasswd: Some(htpasswd),
        token: TokenConfig {
            service: "test-registry".into(),
            key_file,
            ..TokenConfig::default()
        },
        ..AccessConfig::default()
    };
    let load = || Access::load(&config).unwrap().expect("htpasswd is set");
    [serve(load(), &config).await, serve(load(), &config).await]
}

#[tokio::test]
async fn a_token_key_file_makes_tokens_outlive_the_process_that_issued_them() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("token.key");
    std::fs::write(&key_file, [0x5c; 32]).unwrap();
    let alice = basic("alice", "secret");

    // With key_file: what one issued, the other accepts.
    let [first, second] = two_replicas(dir.path(), Some(key_file)).await;
    let token = first.token(Some(&alice), &["repository:a:pull"]).await;
    let r = second
        .call(Method::GET, "/v2/", Some(&bearer(&token)), vec![])
        .await;
    assert_eq!(r.status, StatusCode::OK, "a token signed with key_file");

    // Without: each process signs with a random key of its own.
    let [first, second] = two_replicas(dir.path(), None).await;
    let token = first.token(Some(&alice), &["repository:a:pull"]).await;
    let r = first
        .call(Method::GET, "/v2/", Some(&bearer(&token)), vec![])
        .await;
    assert_eq!(r.status, StatusCode::OK, "its own token");
    let r = second
        .call(Method::GET, "/v2/", Some(&bearer(&token)), vec![])
        .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "another process's token"
    );
    assert!(
        r.header("www-authenticate")
            .ends_with(r#"error="invalid_token""#)
    );
}

#[tokio::test]
async fn after_failed_login_window_a_throttled_client_may_log_in_again() {
    let s = server(|c| {
        c.max_failed_logins = 2;
        c.failed_login_window = Duration::from_secs(1).into();
    })
    .await;
    let (wrong, right) = (basic("alice", "wrong"), basic("alice", "secret"));
    for i in 0..2 {
        let r = s.call(Method::GET, "/v2/", Some(&wrong), vec![]).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let r = s.call(Method::GET, "/v2/", Some(&right), vec![]).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.header("retry-after"), "1", "the window is 1s");
    // With the default window (1m) this would take a minute.
    until_status(
        Duration::from_secs(15),
        "the right password is accepted once the 1s window has passed",
        StatusCode::OK,
        || s.call(Method::GET, "/v2/", Some(&right), vec![]),
    )
    .await;
}
