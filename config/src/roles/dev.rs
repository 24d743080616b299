//! `shoal dev`: the registry (push and pull) in one process over the storage backends, with the
//! origin's `backends:` and `auth:` at the top level, a local folder as the backend when none is
//! given, and `access:` for credentials. None of the P2P roles run in it.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::local_addr;
use crate::access::AccessConfig;
use crate::auth::AuthConfig;
use crate::backend::{
    Backend, BackendEntry, FsBackend, NamePath, NamespacePattern, validate_backends,
};
use crate::bandwidth::BandwidthConfig;
use crate::duration::Duration;
use crate::gc::GcConfig;
use crate::keypath::KeyPath;
use crate::load::sealed;
use crate::log::LogConfig;
use crate::net::Cidr;
use crate::observe::MetricsConfig;
use crate::plugin_source::{backend_sources, check_pins};
use crate::plugins::PluginsConfig;
use crate::server::ServerConfig;
use crate::uploads::UploadsConfig;
use crate::validate::{Problems, Validate};

/// `dev.yaml`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevConfig {
    /// The one registry port, for both push and pull [127.0.0.1:5000].
    #[serde(with = "crate::net::listen_addr")]
    pub listen: SocketAddr,
    /// Where every role keeps its files [./shoal-data].
    pub data_dir: PathBuf,
    /// Storage backends by namespace [one `fs` backend under `data_dir/backend`].
    pub backends: Vec<BackendEntry>,
    /// Credentials the backends name.
    pub auth: AuthConfig,
    /// Who may push, pull and delete [anyone].
    pub access: AccessConfig,
    /// Connection limits, timeouts and TLS of the registry port.
    pub server: ServerConfig,
    /// Clients allowed to use the registry port (403 `DENIED` for others); unset means any.
    pub allowed_cidrs: Option<Vec<Cidr>>,
    /// Logging.
    pub log: LogConfig,
    /// Metrics endpoint.
    pub metrics: MetricsConfig,
    /// Limits of the backend plugins.
    pub plugins: PluginsConfig,
    /// The local store's garbage collector.
    pub gc: GcConfig,
    /// When abandoned upload sessions are purged.
    pub uploads: UploadsConfig,
    /// How long a tag resolved at an upstream registry (a `registry_tag` backend) is served
    /// without asking the upstream again [0s: every request by tag asks, as distribution's
    /// pull-through proxy does]. While the upstream does not answer, the last digest it named
    /// is served, with a warning. Tags pushed to this registry are its own and never asked.
    pub tag_ttl: Duration,
}

impl Default for DevConfig {
    fn default() -> Self {
        DevConfig {
            listen: local_addr(5000),
            data_dir: PathBuf::from("./shoal-data"),
            backends: Vec::new(),
            auth: AuthConfig::default(),
            access: AccessConfig::default(),
            server: ServerConfig::default(),
            allowed_cidrs: None,
            log: LogConfig::default(),
            metrics: MetricsConfig::default(),
            plugins: PluginsConfig::default(),
            gc: GcConfig::default(),
            uploads: UploadsConfig::default(),
            tag_ttl: Duration::ZERO,
        }
    }
}

impl DevConfig {
    /// The backend used when the file lists none: every namespace in a local folder.
    pub fn default_backend(&self) -> BackendEntry {
        BackendEntry {
            namespace: NamespacePattern::any(),
            backend: Backend::Fs(FsBackend {
                root: self.data_dir.join("backend"),
                name_path: NamePath::Identity,
            }),
            bandwidth: BandwidthConfig::default(),
        }
    }
}

impl sealed::Role for DevConfig {
    fn finish(&mut self) {
        if self.backends.is_empty() {
            self.backends.push(self.default_backend());
        }
    }

    fn check(&self, problems: &mut Problems) {
        let root = KeyPath::root();
        self.server.validate(&root.key("server"), problems);
        problems.require(
            !self.data_dir.as_os_str().is_empty(),
            &root.key("data_dir"),
            "is empty",
            "a folder path, like ./shoal-data",
        );
        validate_backends(&self.backends, &self.auth, problems);
        self.access.validate(&root.key("access"), problems);
        self.plugins.validate(&root.key("plugins"), problems);
        check_pins(
            backend_sources(&self.backends),
            self.plugins.allow_tags,
            problems,
        );
        self.gc.validate(&root.key("gc"), problems);
        self.uploads.validate(&root.key("uploads"), problems);
        problems.require(
            self.tag_ttl <= Duration::from_hours(24),
            &root.key("tag_ttl"),
            "is longer than a day, so a tag moved upstream would go unseen that long",
            "a duration like 0s (ask on every request) or 5m",
        );
    }
}
