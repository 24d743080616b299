//! Peers for the registry plugin's tests: Debian's `docker-registry` (Distribution 2.8) with
//! no auth, htpasswd (bcrypt) auth or token auth; a token server issuing the RS256 JWTs
//! Distribution verifies; a fake ECR API; and content pushed over the plain Distribution API.
//!
//! The token server and the ECR API are written here because no real one runs on this
//! machine. Distribution checks the tokens for real (signature, x5c chain against the root
//! bundle, issuer, audience, expiry, access); the fake ECR checks the SigV4 signature by
//! recomputing it from the request as it arrived, with an implementation of its own.

pub mod misbehaving;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sha2::{Digest as _, Sha256};

use crate::common::{command, poll_until, run_ok, send_signal, wait_with_deadline};

/// How long docker-registry may take to listen.
const READY_DEADLINE: Duration = Duration::from_secs(30);

/// How a registry checks who is pulling.
pub enum Auth {
    /// Anyone may push and pull (used to seed content).
    Open,
    /// htpasswd with one bcrypt user.
    Htpasswd { user: String, password: String },
    /// Bearer tokens from `realm`, signed by the key of `cert`.
    Token { realm: String, cert: PathBuf },
}

/// Service and issuer names the registry and the token server agree on.
pub const SERVICE: &str = "shoal-test-registry";
pub const ISSUER: &str = "shoal-test-issuer";

/// A docker-registry process on 127.0.0.1, storing under a directory the caller owns, so a
/// test can stop it and start another on the same data and port.
pub struct Registry {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Registry {
    /// Starts docker-registry on `port` (0: a free one) with `auth`, storing in `root`.
    pub fn start(root: &Path, port: u16, auth: &Auth) -> Registry {
        let port = if port == 0 { free_port() } else { port };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let work = root.join(format!("run-{port}-{}", unique()));
        std::fs::create_dir_all(&work).unwrap();
        let auth_yaml = match auth {
            Auth::Open => String::new(),
            Auth::Htpasswd { user, password } => {
                let file = work.join("htpasswd");
                let line = run_ok(command("htpasswd").args(["-Bbn", user, password]));
                std::fs::write(&file, line).unwrap();
                format!(
                    "auth:\n  htpasswd:\n    realm: shoal-test\n    path: {}\n",
                    file.display()
                )
            }
            Auth::Token { realm, cert } => format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
                cert.display()
            ),
        };
        let config = work.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n{auth_yaml}",
                root.join("storage").display()
            ),
        )
        .unwrap();
        let log = work.join("registry.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = command("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("spawning docker-registry");
        let mut registry = Registry { child, addr, log };
        let ready = poll_until(READY_DEADLINE, || {
            registry.child.try_wait().unwrap().is_some() || TcpStream::connect(addr).is_ok()
        });
        assert!(
            ready && registry.child.try_wait().unwrap().is_none(),
            "docker-registry did not listen on {addr}; its log:\n{}",
            registry.log_text()
        );
        registry
    }

    pub fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Stops the process and waits for it, so the port is closed when this returns.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if self.child.try_wait().unwrap().is_none() {
            send_signal(self.child.id(), "TERM");
            if wait_with_deadline(&mut self.child, Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.halt();
        if std::thread::panicking() {
            eprintln!("--- docker-registry log\n{}", self.log_text());
        }
    }
}

/// A port for docker-registry, out of the kernel's way ([`shoal_p2p::testing::daemon_port`]).
fn free_port() -> u16 {
    shoal_p2p::testing::daemon_port()
}

fn unique() -> usize {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// What [`seed`] pushed: the layer, the manifest, and their digests.
pub struct Seeded {
    pub layer: Vec<u8>,
    pub layer_digest: String,
    pub manifest: Vec<u8>,
    pub manifest_digest: String,
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Pushes a layer of `layer_len` bytes, a config and an OCI manifest to `repo` on an open
/// registry, tagged with each of `tags`.
pub async fn seed(registry: SocketAddr, repo: &str, layer_len: usize, tags: &[&str]) -> Seeded {
    let client = reqwest::Client::new();
    let layer: Vec<u8> = (0..layer_len).map(|i| (i * 7 % 251) as u8).collect();
    let config = format!(r#"{{"architecture":"amd64","os":"linux","repo":"{repo}"}}"#).into_bytes();
    for blob in [&layer, &config] {
        push_blob(&client, registry, repo, blob).await;
    }
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{}","size":{}}}]}}"#,
        digest(&config),
        config.len(),
        digest(&layer),
        layer.len()
    )
    .into_bytes();
    for tag in tags {
        let r = client
            .put(format!("http://{registry}/v2/{repo}/manifests/{tag}"))
            .header(
                header::CONTENT_TYPE,
                "application/vnd.oci.image.manifest.v1+json",
            )
            .body(manifest.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "pushing {repo}:{tag}");
    }
    Seeded {
        layer_digest: digest(&layer),
        layer,
        manifest_digest: digest(&manifest),
        manifest,
    }
}

/// Pushes one blob to `repo` on an open registry (a monolithic upload: POST, then PUT).
pub async fn push_blob(client: &reqwest::Client, registry: SocketAddr, repo: &str, blob: &[u8]) {
    let start = client
        .post(format!("http://{registry}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 202, "starting an upload to {repo}");
    let location = start.headers()[header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let url = if location.starts_with('/') {
        format!("http://{registry}{location}")
    } else {
        location
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let done = client
        .put(format!("{url}{sep}digest={}", digest(blob)))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .body(blob.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 201, "finishing an upload to {repo}");
}

/// An RSA key and a self-signed certificate for it, made with the openssl CLI.
pub struct SigningKey {
    pub key: PathBuf,
    pub cert: PathBuf,
    /// The certificate, DER, standard base64: the JWT header's `x5c`.
    x5c: String,
}

impl SigningKey {
    pub fn generate(dir: &Path) -> SigningKey {
        let key = dir.join("token.key");
        let cert = dir.join("token.crt");
        run_ok(
            command("openssl")
                .args([
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                ])
                .args(["-subj", "/CN=shoal-test-token-issuer", "-keyout"])
                .arg(&key)
                .arg("-out")
                .arg(&cert),
        );
        let der = run_ok(
            command("openssl")
                .args(["x509", "-outform", "DER", "-in"])
                .arg(&cert),
        );
        SigningKey {
            key,
            cert,
            x5c: base64(&der, STANDARD),
        }
    }

    /// An RS256 JWT over `claims`, signed with `openssl dgst -sha256 -sign` (PKCS#1 v1.5,
    /// which is what RS256 is).
    fn sign(&self, claims: &serde_json::Value) -> String {
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let input = format!(
            "{}.{}",
            base64(header.to_string().as_bytes(), URL_SAFE),
            base64(claims.to_string().as_bytes(), URL_SAFE)
        );
        let mut child = Command::new("openssl")
            .args(["dgst", "-sha256", "-sign"])
            .arg(&self.key)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running openssl dgst");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "openssl dgst -sign failed");
        format!("{input}.{}", base64(&out.stdout, URL_SAFE))
    }
}

/// A Docker token server: `GET /token?service=&scope=`. Anonymous callers get `pull` on
/// repositories under `public/`; `user` with `password` gets `pull` everywhere; a wrong
/// password gets 401.
#[derive(Clone)]
pub struct TokenServer {
    key: Arc<SigningKey>,
    user: String,
    password: String,
    /// Every request, as `(user or "-", scope)`.
    pub requests: Arc<Mutex<Vec<(String, String)>>>,
}

impl TokenServer {
    pub fn new(key: SigningKey, user: &str, password: &str) -> TokenServer {
        TokenServer {
            key: Arc::new(key),
            user: user.into(),
            password: password.into(),
            requests: Arc::default(),
        }
    }

    /// Serves on 127.0.0.1:0; returns the realm URL.
    pub async fn start(self) -> String {
        let app = Router::new()
            .route("/token", get(issue_token))
            .with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/token")
    }
}

async fn issue_token(
    State(s): State<TokenServer>,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let scope = q.get("scope").cloned().unwrap_or_default();
    let user = match basic_credentials(&headers) {
        None => None,
        Some((u, p)) if u == s.user && p == s.password => Some(u),
        Some(_) => {
            s.requests.lock().unwrap().push(("bad".into(), scope));
            return StatusCode::UNAUTHORIZED.into_response();
        }
    };
    s.requests
        .lock()
        .unwrap()
        .push((user.clone().unwrap_or_else(|| "-".into()), scope.clone()));
    if q.get("service").map(String::as_str) != Some(SERVICE) {
        return (StatusCode::BAD_REQUEST, "unknown service").into_response();
    }
    // scope = repository:<name>:<actions>
    let mut access = Vec::new();
    if let Some(rest) = scope.strip_prefix("repository:")
        && let Some((name, _actions)) = rest.rsplit_once(':')
        && (user.is_some() || name.starts_with("public/"))
    {
        access.push(serde_json::json!({"type": "repository", "name": name, "actions": ["pull"]}));
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": user.unwrap_or_default(),
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": format!("t{}", unique()),
        "access": access,
    });
    let key = s.key.clone();
    let token = tokio::task::spawn_blocking(move || key.sign(&claims))
        .await
        .unwrap();
    (
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"token": token, "expires_in": 300}).to_string(),
    )
        .into_response()
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let decoded = unbase64(value.strip_prefix("Basic ")?)?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_owned(), p.to_owned()))
}

/// A fake ECR API: answers `GetAuthorizationToken` with `AWS:<password>` after checking the
/// request the way AWS would (target, content type, and the SigV4 signature recomputed from
/// the request as received).
#[derive(Clone)]
pub struct FakeEcr {
    pub access_key: String,
    pub secret_key: String,
    pub region: String,
    pub password: String,
    pub calls: Arc<AtomicUsize>,
    /// Why the last refused request was refused.
    pub refused: Arc<Mutex<Vec<String>>>,
}

impl FakeEcr {
    pub async fn start(self) -> SocketAddr {
        let app = Router::new()
            .route("/", post(get_authorization_token))
            .with_state(self);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }
}

async fn get_authorization_token(
    State(s): State<FakeEcr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    match check_sigv4(&s, &method, &uri, &headers, &body) {
        Ok(()) => {
            let token = base64(format!("AWS:{}", s.password).as_bytes(), STANDARD);
            let expires = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs()
                + 43_200;
            (
                [(header::CONTENT_TYPE, "application/x-amz-json-1.1")],
                format!(
                    r#"{{"authorizationData":[{{"authorizationToken":"{token}","expiresAt":{expires}.0,"proxyEndpoint":"https://fake"}}]}}"#
                ),
            )
                .into_response()
        }
        Err(why) => {
            s.refused.lock().unwrap().push(why.clone());
            (
                StatusCode::FORBIDDEN,
                format!(r#"{{"__type":"InvalidSignatureException","message":"{why}"}}"#),
            )
                .into_response()
        }
    }
}

fn check_sigv4(
    s: &FakeEcr,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or(format!("no {name} header"))
    };
    if get("x-amz-target")? != "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken" {
        return Err("wrong X-Amz-Target".into());
    }
    if get("content-type")? != "application/x-amz-json-1.1" {
        return Err("wrong Content-Type".into());
    }
    serde_json::from_slice::<serde_json::Value>(body).map_err(|_| "body is not JSON".to_owned())?;
    let date = get("x-amz-date")?;
    let auth = get("authorization")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 Credential=")
        .ok_or("not AWS4-HMAC-SHA256")?;
    let (credential, rest) = rest
        .split_once(", SignedHeaders=")
        .ok_or("no SignedHeaders")?;
    let (signed, signature) = rest.split_once(", Signature=").ok_or("no Signature")?;
    let scope = format!("{}/{}/ecr/aws4_request", &date[..8], s.region);
    if credential != format!("{}/{scope}", s.access_key) {
        return Err(format!(
            "credential scope {credential} is not {}/{scope}",
            s.access_key
        ));
    }
    let names: Vec<&str> = signed.split(';').collect();
    for needed in ["host", "x-amz-date", "x-amz-target"] {
        if !names.contains(&needed) {
            return Err(format!("{needed} is not signed"));
        }
    }
    let mut canonical_headers = String::new();
    for name in &names {
        let value = get(name)?;
        canonical_headers.push_str(&format!("{name}:{}\n", value.trim()));
    }
    let canonical = format!(
        "{method}\n{}\n{}\n{canonical_headers}\n{signed}\n{}",
        uri.path(),
        uri.query().unwrap_or(""),
        hex::encode(Sha256::digest(body))
    );
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{date}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let mut key = format!("AWS4{}", s.secret_key).into_bytes();
    for part in [&date[..8], s.region.as_str(), "ecr", "aws4_request"] {
        key = hmac_sha256(&key, part.as_bytes()).to_vec();
    }
    let expected = hex::encode(hmac_sha256(&key, to_sign.as_bytes()));
    if signature != expected {
        return Err("signature does not match".into());
    }
    Ok(())
}

/// HMAC-SHA256 (RFC 2104), written out so the fake does not share code with the plugin.
fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(data);
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64 with `alphabet`; padded for the standard one, unpadded for the URL-safe one (JWS).
fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
        if alphabet == STANDARD {
            out.push_str(&"=".repeat(3 - chunk.len()));
        }
    }
    out
}

fn unbase64(text: &str) -> Option<Vec<u8>> {
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.trim_end_matches('=').bytes() {
        let v = STANDARD.iter().position(|a| *a == c)? as u32;
        bits = bits << 6 | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

#[test]
fn base64_round_trips() {
    assert_eq!(base64(b"AWS:pw", STANDARD), "QVdTOnB3");
    assert_eq!(base64(b"ab", STANDARD), "YWI=");
    assert_eq!(base64(b"ab", URL_SAFE), "YWI");
    assert_eq!(unbase64("YWI=").unwrap(), b"ab");
    assert_eq!(unbase64("QVdTOnB3").unwrap(), b"AWS:pw");
}
