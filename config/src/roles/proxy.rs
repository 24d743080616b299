//! The proxy: the push side of the registry API, in front of origins and build-indexes.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::any_addr;
use crate::access::AccessConfig;
use crate::cluster::RemoteCluster;
use crate::keypath::KeyPath;
use crate::load::sealed;
use crate::observe::{LogConfig, MetricsConfig};
use crate::validate::{Problems, Validate};

/// `proxy.yaml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// The registry endpoint CI pushes to.
    pub registry: ProxyRegistry,
    /// Where blobs go.
    pub origin: RemoteCluster,
    /// Where tags go.
    pub build_index: RemoteCluster,
    /// Who may push, pull and delete [anyone].
    pub access: AccessConfig,
    /// Logging.
    pub log: LogConfig,
    /// Metrics endpoint.
    pub metrics: MetricsConfig,
}

/// A proxy's `registry:` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyRegistry {
    /// Where the registry listens [0.0.0.0:15000].
    pub listen: SocketAddr,
}

impl Default for ProxyRegistry {
    fn default() -> Self {
        ProxyRegistry {
            listen: any_addr(15000),
        }
    }
}

impl sealed::Role for ProxyConfig {
    fn check(&self, problems: &mut Problems) {
        self.access
            .validate(&KeyPath::root().key("access"), problems);
    }
}
