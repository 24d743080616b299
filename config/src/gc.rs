//! `gc:` of `dev.yaml`: the local store's garbage collector, which frees the blobs no tag,
//! index or referrer reaches any more (after a tag or manifest delete).

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::keypath::KeyPath;
use crate::validate::{Problems, Validate};

/// When the collector runs and what it may free.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// How often a collection runs; `0s` turns the collector off [1h].
    pub interval: Duration,
    /// Content younger than this is never freed, nor anything it references [1h]. It must
    /// exceed the longest push, from its first layer to its manifest.
    pub grace: Duration,
    /// Whether blobs freed locally are deleted from the storage backends too [true]. Turn it
    /// off when other writers share the backends: the collector cannot see their images.
    pub backends: bool,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            interval: Duration::from_hours(1),
            grace: Duration::from_hours(1),
            backends: true,
        }
    }
}

impl Validate for GcConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        // Each collection reads every link in the store: more often than once a second is a
        // typo for minutes or hours.
        problems.require(
            self.interval.is_zero() || self.interval >= Duration::from_secs(1),
            &at.key("interval"),
            "is shorter than 1s",
            "0s (off) or a duration like 1h",
        );
        problems.require(
            self.grace <= Duration::from_hours(24 * 365),
            &at.key("grace"),
            "is longer than a year, so nothing would ever be freed",
            "a duration like 1h; 0s in tests",
        );
    }
}
