//! `health-active`, the default policy of `cluster.healthcheck` (origins and trackers pinging
//! their ring): a host turns unhealthy after `fails` failed checks in a row and healthy again
//! after `passes` passed checks in a row; a host never observed is healthy. The rule and its
//! state live in [`filter`]; this file reads the config and exports the `shoal:health/policy`
//! world.
//!
//! Config (JSON from the host): `{"fails": 3, "passes": 2}`. A key left out takes Kraken's
//! default (3 and 2); an unknown key or a 0 is a config error, which is logged naming the key
//! and makes every call trap, so a misconfigured policy cannot pass as one that says "healthy".

pub mod filter;

use std::cell::RefCell;

use serde::Deserialize;
use shoal_plugin_sdk::bindings::export_policy;
use shoal_plugin_sdk::health::{self, Guest};

use filter::{ActiveFilter, MAX_HOSTS, Thresholds};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_fails")]
    fails: u32,
    #[serde(default = "default_passes")]
    passes: u32,
}

fn default_fails() -> u32 {
    3
}

fn default_passes() -> u32 {
    2
}

/// The thresholds in `json`; the error names the key at fault.
pub fn parse_config(json: &str) -> Result<Thresholds, String> {
    let c: Config = serde_json::from_str(json)
        .map_err(|e| format!("health-active: config does not fit: {e}"))?;
    for (key, value) in [("fails", c.fails), ("passes", c.passes)] {
        if value == 0 {
            return Err(format!(
                "health-active: config key `{key}` must be at least 1, got 0"
            ));
        }
    }
    Ok(Thresholds {
        fails: c.fails,
        passes: c.passes,
    })
}

thread_local! {
    /// Made from the config on the first call of this instance; lives until it traps.
    static FILTER: RefCell<Option<ActiveFilter>> = const { RefCell::new(None) };
}

fn with_filter<R>(f: impl FnOnce(&mut ActiveFilter) -> R) -> R {
    health::with_state(
        &FILTER,
        |json| parse_config(json).map(|t| ActiveFilter::new(t, MAX_HOSTS)),
        f,
    )
}

struct Policy;

impl Guest for Policy {
    fn observe(host: String, ok: bool, _now_ms: u64) {
        with_filter(|f| f.observe(&host, ok));
    }

    fn healthy(host: String, _now_ms: u64) -> bool {
        with_filter(|f| f.healthy(&host))
    }
}

export_policy!(Policy);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_to_krakens_thresholds() {
        assert_eq!(
            parse_config("{}").unwrap(),
            Thresholds {
                fails: 3,
                passes: 2
            }
        );
        assert_eq!(
            parse_config(r#"{"fails": 5, "passes": 1}"#).unwrap(),
            Thresholds {
                fails: 5,
                passes: 1
            }
        );
    }

    #[test]
    fn config_errors_name_the_key() {
        let e = parse_config(r#"{"fails": 0}"#).unwrap_err();
        assert!(e.contains("`fails`"), "{e}");
        let e = parse_config(r#"{"passes": 0}"#).unwrap_err();
        assert!(e.contains("`passes`"), "{e}");
        let e = parse_config(r#"{"fails": -1}"#).unwrap_err();
        assert!(e.contains("-1"), "{e}");
        let e = parse_config(r#"{"fail": 3}"#).unwrap_err();
        assert!(e.contains("`fail`"), "{e}");
    }
}
