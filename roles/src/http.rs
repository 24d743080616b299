//! What every role's HTTP surface shares: one error type that is the response
//! ([`HttpError`]), extractors that parse paths into types at the edge ([`BlobPath`],
//! [`TagPath`], [`TagDigestPath`]), the one percent-encoder for path segments ([`segment`]),
//! the one way to build an outbound client ([`client`]), and serving with a connection limit
//! ([`serve`]).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use axum::{Extension, Router};
use shoal_registry::{Digest, RepoName, TagKey};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tower::Layer;

/// Connections one role listener serves at once, unless the caller says otherwise; past it,
/// new connections wait in the kernel's backlog.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Connect timeout of every outbound client.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed request: a status and a text saying why. The one place a role's handler error
/// becomes a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The status.
    pub status: StatusCode,
    /// The reason, sent as the body.
    pub message: String,
}

impl HttpError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request cannot be parsed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: nothing by that name.
    pub fn not_found(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::NOT_FOUND, message)
    }

    /// 500: this host failed.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
    }

    /// 502: the storage behind this host failed.
    pub fn bad_gateway(message: impl std::fmt::Display) -> Self {
        HttpError::new(StatusCode::BAD_GATEWAY, message.to_string())
    }

    /// 503: try again later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.status, self.message).into_response()
    }
}

/// A handler's result.
pub type HttpResult<T> = Result<T, HttpError>;

/// `/namespace/{ns}/blobs/{digest}`: the repository (URL-escaped in the path) and the digest,
/// parsed.
#[derive(Debug, Clone)]
pub struct BlobPath {
    /// The namespace.
    pub repo: RepoName,
    /// The blob.
    pub digest: Digest,
}

impl<S: Send + Sync> FromRequestParts<S> for BlobPath {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((ns, digest)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| HttpError::bad_request(e.body_text()))?;
        Ok(BlobPath {
            repo: parse_repo(&ns)?,
            digest: parse_digest(&digest)?,
        })
    }
}

/// `?replica=true`: the request is a copy from a peer of the same kind (an origin of the ring,
/// a build-index of another cluster), stored without being passed on, so copies never loop.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub struct ReplicaQuery {
    /// Whether the request is such a copy.
    #[serde(default)]
    pub replica: bool,
}

/// `/tags/{repo:tag}`: the tag key, parsed.
#[derive(Debug, Clone)]
pub struct TagPath(pub TagKey);

impl<S: Send + Sync> FromRequestParts<S> for TagPath {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(key) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| HttpError::bad_request(e.body_text()))?;
        Ok(TagPath(parse_tag_key(&key)?))
    }
}

/// `/tags/{repo:tag}/digest/{digest}`: the tag key and the digest it should point at.
#[derive(Debug, Clone)]
pub struct TagDigestPath(pub TagKey, pub Digest);

impl<S: Send + Sync> FromRequestParts<S> for TagDigestPath {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path((key, digest)) = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map_err(|e| HttpError::bad_request(e.body_text()))?;
        Ok(TagDigestPath(parse_tag_key(&key)?, parse_digest(&digest)?))
    }
}

fn parse_repo(ns: &str) -> HttpResult<RepoName> {
    ns.parse()
        .map_err(|e| HttpError::bad_request(format!("namespace {ns:?}: {e}")))
}

fn parse_digest(d: &str) -> HttpResult<Digest> {
    d.parse()
        .map_err(|e| HttpError::bad_request(format!("digest {d:?}: {e}")))
}

fn parse_tag_key(key: &str) -> HttpResult<TagKey> {
    key.parse()
        .map_err(|e| HttpError::bad_request(format!("{e}")))
}

/// `s` as one URL path segment: every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`)
/// percent-encoded, so a repository's `/` stays inside its segment.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The outbound HTTP client of a role: a connect timeout, and `overall` for a whole request
/// (`None` for transfers whose length is not bounded, such as blob copies).
pub fn client(overall: Option<Duration>) -> Result<reqwest::Client, reqwest::Error> {
    let mut b = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
    if let Some(t) = overall {
        b = b.timeout(t);
    }
    b.build()
}

/// Serves `router` on `listener` with at most `max_connections` connections at once, until
/// `shutdown` completes, with each peer's address as axum's `ConnectInfo<SocketAddr>`; then
/// in-flight requests finish. Dropping the future instead closes
/// every open connection too (axum runs each on a task of its own, which would otherwise go on
/// answering on a kept-alive connection after its service is gone).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let stopped = CancellationToken::new();
    let _stop_connections = stopped.clone().drop_guard();
    let limited = LimitedListener {
        inner: listener,
        permits: Arc::new(Semaphore::new(max_connections.max(1))),
        limit: max_connections.max(1),
        full: false,
        stopped,
    };
    // Handlers may take the peer's address (`ConnectInfo<SocketAddr>`): the registry's
    // login throttle counts failures per client. axum provides it only for its own
    // listeners, so each connection's router gets it as an extension here.
    let make_service = tower::service_fn(move |incoming: IncomingStream<'_, LimitedListener>| {
        let peer = ConnectInfo(*incoming.remote_addr());
        std::future::ready(Ok::<_, Infallible>(Extension(peer).layer(router.clone())))
    });
    axum::serve(limited, make_service)
        .with_graceful_shutdown(shutdown)
        .await
}

/// A listener that holds a permit per open connection.
struct LimitedListener {
    inner: TcpListener,
    permits: Arc<Semaphore>,
    limit: usize,
    /// Whether the limit was reached (logged once per episode).
    full: bool,
    /// Cancelled when [`serve`] ends or is dropped: every connection then closes.
    stopped: CancellationToken,
}

impl axum::serve::Listener for LimitedListener {
    type Io = Limited;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let permit = match self.permits.clone().try_acquire_owned() {
                Ok(p) => {
                    if self.full {
                        tracing::info!(limit = self.limit, "accepting connections again");
                        self.full = false;
                    }
                    p
                }
                Err(_) => {
                    if !self.full {
                        tracing::warn!(
                            limit = self.limit,
                            "connection limit reached: new connections wait until one closes"
                        );
                        self.full = true;
                    }
                    match self.permits.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => std::future::pending().await,
                    }
                }
            };
            match self.inner.accept().await {
                Ok((io, addr)) => {
                    let stopped = Box::pin(self.stopped.clone().cancelled_owned());
                    return (
                        Limited {
                            io,
                            _permit: permit,
                            stopped,
                        },
                        addr,
                    );
                }
                Err(e) => {
                    drop(permit);
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::error!(%e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection holding its permit until it closes, and failing every read and write once its
/// server is gone.
struct Limited {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
    stopped: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl Limited {
    /// An error once the server is gone; polling registers the waker, so an idle connection
    /// wakes up to close.
    fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        self.stopped
            .as_mut()
            .poll(cx)
            .is_ready()
            .then(|| io::Error::new(io::ErrorKind::ConnectionAborted, "the server was stopped"))
    }
}

impl AsyncRead for Limited {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(e) = self.poll_stopped(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Limited {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.poll_stopped(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.poll_stopped(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_keeps_slashes_and_colons_inside() {
        assert_eq!(segment("library/alpine:3.19"), "library%2Falpine%3A3.19");
        assert_eq!(segment("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(segment("100%"), "100%25");
    }

    #[tokio::test]
    async fn the_connection_limit_holds_new_connections_until_one_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let server = tokio::spawn(serve(listener, router, 1, std::future::pending()));
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        // An idle connection takes the only permit; a request waits until it closes.
        let idle = TcpStream::connect(addr).await.unwrap();
        let mut request = tokio::spawn({
            let http = http.clone();
            async move { http.get(format!("http://{addr}/")).send().await }
        });
        // "Nothing arrives" is checked with a short timeout.
        let early = tokio::time::timeout(Duration::from_millis(300), &mut request).await;
        assert!(early.is_err(), "served past the limit");
        drop(idle);
        let reply = request.await.unwrap().unwrap();
        assert_eq!(reply.text().await.unwrap(), "ok");
        server.abort();
    }

    #[tokio::test]
    async fn handlers_see_the_peer_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route(
            "/",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.to_string()
            }),
        );
        let server = tokio::spawn(serve(listener, router, 8, std::future::pending()));
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let local = conn.local_addr().unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        conn.write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        conn.read_to_end(&mut reply).await.unwrap();
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.ends_with(&local.to_string()), "{reply}");
        server.abort();
    }

    #[tokio::test]
    async fn a_dropped_server_answers_nothing_more_on_a_kept_alive_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let server = tokio::spawn(serve(listener, router, 8, std::future::pending()));
        // One connection, kept alive between requests.
        let mut conn = TcpStream::connect(addr).await.unwrap();
        let request = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        conn.write_all(request).await.unwrap();
        let mut buf = vec![0; 1024];
        let n = conn.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        server.abort();
        let _ = server.await;
        // The connection's own task is told to close: the next read sees the end, not an
        // answer (a write may still land in the socket's buffer first).
        let _ = conn.write_all(request).await;
        let n = conn.read(&mut buf).await.unwrap_or(0);
        assert_eq!(
            n,
            0,
            "answered after the server was dropped: {:?}",
            &buf[..n]
        );
    }
}
