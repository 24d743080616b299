//! The origin: a dedicated seeder that owns blobs by rendezvous hash and talks to the storage
//! backends.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{OriginPeer, any_addr};
use crate::auth::AuthConfig;
use crate::backend::{BackendEntry, validate_backends};
use crate::cluster::{ClusterConfig, HashRingConfig, TrackerClientConfig};
use crate::duration::Duration;
use crate::keypath::KeyPath;
use crate::load::sealed;
use crate::observe::{LogConfig, MetricsConfig};
use crate::plugins::PluginsConfig;
use crate::scheduler::SchedulerConfig;
use crate::store::StoreConfig;
use crate::validate::{Problems, Validate};

/// `origin.yaml`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OriginConfig {
    /// Where the blob server (HTTP) listens [0.0.0.0:15002].
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
    /// Write-back of pushed blobs to the backend.
    pub writeback: WritebackConfig,
    /// Where torrents are announced.
    pub tracker: TrackerClientConfig,
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
            tracker: TrackerClientConfig::default(),
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            plugins: PluginsConfig::default(),
        }
    }
}

/// `writeback:`: retries of the persisted queue that uploads pushed blobs to the backend.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WritebackConfig {
    /// Attempts before a task is parked as failed [5].
    pub retries: u32,
    /// Wait between attempts [10s].
    pub delay: Duration,
}

impl Default for WritebackConfig {
    fn default() -> Self {
        WritebackConfig {
            retries: 5,
            delay: Duration::from_secs(10),
        }
    }
}

impl sealed::Role for OriginConfig {
    fn check(&self, problems: &mut Problems) {
        let root = KeyPath::root();
        self.cluster.validate(&root.key("cluster"), problems);
        self.hashring.validate(&root.key("hashring"), problems);
        validate_backends(&self.backends, &self.auth, problems);
        self.scheduler.validate(&root.key("scheduler"), problems);
        self.store.validate(&root.key("store"), problems);
        self.tracker.validate(&root.key("tracker"), problems);
        self.plugins
            .validate(&KeyPath::root().key("plugins"), problems);
    }
}
