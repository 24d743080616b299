//! Configuration for every shoal role: typed serde structs with Kraken's keys and defaults,
//! `extends` layering, `${ENV}` substitution, and errors that name the file, the key path, the
//! value and what was expected.
//!
//! The binary calls [`load`] with the role's struct (e.g. [`AgentConfig`]) and [`process_env`],
//! or [`check`] for `shoal config check ROLE FILE`.

// Every public item says why it exists; the compiler holds us to it.
#![warn(missing_docs)]

mod access;
mod auth;
mod backend;
mod bandwidth;
mod bytesize;
mod cluster;
mod decode;
mod duration;
mod env;
mod error;
mod gc;
mod hosts;
mod keypath;
mod layering;
mod load;
mod log;
mod net;
mod observe;
mod paths;
mod peerstore;
mod plugin_source;
mod plugins;
mod retry;
mod role;
mod roles;
mod scheduler;
mod secret;
mod server;
mod store;
mod uploads;
mod validate;

pub use access::{
    AccessConfig, HtpasswdError, HtpasswdUsers, MIN_TOKEN_KEY_BYTES, TokenConfig, parse_htpasswd,
    read_htpasswd,
};
pub use auth::{AuthConfig, GcsAuth, GcsCredentials, S3Auth, S3Credentials};
pub use backend::{
    Backend, BackendEntry, BackendKind, BackoffConfig, BasicAuth, EcrConfig, FsBackend, GcsBackend,
    HdfsBackend, HttpBackend, NamePath, NamespacePattern, PluginBackend, RegistryBackend,
    RegistrySecurity, S3Backend, TlsClientConfig, TlsConfig,
};
pub use bandwidth::BandwidthConfig;
pub use bytesize::{ByteSize, ByteSizeError, SIZE_FORM};
pub use cluster::{
    ActiveHealthCheck, ClusterConfig, HashRingConfig, HealthFilter, HealthMonitor, PassiveCluster,
    PassiveHealthCheck, PolicySettings, RemoteCluster, TrackerClientConfig, TrackerCluster,
};
pub use duration::{DURATION_FORM, Duration, DurationError};
pub use env::{EnvLookup, process_env};
pub use error::{ConfigError, Problem};
pub use gc::GcConfig;
pub use hosts::Hosts;
pub use load::{RoleConfig, check, load, load_str, render};
pub use log::{LOG_LEVEL_FORM, Level, LogConfig, LogFormat, LogLevel, LogLevelError};
pub use net::{Cidr, CidrError, HostPort, HostPortError, ListenAddrError, parse_listen};
pub use observe::MetricsConfig;
pub use paths::PATH_KEYS;
pub use peerstore::{MemoryPeerStore, PeerStoreConfig, RedisPeerStore};
pub use plugin_source::{
    OCI_FORM, OCI_SCHEME, OciPin, OciPlugin, PluginSource, PluginSourceError, RegistryHost,
    Sha256Digest,
};
pub use plugins::PluginsConfig;
pub use retry::RetryConfig;
pub use role::Role;
pub use roles::{
    AgentConfig, AgentPeer, AgentRegistry, BuildIndexConfig, DevConfig, MetainfoGenConfig,
    OriginConfig, OriginPeer, ProxyConfig, ProxyRegistry, StagingConfig, TagCacheConfig,
    TrackerConfig, WritebackConfig,
};
pub use scheduler::{ConnConfig, ConnStateConfig, DispatchConfig, SchedulerConfig};
pub use secret::{REDACTED, Secret, with_secrets_exposed};
pub use server::{ClientTls, PeerTls, ServerConfig, ServerTls};
pub use store::{CleanupConfig, StoreConfig};
pub use uploads::UploadsConfig;
