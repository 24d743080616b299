//! The build-index: tag to digest, backed by a storage backend and replicated to remote
//! build-indexes.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::any_addr;
use crate::auth::AuthConfig;
use crate::backend::{BackendEntry, validate_backends};
use crate::cluster::RemoteCluster;
use crate::duration::Duration;
use crate::keypath::KeyPath;
use crate::load::sealed;
use crate::log::LogConfig;
use crate::observe::MetricsConfig;
use crate::plugin_source::{backend_sources, check_pins};
use crate::plugins::PluginsConfig;
use crate::retry::RetryConfig;
use crate::server::{ClientTls, ServerConfig};
use crate::validate::{Problems, Validate};

/// `build-index.yaml`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuildIndexConfig {
    /// Where the tag server listens [0.0.0.0:15004].
    #[serde(with = "crate::net::listen_addr")]
    pub listen: SocketAddr,
    /// Storage backends by namespace.
    pub backends: Vec<BackendEntry>,
    /// Credentials the backends name.
    pub auth: AuthConfig,
    /// Remote build-indexes that tags are replicated to; unset means none.
    #[serde(skip_serializing_if = "RemoteCluster::is_unset")]
    pub cluster: RemoteCluster,
    /// Local cache of resolved tags.
    pub tag_cache: TagCacheConfig,
    /// Retries of the queue that copies tags to the remote build-indexes of `cluster:`.
    pub replication: RetryConfig,
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

impl Default for BuildIndexConfig {
    fn default() -> Self {
        BuildIndexConfig {
            listen: any_addr(15004),
            backends: Vec::new(),
            auth: AuthConfig::default(),
            cluster: RemoteCluster::default(),
            tag_cache: TagCacheConfig::default(),
            replication: RetryConfig::default(),
            server: ServerConfig::default(),
            client_tls: None,
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            plugins: PluginsConfig::default(),
        }
    }
}

/// `tag_cache:`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TagCacheConfig {
    /// Time-to-idle of a cached tag [6h].
    pub tti: Duration,
    /// Most tags cached; unset means only `tti` bounds the cache.
    pub capacity: Option<u64>,
}

impl Default for TagCacheConfig {
    fn default() -> Self {
        TagCacheConfig {
            tti: Duration::from_hours(6),
            capacity: None,
        }
    }
}

impl sealed::Role for BuildIndexConfig {
    fn check(&self, problems: &mut Problems) {
        let root = KeyPath::root();
        self.server.validate(&root.key("server"), problems);
        if let Some(tls) = &self.client_tls {
            tls.validate(&root.key("client_tls"), problems);
        }
        validate_backends(&self.backends, &self.auth, problems);
        self.replication
            .validate(&root.key("replication"), problems);
        if let Some(capacity) = self.tag_cache.capacity {
            problems.at_least_one(capacity, &root.key("tag_cache").key("capacity"));
        }
        self.plugins
            .validate(&KeyPath::root().key("plugins"), problems);
        check_pins(
            backend_sources(&self.backends),
            self.plugins.allow_tags,
            problems,
        );
    }
}
