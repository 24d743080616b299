//! The request log: one line per request, at `info` under the target `shoal::request`, written
//! when the response has been sent (or abandoned), so it holds what was sent and how long it
//! took. Fields: `method`, `route` (or `path` when no route matched), `repository`, `digest`,
//! `tag`, `status`, `error` (the OCI error code of an error response), `bytes_in` (request
//! body bytes read), `bytes_out` (response body bytes sent), `duration_ms`, `client`,
//! `request_id`, and `aborted` when the response was not sent whole (the client left, or the
//! request was dropped before it was answered).
//!
//! The same figures are counted for `/metrics` as the line is written ([`super::metrics`]).
//!
//! Successful probes (`/health`, `/ready`, `/metrics`) are logged at `debug`: a load balancer
//! or Prometheus asking every few seconds would otherwise drown the requests that matter.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{Method, Response, StatusCode};
use bytes::Bytes;
use http_body::Body as _;
use hyper::body::{Frame, SizeHint};
use shoal_registry::ErrorCode;
use tokio::time::Instant;
use tracing::Span;

use super::metrics::{HttpMetrics, Served};
use super::request_id::RequestId;
use super::route::RouteFields;

/// The target of the request lines, so a filter can raise or silence them alone
/// (`shoal::request=off`).
pub const REQUEST_TARGET: &str = "shoal::request";

/// Routes whose successful answers are logged at `debug`.
const PROBES: [&str; 3] = ["/health", "/ready", "/metrics"];

/// One request's log line in the making; written when dropped.
pub(super) struct RequestLog {
    id: RequestId,
    method: Method,
    client: SocketAddr,
    started: Instant,
    route: RouteFields,
    status: Option<StatusCode>,
    error: Option<ErrorCode>,
    /// Request body bytes read so far (counted by the body as the handler reads it).
    bytes_in: Arc<AtomicU64>,
    bytes_out: u64,
    /// The response's `Content-Length`: hyper stops polling a body once that much is sent.
    length: Option<u64>,
    /// The whole response was handed to the connection.
    sent: bool,
    /// Where the request is counted when its line is written.
    metrics: Arc<HttpMetrics>,
}

impl RequestLog {
    /// Starts the line of a request from `client` with id `id`.
    pub(super) fn start(
        id: RequestId,
        method: &Method,
        path: &str,
        client: SocketAddr,
        bytes_in: Arc<AtomicU64>,
        metrics: Arc<HttpMetrics>,
    ) -> RequestLog {
        RequestLog {
            id,
            method: method.clone(),
            client,
            started: Instant::now(),
            route: RouteFields::of_registry(method, path)
                .unwrap_or_else(|| RouteFields::unmatched(path)),
            status: None,
            error: None,
            bytes_in,
            bytes_out: 0,
            length: None,
            sent: false,
            metrics,
        }
    }

    /// Records the answer: its status, its OCI error code, and the route axum matched.
    pub(super) fn responded(&mut self, response: &Response<Body>) {
        self.status = Some(response.status());
        self.error = response.extensions().get::<ErrorCode>().copied();
        self.length = response
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        if self.route.route.is_none()
            && let Some(matched) = response.extensions().get::<RouteFields>()
        {
            self.route = matched.clone();
        }
        // Nothing follows the head of these: there is no body to wait for.
        if self.method == Method::HEAD
            || self.status.is_some_and(|s| {
                s.is_informational() || s == StatusCode::NO_CONTENT || s == StatusCode::NOT_MODIFIED
            })
        {
            self.sent = true;
        }
    }

    fn quiet(&self) -> bool {
        self.status.is_some_and(|s| s.is_success())
            && self
                .route
                .route
                .as_deref()
                .is_some_and(|r| PROBES.contains(&r))
    }

    /// Whether the whole response was handed to the connection.
    fn complete(&self) -> bool {
        self.sent || self.length == Some(self.bytes_out)
    }

    fn emit(&self) {
        let elapsed = self.started.elapsed();
        self.metrics.record(&Served {
            method: &self.method,
            route: self.route.route.as_deref(),
            status: self.status,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out,
            elapsed,
        });
        let duration_ms = (elapsed.as_micros() as f64) / 1000.0;
        let r = &self.route;
        macro_rules! line {
            ($level:expr) => {
                tracing::event!(
                    target: REQUEST_TARGET,
                    $level,
                    method = %self.method,
                    route = r.route.as_deref(),
                    path = r.path.as_deref(),
                    repository = r.repository.as_deref(),
                    digest = r.digest.as_deref(),
                    tag = r.tag.as_deref(),
                    status = self.status.map(|s| s.as_u16()),
                    error = self.error.map(ErrorCode::as_str),
                    bytes_in = self.bytes_in.load(Ordering::Relaxed),
                    bytes_out = self.bytes_out,
                    duration_ms,
                    client = %self.client,
                    request_id = self.id.as_str(),
                    aborted = (!self.complete()).then_some(true),
                    "request"
                )
            };
        }
        if self.quiet() {
            line!(tracing::Level::DEBUG);
        } else {
            line!(tracing::Level::INFO);
        }
    }
}

impl Drop for RequestLog {
    fn drop(&mut self) {
        self.emit();
    }
}

/// A response body on its way out: polled inside the request's span, counted for the log line,
/// and holding its connection busy (`guard`) until it is sent or dropped.
pub(super) struct Sent<G> {
    body: Body,
    span: Span,
    log: RequestLog,
    _guard: G,
}

impl<G> Sent<G> {
    pub(super) fn new(body: Body, span: Span, log: RequestLog, guard: G) -> Self {
        Sent {
            body,
            span,
            log,
            _guard: guard,
        }
    }
}

impl<G: Unpin> http_body::Body for Sent<G> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        let _entered = this.span.enter();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.log.bytes_out += data.len() as u64;
                }
            }
            Poll::Ready(None) => this.log.sent = true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<G> Drop for Sent<G> {
    fn drop(&mut self) {
        // hyper stops polling a body that says it has ended (an empty one, say).
        if self.body.is_end_stream() {
            self.log.sent = true;
        }
    }
}
