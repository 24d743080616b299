//! The OCI Distribution API over axum. One fallback handler parses the path into a [`Route`]
//! (repository names contain slashes, which axum's matcher cannot capture) and dispatches on
//! route and method; every error leaves through [`RegistryError`]'s one `IntoResponse`.

mod blobs;
mod listing;
mod manifests;
pub mod route;
mod uploads;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::backing::{Backing, Fills};
use crate::error::{ApiResult, ErrorCode, RegistryError};
use crate::store::LocalStore;
use crate::tag_authority::TagAuthority;
pub use route::Route;

/// What the API serves from: the local store, and the durable storage behind it.
pub struct Registry {
    /// The content store; a cache when there is a backing.
    pub store: LocalStore,
    /// Where pushes are written through to and misses are fetched from.
    pub(crate) backing: Option<Arc<dyn Backing>>,
    pub(crate) fills: Fills,
    /// Pull-through misses streamed to clients while they are fetched.
    pub(crate) following: crate::follow::Following,
    /// Set when the backing, not the local store, says what a tag names.
    pub(crate) tag_authority: Option<TagAuthority>,
    /// When set, every write (upload, manifest put, delete) is refused with this explanation.
    pub(crate) read_only: Option<String>,
    /// Reads the local store answered, and those it sent to the backing.
    pub(crate) cache: CacheCounters,
    /// Referrers are also kept in the backing under the referrers tag schema
    /// ([`Registry::referrers_in_backing`]).
    pub(crate) referrers_in_backing: bool,
    /// One change at a time to a subject's referrers index.
    pub(crate) referrer_turns: Fills,
}

/// The pull-through cache's reads since start, for metrics: a hit is answered by the local
/// store, a miss asks the backing (whatever the backing then answers). Counted only for a
/// registry with a backing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Blob reads the local store answered.
    pub blob_hits: u64,
    /// Blob reads sent to the backing.
    pub blob_misses: u64,
    /// Manifest reads the local store answered.
    pub manifest_hits: u64,
    /// Manifest reads sent to the backing.
    pub manifest_misses: u64,
}

#[derive(Debug, Default)]
pub(crate) struct CacheCounters {
    blob_hits: AtomicU64,
    blob_misses: AtomicU64,
    manifest_hits: AtomicU64,
    manifest_misses: AtomicU64,
}

/// What a cache read was for.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Cached {
    Blob,
    Manifest,
}

impl Registry {
    /// A registry over the local store alone.
    pub fn new(store: LocalStore) -> Self {
        Registry {
            store,
            backing: None,
            fills: Fills::default(),
            following: Default::default(),
            tag_authority: None,
            read_only: None,
            cache: CacheCounters::default(),
            referrers_in_backing: false,
            referrer_turns: Fills::default(),
        }
    }

    /// The pull-through cache's hits and misses since start.
    pub fn cache_stats(&self) -> CacheStats {
        let c = &self.cache;
        CacheStats {
            blob_hits: c.blob_hits.load(Relaxed),
            blob_misses: c.blob_misses.load(Relaxed),
            manifest_hits: c.manifest_hits.load(Relaxed),
            manifest_misses: c.manifest_misses.load(Relaxed),
        }
    }

    /// Counts a read of the local store: `hit` when it held what was asked for. Nothing is
    /// counted without a backing: the store is then no cache.
    pub(crate) fn count_read(&self, what: Cached, hit: bool) {
        if self.backing.is_none() {
            return;
        }
        let c = &self.cache;
        let counter = match (what, hit) {
            (Cached::Blob, true) => &c.blob_hits,
            (Cached::Blob, false) => &c.blob_misses,
            (Cached::Manifest, true) => &c.manifest_hits,
            (Cached::Manifest, false) => &c.manifest_misses,
        };
        counter.fetch_add(1, Relaxed);
    }

    /// Refuses every write with `UNSUPPORTED` and `why` (an agent: pushes go to the proxy).
    pub fn read_only(mut self, why: impl Into<String>) -> Self {
        self.read_only = Some(why.into());
        self
    }

    /// A registry whose local store caches `backing`.
    pub fn with_backing(store: LocalStore, backing: Arc<dyn Backing>) -> Self {
        Registry {
            backing: Some(backing),
            ..Registry::new(store)
        }
    }
}

/// Builds the router for the whole `/v2/` API plus `/health`.
pub fn router(registry: Arc<Registry>) -> Router {
    Router::new()
        .route("/health", axum::routing::get(|| async { "ok" }))
        .fallback(dispatch)
        .with_state(registry)
}

/// Everything a handler needs from the request besides the route.
pub(crate) struct Call {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: HashMap<String, String>,
}

impl Call {
    pub fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn dispatch(State(reg): State<Arc<Registry>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().map(url_pairs).unwrap_or_default();
    let call = Call {
        method: parts.method,
        headers: parts.headers,
        query,
    };
    if let Some(e) = ambiguous_framing(&call.headers) {
        let mut resp = e.into_response();
        // What follows on the connection cannot be trusted to start a request.
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return resp;
    }
    let mut resp = match route::parse_for(&call.method, parts.uri.path()) {
        Ok(Ok(route)) => handle(&reg, route, call, body)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Ok(Err(route::NotFound)) => {
            let msg = format!("no such endpoint: {}", parts.uri.path());
            let mut resp = RegistryError::new(ErrorCode::Unsupported, msg).into_response();
            *resp.status_mut() = StatusCode::NOT_FOUND;
            resp
        }
        Err(e) => e.into_response(),
    };
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

/// A request whose body length two parsers could read differently: `Content-Length` beside
/// `Transfer-Encoding`, or any transfer coding but a lone `chunked`. hyper accepts both (it
/// ignores the length, and decodes `gzip, chunked` as chunked, handing on gzip bytes); a proxy
/// in front may have framed the body by the other header, which is how request smuggling
/// works, so such a request is refused (RFC 9112 6.1 allows it) rather than guessed at.
fn ambiguous_framing(headers: &axum::http::HeaderMap) -> Option<RegistryError> {
    let codings: Vec<&HeaderValue> = headers.get_all(header::TRANSFER_ENCODING).iter().collect();
    if codings.is_empty() {
        return None;
    }
    if headers.contains_key(header::CONTENT_LENGTH) {
        return Some(RegistryError::new(
            ErrorCode::SizeInvalid,
            "Content-Length and Transfer-Encoding together make the body's length ambiguous: \
             send one of them",
        ));
    }
    let chunked_only = matches!(codings.as_slice(), [one] if one
        .to_str()
        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked")));
    (!chunked_only).then(|| {
        let sent: Vec<String> = codings
            .iter()
            .map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .chars()
                    .take(64)
                    .collect()
            })
            .collect();
        RegistryError::new(
            ErrorCode::SizeInvalid,
            format!(
                "Transfer-Encoding {:?} is not supported: only `chunked` alone",
                sent.join(", ")
            ),
        )
    })
}

/// Decodes an `application/x-www-form-urlencoded` query string; a repeated key keeps its last value.
pub(crate) fn url_pairs(q: &str) -> HashMap<String, String> {
    form_pairs(q).collect()
}

/// Decodes an `application/x-www-form-urlencoded` string (a query or a form body) into its
/// pairs in order, repeated keys included (the token endpoint takes several `scope`s).
pub(crate) fn form_pairs(q: &str) -> impl Iterator<Item = (String, String)> + '_ {
    q.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (percent_decode(k), percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The request body travels beside [`Call`]: it is `Send` but not `Sync`, and handlers borrow the call.
async fn handle(reg: &Arc<Registry>, route: Route, call: Call, body: Body) -> ApiResult<Response> {
    use Method as M;
    if let Some(why) = &reg.read_only
        && !matches!(call.method, M::GET | M::HEAD)
    {
        return Err(RegistryError::new(ErrorCode::Unsupported, why.clone()));
    }
    match (route, call.method.clone()) {
        (Route::Base, M::GET | M::HEAD) => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response()),
        (Route::Blob(repo, d), M::GET | M::HEAD) => blobs::get(reg, &repo, &d, &call).await,
        (Route::Blob(repo, d), M::DELETE) => blobs::delete(reg, &repo, &d).await,
        (Route::UploadStart(repo), M::POST) => uploads::start(reg, &repo, &call, body).await,
        (Route::Upload(repo, id), M::GET) => uploads::status(reg, &repo, &id).await,
        (Route::Upload(repo, id), M::PATCH) => uploads::patch(reg, &repo, &id, &call, body).await,
        (Route::Upload(repo, id), M::PUT) => uploads::put(reg, &repo, &id, &call, body).await,
        (Route::Upload(repo, id), M::DELETE) => uploads::cancel(reg, &repo, &id).await,
        (Route::Manifest(repo, r), M::GET | M::HEAD) => manifests::get(reg, &repo, &r, &call).await,
        (Route::Manifest(repo, r), M::PUT) => manifests::put(reg, &repo, &r, &call, body).await,
        (Route::Manifest(repo, r), M::DELETE) => manifests::delete(reg, &repo, &r).await,
        (Route::Tags(repo), M::GET) => listing::tags(reg, &repo, &call).await,
        (Route::Catalog, M::GET) => listing::catalog(reg, &call).await,
        (Route::Referrers(repo, d), M::GET) => listing::referrers(reg, &repo, &d, &call).await,
        (route, method) => Err(RegistryError::new(
            ErrorCode::Unsupported,
            format!("{method} is not supported on {route:?}"),
        )),
    }
}

/// `Docker-Content-Digest`.
pub(crate) const DOCKER_CONTENT_DIGEST: HeaderName =
    HeaderName::from_static("docker-content-digest");
/// `Docker-Upload-UUID`.
pub(crate) const DOCKER_UPLOAD_UUID: HeaderName = HeaderName::from_static("docker-upload-uuid");
/// `OCI-Filters-Applied`.
pub(crate) const OCI_FILTERS_APPLIED: HeaderName = HeaderName::from_static("oci-filters-applied");
/// `OCI-Subject`.
pub(crate) const OCI_SUBJECT: HeaderName = HeaderName::from_static("oci-subject");
/// `Docker-Distribution-API-Version`.
const API_VERSION: HeaderName = HeaderName::from_static("docker-distribution-api-version");

/// Adds a header whose value was built from validated parts (names, digests, numbers). The
/// name is a constant: a `&str` name would be checked again on every response.
pub(crate) fn set(resp: &mut Response, name: HeaderName, value: impl AsRef<str>) {
    if let Ok(v) = HeaderValue::from_str(value.as_ref()) {
        resp.headers_mut().insert(name, v);
    }
}
