//! The agent: the read-only registry on every node, and a P2P peer.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{AgentPeer, local_addr};
use crate::cluster::{RemoteCluster, TrackerClientConfig};
use crate::keypath::KeyPath;
use crate::load::sealed;
use crate::net::Cidr;
use crate::observe::{LogConfig, MetricsConfig};
use crate::scheduler::SchedulerConfig;
use crate::store::StoreConfig;
use crate::validate::{Problems, Validate};

/// `agent.yaml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The registry endpoint containerd and Docker pull from.
    pub registry: AgentRegistry,
    /// The P2P endpoint.
    pub peer: AgentPeer,
    /// Where tags are resolved.
    pub build_index: RemoteCluster,
    /// Where torrents are announced.
    pub tracker: TrackerClientConfig,
    /// P2P download settings.
    pub scheduler: SchedulerConfig,
    /// On-disk cache.
    pub store: StoreConfig,
    /// Clients allowed to use the registry endpoint; unset means any.
    pub allowed_cidrs: Option<Vec<Cidr>>,
    /// Logging.
    pub log: LogConfig,
    /// Metrics endpoint.
    pub metrics: MetricsConfig,
}

/// An agent's `registry:` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentRegistry {
    /// Where the registry listens [127.0.0.1:16000]: only this node's runtime should pull here.
    pub listen: SocketAddr,
}

impl Default for AgentRegistry {
    fn default() -> Self {
        AgentRegistry {
            listen: local_addr(16000),
        }
    }
}

impl sealed::Role for AgentConfig {
    fn check(&self, problems: &mut Problems) {
        let root = KeyPath::root();
        self.tracker.validate(&root.key("tracker"), problems);
        self.scheduler.validate(&root.key("scheduler"), problems);
        self.store.validate(&root.key("store"), problems);
    }
}
