//! A small OCI distribution client for plugin artifacts: push one (the blobs monolithically,
//! then the manifest under a tag), and pull one by digest or tag, verifying every byte.
//!
//! It speaks to any registry: anonymous, or with `SHOAL_REGISTRY_USERNAME` and
//! `SHOAL_REGISTRY_PASSWORD` from the environment, answering a `Bearer` challenge with a token
//! from the realm it names (as Docker Hub, GHCR and shoal's own `/token` do) or a `Basic` one
//! with the credentials. HTTPS trusts the Mozilla roots (webpki-roots); plain HTTP only where
//! the caller says so (loopback, `plugins.insecure_registries`, `--plain-http`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};
use shoal_config::{OciPin, OciPlugin, RegistryHost, Sha256Digest};

use super::artifact::{self, COMPONENT_MAX, MANIFEST_MAX, MANIFEST_MEDIA_TYPE};

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, body included (a 64 MiB component over a slow link).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Environment variables holding registry credentials, when the registry wants some.
pub const USERNAME_VAR: &str = "SHOAL_REGISTRY_USERNAME";
/// See [`USERNAME_VAR`].
pub const PASSWORD_VAR: &str = "SHOAL_REGISTRY_PASSWORD";

/// Why a push or pull failed; each names the reference or URL.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The HTTP client could not be built (TLS setup).
    #[error("cannot set up the registry client: {0}")]
    Client(String),
    /// The request did not get an answer.
    #[error("{method} {url}: {source}")]
    Request {
        method: Method,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with a status the protocol does not allow here.
    #[error("{method} {url}: the registry answered {status}: {message}")]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        message: String,
    },
    /// A token could not be had from the realm the registry named.
    #[error("getting a token from {realm}: {message}")]
    Token { realm: String, message: String },
    /// The manifest the registry served is not the one the reference pins.
    #[error(
        "oci://{reference}: the registry served a manifest with digest {served}, not the pinned \
         {pinned}"
    )]
    DigestMismatch {
        reference: String,
        pinned: Sha256Digest,
        served: Sha256Digest,
    },
    /// The pinned digest is not in the registry (or not what it serves), while the tag
    /// written beside it names another manifest: a wrong digest, or a tag that moved.
    #[error(
        "oci://{reference}: the registry has no plugin with the pinned digest {pinned}; its tag \
         {tag} is {current} (pin that digest if it is the plugin you meant): {cause}"
    )]
    PinnedElsewhere {
        reference: String,
        pinned: Sha256Digest,
        tag: String,
        current: Sha256Digest,
        cause: Box<OciError>,
    },
    /// The component blob does not match its manifest.
    #[error("oci://{reference}: the component served is {served}, the manifest says {expected}")]
    LayerMismatch {
        reference: String,
        expected: String,
        served: String,
    },
    /// The manifest is not a shoal plugin artifact.
    #[error("oci://{reference} is not a shoal plugin: {why}")]
    NotAPlugin { reference: String, why: String },
    /// A body went past its limit.
    #[error("{url}: the body is over the {limit}-byte limit")]
    TooLarge { url: String, limit: u64 },
}

/// One registry, with the token its last challenge earned.
#[derive(Clone)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: Url,
    credentials: Option<(String, String)>,
    token: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// A pulled plugin: its manifest's digest and the verified component.
#[derive(Debug)]
pub struct Pulled {
    /// The manifest's digest: what a config pins.
    pub digest: Sha256Digest,
    /// The manifest, as served.
    pub manifest: Vec<u8>,
    /// The component bytes, checked against the manifest's layer digest and size.
    pub wasm: Vec<u8>,
}

/// `http://` or `https://` and the registry, as a URL base.
pub fn base_url(registry: &RegistryHost, plain_http: bool) -> Result<Url, OciError> {
    let scheme = if plain_http { "http" } else { "https" };
    Url::parse(&format!("{scheme}://{registry}/"))
        .map_err(|e| OciError::Client(format!("{registry} does not make a URL: {e}")))
}

impl RegistryClient {
    /// A client of `registry`, over plain HTTP when `plain_http`, with the credentials of the
    /// environment when set.
    pub fn new(registry: &RegistryHost, plain_http: bool) -> Result<Self, OciError> {
        let credentials = match (std::env::var(USERNAME_VAR), std::env::var(PASSWORD_VAR)) {
            (Ok(user), Ok(password)) if !user.is_empty() => Some((user, password)),
            _ => None,
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        if !plain_http {
            builder = builder
                .use_preconfigured_tls(tls_config()?)
                .https_only(true);
        }
        let http = builder
            .build()
            .map_err(|e| OciError::Client(e.to_string()))?;
        Ok(RegistryClient {
            http,
            base: base_url(registry, plain_http)?,
            credentials,
            token: Arc::new(Mutex::new(None)),
        })
    }

    fn url(&self, path: &str) -> Url {
        self.base
            .join(path)
            .expect("registry paths are relative URLs")
    }

    /// Sends a request made by `make`, answering one auth challenge: a `401` with a `Bearer`
    /// challenge gets a token from its realm and the request again; a `Basic` one gets the
    /// credentials.
    async fn send(
        &self,
        method: Method,
        url: Url,
        make: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, OciError> {
        let request_err = |source| OciError::Request {
            method: method.clone(),
            url: url.to_string(),
            source,
        };
        let authorization = self.token.lock().expect("token lock").clone();
        let mut request = make(self.http.request(method.clone(), url.clone()));
        if let Some(value) = &authorization {
            request = request.header(AUTHORIZATION, value);
        }
        let response = request.send().await.map_err(request_err)?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let challenge = response
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_challenge);
        let value = match challenge {
            Some(Challenge::Bearer { realm, params }) => self.bearer(&realm, &params).await?,
            Some(Challenge::Basic) => match &self.credentials {
                Some((user, password)) => basic(user, password),
                None => return Err(unauthorized(method, url)),
            },
            None => return Err(unauthorized(method, url)),
        };
        *self.token.lock().expect("token lock") = Some(value.clone());
        make(self.http.request(method.clone(), url.clone()))
            .header(AUTHORIZATION, value)
            .send()
            .await
            .map_err(request_err)
    }

    /// A `Bearer` header value from `realm`, asked with the challenge's `service` and `scope`.
    async fn bearer(&self, realm: &str, params: &[(String, String)]) -> Result<String, OciError> {
        let token_err = |message: String| OciError::Token {
            realm: realm.to_owned(),
            message,
        };
        let mut url = Url::parse(realm).map_err(|e| token_err(format!("not a URL: {e}")))?;
        for (key, value) in params {
            url.query_pairs_mut().append_pair(key, value);
        }
        let mut request = self.http.get(url);
        if let Some((user, password)) = &self.credentials {
            request = request.basic_auth(user, Some(password));
        }
        let response = request.send().await.map_err(|e| token_err(e.to_string()))?;
        if !response.status().is_success() {
            return Err(token_err(format!("answered {}", response.status())));
        }
        #[derive(serde::Deserialize)]
        struct TokenBody {
            token: Option<String>,
            access_token: Option<String>,
        }
        let url = response.url().clone();
        let body = read_capped(response, &url, 1 << 20).await?;
        let body: TokenBody = serde_json::from_slice(&body)
            .map_err(|e| token_err(format!("not a token response: {e}")))?;
        body.token
            .or(body.access_token)
            .map(|t| format!("Bearer {t}"))
            .ok_or_else(|| token_err("the response holds no token".into()))
    }

    /// Uploads `content` as a blob of `repository` unless it is there already.
    async fn push_blob(&self, repository: &str, content: Bytes) -> Result<(), OciError> {
        let digest = artifact::sha256_of(&content);
        let blob = self.url(&format!("v2/{repository}/blobs/{digest}"));
        let head = self.send(Method::HEAD, blob.clone(), |r| r).await?;
        if head.status().is_success() {
            return Ok(());
        }
        let start = self.url(&format!("v2/{repository}/blobs/uploads/"));
        let response = self.send(Method::POST, start.clone(), |r| r).await?;
        let response = expect(Method::POST, &start, response, StatusCode::ACCEPTED).await?;
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| start.join(l).ok())
            .ok_or_else(|| OciError::Status {
                method: Method::POST,
                url: start.to_string(),
                status: response.status(),
                message: "no usable Location header".into(),
            })?;
        let mut put = location;
        put.query_pairs_mut()
            .append_pair("digest", &digest.to_string());
        let response = self
            .send(Method::PUT, put.clone(), |r| {
                r.header(CONTENT_TYPE, "application/octet-stream")
                    .body(content.clone())
            })
            .await?;
        expect(Method::PUT, &put, response, StatusCode::CREATED).await?;
        Ok(())
    }

    /// Pushes `wasm` as a plugin artifact of `repository` tagged `tag`, with `manifest` (made by
    /// [`artifact::manifest`]); returns the manifest's digest.
    pub async fn push(
        &self,
        repository: &str,
        tag: &str,
        wasm: Vec<u8>,
        manifest: Vec<u8>,
    ) -> Result<Sha256Digest, OciError> {
        self.push_blob(repository, Bytes::from_static(artifact::EMPTY_CONFIG))
            .await?;
        self.push_blob(repository, Bytes::from(wasm)).await?;
        let digest = artifact::sha256_of(&manifest);
        let url = self.url(&format!("v2/{repository}/manifests/{tag}"));
        let body = Bytes::from(manifest);
        let response = self
            .send(Method::PUT, url.clone(), |r| {
                r.header(CONTENT_TYPE, MANIFEST_MEDIA_TYPE)
                    .body(body.clone())
            })
            .await?;
        expect(Method::PUT, &url, response, StatusCode::CREATED).await?;
        Ok(digest)
    }

    /// The manifest `reference` names (by its digest or its tag), and that manifest's digest;
    /// nothing is checked against the pin.
    pub async fn manifest(
        &self,
        reference: &OciPlugin,
    ) -> Result<(Vec<u8>, Sha256Digest), OciError> {
        let manifest_ref = match &reference.pin {
            OciPin::Digest(d) => d.to_string(),
            OciPin::Tag(t) => t.clone(),
        };
        let url = self.url(&format!(
            "v2/{}/manifests/{manifest_ref}",
            reference.repository
        ));
        let response = self
            .send(Method::GET, url.clone(), |r| {
                r.header(ACCEPT, MANIFEST_MEDIA_TYPE)
            })
            .await?;
        let response = expect(Method::GET, &url, response, StatusCode::OK).await?;
        let manifest = read_capped(response, &url, MANIFEST_MAX).await?;
        let digest = artifact::sha256_of(&manifest);
        Ok((manifest, digest))
    }

    /// Pulls `reference`: its manifest (checked against the pinned digest, if any, and as a
    /// plugin artifact), then its component (checked against the manifest).
    pub async fn pull(&self, reference: &OciPlugin) -> Result<Pulled, OciError> {
        let repository = &reference.repository;
        let (manifest, digest) = self.manifest(reference).await?;
        if let OciPin::Digest(pinned) = &reference.pin
            && *pinned != digest
        {
            return Err(OciError::DigestMismatch {
                reference: reference.to_string(),
                pinned: pinned.clone(),
                served: digest,
            });
        }
        let layer = artifact::plugin_layer(&manifest).map_err(|why| OciError::NotAPlugin {
            reference: reference.to_string(),
            why,
        })?;
        let url = self.url(&format!("v2/{repository}/blobs/{}", layer.digest));
        let response = self.send(Method::GET, url.clone(), |r| r).await?;
        let response = expect(Method::GET, &url, response, StatusCode::OK).await?;
        let wasm = read_capped(response, &url, layer.size.min(COMPONENT_MAX)).await?;
        let served = artifact::sha256_of(&wasm);
        if served != layer.digest || wasm.len() as u64 != layer.size {
            return Err(OciError::LayerMismatch {
                reference: reference.to_string(),
                expected: format!("{} ({} bytes)", layer.digest, layer.size),
                served: format!("{served} ({} bytes)", wasm.len()),
            });
        }
        Ok(Pulled {
            digest,
            manifest,
            wasm,
        })
    }
}

fn unauthorized(method: Method, url: Url) -> OciError {
    OciError::Status {
        method,
        url: url.to_string(),
        status: StatusCode::UNAUTHORIZED,
        message: format!(
            "credentials are needed: set {USERNAME_VAR} and {PASSWORD_VAR}, or use a registry \
             that allows anonymous access"
        ),
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine as _;
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// `response` when its status is `want`; otherwise the error, with the registry's message.
async fn expect(
    method: Method,
    url: &Url,
    response: reqwest::Response,
    want: StatusCode,
) -> Result<reqwest::Response, OciError> {
    let status = response.status();
    if status == want {
        return Ok(response);
    }
    let body = read_capped(response, url, 4096).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&body).trim().to_owned();
    Err(OciError::Status {
        method,
        url: url.to_string(),
        status,
        message: if message.is_empty() {
            format!("expected {want}")
        } else {
            message
        },
    })
}

/// The body of `response`, refused once it passes `limit` bytes; hashed by the caller.
async fn read_capped(
    mut response: reqwest::Response,
    url: &Url,
    limit: u64,
) -> Result<Vec<u8>, OciError> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|source| OciError::Request {
        method: Method::GET,
        url: url.to_string(),
        source,
    })? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(OciError::TooLarge {
                url: url.to_string(),
                limit,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// rustls over ring with the Mozilla roots: registries are public services with public
/// certificates; one behind a private CA is reached through a loopback or insecure mirror.
fn tls_config() -> Result<rustls::ClientConfig, OciError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| OciError::Client(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// What a `WWW-Authenticate` header asks for.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    /// A token from `realm`, asked with the other parameters (`service`, `scope`).
    Bearer {
        realm: String,
        params: Vec<(String, String)>,
    },
    /// Basic credentials.
    Basic,
}

/// Parses `Bearer realm="...",service="...",scope="..."` (quoted values may hold commas) or
/// `Basic realm="..."`; anything else is `None`.
fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut params = Vec::new();
    let mut rest = rest.trim_start();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => {
                let end = quoted.find('"')?;
                (&quoted[..end], &quoted[end + 1..])
            }
            None => after.split_once(',').map_or((after, ""), |(v, a)| (v, a)),
        };
        params.push((key, value.to_owned()));
        rest = after.trim_start().trim_start_matches(',').trim_start();
    }
    let at = params.iter().position(|(k, _)| k == "realm")?;
    let (_, realm) = params.remove(at);
    Some(Challenge::Bearer { realm, params })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bearer_challenge_gives_its_realm_and_the_rest_as_query() {
        let h = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:org/p:pull,push""#;
        assert_eq!(
            parse_challenge(h),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                params: vec![
                    ("service".into(), "registry.docker.io".into()),
                    ("scope".into(), "repository:org/p:pull,push".into()),
                ],
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="shoal""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Negotiate abc"), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
        assert_eq!(parse_challenge(r#"Bearer realm="unterminated"#), None);
    }

    #[test]
    fn loopback_and_insecure_registries_get_plain_http_the_rest_https() {
        let plugins: shoal_config::PluginsConfig =
            serde_yaml_ng::from_str("insecure_registries: [registry.lan:5000]").unwrap();
        for (host, scheme) in [
            ("127.0.0.1:5000", "http"),
            ("localhost:5000", "http"),
            ("[::1]:5000", "http"),
            ("registry.lan:5000", "http"),
            ("registry.lan", "https"),
            ("ghcr.io", "https"),
        ] {
            let registry: RegistryHost = host.parse().unwrap();
            let url = base_url(&registry, plugins.plain_http(&registry)).unwrap();
            assert_eq!(url.scheme(), scheme, "{host}");
        }
    }

    proptest::proptest! {
        #[test]
        fn challenge_parsing_never_panics(h in ".{0,120}") {
            let _ = parse_challenge(&h);
        }
    }
}
