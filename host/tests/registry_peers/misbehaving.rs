//! A registry that misbehaves on purpose, one repository per behaviour: `busy` answers 429,
//! `flaky` fails twice with 500, `moved` wants Basic auth and redirects blob reads to a CDN,
//! `norange` ignores Range, `nodigest` sends manifests without `Docker-Content-Digest`, and
//! `paged` pages its tag list with `n`, `last` and `Link` (as
//! Distribution 3 and Docker Hub do; the Debian 2.8 registry returns every tag).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

pub const TAGS: [&str; 5] = ["a", "b", "c", "d", "e"];
pub const MANIFEST: &str =
    r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;

#[derive(Clone, Default)]
pub struct Fake {
    pub hits: Arc<Mutex<HashMap<String, usize>>>,
    /// The Authorization header of every CDN request.
    pub cdn_auth: Arc<Mutex<Vec<Option<String>>>>,
    cdn: Arc<Mutex<Option<SocketAddr>>>,
}

impl Fake {
    /// Starts the registry and its CDN; returns (registry, cdn).
    pub async fn start(&self) -> (SocketAddr, SocketAddr) {
        let cdn = Router::new()
            .route("/blob", get(cdn_blob))
            .with_state(self.clone());
        let cdn_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cdn_addr = cdn_listener.local_addr().unwrap();
        *self.cdn.lock().unwrap() = Some(cdn_addr);
        tokio::spawn(async move { axum::serve(cdn_listener, cdn).await });
        let app = Router::new()
            .route("/v2/{*rest}", any(registry))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, cdn_addr)
    }

    pub fn hits(&self, repo: &str) -> usize {
        self.hits.lock().unwrap().get(repo).copied().unwrap_or(0)
    }
}

async fn cdn_blob(State(f): State<Fake>, headers: HeaderMap) -> Response {
    let auth = headers
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().unwrap().to_owned());
    f.cdn_auth.lock().unwrap().push(auth);
    "from the cdn".into_response()
}

async fn registry(
    State(f): State<Fake>,
    Path(rest): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
    method: Method,
    headers: HeaderMap,
) -> Response {
    let repo = rest.split('/').next().unwrap_or("").to_owned();
    let n = {
        let mut hits = f.hits.lock().unwrap();
        let n = hits.entry(repo.clone()).or_default();
        *n += 1;
        *n
    };
    let blob = |body: &'static str| {
        let len = body.len().to_string();
        let body = if method == Method::HEAD { "" } else { body };
        ([(header::CONTENT_LENGTH, len)], body).into_response()
    };
    match repo.as_str() {
        "busy" => StatusCode::TOO_MANY_REQUESTS.into_response(),
        "flaky" if n <= 2 => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        "flaky" | "norange" => blob("finally"),
        // A manifest without Docker-Content-Digest: the plugin hashes it itself.
        "nodigest" if rest.contains("/manifests/") => blob(MANIFEST),
        "moved" => {
            let want = "Basic dTpw"; // u:p
            if headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) != Some(want.as_bytes()) {
                return (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, r#"Basic realm="fake""#)],
                )
                    .into_response();
            }
            let cdn = f.cdn.lock().unwrap().unwrap();
            (
                StatusCode::TEMPORARY_REDIRECT,
                [(header::LOCATION, format!("http://{cdn}/blob"))],
            )
                .into_response()
        }
        "paged" => {
            let limit: usize = q.get("n").map_or(100, |n| n.parse().unwrap());
            let after = q.get("last").cloned().unwrap_or_default();
            let rest: Vec<&str> = TAGS
                .iter()
                .copied()
                .filter(|t| *t > after.as_str())
                .collect();
            let page: Vec<&str> = rest.iter().copied().take(limit).collect();
            let body = serde_json::json!({"name": "paged", "tags": page}).to_string();
            let mut response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
            if rest.len() > limit {
                let link = format!(
                    "</v2/paged/tags/list?last={}&n={limit}>; rel=\"next\"",
                    page.last().unwrap()
                );
                response
                    .headers_mut()
                    .insert(header::LINK, link.parse().unwrap());
            }
            response
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
