//! [`RoleError`]: why a role could not start or stopped serving. Request-level failures are
//! [`crate::http::HttpError`] responses, not this.

use std::net::SocketAddr;
use std::path::PathBuf;

use shoal_p2p::{RingError, SchedulerError, StoreError, TlsError, TrackerError};

/// Why a role service failed; each variant names what the operator would fix.
#[derive(Debug, thiserror::Error)]
pub enum RoleError {
    /// The piece store could not be opened.
    #[error("opening the piece store {}: {source}", path.display())]
    PieceStore {
        /// Its root.
        path: PathBuf,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// The registry store could not be opened.
    #[error("opening the registry store {}: {source}", path.display())]
    RegistryStore {
        /// Its root.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The job queue on disk could not be opened.
    #[error("opening the job queue {}: {source}", path.display())]
    Queue {
        /// Its folder.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file of a `tls` block could not be used.
    #[error("{key}: {source}")]
    Tls {
        /// The block's key path: `server.tls`, `client_tls` or `peer.tls`.
        key: &'static str,
        /// The file and what is wrong with it.
        #[source]
        source: TlsError,
    },
    /// A `hosts: {dns: ...}` name did not resolve.
    #[error("resolving hosts.dns {name}: {why}")]
    Resolve {
        /// The name and port.
        name: String,
        /// Why.
        why: String,
    },
    /// The peer listener listens on all addresses and no `peer.ip` says which one to announce.
    #[error(
        "peer.listen is {bound}, which other peers cannot dial: set peer.ip to this host's \
         address, or listen on a specific one"
    )]
    Undialable {
        /// The bound address.
        bound: SocketAddr,
    },
    /// The scheduler could not be built.
    #[error("scheduler: {0}")]
    Scheduler(#[from] SchedulerError),
    /// The tracker client could not be built.
    #[error("tracker client: {0}")]
    Tracker(#[from] TrackerError),
    /// The hash ring could not be built.
    #[error("hash ring: {0}")]
    Ring(#[from] RingError),
    /// An entry of `registry.mirrors` cannot be used (config validation catches it first).
    #[error("registry.mirrors: {0}")]
    Mirrors(#[from] shoal_registry::mirror::MirrorError),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    /// Serving failed.
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}
