//! The origin: a dedicated seeder that owns blobs by rendezvous hash and talks to the storage
//! backends.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{OriginPeer, any_addr};
use crate::auth::AuthConfig;
use crate::backend::{BackendEntry, validate_backends};
use crate::bytesize::ByteSize;
use crate::cluster::{ClusterConfig, HashRingConfig, TrackerClientConfig};
use crate::keypath::KeyPath;
use crate::load::sealed;
use crate::log::LogConfig;
use crate::observe::MetricsConfig;
use crate::plugin_source::{backend_sources, check_pins, policy_source};
use crate::plugins::PluginsConfig;
use crate::retry::RetryConfig;
use crate::scheduler::SchedulerConfig;
use crate::server::{ClientTls, ServerConfig};
use crate::store::StoreConfig;
use crate::validate::{Problems, Validate};

/// `origin.yaml`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OriginConfig {
    /// Where the blob server (HTTP) listens [0.0.0.0:15002].
    #[serde(with = "crate::net::listen_addr")]
    pub listen: SocketAddr,
    /// The P2P endpoint.
    pub peer: OriginPeer,
    /// The origin ring; unset means a ring of one.
    #[serde(skip_serializing_if = "ClusterConfig::is_unset")]
    pub cluster: ClusterConfig,
    /// Replication across the ring.
    pub hashring: HashRingConfig,
    /// Storage backends by namespace.
    pub backends: Vec<BackendEntry>,
    /// Credentials the backends name.
    pub auth: AuthConfig,
    /// P2P seeding settings.
    pub scheduler: SchedulerConfig,
    /// On-disk cache.
    pub store: StoreConfig,
    /// Retries of the queue that writes pushed blobs back to the backend and copies blobs to
    /// the replica set.
    pub writeback: WritebackConfig,
    /// How blobs are cut into pieces.
    pub metainfogen: MetainfoGenConfig,
    /// Where torrents are announced.
    pub tracker: TrackerClientConfig,
    /// Connection limits, timeouts and TLS of the HTTP listeners.
    pub server: ServerConfig,
    /// HTTPS to the other roles; unset speaks plain HTTP to them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tls: Option<ClientTls>,
    /// Logging.
    pub log: LogConfig,
    /// Metrics endpoint.
    pub metrics: MetricsConfig,
    /// Limits of the backend plugins.
    pub plugins: PluginsConfig,
}

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            listen: any_addr(15002),
            peer: OriginPeer::default(),
            cluster: ClusterConfig::default(),
            hashring: HashRingConfig::default(),
            backends: Vec::new(),
            auth: AuthConfig::default(),
            scheduler: SchedulerConfig::default(),
            store: StoreConfig::default(),
            writeback: WritebackConfig::default(),
            metainfogen: MetainfoGenConfig::default(),
            tracker: TrackerClientConfig::default(),
            server: ServerConfig::default(),
            client_tls: None,
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            plugins: PluginsConfig::default(),
        }
    }
}

/// `writeback:`: retries of the origin's job queue on disk, which writes pushed blobs back to
/// the backend and copies them to the replica set (see [`RetryConfig`]).
pub type WritebackConfig = RetryConfig;

/// How the origin cuts blobs into pieces (Kraken's `metainfogen`): `piece_lengths` maps a blob
/// size to the piece length used from that size up, e.g. `{0: 4MB, 2GB: 8MB}`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetainfoGenConfig {
    /// Blob size → piece length for blobs of at least that size.
    pub piece_lengths: BTreeMap<ByteSize, ByteSize>,
}

/// The largest piece length a peer accepts (64 MiB; `shoal_p2p::metainfo::MAX_PIECE_LENGTH`).
pub const MAX_PIECE_LENGTH: u64 = 64 << 20;

impl Default for MetainfoGenConfig {
    fn default() -> Self {
        MetainfoGenConfig {
            piece_lengths: BTreeMap::from([(ByteSize(0), ByteSize(4 << 20))]),
        }
    }
}

impl MetainfoGenConfig {
    /// The piece length for a blob of `size` bytes (`None`: size unknown, the smallest entry's).
    pub fn piece_length(&self, size: Option<u64>) -> u64 {
        let pick = match size {
            Some(size) => self
                .piece_lengths
                .range(..=ByteSize(size))
                .next_back()
                .or_else(|| self.piece_lengths.iter().next()),
            None => self.piece_lengths.iter().next(),
        };
        pick.map(|(_, len)| len.get()).unwrap_or(4 << 20)
    }
}

impl Validate for MetainfoGenConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        let lengths = at.key("piece_lengths");
        problems.require(
            !self.piece_lengths.is_empty(),
            &lengths,
            "must list at least one size",
            "a map like {0: 4MB, 2GB: 8MB}",
        );
        for (from, len) in &self.piece_lengths {
            problems.require(
                (1..=MAX_PIECE_LENGTH).contains(&len.get()),
                &lengths.key(&from.to_string()),
                "is out of range",
                "a piece length from 1B to 64MB",
            );
        }
    }
}

impl sealed::Role for OriginConfig {
    fn check(&self, problems: &mut Problems) {
        let root = KeyPath::root();
        self.server.validate(&root.key("server"), problems);
        if let Some(tls) = &self.peer.tls {
            tls.validate(&root.key("peer").key("tls"), problems);
        }
        if let Some(tls) = &self.client_tls {
            tls.validate(&root.key("client_tls"), problems);
        }
        self.cluster.validate(&root.key("cluster"), problems);
        self.hashring.validate(&root.key("hashring"), problems);
        validate_backends(&self.backends, &self.auth, problems);
        self.scheduler.validate(&root.key("scheduler"), problems);
        self.store.validate(&root.key("store"), problems);
        self.writeback.validate(&root.key("writeback"), problems);
        self.metainfogen
            .validate(&root.key("metainfogen"), problems);
        self.tracker.validate(&root.key("tracker"), problems);
        self.plugins
            .validate(&KeyPath::root().key("plugins"), problems);
        let active = self.cluster.healthcheck.policy.as_ref();
        let passive = self.tracker.cluster.healthcheck.policy.as_ref();
        let sources = backend_sources(&self.backends)
            .chain(policy_source(active, &["cluster", "healthcheck", "policy"]))
            .chain(policy_source(
                passive,
                &["tracker", "cluster", "healthcheck", "policy"],
            ));
        check_pins(sources, self.plugins.allow_tags, problems);
    }
}
