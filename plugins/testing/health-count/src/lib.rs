//! Test fixture for the `shoal:health/policy` world: a host is unhealthy after `fails`
//! consecutive failed observations and healthy again after one pass. The state lives in the
//! component's memory between calls. Asking about a host whose name starts with `hostile`
//! panics (a trap: the host must discard the instance and its state, and carry on). Hosts
//! listed in `ignore` (a setting from the YAML's `config:`) are always healthy.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::Deserialize;
use shoal_plugin_sdk::bindings::export_policy;
use shoal_plugin_sdk::health::Guest;

#[derive(Deserialize)]
struct Config {
    fails: u32,
    #[serde(default)]
    ignore: Vec<String>,
}

thread_local! {
    static FAILS: RefCell<HashMap<String, u32>> = RefCell::new(HashMap::new());
}

struct Policy;

impl Guest for Policy {
    fn observe(host: String, ok: bool, _now_ms: u64) {
        FAILS.with(|f| {
            let mut f = f.borrow_mut();
            if ok {
                f.remove(&host);
            } else {
                *f.entry(host).or_default() += 1;
            }
        });
    }

    fn healthy(host: String, _now_ms: u64) -> bool {
        if host.starts_with("hostile") {
            panic!("test policy panics on {host}");
        }
        let config = shoal_plugin_sdk::config::load::<Config>().unwrap_or(Config {
            fails: 3,
            ignore: Vec::new(),
        });
        if config.ignore.contains(&host) {
            return true;
        }
        FAILS.with(|f| f.borrow().get(&host).copied().unwrap_or(0) < config.fails)
    }
}

export_policy!(Policy);
