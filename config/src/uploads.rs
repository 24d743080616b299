//! `uploads:` of `dev.yaml`: how long an upload session nobody writes to is kept before its
//! bytes are freed (a client that died or gave up, a `kill -9` during a push).

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::keypath::KeyPath;
use crate::validate::{Problems, Validate};

/// When abandoned upload sessions are purged.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadsConfig {
    /// A session nobody has written to for this long is deleted with its bytes [24h]. A
    /// session a request is writing to is kept whatever its age.
    pub max_age: Duration,
    /// How often the sessions are checked, besides once at start [1h].
    pub interval: Duration,
}

impl Default for UploadsConfig {
    fn default() -> Self {
        UploadsConfig {
            // distribution purges upload sessions after a week; a day frees a full disk
            // sooner and still outlasts any client that pauses a push and resumes it.
            max_age: Duration::from_hours(24),
            interval: Duration::from_hours(1),
        }
    }
}

impl Validate for UploadsConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        // A client pauses between chunks for network round trips: below a second, an upload
        // in progress could be purged under it.
        problems.require(
            self.max_age >= Duration::from_secs(1),
            &at.key("max_age"),
            "is shorter than 1s, so uploads in progress would be purged",
            "a duration like 24h; 1s in tests",
        );
        // Each check lists uploads/: more often than once a second is a typo.
        problems.require(
            self.interval >= Duration::from_secs(1),
            &at.key("interval"),
            "is shorter than 1s",
            "a duration like 1h; 1s in tests",
        );
    }
}
