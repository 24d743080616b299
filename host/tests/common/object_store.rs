//! A small HTTP object store with a bearer token, the kind of service a third-party backend
//! plugin talks to (plugins/template is written against it): `HEAD`/`GET` (with `Range`)/
//! `PUT`/`DELETE` on `/store/<key>`, and `GET /store?prefix=P&after=A&limit=N` answering
//! `{"keys": [...], "truncated": bool}` in key order. Every request without
//! `Authorization: Bearer <token>` is a 401, and is counted.
//!
//! It runs on 127.0.0.1 on a port the kernel picks, on a thread of its own (so sync tests that
//! drive processes can use it too), and stops when dropped.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

/// The most one object may hold (the conformance suite's big blob is 100 MiB).
const MAX_OBJECT: usize = 256 << 20;

#[derive(Default)]
struct Shared {
    objects: Mutex<BTreeMap<String, Bytes>>,
    refused: AtomicUsize,
    token: String,
    /// `METHOD key [range]` of every authorized object request, in order.
    log: Mutex<Vec<String>>,
}

/// The running store.
pub struct ObjectStore {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ObjectStore {
    /// Starts a store that accepts `token` only.
    pub fn start(token: &str) -> ObjectStore {
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            ..Shared::default()
        });
        let app = Router::new()
            .route("/store", get(list))
            .route("/store/{*key}", any(object))
            .with_state(Arc::clone(&shared));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the store");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("store address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("store runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("object store serves");
            });
        });
        ObjectStore {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `host:port`, for `allowed_hosts:`.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// The `base_url` of the template's config.
    pub fn base_url(&self) -> String {
        format!("http://{}/store", self.addr)
    }

    /// The keys it holds.
    pub fn keys(&self) -> Vec<String> {
        self.shared
            .objects
            .lock()
            .expect("store lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Object `key`, if held.
    pub fn get(&self, key: &str) -> Option<Bytes> {
        self.shared
            .objects
            .lock()
            .expect("store lock")
            .get(key)
            .cloned()
    }

    /// `METHOD key [range]` of every authorized object request so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.log.lock().expect("store lock").clone()
    }

    /// Requests refused for a missing or wrong token.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for ObjectStore {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    let ok = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == shared.token);
    if !ok {
        shared.refused.fetch_add(1, Ordering::SeqCst);
    }
    ok
}

async fn list(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    if !authorized(&shared, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let prefix = query.get("prefix").cloned().unwrap_or_default();
    let after = query.get("after").cloned();
    let limit: usize = match query.get("limit").map(|l| l.parse()) {
        Some(Ok(n)) if n > 0 => n,
        None => 1000,
        _ => return (StatusCode::BAD_REQUEST, "bad limit").into_response(),
    };
    let objects = shared.objects.lock().expect("store lock");
    let mut keys: Vec<String> = objects
        .keys()
        .filter(|k| k.starts_with(&prefix))
        .filter(|k| after.as_ref().is_none_or(|a| *k > a))
        .take(limit + 1)
        .cloned()
        .collect();
    let truncated = keys.len() > limit;
    keys.truncate(limit);
    axum::Json(serde_json::json!({"keys": keys, "truncated": truncated})).into_response()
}

async fn object(
    State(shared): State<Arc<Shared>>,
    method: Method,
    Path(key): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !authorized(&shared, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    shared.log.lock().expect("store lock").push(match range {
        Some(range) => format!("{method} {key} {range}"),
        None => format!("{method} {key}"),
    });
    match method {
        Method::PUT => {
            // Whole or nothing: a body cut short stores nothing.
            let Ok(bytes) = axum::body::to_bytes(body, MAX_OBJECT).await else {
                return StatusCode::BAD_REQUEST.into_response();
            };
            let declared = headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            if declared.is_some_and(|n| n != bytes.len()) {
                return StatusCode::BAD_REQUEST.into_response();
            }
            shared
                .objects
                .lock()
                .expect("store lock")
                .insert(key, bytes);
            StatusCode::CREATED.into_response()
        }
        Method::DELETE => match shared.objects.lock().expect("store lock").remove(&key) {
            Some(_) => StatusCode::NO_CONTENT,
            None => StatusCode::NOT_FOUND,
        }
        .into_response(),
        Method::GET | Method::HEAD => {
            let Some(bytes) = shared
                .objects
                .lock()
                .expect("store lock")
                .get(&key)
                .cloned()
            else {
                return StatusCode::NOT_FOUND.into_response();
            };
            let len = bytes.len();
            let range = headers
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .map(|v| parse_range(v, len));
            let (status, slice, content_range) = match range {
                None => (StatusCode::OK, bytes, None),
                Some(Some((start, end))) => (
                    StatusCode::PARTIAL_CONTENT,
                    bytes.slice(start..=end),
                    Some(format!("bytes {start}-{end}/{len}")),
                ),
                Some(None) => {
                    return (
                        StatusCode::RANGE_NOT_SATISFIABLE,
                        [(header::CONTENT_RANGE, format!("bytes */{len}"))],
                    )
                        .into_response();
                }
            };
            let mut resp = Response::builder()
                .status(status)
                .header(header::CONTENT_LENGTH, slice.len());
            if let Some(value) = content_range {
                resp = resp.header(header::CONTENT_RANGE, value);
            }
            let body = if method == Method::HEAD {
                Body::empty()
            } else {
                Body::from(slice)
            };
            resp.body(body).expect("response")
        }
        _ => StatusCode::METHOD_NOT_ALLOWED.into_response(),
    }
}

/// `bytes=A-B`, `bytes=A-` or `bytes=-N` within `len` bytes, as inclusive bounds.
fn parse_range(value: &str, len: usize) -> Option<(usize, usize)> {
    let spec = value.strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (false, false) => (
            a.parse().ok()?,
            b.parse::<usize>().ok()?.min(len.checked_sub(1)?),
        ),
        (false, true) => (a.parse().ok()?, len.checked_sub(1)?),
        (true, false) => {
            let n: usize = b.parse().ok()?;
            (len.checked_sub(n.min(len))?, len.checked_sub(1)?)
        }
        (true, true) => return None,
    };
    (start <= end && end < len).then_some((start, end))
}
