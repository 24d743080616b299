//! The tracker: who has which torrent, in peer-set time windows.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::any_addr;
use crate::cluster::{RemoteCluster, TrackerCluster};
use crate::duration::Duration;
use crate::keypath::KeyPath;
use crate::load::sealed;
use crate::log::LogConfig;
use crate::observe::MetricsConfig;
use crate::peerstore::PeerStoreConfig;
use crate::plugin_source::{check_pins, policy_source};
use crate::server::{ClientTls, ServerConfig};
use crate::validate::{Problems, Validate};

/// `tracker.yaml`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerConfig {
    /// Where the announce server listens [0.0.0.0:15003].
    #[serde(with = "crate::net::listen_addr")]
    pub listen: SocketAddr,
    /// Where announces are kept.
    pub peerstore: PeerStoreConfig,
    /// The origins, for metainfo and as seeders of last resort.
    pub origin: RemoteCluster,
    /// The interval peers are told to announce at [3s].
    pub announce_interval: Duration,
    /// Most peers handed out per announce [50]; `max_peers_returned` is accepted too.
    #[serde(alias = "max_peers_returned")]
    pub peer_handout_limit: u32,
    /// The tracker ring; unset means a ring of one.
    #[serde(skip_serializing_if = "TrackerCluster::is_unset")]
    pub cluster: TrackerCluster,
    /// Connection limits, timeouts and TLS of the HTTP listeners.
    pub server: ServerConfig,
    /// HTTPS to the other roles; unset speaks plain HTTP to them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tls: Option<ClientTls>,
    /// Logging.
    pub log: LogConfig,
    /// Metrics endpoint.
    pub metrics: MetricsConfig,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            listen: any_addr(15003),
            peerstore: PeerStoreConfig::default(),
            origin: RemoteCluster::default(),
            announce_interval: Duration::from_secs(3),
            peer_handout_limit: 50,
            cluster: TrackerCluster::default(),
            server: ServerConfig::default(),
            client_tls: None,
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl sealed::Role for TrackerConfig {
    fn check(&self, problems: &mut Problems) {
        let root = KeyPath::root();
        self.server.validate(&root.key("server"), problems);
        if let Some(tls) = &self.client_tls {
            tls.validate(&root.key("client_tls"), problems);
        }
        self.peerstore.validate(&root.key("peerstore"), problems);
        self.cluster.validate(&root.key("cluster"), problems);
        // No `plugins:` block here: a policy must pin its digest.
        let policy = self.cluster.healthcheck.policy.as_ref();
        check_pins(
            policy_source(policy, &["cluster", "healthcheck", "policy"]),
            false,
            problems,
        );
        problems.at_least_one(
            self.peer_handout_limit.into(),
            &root.key("peer_handout_limit"),
        );
        problems.require(
            !self.announce_interval.is_zero(),
            &root.key("announce_interval"),
            "must be longer than 0s",
            "a duration like 3s",
        );
    }
}
