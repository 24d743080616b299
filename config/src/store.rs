//! The on-disk blob store of agents and origins (`store:`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::keypath::KeyPath;
use crate::validate::{Problems, Validate};

/// Where blobs live and when idle ones are removed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The store's folder; unset means the role's own default under its data directory.
    pub root: Option<PathBuf>,
    /// Purge of complete blobs in `cache/`.
    pub cache_cleanup: CleanupConfig,
    /// Purge of partial downloads in `download/`.
    pub download_cleanup: CleanupConfig,
    /// Most files kept in the cache, meaningful on origins [1000000].
    pub capacity: u64,
    /// Most bytes kept in the cache; a shoal addition, unset means no byte limit.
    pub capacity_bytes: Option<u64>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            root: None,
            cache_cleanup: CleanupConfig::default(),
            download_cleanup: CleanupConfig::default(),
            capacity: 1_000_000,
            capacity_bytes: None,
        }
    }
}

/// A periodic purge of files nobody has read for `tti`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CleanupConfig {
    /// Time-to-idle after which an unread file is removed [6h].
    pub tti: Duration,
    /// How often the purge runs [30m, as Kraken].
    pub interval: Duration,
}

impl Default for CleanupConfig {
    fn default() -> Self {
        CleanupConfig {
            tti: Duration::from_hours(6),
            interval: Duration::from_mins(30),
        }
    }
}

impl Validate for StoreConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.at_least_one(self.capacity, &at.key("capacity"));
        if let Some(bytes) = self.capacity_bytes {
            problems.at_least_one(bytes, &at.key("capacity_bytes"));
        }
        for (name, cleanup) in [
            ("cache_cleanup", &self.cache_cleanup),
            ("download_cleanup", &self.download_cleanup),
        ] {
            problems.require(
                !cleanup.interval.is_zero(),
                &at.key(name).key("interval"),
                "must be longer than 0s",
                "a duration like 30m",
            );
        }
    }
}
