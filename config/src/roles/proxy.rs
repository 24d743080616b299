//! The proxy: the push side of the registry API, in front of origins and build-indexes.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::any_addr;
use crate::access::AccessConfig;
use crate::cluster::RemoteCluster;
use crate::duration::Duration;
use crate::keypath::KeyPath;
use crate::load::sealed;
use crate::log::LogConfig;
use crate::observe::MetricsConfig;
use crate::server::{ClientTls, ServerConfig};
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
    /// How long pushed content stays in the proxy's own store.
    pub staging: StagingConfig,
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

/// A proxy's `registry:` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyRegistry {
    /// Where the registry listens [0.0.0.0:15000].
    #[serde(with = "crate::net::listen_addr")]
    pub listen: SocketAddr,
}

impl Default for ProxyRegistry {
    fn default() -> Self {
        ProxyRegistry {
            listen: any_addr(15000),
        }
    }
}

/// `staging:`: the proxy's store only stages pushes (the cluster keeps them once a push is
/// acknowledged), so its content is dropped once it is old enough.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StagingConfig {
    /// Content older than this is dropped from the proxy's store [1h]. It must exceed the
    /// longest push, from its first layer to its manifest.
    pub ttl: Duration,
    /// How often staged content is looked at [10m]; `0s` never drops any.
    pub interval: Duration,
}

impl Default for StagingConfig {
    fn default() -> Self {
        StagingConfig {
            ttl: Duration::from_secs(3600),
            interval: Duration::from_secs(600),
        }
    }
}

impl sealed::Role for ProxyConfig {
    fn check(&self, problems: &mut Problems) {
        self.access
            .validate(&KeyPath::root().key("access"), problems);
        self.server
            .validate(&KeyPath::root().key("server"), problems);
    }
}
