//! Serving a router on a listener, the one way every role and `shoal dev` do it: hyper's HTTP/1
//! server over each accepted connection, with the limits of `server:` ([`ServeOptions`]).
//!
//! - A connection limit ([`slots`]): past it the longest-idle connection is closed to admit
//!   a new one, and with none idle new connections wait; never more than the process's
//!   file descriptors allow.
//! - A watchdog per connection ([`conn`]): a new connection, and each request after the first
//!   byte of its head, must send the whole head within `header_timeout`; a kept-alive
//!   connection with no request closes after `idle_timeout`; a response that waits on a client
//!   that stopped reading fails after `send_timeout`.
//! - Request bodies slower than `min_body_rate` over `body_timeout` fail ([`body`]).
//! - TLS, with client certificates required when a client CA is set ([`tls`]).
//! - `allowed_cidrs`: other clients get 403 `DENIED`.
//! - A request id per request, in the `X-Request-Id` response header and a span around the
//!   request's work ([`request_id`]), and one log line per request ([`log`], with the route
//!   fields of [`route`]), counted for `/metrics` as it is written ([`metrics`]).

mod body;
mod conn;
pub mod log;
pub mod metrics;
pub mod request_id;
mod route;
mod slots;
mod tls;

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use shoal_config::{Cidr, ServerConfig};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::RoleError;

pub use metrics::HttpMetrics;
pub use request_id::{RequestId, X_REQUEST_ID};
pub use tls::{load_cluster_tls, load_peer_tls, load_server_tls};

/// A role's HTTP listener, and the listener of its `/metrics` alone when `metrics.listen` is
/// set.
#[derive(Debug)]
pub struct Listeners {
    /// The role's port (`listen`, or `registry.listen`).
    pub http: TcpListener,
    /// `metrics.listen`.
    pub metrics: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    /// The role's port alone.
    fn from(http: TcpListener) -> Self {
        Listeners {
            http,
            metrics: None,
        }
    }
}

/// How a listener treats its clients; built from `server:` by [`ServeOptions::from_config`].
#[derive(Clone)]
pub struct ServeOptions {
    /// Connections served at once (lowered to what the file-descriptor limit allows).
    pub max_connections: usize,
    /// Longest time for a request head (and the TLS handshake).
    pub header_timeout: Duration,
    /// Longest a kept-alive connection stays open with no request.
    pub idle_timeout: Duration,
    /// The window over which a request body's rate is measured; zero turns it off.
    pub body_timeout: Duration,
    /// Bytes per second a request body must bring.
    pub min_body_rate: u64,
    /// Longest a response waits for a client that does not read.
    pub send_timeout: Duration,
    /// TLS, when the listener speaks it.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The clients allowed; `None` allows any.
    pub allowed: Option<Vec<Cidr>>,
    /// Where requests are counted; shared by every listener served with these options (a
    /// clone shares it too).
    pub metrics: Arc<HttpMetrics>,
}

impl std::fmt::Debug for ServeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeOptions")
            .field("max_connections", &self.max_connections)
            .field("header_timeout", &self.header_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("min_body_rate", &self.min_body_rate)
            .field("send_timeout", &self.send_timeout)
            .field("tls", &self.tls.is_some())
            .field("allowed", &self.allowed)
            .finish()
    }
}

impl Default for ServeOptions {
    /// The defaults of `server:`, plain HTTP, any client.
    fn default() -> Self {
        Self::limits(&ServerConfig::default())
    }
}

impl ServeOptions {
    /// The options `server:` asks for, with its TLS files loaded.
    pub fn from_config(config: &ServerConfig) -> Result<Self, RoleError> {
        let mut options = Self::limits(config);
        if let Some(tls) = &config.tls {
            options.tls = Some(load_server_tls(tls)?);
        }
        Ok(options)
    }

    /// `server:` without its TLS.
    fn limits(config: &ServerConfig) -> Self {
        ServeOptions {
            max_connections: usize::try_from(config.max_connections).unwrap_or(usize::MAX),
            header_timeout: config.header_timeout.get(),
            idle_timeout: config.idle_timeout.get(),
            body_timeout: config.body_timeout.get(),
            min_body_rate: config.min_body_rate.get(),
            send_timeout: config.send_timeout.get(),
            tls: None,
            allowed: None,
            metrics: Arc::default(),
        }
    }

    /// Only clients in `cidrs` are served (others get 403 `DENIED`); `None` serves any.
    pub fn allowing(mut self, cidrs: Option<Vec<Cidr>>) -> Self {
        self.allowed = cidrs;
        self
    }

    /// The URL scheme clients use: `https` with TLS.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.allowed
            .as_ref()
            .is_none_or(|cidrs| cidrs.iter().any(|c| c.contains(ip)))
    }
}

/// File descriptors kept for everything but client connections: stores, plugins, outbound
/// connections, the peer port.
const RESERVED_FDS: u64 = 256;

/// Raises the soft file-descriptor limit to the hard one, logs the figure, and returns it;
/// once per process (the first listener served does it, so every role and `shoal dev` start
/// with it).
pub fn raise_fd_limit() -> u64 {
    static RAISED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *RAISED.get_or_init(raise)
}

fn raise() -> u64 {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => {
            tracing::info!(limit = n, "file-descriptor limit");
            n
        }
        Err(e) => {
            let (soft, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap_or((1024, 1024));
            tracing::warn!(%e, limit = soft, "could not raise the file-descriptor limit");
            soft
        }
    }
}

/// `wanted` connections, or fewer when the file-descriptor limit cannot hold that many beside
/// [`RESERVED_FDS`] (logged).
fn connection_limit(wanted: usize) -> usize {
    let soft = raise_fd_limit();
    let room = usize::try_from(soft.saturating_sub(RESERVED_FDS).max(soft / 2))
        .unwrap_or(usize::MAX)
        .max(1);
    if room < wanted {
        tracing::warn!(
            max_connections = wanted,
            fd_limit = soft,
            serving = room,
            "server.max_connections is more than the file-descriptor limit allows; \
             raise the limit (ulimit -n) to serve that many"
        );
    }
    wanted.min(room).max(1)
}

/// Serves `router` on `listener` until `shutdown` completes, with each peer's address as
/// axum's `ConnectInfo<SocketAddr>`; then in-flight requests finish and idle connections
/// close. Dropping the future instead closes every open connection at once.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(slots::Slots::new(connection_limit(options.max_connections)));
    serve_with_slots(listener, router, options, shutdown, slots).await
}

/// [`serve`] over `slots`, which tests read to see which connections are open.
async fn serve_with_slots(
    listener: TcpListener,
    router: Router,
    options: &ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    slots: Arc<slots::Slots>,
) -> io::Result<()> {
    let shared = Arc::new(conn::Shared {
        options: options.clone(),
        router: router.layer(axum::middleware::from_fn(route::record_matched)),
        slots,
    });
    let stopping = CancellationToken::new();
    let killed = CancellationToken::new();
    let _kill_on_drop = killed.clone().drop_guard();
    let tasks = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::error!(%e, "accepting a connection failed");
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = shared.slots.admit() => slot,
        };
        tasks.spawn(conn::run(
            shared.clone(),
            tcp,
            peer,
            slot,
            stopping.clone(),
            killed.clone(),
        ));
    }
    drop(listener);
    stopping.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod log_tests;
