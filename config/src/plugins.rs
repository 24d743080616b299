//! `plugins:` — the limits every WebAssembly plugin runs under. A shoal addition (Kraken's
//! backends are compiled in); every role that loads plugins accepts it.

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::keypath::KeyPath;
use crate::plugin_source::RegistryHost;
use crate::validate::{Problems, Validate};

/// Limits of plugin calls, the breaker that pauses a plugin that keeps trapping, and how
/// `oci://` plugin sources may be fetched.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Linear memory one plugin instance may use, in bytes [67108864 = 64 MiB].
    pub memory_bytes: u64,
    /// Wall-clock budget of one call, outbound HTTP waits included [60s].
    pub call_timeout: Duration,
    /// Consecutive traps (panic, deadline, memory cap) that open a plugin's breaker [5].
    pub breaker_threshold: u32,
    /// How long an open breaker refuses calls before one trial call [30s].
    pub breaker_cool_down: Duration,
    /// Plugin instances alive at once across all plugins [128].
    pub max_instances: u32,
    /// Accept `oci://HOST/REPOSITORY:TAG` plugin sources, resolved to a digest at each start
    /// [false: a source must pin `@sha256:...`].
    pub allow_tags: bool,
    /// Registries (`host[:port]`) that `oci://` sources reach over plain HTTP; loopback hosts
    /// always are, as in Docker [none: HTTPS].
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub insecure_registries: Vec<RegistryHost>,
}

impl PluginsConfig {
    /// Whether `registry` is spoken to over plain HTTP rather than HTTPS.
    pub fn plain_http(&self, registry: &RegistryHost) -> bool {
        registry.is_loopback() || self.insecure_registries.contains(registry)
    }
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            memory_bytes: 64 << 20,
            call_timeout: Duration::from_secs(60),
            breaker_threshold: 5,
            breaker_cool_down: Duration::from_secs(30),
            max_instances: 128,
            allow_tags: false,
            insecure_registries: Vec::new(),
        }
    }
}

impl Validate for PluginsConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.require(
            self.memory_bytes >= 1 << 20,
            &at.key("memory_bytes"),
            "is below 1 MiB, too little for any component",
            "a byte count of 1048576 or more",
        );
        problems.require(
            !self.call_timeout.is_zero(),
            &at.key("call_timeout"),
            "is zero",
            "a duration like 60s",
        );
        problems.at_least_one(self.breaker_threshold.into(), &at.key("breaker_threshold"));
        problems.at_least_one(self.max_instances.into(), &at.key("max_instances"));
    }
}
