//! One connection: the TLS handshake when the listener speaks TLS, hyper's HTTP/1 server over
//! it, and a watchdog that closes it when a client takes too long.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use shoal_registry::{ErrorCode, RegistryError};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::Instrument;

use super::ServeOptions;
use super::body::MinRate;
use super::log::{RequestLog, Sent};
use super::request_id::{RequestId, X_REQUEST_ID};
use super::slots::{ConnState, Slot, Slots};

/// What every connection of one listener shares.
pub(super) struct Shared {
    pub(super) options: ServeOptions,
    pub(super) router: Router,
    pub(super) slots: Arc<Slots>,
}

/// Serves one accepted connection until it closes, its watchdog closes it, the limit needs
/// its slot, or the server is dropped (`killed`); `stopping` lets in-flight requests finish.
pub(super) async fn run(
    shared: Arc<Shared>,
    tcp: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    stopping: CancellationToken,
    killed: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let state = slot.state.clone();
    let Some(tls) = shared.options.tls.clone() else {
        http(shared, tcp, peer, state, stopping, killed).await;
        return;
    };
    let header_timeout = shared.options.header_timeout;
    let handshake = async {
        if !speaks_tls(&tcp).await? {
            refuse_plain_http(tcp).await;
            return Ok(None);
        }
        tokio_rustls::TlsAcceptor::from(tls)
            .accept(tcp)
            .await
            .map(Some)
    };
    let stream = tokio::select! {
        r = tokio::time::timeout(header_timeout, handshake) => match r {
            Ok(Ok(Some(stream))) => stream,
            Ok(Ok(None)) => return,
            Ok(Err(e)) => {
                tracing::debug!(%peer, %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake took longer than server.header_timeout");
                return;
            }
        },
        () = killed.cancelled() => return,
        () = state.close.cancelled() => return,
    };
    http(shared, stream, peer, state, stopping, killed).await;
    drop(slot);
}

/// Whether the client's first byte starts a TLS handshake (a handshake record is 0x16).
async fn speaks_tls(tcp: &TcpStream) -> io::Result<bool> {
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first).await?;
    Ok(n == 1 && first[0] == 0x16)
}

/// Answers a plain-HTTP request on a TLS port with a 400 that says so, as Go's servers do.
async fn refuse_plain_http(mut tcp: TcpStream) {
    const BODY: &str = "This port speaks TLS: use https://\n";
    let reply = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tcp.write_all(reply.as_bytes()).await;
    let _ = tcp.shutdown().await;
}

/// HTTP/1 over `io` with the watchdog.
async fn http<IO>(
    shared: Arc<Shared>,
    io: IO,
    peer: SocketAddr,
    state: Arc<ConnState>,
    stopping: CancellationToken,
    killed: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let options = &shared.options;
    let io = Watched {
        io,
        state: state.clone(),
        send_timeout: options.send_timeout,
        stalled: None,
    };
    let service = {
        let shared = shared.clone();
        let state = state.clone();
        hyper::service::service_fn(move |request: Request<Incoming>| {
            let shared = shared.clone();
            let state = state.clone();
            async move { Ok::<_, Infallible>(respond(&shared, &state, peer, request).await) }
        })
    };
    // hyper's own header timer would also end kept-alive connections after the header
    // timeout; the watchdog below keeps the two apart.
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    // The watchdog is never told of a phase change (three per request, each a wake-up of
    // this task): it wakes at the deadline it last read, or sooner, at most `recheck` after
    // it last looked. A head or an idle wait that begins after that look lasts at least
    // `recheck` (the shorter timeout), so the watchdog sees it before its deadline passes,
    // and sleeps until exactly that deadline.
    let recheck = options
        .header_timeout
        .min(options.idle_timeout)
        .max(MIN_RECHECK);
    let watchdog = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(watchdog);
    let mut draining = false;
    loop {
        let now = Instant::now();
        let wake = match state.deadline(options.header_timeout, options.idle_timeout) {
            Some((at, why)) if at <= now => {
                tracing::debug!(%peer, timeout = why, "closing a connection past server.{why}");
                return;
            }
            Some((at, _)) => at.min(now + recheck),
            None => now + recheck,
        };
        watchdog.as_mut().reset(wake);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, %e, "connection ended with an error");
                }
                return;
            }
            () = watchdog.as_mut() => {}
            () = state.close.cancelled() => {
                tracing::debug!(%peer, "closing an idle connection: the connection limit needs its slot");
                return;
            }
            () = stopping.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            () = killed.cancelled() => return,
        }
    }
}

/// The watchdog looks at least this rarely, however short the timeouts.
const MIN_RECHECK: Duration = Duration::from_millis(10);

/// One request: refused outside `allowed_cidrs`, else the router's answer, with the body's
/// minimum rate on the way in, a request id both ways, served in the request's span, logged
/// once sent (see [`super::log`]), and the connection busy until then.
async fn respond(
    shared: &Shared,
    state: &Arc<ConnState>,
    peer: SocketAddr,
    request: Request<Incoming>,
) -> Response<Body> {
    state.request_started();
    let busy = Busy(state.clone());
    let options = &shared.options;
    let id = RequestId::for_request(request.headers());
    let span = tracing::error_span!("request", request_id = id.as_str());
    let bytes_in = Arc::new(AtomicU64::new(0));
    let mut log = RequestLog::start(
        id.clone(),
        request.method(),
        request.uri().path(),
        peer,
        bytes_in.clone(),
        options.metrics.clone(),
    );
    let mut response = if let Some(why) = host_trouble(&request) {
        span.in_scope(|| tracing::debug!(%peer, why, "refused a request"));
        bad_host(why)
    } else if options.allows(peer.ip()) {
        let mut request = request.map(|body| {
            Body::new(MinRate::new(
                body,
                options.body_timeout,
                options.min_body_rate,
                bytes_in,
            ))
        });
        request
            .headers_mut()
            .insert(X_REQUEST_ID, id.header_value());
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(id.clone());
        match shared
            .router
            .clone()
            .oneshot(request)
            .instrument(span.clone())
            .await
        {
            Ok(r) => r,
            Err(never) => match never {},
        }
    } else {
        span.in_scope(|| tracing::debug!(%peer, "refused a client outside allowed_cidrs"));
        denied()
    };
    response
        .headers_mut()
        .insert(X_REQUEST_ID, id.header_value());
    log.responded(&response);
    response.map(|body| Body::new(Sent::new(body, span, log, busy)))
}

/// What is wrong with a request's `Host`, if anything: an HTTP/1.1 request must carry exactly
/// one (RFC 9112, section 3.2; hyper does not check).
fn host_trouble<B>(request: &Request<B>) -> Option<&'static str> {
    let mut hosts = request.headers().get_all(axum::http::header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (None, _) if request.version() == axum::http::Version::HTTP_11 => {
            Some("an HTTP/1.1 request needs a Host header")
        }
        (Some(_), Some(_)) => Some("a request has one Host header, not several"),
        _ => None,
    }
}

/// 400 for a request with a missing or repeated `Host`; the connection closes after it.
fn bad_host(why: &'static str) -> Response<Body> {
    let mut response = (axum::http::StatusCode::BAD_REQUEST, why).into_response();
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// 403 `DENIED`, in the distribution spec's error form.
fn denied() -> Response<Body> {
    RegistryError::new(
        ErrorCode::Denied,
        "this client's address is not in allowed_cidrs",
    )
    .into_response()
}

/// Marks its connection busy until dropped (the response sent, or abandoned).
struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A connection's I/O: reads tell the watchdog a request has begun, and a write that waits
/// longer than `send_timeout` on a client that does not read fails.
struct Watched<IO> {
    io: IO,
    state: Arc<ConnState>,
    send_timeout: Duration,
    /// Armed while a write waits.
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<IO> Watched<IO> {
    /// Called when a write could not proceed: an error once it has waited `send_timeout`.
    fn poll_stall(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let timeout = self.send_timeout;
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        stalled.as_mut().poll(cx).is_ready().then(|| {
            io::Error::new(
                io::ErrorKind::TimedOut,
                "the client read nothing for server.send_timeout",
            )
        })
    }

    fn wrote<T>(&mut self, r: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match r {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => match self.poll_stall(cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.read_some();
        }
        r
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(r, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(r, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.wrote(r, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
