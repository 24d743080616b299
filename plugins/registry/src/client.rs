//! Talking to a Docker registry over `wasi:http`: the auth handshake (Bearer tokens from the
//! registry's token server, Basic credentials, ECR logins), redirects, and retries.
//!
//! A request goes out with whatever this instance already holds for its scope (a cached
//! token, or Basic credentials once the registry asked for them). A 401 names the scheme in
//! `WWW-Authenticate`: for `Bearer` the plugin gets a token from the realm (anonymously, or
//! with the configured credentials) and retries once; for `Basic` it retries once with the
//! credentials. A second 401 is final: `unauthorized`.
//!
//! Tokens and ECR logins are cached for as long as they are valid *and this instance lives*.
//! The host keeps up to four warm instances per plugin and reuses them for later calls, so a
//! token is fetched about once per instance and scope while it is valid; an instance that
//! traps is dropped with its cache.

use std::cell::RefCell;
use std::collections::HashMap;
use std::thread;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;
use shoal_plugin_sdk::backend::Error;
use shoal_plugin_sdk::bindings::wasi::http::outgoing_handler;
use shoal_plugin_sdk::bindings::wasi::http::types::{
    Fields, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use shoal_plugin_sdk::http::{self, ErrorCode, IncomingResponse, Method, Request};
use shoal_plugin_sdk::sigv4::Credentials;
use shoal_plugin_sdk::url::{self, Url, percent_encode};
use shoal_plugin_sdk::{config, log};

use crate::ecr::{self, Login};
use crate::reference::Challenge;

/// Tries per request when the registry is unreachable or answers 5xx/429: the first and
/// three retries, 200 ms, 400 ms and 800 ms apart (1.4 s in all, well inside the host's
/// per-call deadline).
const TRIES: u32 = 4;
const FIRST_WAIT: Duration = Duration::from_millis(200);
/// Redirects followed per request: registries send blob reads to a CDN or a bucket.
const MAX_REDIRECTS: u32 = 5;
/// Token lifetime when the token server does not say (the Docker token spec's default).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
/// Token and ECR answers are small JSON documents.
const SMALL_BODY: usize = 1 << 20;

/// Where the registry is and how to log in, from the backend's config.
#[derive(Debug)]
pub struct Registry {
    /// `http` when `security.tls.client.disabled`, else `https`.
    pub scheme: url::Scheme,
    /// `host` or `host:port`.
    pub authority: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Where Basic credentials come from.
    pub login: LoginSource,
}

/// The source of the user name and password sent for `Basic` challenges and to token servers.
#[derive(Debug)]
pub enum LoginSource {
    /// Anonymous.
    None,
    /// `security.basic`.
    Basic { username: String, password: String },
    /// `credsStore: ecr-login`: from ECR's API at `endpoint`, signed for `region`.
    Ecr { endpoint: Url, region: String },
}

#[derive(Default)]
struct Cache {
    /// Bearer tokens by scope, with the instant they stop being used.
    tokens: HashMap<String, (String, Instant)>,
    /// The registry answered a `Basic` challenge before: send credentials up front.
    basic: bool,
    /// The ECR login, until its `expiresAt`.
    ecr: Option<Login>,
}

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
}

/// What authorization a request carried, to tell a refused retry from a first challenge.
#[derive(Clone, PartialEq, Eq)]
enum Sent {
    Nothing,
    Basic,
    Bearer,
}

impl Registry {
    /// The URL of `path_with_query` on the registry.
    pub fn url(&self, path_with_query: &str) -> Url {
        Url {
            scheme: self.scheme,
            authority: self.authority.clone(),
            path_with_query: path_with_query.to_owned(),
        }
    }

    /// Sends `method` to `path_with_query` for a request in `scope`
    /// (`repository:<repo>:pull`), logging in as the registry asks, retrying transient
    /// failures. Returns a 2xx response, or the error its status means.
    pub fn send(
        &self,
        method: Method,
        path_with_query: &str,
        headers: &[(&str, &str)],
        scope: &str,
        what: &str,
    ) -> Result<IncomingResponse, Error> {
        let mut wait = FIRST_WAIT;
        let mut tries = 1;
        loop {
            match self.attempt(&method, path_with_query, headers, scope, what) {
                Err(e) if e.is_transient() && tries < TRIES => {
                    log::info(&format!(
                        "{what}: try {tries} failed ({e:?}); retrying in {wait:?}"
                    ));
                    thread::sleep(wait);
                    wait *= 2;
                    tries += 1;
                }
                Err(Error::Unavailable(m)) => {
                    return Err(Error::Unavailable(format!(
                        "{m} (gave up on {what} after {tries} tries)"
                    )));
                }
                Err(Error::Throttled(m)) => {
                    return Err(Error::Throttled(format!(
                        "{m} (gave up on {what} after {tries} tries)"
                    )));
                }
                other => return other,
            }
        }
    }

    fn attempt(
        &self,
        method: &Method,
        path_with_query: &str,
        headers: &[(&str, &str)],
        scope: &str,
        what: &str,
    ) -> Result<IncomingResponse, Error> {
        let url = self.url(path_with_query);
        // A cached token the registry refuses (revoked, clock skew) is fetched anew once.
        let mut cached = false;
        let (mut sent, mut auth) = match cached_token(scope) {
            Some(token) => {
                cached = true;
                (Sent::Bearer, Some(format!("Bearer {token}")))
            }
            None if CACHE.with(|c| c.borrow().basic) => match self.basic_header()? {
                Some(h) => (Sent::Basic, Some(h)),
                None => (Sent::Nothing, None),
            },
            None => (Sent::Nothing, None),
        };
        for _ in 0..3 {
            let response = self.fetch(method, &url, headers, auth.as_deref(), what)?;
            if response.status() != 401 {
                return check(response, what);
            }
            let challenge = http::header(&response, "www-authenticate")
                .and_then(|h| Challenge::parse(&h))
                .ok_or_else(|| {
                    Error::Unauthorized(format!(
                        "{what}: HTTP 401 without a WWW-Authenticate challenge"
                    ))
                })?;
            match challenge.scheme.as_str() {
                "bearer" if sent != Sent::Bearer || std::mem::take(&mut cached) => {
                    forget_token(scope);
                    let token = self.token(&challenge, scope, what)?;
                    auth = Some(format!("Bearer {token}"));
                    sent = Sent::Bearer;
                }
                "basic" if sent != Sent::Basic => {
                    let header = self.basic_header()?.ok_or_else(|| {
                        Error::Unauthorized(format!(
                            "{what}: the registry wants a user name and password and none is configured (security.basic)"
                        ))
                    })?;
                    CACHE.with(|c| c.borrow_mut().basic = true);
                    auth = Some(header);
                    sent = Sent::Basic;
                }
                "bearer" | "basic" => {
                    forget_token(scope);
                    return Err(Error::Unauthorized(format!(
                        "{what}: the registry refused the {} credentials (HTTP 401)",
                        challenge.scheme
                    )));
                }
                other => {
                    return Err(Error::Unauthorized(format!(
                        "{what}: the registry asks for `{other}` authentication, which this plugin does not speak"
                    )));
                }
            }
        }
        Err(Error::Unauthorized(format!(
            "{what}: still HTTP 401 after logging in"
        )))
    }

    /// Sends one request, following redirects; the `Authorization` header goes only to the
    /// registry itself, never to the host a redirect points at.
    fn fetch(
        &self,
        method: &Method,
        url: &Url,
        headers: &[(&str, &str)],
        auth: Option<&str>,
        what: &str,
    ) -> Result<IncomingResponse, Error> {
        let mut url = url.clone();
        for _ in 0..=MAX_REDIRECTS {
            let mut request = Request::new(clone_method(method), &url).timeout(self.timeout);
            for (name, value) in headers {
                request = request.header(name, value.as_bytes());
            }
            if let Some(auth) = auth.filter(|_| url.authority == self.authority) {
                request = request.header("authorization", auth.as_bytes());
            }
            let response = request.send().map_err(|e| Error::from_http(&e, what))?;
            if !matches!(response.status(), 301 | 302 | 303 | 307 | 308) {
                return Ok(response);
            }
            let location = http::header(&response, "location").ok_or_else(|| {
                Error::Other(format!(
                    "{what}: HTTP {} without a Location",
                    response.status()
                ))
            })?;
            url = resolve(&url, &location)
                .map_err(|e| Error::Other(format!("{what}: redirect to a bad location: {e}")))?;
        }
        Err(Error::Other(format!(
            "{what}: more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// A token for `scope` from the challenge's realm.
    fn token(&self, challenge: &Challenge, scope: &str, what: &str) -> Result<String, Error> {
        let realm = challenge.param("realm").ok_or_else(|| {
            Error::Unauthorized(format!("{what}: the Bearer challenge names no realm"))
        })?;
        let mut query = Vec::new();
        if let Some(service) = challenge.param("service") {
            query.push(format!("service={}", percent_encode(service, "")));
        }
        let wanted = challenge.param("scope").unwrap_or(scope);
        if !wanted.is_empty() {
            query.push(format!("scope={}", percent_encode(wanted, "")));
        }
        let separator = if realm.contains('?') { '&' } else { '?' };
        let token_url = if query.is_empty() {
            realm.to_owned()
        } else {
            format!("{realm}{separator}{}", query.join("&"))
        };
        let token_url = Url::parse(&token_url).map_err(|e| {
            Error::Unauthorized(format!("{what}: the token realm is not a URL: {e}"))
        })?;
        let what = format!("{what}: token from {}", token_url.authority);
        let mut request = Request::new(Method::Get, &token_url).timeout(self.timeout);
        if let Some(basic) = self.basic_header()? {
            request = request.header("authorization", basic.into_bytes());
        }
        let response = request.send().map_err(|e| Error::from_http(&e, &what))?;
        if response.status() == 401 || response.status() == 403 {
            return Err(Error::Unauthorized(format!(
                "{what}: the token server refused the credentials (HTTP {})",
                response.status()
            )));
        }
        let response = check(response, &what)?;
        let body =
            http::read_small_body(response, SMALL_BODY).map_err(|e| Error::from_http(&e, &what))?;
        let (token, lifetime) =
            parse_token(&body).map_err(|e| Error::Other(format!("{what}: {e}")))?;
        CACHE.with(|c| {
            c.borrow_mut()
                .tokens
                .insert(scope.to_owned(), (token.clone(), Instant::now() + lifetime))
        });
        Ok(token)
    }

    /// `Basic <base64(user:password)>` from the configured source, if any.
    fn basic_header(&self) -> Result<Option<String>, Error> {
        let (user, password) = match &self.login {
            LoginSource::None => return Ok(None),
            LoginSource::Basic { username, password } => (username.clone(), password.clone()),
            LoginSource::Ecr { endpoint, region } => {
                let login = ecr_login(endpoint, region, self.timeout)?;
                (login.username, login.password)
            }
        };
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Ok(Some(format!("Basic {encoded}")))
    }
}

/// The ECR login, from the cache while it has more than a minute left.
fn ecr_login(endpoint: &Url, region: &str, timeout: Duration) -> Result<Login, Error> {
    let now = ecr::now();
    if let Some(login) = CACHE.with(|c| c.borrow().ecr.clone())
        && login.expires_at > now + 60
    {
        return Ok(login);
    }
    let what = format!("ECR GetAuthorizationToken at {}", endpoint.authority);
    let secret = |key: &str| config::secret(key).filter(|v| !v.is_empty());
    let credentials = Credentials {
        access_key_id: secret("aws_access_key_id").ok_or_else(|| {
            Error::Unauthorized(format!(
                "{what}: no AWS credentials: grant aws_access_key_id and aws_secret_access_key (auth:, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the host's environment)"
            ))
        })?,
        secret_access_key: secret("aws_secret_access_key").ok_or_else(|| {
            Error::Unauthorized(format!("{what}: aws_secret_access_key is not granted"))
        })?,
        session_token: secret("aws_session_token"),
    };
    let (headers, body) = ecr::request(&credentials, region, endpoint, now);
    let response =
        post(endpoint, &headers, &body, timeout).map_err(|e| Error::from_http(&e, &what))?;
    if matches!(response.status(), 400 | 401 | 403) {
        let status = response.status();
        let body = http::read_small_body(response, 4096).unwrap_or_default();
        return Err(Error::Unauthorized(format!(
            "{what}: HTTP {status}: {}",
            String::from_utf8_lossy(&body)
        )));
    }
    let response = check(response, &what)?;
    let body =
        http::read_small_body(response, SMALL_BODY).map_err(|e| Error::from_http(&e, &what))?;
    let login = ecr::parse_response(&body)?;
    CACHE.with(|c| c.borrow_mut().ecr = Some(login.clone()));
    Ok(login)
}

fn cached_token(scope: &str) -> Option<String> {
    CACHE.with(|c| {
        let cache = c.borrow();
        let (token, until) = cache.tokens.get(scope)?;
        (Instant::now() < *until).then(|| token.clone())
    })
}

fn forget_token(scope: &str) {
    CACHE.with(|c| c.borrow_mut().tokens.remove(scope));
}

#[derive(Deserialize)]
struct TokenAnswer {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

/// The token and how long to use it, from a token server's JSON (`token`, or OAuth2's
/// `access_token`; `expires_in` seconds, 60 when absent). A few seconds are kept back so a
/// token is not sent just as it expires.
pub fn parse_token(body: &[u8]) -> Result<(String, Duration), String> {
    let answer: TokenAnswer = serde_json::from_slice(body)
        .map_err(|e| format!("the token server's answer is not JSON: {e}"))?;
    let token = answer
        .token
        .or(answer.access_token)
        .filter(|t| !t.is_empty())
        .ok_or("the token server's answer holds no token")?;
    let lifetime = answer
        .expires_in
        .filter(|s| *s > 0)
        .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
    Ok((token, lifetime.saturating_sub(Duration::from_secs(5))))
}

/// A 2xx response, or the error its status means.
fn check(response: IncomingResponse, what: &str) -> Result<IncomingResponse, Error> {
    match Error::from_status(response.status(), what) {
        None => Ok(response),
        Some(e) => Err(e),
    }
}

/// `location` (absolute, or a path on the same host) resolved against `base`.
fn resolve(base: &Url, location: &str) -> Result<Url, url::BadUrl> {
    if location.starts_with('/') && !location.starts_with("//") {
        return Ok(Url {
            path_with_query: location.to_owned(),
            ..base.clone()
        });
    }
    Url::parse(location)
}

fn clone_method(method: &Method) -> Method {
    match method {
        Method::Get => Method::Get,
        Method::Head => Method::Head,
        Method::Post => Method::Post,
        Method::Put => Method::Put,
        Method::Delete => Method::Delete,
        Method::Connect => Method::Connect,
        Method::Options => Method::Options,
        Method::Trace => Method::Trace,
        Method::Patch => Method::Patch,
        Method::Other(s) => Method::Other(s.clone()),
    }
}

/// POSTs a small body the plugin made itself (the SDK's `send_with_body` splices a host
/// stream instead).
fn post(
    url: &Url,
    headers: &[(String, String)],
    body: &[u8],
    timeout: Duration,
) -> Result<IncomingResponse, ErrorCode> {
    let internal = |m: &str| ErrorCode::InternalError(Some(m.to_owned()));
    let mut fields: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(n, v)| (n.clone(), v.clone().into_bytes()))
        .collect();
    fields.push(("content-length".into(), body.len().to_string().into_bytes()));
    let fields = Fields::from_list(&fields).map_err(|e| internal(&format!("bad header: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    let scheme = match url.scheme {
        url::Scheme::Http => Scheme::Http,
        url::Scheme::Https => Scheme::Https,
    };
    let set = [
        request.set_method(&Method::Post),
        request.set_scheme(Some(&scheme)),
        request.set_authority(Some(&url.authority)),
        request.set_path_with_query(Some(&url.path_with_query)),
    ];
    if set.iter().any(Result::is_err) {
        return Err(ErrorCode::HttpRequestUriInvalid);
    }
    let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let options = RequestOptions::new();
    let _ = options.set_connect_timeout(Some(ns));
    let _ = options.set_first_byte_timeout(Some(ns));
    let _ = options.set_between_bytes_timeout(Some(ns));
    let outgoing = request.body().map_err(|()| internal("body taken twice"))?;
    let future = outgoing_handler::handle(request, Some(options))?;
    {
        let stream = outgoing
            .write()
            .map_err(|()| internal("body stream taken twice"))?;
        // A body this small (a few bytes of JSON) fits one write.
        stream
            .blocking_write_and_flush(body)
            .map_err(|e| internal(&format!("writing the request body: {e:?}")))?;
    }
    OutgoingBody::finish(outgoing, None)?;
    loop {
        match future.get() {
            Some(Ok(result)) => return result,
            Some(Err(())) => return Err(internal("response taken twice")),
            None => future.subscribe().block(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_with_their_lifetime() {
        let (t, life) = parse_token(br#"{"token":"abc","expires_in":300}"#).unwrap();
        assert_eq!((t.as_str(), life), ("abc", Duration::from_secs(295)));
        let (t, life) = parse_token(br#"{"access_token":"x"}"#).unwrap();
        assert_eq!((t.as_str(), life), ("x", Duration::from_secs(55)));
        assert!(parse_token(br#"{"token":""}"#).is_err());
        assert!(parse_token(b"<html>").is_err());
    }

    #[test]
    fn redirects_resolve_paths_and_urls() {
        let base = Url::parse("https://reg:5000/v2/a/blobs/x").unwrap();
        let same = resolve(&base, "/other?x=1").unwrap();
        assert_eq!(
            (same.authority.as_str(), same.path_with_query.as_str()),
            ("reg:5000", "/other?x=1")
        );
        let cdn = resolve(&base, "https://cdn.example/blob?sig=1").unwrap();
        assert_eq!(cdn.authority, "cdn.example");
        assert!(resolve(&base, "ftp://x").is_err());
    }
}
