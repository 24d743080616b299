//! `http`: blobs fetched from a URL template, read-only.

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::keypath::KeyPath;
use crate::validate::{Problems, Validate};

/// A plain HTTP server that serves blobs by digest.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpBackend {
    /// URL with `%s` where the digest goes, e.g. `http://host:9000/download?sha256=%s`.
    pub download_url: String,
    /// URL with `%s` for uploads, when the server accepts them.
    #[serde(default)]
    pub upload_url: Option<String>,
    /// Retries of failed downloads.
    #[serde(default)]
    pub download_backoff: BackoffConfig,
    /// Per-request timeout [60s].
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Extra hosts the backend may reach besides the URL's own.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

/// Exponential backoff between retries (`download_backoff`), off by default.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// Whether failed downloads are retried [false].
    pub enabled: bool,
    /// First wait [1s].
    pub initial_interval: Duration,
    /// Longest single wait [30s].
    pub max_interval: Duration,
    /// Give up after this long in total [5m].
    pub max_elapsed_time: Duration,
    /// Growth of the wait per retry [2.0].
    pub multiplier: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        BackoffConfig {
            enabled: false,
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_mins(5),
            multiplier: 2.0,
        }
    }
}

impl Validate for HttpBackend {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        let template = |url: &str, key: &str, problems: &mut Problems| {
            let ok = url.matches("%s").count() == 1
                && (url.starts_with("http://") || url.starts_with("https://"));
            problems.require(
                ok,
                &at.key(key),
                "must be an http(s) URL with exactly one `%s` where the digest goes",
                "a URL like http://test-domain:9000/download?sha256=%s",
            );
        };
        template(&self.download_url, "download_url", problems);
        if let Some(upload) = &self.upload_url {
            template(upload, "upload_url", problems);
        }
        let backoff = &self.download_backoff;
        let at = at.key("download_backoff");
        problems.require(
            backoff.multiplier >= 1.0,
            &at.key("multiplier"),
            "must be at least 1.0",
            "a factor like 2.0",
        );
        problems.require(
            backoff.initial_interval <= backoff.max_interval,
            &at.key("initial_interval"),
            "is longer than `max_interval`",
            "a duration no longer than max_interval",
        );
    }
}

impl super::BackendKind for HttpBackend {
    fn allowed_hosts(&self) -> &[String] {
        &self.allowed_hosts
    }

    fn http_timeout(&self) -> Option<std::time::Duration> {
        Some(self.timeout.into())
    }
}
