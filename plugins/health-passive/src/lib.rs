//! `health-passive`, the default policy of `tracker.cluster.healthcheck` (agents counting
//! failed announces against trackers): a host that fails `fails` times within `fail_timeout`
//! is out until `fail_timeout` after its last failure. The rule and its state live in
//! [`filter`]; this file reads the config and exports the `shoal:health/policy` world.
//!
//! Config (JSON from the host): `{"fails": 3, "fail_timeout": "5m"}`. `fail_timeout` is a
//! duration string as shoal-config prints it (`5m`, `30s`, `1m30s`, `500ms`) or a whole
//! number of milliseconds. A key left out takes shoal's default (3, `5m`); an unknown key, a
//! `fails` outside 1..=1000 or a zero `fail_timeout` is a config error, which is logged
//! naming the key and makes every call trap.

pub mod filter;

use std::cell::RefCell;

use serde::Deserialize;
use shoal_plugin_sdk::bindings::export_policy;
use shoal_plugin_sdk::health::{self, Guest};

use filter::{MAX_FAILS, MAX_HOSTS, PassiveFilter, Settings};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_fails")]
    fails: u32,
    #[serde(default)]
    fail_timeout: Option<Timeout>,
}

/// `fail_timeout` as the host writes it (a duration string) or as a person might (millis).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Timeout {
    Millis(u64),
    Text(String),
}

fn default_fails() -> u32 {
    3
}

/// shoal's default `fail_timeout` (seed CONFIGURATION.md: "unhealthy for 5 minutes").
const DEFAULT_FAIL_TIMEOUT_MS: u64 = 5 * 60 * 1000;

/// The settings in `json`; the error names the key at fault.
pub fn parse_config(json: &str) -> Result<Settings, String> {
    let c: Config = serde_json::from_str(json)
        .map_err(|e| format!("health-passive: config does not fit: {e}"))?;
    if !(1..=MAX_FAILS).contains(&c.fails) {
        return Err(format!(
            "health-passive: config key `fails` must be from 1 to {MAX_FAILS}, got {}",
            c.fails
        ));
    }
    let fail_timeout_ms = match c.fail_timeout {
        None => DEFAULT_FAIL_TIMEOUT_MS,
        Some(Timeout::Millis(ms)) => ms,
        Some(Timeout::Text(text)) => shoal_plugin_sdk::duration::parse(&text)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map_err(|e| format!("health-passive: config key `fail_timeout`: {e}"))?,
    };
    if fail_timeout_ms == 0 {
        return Err(
            "health-passive: config key `fail_timeout` must be at least 1ms, got 0".to_owned(),
        );
    }
    Ok(Settings {
        fails: c.fails,
        fail_timeout_ms,
    })
}

thread_local! {
    /// Made from the config on the first call of this instance; lives until it traps.
    static FILTER: RefCell<Option<PassiveFilter>> = const { RefCell::new(None) };
}

fn with_filter<R>(f: impl FnOnce(&mut PassiveFilter) -> R) -> R {
    health::with_state(
        &FILTER,
        |json| parse_config(json).map(|s| PassiveFilter::new(s, MAX_HOSTS)),
        f,
    )
}

struct Policy;

impl Guest for Policy {
    fn observe(host: String, ok: bool, now_ms: u64) {
        with_filter(|f| f.observe(&host, ok, now_ms));
    }

    fn healthy(host: String, now_ms: u64) -> bool {
        with_filter(|f| f.healthy(&host, now_ms))
    }
}

export_policy!(Policy);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(fails: u32, fail_timeout_ms: u64) -> Settings {
        Settings {
            fails,
            fail_timeout_ms,
        }
    }

    #[test]
    fn fail_timeout_is_a_duration_string_or_millis() {
        assert_eq!(parse_config("{}").unwrap(), settings(3, 300_000));
        assert_eq!(
            parse_config(r#"{"fails": 2, "fail_timeout": "30s"}"#).unwrap(),
            settings(2, 30_000)
        );
        assert_eq!(
            parse_config(r#"{"fail_timeout": "1m500ms"}"#).unwrap(),
            settings(3, 60_500)
        );
        assert_eq!(
            parse_config(r#"{"fail_timeout": 250}"#).unwrap(),
            settings(3, 250)
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        for (json, key) in [
            (r#"{"fails": 0}"#, "`fails`"),
            (r#"{"fails": 1001}"#, "`fails`"),
            (r#"{"fail_timeout": "5 minutes"}"#, "`fail_timeout`"),
            (r#"{"fail_timeout": "0s"}"#, "`fail_timeout`"),
            (r#"{"fail_timeout": 0}"#, "`fail_timeout`"),
            (r#"{"passes": 2}"#, "`passes`"),
        ] {
            let e = parse_config(json).unwrap_err();
            assert!(e.contains(key), "{json}: {e}");
        }
    }
}
