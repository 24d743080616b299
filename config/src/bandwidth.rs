//! Token-bucket rate limits, used by the P2P scheduler and by each storage backend.

use serde::{Deserialize, Serialize};

use crate::keypath::KeyPath;
use crate::validate::{Problems, Validate};

/// Egress and ingress limits in bits per second; off unless `enable: true`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BandwidthConfig {
    /// Whether the limits apply; the reference writes both `enable` and `enabled`.
    #[serde(alias = "enabled")]
    pub enable: bool,
    /// Upload limit [1677721600 = 200*8 Mbit].
    pub egress_bits_per_sec: u64,
    /// Download limit [2516582400 = 300*8 Mbit].
    pub ingress_bits_per_sec: u64,
    /// Bits per token, so large rates do not overflow the bucket [8 Mbit, as Kraken].
    pub token_size: u64,
}

impl Default for BandwidthConfig {
    fn default() -> Self {
        // Kraken's lib/torrent/scheduler/conn bandwidth defaults, quoted in the reference.
        BandwidthConfig {
            enable: false,
            egress_bits_per_sec: 200 * 8 * 1024 * 1024,
            ingress_bits_per_sec: 300 * 8 * 1024 * 1024,
            token_size: 8 * 1024 * 1024,
        }
    }
}

impl Validate for BandwidthConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        if self.enable {
            problems.at_least_one(self.egress_bits_per_sec, &at.key("egress_bits_per_sec"));
            problems.at_least_one(self.ingress_bits_per_sec, &at.key("ingress_bits_per_sec"));
        }
        problems.at_least_one(self.token_size, &at.key("token_size"));
    }
}
