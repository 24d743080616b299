//! Hash-ring membership and health: a role's own ring (`cluster:`, `hashring:`), the clusters it
//! calls (`origin:`, `build_index:`), and the agent's tracker client (`tracker:`).

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::hosts::Hosts;
use crate::keypath::KeyPath;
use crate::plugin_source::PluginSource;
use crate::validate::{Problems, Validate};

/// The ring this role belongs to, with active health checks between members (`cluster:`).
/// Absent means a ring of one; when the section is present, `hosts` is required.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Members of the ring.
    #[serde(deserialize_with = "crate::hosts::required")]
    pub hosts: Option<Hosts>,
    /// Active health checks.
    #[serde(default)]
    pub healthcheck: ActiveHealthCheck,
}

impl ClusterConfig {
    /// True when the file had no `cluster:` section, so it is left out of the effective config.
    pub fn is_unset(&self) -> bool {
        self.hosts.is_none()
    }
}

/// Members ping each other; `fails` misses in a row mark a host down, `passes` successes mark
/// it up again (`cluster.healthcheck`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ActiveHealthCheck {
    /// Thresholds.
    pub filter: HealthFilter,
    /// Ping schedule.
    pub monitor: HealthMonitor,
    /// How long one ping may take [3s].
    pub timeout: Duration,
    /// A custom health-policy component (`shoal:health/policy`) to run instead of the
    /// built-in `health-active`; it is given `fails` and `passes` as its config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PluginSource>,
    /// Settings for the custom `policy:`, handed to it with `fails` and `passes` added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<PolicySettings>,
}

impl Default for ActiveHealthCheck {
    fn default() -> Self {
        ActiveHealthCheck {
            filter: HealthFilter::default(),
            monitor: HealthMonitor::default(),
            timeout: Duration::from_secs(3),
            policy: None,
            config: None,
        }
    }
}

/// `cluster.healthcheck.filter`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthFilter {
    /// Consecutive failures that mark a host unhealthy [3].
    pub fails: u32,
    /// Consecutive successes that mark it healthy again [2].
    pub passes: u32,
}

impl Default for HealthFilter {
    fn default() -> Self {
        HealthFilter {
            fails: 3,
            passes: 2,
        }
    }
}

/// `cluster.healthcheck.monitor`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthMonitor {
    /// Time between pings [30s].
    pub interval: Duration,
}

impl Default for HealthMonitor {
    fn default() -> Self {
        HealthMonitor {
            interval: Duration::from_secs(30),
        }
    }
}

/// Rendezvous-hash settings for the ring (`hashring:`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HashRingConfig {
    /// Owners of each blob [3, Kraken's default; the reference's example sets 2].
    pub max_replica: u32,
    /// How often membership is re-resolved (DNS) [10s, as Kraken].
    pub refresh_interval: Duration,
}

impl Default for HashRingConfig {
    fn default() -> Self {
        HashRingConfig {
            max_replica: 3,
            refresh_interval: Duration::from_secs(10),
        }
    }
}

/// A tracker's `cluster:`: the active health checks it runs on the origins of `origin.hosts`
/// (trackers share their peer store and form no ring of their own, so there are no `hosts`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerCluster {
    /// Active health checks of the origins.
    pub healthcheck: ActiveHealthCheck,
}

impl TrackerCluster {
    /// True when the section says nothing but defaults, so it is left out of the effective
    /// config.
    pub fn is_unset(&self) -> bool {
        *self == TrackerCluster::default()
    }
}

/// Another cluster this role sends requests to (`origin:`, `build_index:`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RemoteCluster {
    /// Its members; unset means this role runs without it.
    pub hosts: Option<Hosts>,
}

impl RemoteCluster {
    /// True when no hosts are set, so it is left out of the effective config.
    pub fn is_unset(&self) -> bool {
        self.hosts.is_none()
    }
}

/// The tracker ring as seen by agents and origins (`tracker:`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrackerClientConfig {
    /// Tracker members.
    pub hosts: Option<Hosts>,
    /// Passive health checking of those members.
    pub cluster: PassiveCluster,
}

/// `tracker.cluster`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassiveCluster {
    /// Failure counting on real requests.
    pub healthcheck: PassiveHealthCheck,
}

/// Failed announces count against a tracker; `fails` within `fail_timeout` take it out of
/// rotation for `fail_timeout` (`tracker.cluster.healthcheck`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PassiveHealthCheck {
    /// Failures that mark a host unhealthy [3].
    pub fails: u32,
    /// The window for counting and the time out of rotation [5m].
    pub fail_timeout: Duration,
    /// A custom health-policy component (`shoal:health/policy`) to run instead of the
    /// built-in `health-passive`; it is given `fails` and `fail_timeout` as its config.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PluginSource>,
    /// Settings for the custom `policy:`, handed to it with `fails` and `fail_timeout` added.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<PolicySettings>,
}

impl PassiveHealthCheck {
    /// The largest `fails`: the passive policy keeps one timestamp per counted failure and
    /// host, and this bounds that state (kept in step with `plugins/health-passive`).
    pub const MAX_FAILS: u32 = 1000;
}

impl Default for PassiveHealthCheck {
    fn default() -> Self {
        PassiveHealthCheck {
            fails: 3,
            fail_timeout: Duration::from_mins(5),
            policy: None,
            config: None,
        }
    }
}

/// The `config:` of a custom health policy: a mapping shoal hands over as it is (as JSON),
/// with the thresholds of its check added under their own names.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct PolicySettings(pub serde_yaml_ng::Mapping);

// Settings are compared only to tell configs apart; a NaN in one is the operator's business.
impl Eq for PolicySettings {}

/// A policy's `config:` is for a custom `policy:` only, and leaves the keys its check sets
/// (`reserved`, e.g. `fails`) to that check.
fn validate_policy_settings(
    check: (bool, Option<&PolicySettings>),
    reserved: &[(&str, &str)],
    at: &KeyPath,
    problems: &mut Problems,
) {
    let (has_policy, Some(PolicySettings(settings))) = check else {
        return;
    };
    if !has_policy {
        problems.at(
            &at.key("config"),
            "is set, but there is no `policy:` to hand it to (the built-in policy takes only \
             its thresholds)",
            "a `policy:` component next to `config:`, or no `config:`",
        );
    }
    for (key, set_by) in reserved {
        if settings.contains_key(*key) {
            problems.at(
                &at.key("config").key(key),
                format!("is set by `{set_by}`, which the policy is given as `{key}`"),
                &format!("`{set_by}` instead, and other keys in `config:`"),
            );
        }
    }
}

/// A `policy:` file must be a `.wasm` file that exists (an `oci://` source is checked when it
/// is fetched).
fn validate_policy(policy: Option<&PluginSource>, at: &KeyPath, problems: &mut Problems) {
    let Some(path) = policy.and_then(PluginSource::file) else {
        return;
    };
    let expected = "the path of a shoal:health/policy component, like plugins/my-policy.wasm, \
                    or oci://HOST[:PORT]/REPOSITORY@sha256:<hex>";
    if path.extension().is_none_or(|e| e != "wasm") {
        problems.at(
            at,
            format!("{} is not a .wasm file", path.display()),
            expected,
        );
    } else if !path.is_file() {
        problems.at(at, format!("{} does not exist", path.display()), expected);
    }
}

impl Validate for ClusterConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        self.healthcheck.validate(&at.key("healthcheck"), problems);
    }
}

impl Validate for TrackerCluster {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        self.healthcheck.validate(&at.key("healthcheck"), problems);
    }
}

impl Validate for ActiveHealthCheck {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        let filter = at.key("filter");
        problems.at_least_one(self.filter.fails.into(), &filter.key("fails"));
        problems.at_least_one(self.filter.passes.into(), &filter.key("passes"));
        problems.require(
            !self.monitor.interval.is_zero(),
            &at.key("monitor").key("interval"),
            "must be longer than 0s",
            "a duration like 30s",
        );
        validate_policy(self.policy.as_ref(), &at.key("policy"), problems);
        validate_policy_settings(
            (self.policy.is_some(), self.config.as_ref()),
            &[("fails", "filter.fails"), ("passes", "filter.passes")],
            at,
            problems,
        );
    }
}

impl Validate for HashRingConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.at_least_one(self.max_replica.into(), &at.key("max_replica"));
    }
}

impl Validate for TrackerClientConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        let check = at.key("cluster").key("healthcheck");
        let passive = &self.cluster.healthcheck;
        problems.at_least_one(passive.fails.into(), &check.key("fails"));
        problems.require(
            passive.fails <= PassiveHealthCheck::MAX_FAILS,
            &check.key("fails"),
            "is too large",
            "a number from 1 to 1000",
        );
        problems.require(
            !passive.fail_timeout.is_zero(),
            &check.key("fail_timeout"),
            "must be longer than 0s",
            "a duration like 5m",
        );
        validate_policy(passive.policy.as_ref(), &check.key("policy"), problems);
        validate_policy_settings(
            (passive.policy.is_some(), passive.config.as_ref()),
            &[("fails", "fails"), ("fail_timeout", "fail_timeout")],
            &check,
            problems,
        );
    }
}
