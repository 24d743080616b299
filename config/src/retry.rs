//! `writeback:` (origin) and `replication:` (build-index): how a role's job queue on disk
//! retries a job that failed. Both queues follow one rule, so one struct.

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::keypath::KeyPath;
use crate::validate::{Problems, Validate};

/// Retries of a persisted job queue. A job that fails is tried again after `delay`, then after
/// twice as long each time (at most 5 minutes); after `retries` retries it is parked: logged
/// as an error and its file moved to the queue's `failed/` folder, where it stays visible and
/// is still retried every 30 minutes, so a job is never dropped while it could succeed.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Retries after the first failed attempt before a job is parked as failed [5].
    pub retries: u32,
    /// Wait before the first retry; each further retry waits twice as long [10s].
    pub delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            retries: 5,
            delay: Duration::from_secs(10),
        }
    }
}

impl Validate for RetryConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.require(
            !self.delay.is_zero(),
            &at.key("delay"),
            "must not be zero (a failing job would be retried in a tight loop)",
            "a duration like 10s",
        );
    }
}
