//! The listener's limits, driven over raw TCP so a test can behave as badly as a client can.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::*;

fn options() -> ServeOptions {
    ServeOptions {
        max_connections: 64,
        header_timeout: Duration::from_millis(500),
        idle_timeout: Duration::from_millis(800),
        body_timeout: Duration::from_millis(500),
        min_body_rate: 1000,
        send_timeout: Duration::from_millis(500),
        tls: None,
        allowed: None,
        metrics: Arc::default(),
    }
}

fn router() -> Router {
    Router::new()
        .route("/", axum::routing::get(|| async { "ok" }))
        .route(
            "/peer",
            axum::routing::get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                peer.to_string()
            }),
        )
        .route(
            "/upload",
            axum::routing::put(|body: axum::body::Bytes| async move { body.len().to_string() }),
        )
        .route("/big", axum::routing::get(|| async { vec![7u8; 64 << 20] }))
}

async fn start(options: ServeOptions) -> (SocketAddr, JoinHandle<io::Result<()>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server =
        tokio::spawn(
            async move { serve(listener, router(), &options, std::future::pending()).await },
        );
    (addr, server)
}

/// Reads until the peer closes, within `within`: `Some(bytes)` if it closed, `None` if it was
/// still open. (A bounded wait is how "it closes" is observed; no timing is asserted.)
async fn closed_within(conn: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = async {
        loop {
            let mut buf = [0u8; 4096];
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok().map(|()| got)
}

async fn get(conn: &mut TcpStream, path: &str) -> String {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nhost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_stalled_request_head_is_closed_and_others_are_served() {
    let (addr, _server) = start(options()).await;
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled.write_all(b"GET / HTTP/1.1\r\nhos").await.unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // Others are served meanwhile.
    let mut fresh = TcpStream::connect(addr).await.unwrap();
    assert!(get(&mut fresh, "/").await.starts_with("HTTP/1.1 200"));
    // Both are closed once the header timeout passes (well before 20 s).
    assert!(
        closed_within(&mut stalled, Duration::from_secs(20))
            .await
            .is_some()
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(20))
            .await
            .is_some()
    );
}

#[tokio::test]
async fn a_kept_alive_connection_is_closed_once_idle() {
    let (addr, _server) = start(options()).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    assert!(get(&mut conn, "/").await.starts_with("HTTP/1.1 200"));
    assert!(get(&mut conn, "/").await.starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut conn, Duration::from_secs(20))
            .await
            .is_some()
    );
}

#[tokio::test(start_paused = true)]
async fn the_watchdog_gives_a_head_the_header_timeout_and_a_kept_alive_wait_the_idle_one() {
    let header = Duration::from_secs(10);
    let idle = Duration::from_secs(60);
    let slots = std::sync::Arc::new(slots::Slots::new(4));
    let slot = slots.admit().await;
    let state = &slot.state;
    let start = tokio::time::Instant::now();
    // A new connection must send its head within the header timeout.
    assert_eq!(state.deadline(header, idle).unwrap().0, start + header);
    state.request_started();
    assert!(
        state.deadline(header, idle).is_none(),
        "a busy connection has no deadline"
    );
    tokio::time::advance(Duration::from_secs(100)).await;
    state.request_finished();
    let idle_since = tokio::time::Instant::now();
    assert_eq!(
        state.deadline(header, idle).unwrap(),
        (idle_since + idle, "idle_timeout")
    );
    // The first byte of the next request starts its header timeout.
    tokio::time::advance(Duration::from_secs(5)).await;
    state.read_some();
    let head_since = tokio::time::Instant::now();
    assert_eq!(
        state.deadline(header, idle).unwrap(),
        (head_since + header, "header_timeout")
    );
    // More bytes of the same head do not extend it.
    tokio::time::advance(Duration::from_secs(5)).await;
    state.read_some();
    assert_eq!(state.deadline(header, idle).unwrap().0, head_since + header);
    drop(slot);
    assert_eq!(slots.open(), 0);
}

#[tokio::test]
async fn a_body_slower_than_the_minimum_rate_fails() {
    let (addr, _server) = start(options()).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"PUT /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 100000\r\n\r\nabc")
        .await
        .unwrap();
    // 3 bytes and then nothing: the request fails and the connection closes.
    let reply = closed_within(&mut conn, Duration::from_secs(20))
        .await
        .expect("the connection stayed open");
    let reply = String::from_utf8_lossy(&reply);
    assert!(!reply.starts_with("HTTP/1.1 200"), "{reply}");
    // A body at a decent rate is taken whole.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let body = vec![b'x'; 100_000];
    conn.write_all(
        b"PUT /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 100000\r\nconnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    conn.write_all(&body).await.unwrap();
    let reply = closed_within(&mut conn, Duration::from_secs(20))
        .await
        .unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with("100000"),
        "{reply}"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_after_the_send_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let slots = Arc::new(slots::Slots::new(64));
    let watched = slots.clone();
    let _server = tokio::spawn(async move {
        serve_with_slots(
            listener,
            router(),
            &options(),
            std::future::pending(),
            slots,
        )
        .await
    });
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /big HTTP/1.1\r\nhost: t\r\n\r\n")
        .await
        .unwrap();
    // The server took the connection and started its 64 MiB answer; this client reads
    // nothing, so the socket buffers fill and the server's write waits.
    assert!(
        poll(Duration::from_secs(20), || watched.open() == 1).await,
        "the connection was never admitted"
    );
    // The server stays responsive meanwhile.
    let mut probe = TcpStream::connect(addr).await.unwrap();
    assert!(get(&mut probe, "/").await.starts_with("HTTP/1.1 200"));
    drop(probe);
    // It gives up on the stalled one (send_timeout, 500 ms): no connection stays open,
    // although this client never read a byte.
    assert!(
        poll(Duration::from_secs(30), || watched.open() == 0).await,
        "the stalled response was never dropped"
    );
    // The rest of the 64 MiB never arrives.
    let got = closed_within(&mut conn, Duration::from_secs(20))
        .await
        .expect("the connection stayed open");
    assert!(got.len() < 64 << 20, "the whole body arrived");
}

/// Polls `ready` every 20 ms until it holds or `deadline` passes; whether it held.
async fn poll(deadline: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let until = tokio::time::Instant::now() + deadline;
    while !ready() {
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[tokio::test]
async fn past_the_limit_the_oldest_idle_connection_makes_room() {
    let mut opts = options();
    opts.max_connections = 2;
    opts.header_timeout = Duration::from_secs(60);
    opts.idle_timeout = Duration::from_secs(60);
    let (addr, _server) = start(opts).await;
    let mut oldest = TcpStream::connect(addr).await.unwrap();
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert!(get(&mut second, "/").await.starts_with("HTTP/1.1 200"));
    // A third client is served: the oldest idle one is closed for it.
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert!(get(&mut third, "/").await.starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut oldest, Duration::from_secs(20))
            .await
            .is_some()
    );
}

#[tokio::test]
async fn past_the_limit_busy_connections_are_kept_and_new_ones_wait() {
    let mut opts = options();
    opts.max_connections = 1;
    opts.body_timeout = Duration::ZERO;
    opts.header_timeout = Duration::from_secs(60);
    let (addr, _server) = start(opts).await;
    // A request in progress (its body still coming) holds the only slot.
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"PUT /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\n\r\nab")
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut waiting = tokio::spawn(async move { http.get(format!("http://{addr}/")).send().await });
    // "Nothing arrives" is checked with a short timeout.
    let early = tokio::time::timeout(Duration::from_millis(300), &mut waiting).await;
    assert!(
        early.is_err(),
        "served past the limit by closing a busy connection"
    );
    busy.write_all(b"cd").await.unwrap();
    let mut buf = vec![0; 1024];
    let n = busy.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    drop(busy);
    let reply = waiting.await.unwrap().unwrap();
    assert_eq!(reply.text().await.unwrap(), "ok");
}

#[tokio::test]
async fn clients_outside_allowed_cidrs_get_denied() {
    let opts = options().allowing(Some(vec!["10.0.0.0/8".parse().unwrap()]));
    let (addr, _server) = start(opts).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let reply = get(&mut conn, "/").await;
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(reply.contains(r#""code":"DENIED""#), "{reply}");
    let opts = options().allowing(Some(vec!["127.0.0.0/8".parse().unwrap()]));
    let (addr, _server) = start(opts).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    assert!(get(&mut conn, "/").await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn handlers_see_the_peer_address() {
    let (addr, _server) = start(options()).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let local = conn.local_addr().unwrap();
    conn.write_all(b"GET /peer HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    conn.read_to_end(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.ends_with(&local.to_string()), "{reply}");
}

#[tokio::test]
async fn a_dropped_server_answers_nothing_more_on_a_kept_alive_connection() {
    let (addr, server) = start(options()).await;
    let mut conn = TcpStream::connect(addr).await.unwrap();
    assert!(get(&mut conn, "/").await.starts_with("HTTP/1.1 200"));
    server.abort();
    let _ = server.await;
    // The connection's own task is told to close: the next read sees the end, not an
    // answer (a write may still land in the socket's buffer first).
    let _ = conn.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").await;
    let mut buf = vec![0; 1024];
    let n = conn.read(&mut buf).await.unwrap_or(0);
    assert_eq!(
        n,
        0,
        "answered after the server was dropped: {:?}",
        &buf[..n]
    );
}

#[tokio::test]
async fn shutdown_lets_a_request_in_progress_finish() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (entered_tx, mut entered) = tokio::sync::mpsc::channel::<()>(1);
    let router = Router::new().route(
        "/upload",
        axum::routing::put(move |body: axum::body::Body| {
            let entered_tx = entered_tx.clone();
            async move {
                let _ = entered_tx.send(()).await;
                let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                bytes.len().to_string()
            }
        }),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let opts = options();
    let server = tokio::spawn(async move {
        serve(listener, router, &opts, async move {
            let _ = stopped.await;
        })
        .await
    });
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"PUT /upload HTTP/1.1\r\nhost: t\r\ncontent-length: 4\r\n\r\nab")
        .await
        .unwrap();
    entered.recv().await.unwrap();
    stop.send(()).unwrap();
    conn.write_all(b"cd").await.unwrap();
    let reply = closed_within(&mut conn, Duration::from_secs(20))
        .await
        .unwrap();
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.ends_with('4'),
        "{reply}"
    );
    server.await.unwrap().unwrap();
}

/// RFC 9112, section 3.2: an HTTP/1.1 request without a Host, or with two, is answered 400
/// and its connection closed; HTTP/1.0 needs none.
#[tokio::test]
async fn a_request_without_exactly_one_host_is_refused() {
    let (addr, _server) = start(options()).await;
    for head in [
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
    ] {
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(head.as_bytes()).await.unwrap();
        let got = closed_within(&mut conn, Duration::from_secs(30))
            .await
            .expect("the connection stayed open");
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 400"), "{head:?}: {got}");
        assert!(got.contains("Host"), "{got}");
    }
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let got = closed_within(&mut conn, Duration::from_secs(30))
        .await
        .expect("an HTTP/1.0 connection closes after its answer");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.0 200"), "{got}");
    assert!(got.ends_with("ok"), "{got}");
}
