//! shoal's storage contract, without a WebAssembly runtime: what a storage backend is
//! ([`Backend`], [`BackendError`], [`ByteStream`]) and what a health-check policy is
//! ([`HealthPolicy`]). The plugin host (`shoal-host`) implements both with components; the
//! roles, tests and the simulator implement them natively ([`memory::MemoryBackend`]).
//!
//! Around the contract: [`router`] (the seed's `backends:` list: namespace → backend, first
//! full match that holds the content), [`backing`] (the registry's durable storage over the
//! router, with Kraken's object names), [`bandwidth`] (the one token-bucket limiter, used
//! by backends' `bandwidth:` and peers' `scheduler.conn.bandwidth`), and [`metered`] (every
//! call through a router counted and timed, for `/metrics`).

#![warn(missing_docs)]

pub mod backing;
pub mod bandwidth;
pub mod memory;
pub mod metered;
pub mod router;

pub use backing::StorageBacking;
pub use bandwidth::{BandwidthLimiter, TokenBucket};
pub use memory::MemoryBackend;
pub use metered::{BackendMetrics, PluginHealth};
pub use router::{Content, Holds, NamespaceRouter, Route};

use std::fmt;
use std::io;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use futures_util::Stream;

/// A stream of blob bytes, as downloads return and uploads take.
pub type ByteStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'static>>;

/// What `stat` knows about a blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    /// Length in bytes.
    pub size: u64,
}

/// `length` bytes from `offset`, or to the end when `length` is `None`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub offset: u64,
    /// How many bytes; `None` reads to the end.
    pub length: Option<u64>,
}

/// One page of names; pass `continuation` back for the next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    /// Names in a stable order.
    pub names: Vec<String>,
    /// Where the next page starts; `None` on the last page.
    pub continuation: Option<String>,
}

/// A download: the bytes, and their count when the backend knows it up front.
pub struct Download {
    /// Length of the body (of the range, when one was asked for).
    pub length: Option<u64>,
    /// The bytes; an `Err` item means the transfer broke off.
    pub body: ByteStream,
}

impl fmt::Debug for Download {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Download")
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// Why a backend call failed; every variant names the plugin, one variant per thing the
/// caller can act on (`NotFound` becomes BLOB_UNKNOWN, the rest a 5xx naming the plugin).
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // every variant's fields: the backend's name and what it said
pub enum BackendError {
    /// No blob or tag with that name.
    #[error("plugin {plugin}: {name} not found")]
    NotFound { plugin: String, name: String },
    /// The storage refused the credentials, or the host refused the plugin a host.
    #[error("plugin {plugin}: unauthorized: {message}")]
    Unauthorized { plugin: String, message: String },
    /// The storage asked to slow down.
    #[error("plugin {plugin}: throttled: {message}")]
    Throttled { plugin: String, message: String },
    /// The storage could not be reached or failed.
    #[error("plugin {plugin}: storage unavailable: {message}")]
    Unavailable { plugin: String, message: String },
    /// The request was wrong for this backend.
    #[error("plugin {plugin}: invalid request: {message}")]
    Invalid { plugin: String, message: String },
    /// The plugin reported some other failure.
    #[error("plugin {plugin}: {message}")]
    Other { plugin: String, message: String },
    /// The plugin crashed: a panic, its deadline, its memory cap. Its store was discarded.
    #[error("plugin {plugin} trapped: {message}")]
    Trapped { plugin: String, message: String },
    /// The plugin tried to reach a URL its config does not grant; the request never left.
    #[error("plugin {plugin} tried to reach {url}, which its config does not grant")]
    HostDenied { plugin: String, url: String },
    /// The plugin trapped too often in a row; it is not called until the cool-down ends.
    #[error("plugin {plugin} is paused after repeated traps; next try in {retry_in:?}")]
    BreakerOpen { plugin: String, retry_in: Duration },
}

impl BackendError {
    /// The plugin the error came from.
    pub fn plugin(&self) -> &str {
        match self {
            BackendError::NotFound { plugin, .. }
            | BackendError::Unauthorized { plugin, .. }
            | BackendError::Throttled { plugin, .. }
            | BackendError::Unavailable { plugin, .. }
            | BackendError::Invalid { plugin, .. }
            | BackendError::Other { plugin, .. }
            | BackendError::Trapped { plugin, .. }
            | BackendError::HostDenied { plugin, .. }
            | BackendError::BreakerOpen { plugin, .. } => plugin,
        }
    }
}

/// A storage backend, native or plugin: dumb, path-free byte storage under namespace + name.
///
/// Every backend, native or plugin, passes the shared conformance suite in
/// `host/tests/backend_conformance.rs`.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// The backend's name in logs and errors.
    fn name(&self) -> &str;

    /// Size of a blob.
    async fn stat(&self, namespace: &str, name: &str) -> Result<BlobInfo, BackendError>;

    /// A blob's bytes, or part of them.
    async fn download(
        &self,
        namespace: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<Download, BackendError>;

    /// Stores `size` bytes from `body`.
    async fn upload(
        &self,
        namespace: &str,
        name: &str,
        size: u64,
        body: ByteStream,
    ) -> Result<(), BackendError>;

    /// Names under `prefix`, at most `limit`, after `continuation`.
    async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        continuation: Option<String>,
        limit: u32,
    ) -> Result<ListPage, BackendError>;

    /// Removes a blob.
    async fn delete(&self, namespace: &str, name: &str) -> Result<(), BackendError>;

    /// Stores the file at `path` under `name` without copying its bytes, when the backend keeps
    /// its objects on the same file system (a hard link); `Ok(false)` when it cannot, and the
    /// caller streams the file through [`Backend::upload`] instead. Only for files that are
    /// never written again (the local store's committed blobs), since both names then share
    /// one inode.
    async fn link_file(
        &self,
        _namespace: &str,
        _name: &str,
        _path: &std::path::Path,
    ) -> Result<bool, BackendError> {
        Ok(false)
    }

    /// A plugin's traps and breaker, for metrics; `None` for a native backend. Wrappers pass
    /// their inner backend's on.
    fn plugin_health(&self) -> Option<PluginHealth> {
        None
    }
}

/// A health-check policy: fed observations, asked for verdicts. It keeps state between
/// calls, so one instance lives as long as the policy (until it traps).
#[async_trait::async_trait]
pub trait HealthPolicy: Send + Sync {
    /// Records one check of `host` at `now`.
    async fn observe(&self, host: &str, ok: bool, now: SystemTime) -> Result<(), BackendError>;

    /// Whether `host` should be used at `now`.
    async fn healthy(&self, host: &str, now: SystemTime) -> Result<bool, BackendError>;
}

/// Why a rate limit cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BandwidthError {
    /// A rate of zero would block forever.
    #[error("{direction} rate is 0 bits per second: expected at least 1")]
    ZeroRate {
        /// `egress` or `ingress`.
        direction: &'static str,
    },
    /// A token size of zero has no meaning.
    #[error("token_size is 0 bits: expected at least 1")]
    ZeroTokenSize,
}
