//! The tracker's peer store (`peerstore:`): in memory by default, or Redis so several trackers
//! share one view. A tagged choice, not Kraken's `enabled: bool`.

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::keypath::KeyPath;
use crate::net::HostPort;
use crate::secret::Secret;
use crate::validate::{Problems, Validate};

/// Which store the tracker keeps announces in.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "RawPeerStore", into = "RawPeerStore")]
pub enum PeerStoreConfig {
    /// In this process; lost on restart, fine for one tracker (`peerstore.memory`).
    Memory(MemoryPeerStore),
    /// In Redis (`peerstore.redis`).
    Redis(RedisPeerStore),
}

impl Default for PeerStoreConfig {
    fn default() -> Self {
        PeerStoreConfig::Memory(MemoryPeerStore::default())
    }
}

impl PeerStoreConfig {
    /// How long an announce is remembered: `peer_set_window_size * max_peer_set_windows`.
    pub fn ttl(&self) -> Duration {
        match self {
            PeerStoreConfig::Memory(m) => m.ttl(),
            PeerStoreConfig::Redis(r) => r.ttl(),
        }
    }
}

/// `peerstore.memory`: announces bucketed into time windows in this process.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MemoryPeerStore {
    /// Length of one bucket [1h].
    pub peer_set_window_size: Duration,
    /// Buckets kept; peers are handed out from all of them [5].
    pub max_peer_set_windows: u32,
}

impl Default for MemoryPeerStore {
    fn default() -> Self {
        MemoryPeerStore {
            peer_set_window_size: Duration::from_hours(1),
            max_peer_set_windows: 5,
        }
    }
}

impl MemoryPeerStore {
    /// How long an announce is remembered.
    pub fn ttl(&self) -> Duration {
        ttl(self.peer_set_window_size, self.max_peer_set_windows)
    }
}

/// `peerstore.redis`: the same windows, kept in Redis.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisPeerStore {
    /// Redis address [127.0.0.1:6379].
    pub addr: HostPort,
    /// `AUTH` password, if the server needs one.
    pub password: Option<Secret>,
    /// Length of one bucket [1h].
    pub peer_set_window_size: Duration,
    /// Buckets kept [5].
    pub max_peer_set_windows: u32,
    /// How long one connection attempt may take, TCP connect and Redis handshake (`AUTH`)
    /// together [5s]; a request that finds Redis gone makes up to three attempts.
    pub dial_timeout: Duration,
    /// How long a request may wait for Redis's answer [30s, as Kraken]. The client has one
    /// timeout per request: the larger of `read_timeout` and `write_timeout`.
    pub read_timeout: Duration,
    /// As `read_timeout`: the larger of the two bounds each request [30s, as Kraken].
    pub write_timeout: Duration,
}

impl Default for RedisPeerStore {
    fn default() -> Self {
        let windows = MemoryPeerStore::default();
        RedisPeerStore {
            addr: HostPort::new("127.0.0.1", 6379),
            password: None,
            peer_set_window_size: windows.peer_set_window_size,
            max_peer_set_windows: windows.max_peer_set_windows,
            dial_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
        }
    }
}

impl RedisPeerStore {
    /// How long an announce is remembered.
    pub fn ttl(&self) -> Duration {
        ttl(self.peer_set_window_size, self.max_peer_set_windows)
    }
}

fn ttl(window: Duration, windows: u32) -> Duration {
    window
        .get()
        .checked_mul(windows)
        .map_or(Duration::from(std::time::Duration::MAX), Duration::from)
}

fn validate_windows(window: Duration, windows: u32, at: &KeyPath, problems: &mut Problems) {
    problems.require(
        !window.is_zero(),
        &at.key("peer_set_window_size"),
        "must be longer than 0s",
        "a duration like 1h",
    );
    problems.at_least_one(windows.into(), &at.key("max_peer_set_windows"));
}

impl Validate for PeerStoreConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        match self {
            PeerStoreConfig::Memory(m) => validate_windows(
                m.peer_set_window_size,
                m.max_peer_set_windows,
                &at.key("memory"),
                problems,
            ),
            PeerStoreConfig::Redis(r) => validate_windows(
                r.peer_set_window_size,
                r.max_peer_set_windows,
                &at.key("redis"),
                problems,
            ),
        }
    }
}

/// The YAML shape: at most one of `memory:` / `redis:`; neither means memory.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawPeerStore {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    memory: Option<MemoryPeerStore>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    redis: Option<RedisPeerStore>,
}

impl TryFrom<RawPeerStore> for PeerStoreConfig {
    type Error = &'static str;

    fn try_from(raw: RawPeerStore) -> Result<Self, Self::Error> {
        match (raw.memory, raw.redis) {
            (Some(_), Some(_)) => {
                Err("both `memory` and `redis` are set, expected exactly one peer store")
            }
            (None, Some(redis)) => Ok(PeerStoreConfig::Redis(redis)),
            (memory, None) => Ok(PeerStoreConfig::Memory(memory.unwrap_or_default())),
        }
    }
}

impl From<PeerStoreConfig> for RawPeerStore {
    fn from(store: PeerStoreConfig) -> Self {
        match store {
            PeerStoreConfig::Memory(m) => RawPeerStore {
                memory: Some(m),
                redis: None,
            },
            PeerStoreConfig::Redis(r) => RawPeerStore {
                memory: None,
                redis: Some(r),
            },
        }
    }
}
