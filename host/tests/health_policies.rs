//! The two default health-policy components (`health-active`, `health-passive`) driven through
//! the native `HealthPolicy` trait with explicit times: every transition of Kraken's rules, the
//! settings they refuse, a custom policy named in YAML, and a trapping policy.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shoal_config::{ActiveHealthCheck, HealthFilter, PassiveHealthCheck, PluginSource};
use shoal_host::plugin::{BackendError, HealthPolicy, LoadError, PluginEngine, PluginLimits};

/// A policy with state (the fixture `plugins/testing/health-count`), built with the feature
/// `test-plugins`; the tests that load it need that feature.
#[cfg(feature = "test-plugins")]
const HEALTH_COUNT: &str = env!("SHOAL_TEST_PLUGIN_HEALTH_COUNT");
const HEALTH_ACTIVE: &str = env!("SHOAL_PLUGIN_HEALTH_ACTIVE");

fn engine() -> PluginEngine {
    PluginEngine::new(
        PluginLimits {
            memory_bytes: 32 << 20,
            call_timeout: Duration::from_secs(5),
            tick: Duration::from_millis(10),
            breaker_threshold: 3,
            breaker_cool_down: Duration::from_secs(60),
            max_instances: 16,
        },
        None,
    )
    .unwrap()
}

fn active(fails: u32, passes: u32) -> ActiveHealthCheck {
    ActiveHealthCheck {
        filter: HealthFilter { fails, passes },
        ..ActiveHealthCheck::default()
    }
}

fn passive(fails: u32, fail_timeout: Duration) -> PassiveHealthCheck {
    PassiveHealthCheck {
        fails,
        fail_timeout: fail_timeout.into(),
        ..PassiveHealthCheck::default()
    }
}

/// A fixed point in time, so every test states its times exactly.
fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
}

async fn healthy(p: &Arc<dyn HealthPolicy>, host: &str, ms: u64) -> bool {
    p.healthy(host, at(ms)).await.unwrap()
}

async fn observe(p: &Arc<dyn HealthPolicy>, host: &str, ok: bool, ms: u64) {
    p.observe(host, ok, at(ms)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_turns_unhealthy_after_fails_and_healthy_after_passes() {
    let p = engine().active_health(&active(3, 2)).unwrap();
    assert!(
        healthy(&p, "a", 0).await,
        "a host never observed is healthy"
    );
    observe(&p, "a", false, 0).await;
    observe(&p, "a", false, 1).await;
    assert!(
        healthy(&p, "a", 1).await,
        "fails - 1 failures: still healthy"
    );
    observe(&p, "a", false, 2).await;
    assert!(!healthy(&p, "a", 2).await, "fails failures: unhealthy");
    assert!(healthy(&p, "b", 2).await, "hosts are tracked apart");
    observe(&p, "a", true, 3).await;
    assert!(
        !healthy(&p, "a", 3).await,
        "passes - 1 passes: still unhealthy"
    );
    observe(&p, "a", true, 4).await;
    assert!(healthy(&p, "a", 4).await, "passes passes: healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_counts_only_runs_in_a_row() {
    let p = engine().active_health(&active(2, 2)).unwrap();
    observe(&p, "a", false, 0).await;
    observe(&p, "a", true, 1).await;
    observe(&p, "a", false, 2).await;
    assert!(healthy(&p, "a", 2).await, "a pass broke the run of fails");
    observe(&p, "a", false, 3).await;
    assert!(!healthy(&p, "a", 3).await);
    observe(&p, "a", true, 4).await;
    observe(&p, "a", false, 5).await;
    observe(&p, "a", true, 6).await;
    assert!(!healthy(&p, "a", 6).await, "a fail broke the run of passes");
    observe(&p, "a", true, 7).await;
    assert!(healthy(&p, "a", 7).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_takes_a_host_out_until_fail_timeout_after_its_last_failure() {
    let min = 60_000;
    let p = engine()
        .passive_health(&passive(3, Duration::from_secs(300)))
        .unwrap();
    assert!(
        healthy(&p, "t", 0).await,
        "a host never observed is healthy"
    );
    observe(&p, "t", false, 0).await;
    observe(&p, "t", false, min).await;
    assert!(
        healthy(&p, "t", min).await,
        "fails - 1 failures: still healthy"
    );
    observe(&p, "t", false, 2 * min).await;
    assert!(!healthy(&p, "t", 2 * min).await, "fails failures within 5m");
    // Kraken: out while `now - last <= fail_timeout`.
    assert!(!healthy(&p, "t", 7 * min).await, "out at exactly last + 5m");
    assert!(healthy(&p, "t", 7 * min + 1).await, "back 1 ms later");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ignores_failures_outside_the_window() {
    let min = 60_000;
    let p = engine()
        .passive_health(&passive(3, Duration::from_secs(300)))
        .unwrap();
    observe(&p, "t", false, 0).await;
    observe(&p, "t", false, min).await;
    observe(&p, "t", false, 5 * min + 1).await;
    assert!(
        healthy(&p, "t", 5 * min + 1).await,
        "the first failure left the window 1 ms ago"
    );
    observe(&p, "t", false, 6 * min).await;
    assert!(
        !healthy(&p, "t", 6 * min).await,
        "the second, exactly 5m old, still counts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_is_not_reset_by_a_success_as_in_kraken() {
    let p = engine()
        .passive_health(&passive(2, Duration::from_secs(10)))
        .unwrap();
    observe(&p, "t", false, 0).await;
    observe(&p, "t", true, 1).await;
    observe(&p, "t", false, 2).await;
    assert!(
        !healthy(&p, "t", 2).await,
        "the success between the failures did not reset the count"
    );
    observe(&p, "t", true, 3).await;
    assert!(!healthy(&p, "t", 3).await, "nor did it end the time out");
    assert!(healthy(&p, "t", 10_003).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_host_names_does_not_grow_the_policy_without_bound() {
    let p = engine()
        .passive_health(&passive(1, Duration::from_secs(60)))
        .unwrap();
    observe(&p, "victim", false, 0).await;
    // The policies track at most 1024 hosts; the least recently failed goes first.
    for i in 0..1100 {
        observe(&p, &format!("flood-{i}"), false, 1).await;
    }
    assert!(!healthy(&p, "flood-1099", 1).await);
    assert!(
        healthy(&p, "victim", 1).await,
        "the oldest host was forgotten, which means never observed"
    );
}

#[test]
fn settings_the_policies_cannot_use_are_refused_naming_the_key() {
    let engine = engine();
    for (check, key) in [
        (active(0, 2), "cluster.healthcheck.filter.fails"),
        (active(3, 0), "cluster.healthcheck.filter.passes"),
    ] {
        match engine.active_health(&check) {
            Err(LoadError::Config { plugin, message }) => {
                assert_eq!(plugin, "health-active");
                assert!(message.contains(key), "{message}");
            }
            other => panic!("expected a config error, got {:?}", other.map(|_| ())),
        }
    }
    for (check, key) in [
        (passive(0, Duration::from_secs(1)), "fails"),
        (passive(1001, Duration::from_secs(1)), "fails"),
        (passive(3, Duration::ZERO), "fail_timeout"),
        (passive(3, Duration::from_micros(999)), "fail_timeout"),
    ] {
        match engine.passive_health(&check) {
            Err(LoadError::Config { plugin, message }) => {
                assert_eq!(plugin, "health-passive");
                assert!(
                    message.contains(&format!("tracker.cluster.healthcheck.{key}")),
                    "{message}"
                );
            }
            other => panic!("expected a config error, got {:?}", other.map(|_| ())),
        }
    }
}

#[cfg(feature = "test-plugins")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_policy_named_in_yaml_runs_through_the_same_api() {
    // health-count: out after `fails` fails, back after a single pass (the built-in would
    // want `passes` = 2), so its verdicts show which component ran.
    let yaml = format!("filter: {{fails: 2, passes: 2}}\npolicy: {HEALTH_COUNT}\n");
    let check: ActiveHealthCheck = serde_yaml_ng::from_str(&yaml).unwrap();
    let p = engine().active_health(&check).unwrap();
    observe(&p, "a", false, 0).await;
    assert!(healthy(&p, "a", 0).await);
    observe(&p, "a", false, 1).await;
    assert!(!healthy(&p, "a", 1).await, "it was given fails: 2");
    observe(&p, "a", true, 2).await;
    assert!(healthy(&p, "a", 2).await, "one pass: the custom rule ran");

    let yaml = format!("fails: 1\npolicy: {HEALTH_COUNT}\n");
    let check: PassiveHealthCheck = serde_yaml_ng::from_str(&yaml).unwrap();
    let p = engine().passive_health(&check).unwrap();
    observe(&p, "t", false, 0).await;
    assert!(!healthy(&p, "t", 0).await, "it was given fails: 1");

    let p = engine()
        .health_policy_from_file(Path::new(HEALTH_COUNT), &serde_json::json!({"fails": 1}))
        .unwrap();
    p.observe("a", false, at(0)).await.unwrap();
    assert!(!p.healthy("a", at(0)).await.unwrap());
}

#[cfg(feature = "test-plugins")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_policy_gets_its_config_block_with_the_thresholds_added() {
    // health-count's `ignore:` is a setting only the YAML's `config:` can give it.
    let yaml = format!(
        "filter: {{fails: 1, passes: 1}}
policy: {HEALTH_COUNT}
config: {{ignore: [spare]}}
"
    );
    let check: ActiveHealthCheck = serde_yaml_ng::from_str(&yaml).unwrap();
    let p = engine().active_health(&check).unwrap();
    for host in ["spare", "main"] {
        observe(&p, host, false, 0).await;
    }
    assert!(healthy(&p, "spare", 0).await, "config: reached the policy");
    assert!(
        !healthy(&p, "main", 0).await,
        "and fails: 1 was added to it"
    );

    let yaml = format!(
        "fails: 1
policy: {HEALTH_COUNT}
config: {{ignore: [t2]}}
"
    );
    let check: PassiveHealthCheck = serde_yaml_ng::from_str(&yaml).unwrap();
    let p = engine().passive_health(&check).unwrap();
    observe(&p, "t2", false, 0).await;
    assert!(healthy(&p, "t2", 0).await);

    // In a role's file: refused without a policy, and where it would hide a threshold.
    let origin = |healthcheck: &str| {
        format!(
            "cluster:\n  hosts: {{static: [\"127.0.0.1:1\"]}}\n  healthcheck: {healthcheck}\n\
             backends: []\n"
        )
    };
    let err = shoal_config::load_str::<shoal_config::OriginConfig>(
        &origin("{config: {ignore: [a]}}"),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("cluster.healthcheck.config"), "{err}");
    assert!(err.contains("no `policy:`"), "{err}");
    let err = shoal_config::load_str::<shoal_config::OriginConfig>(
        &origin(&format!("{{policy: {HEALTH_COUNT}, config: {{fails: 9}}}}")),
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("cluster.healthcheck.config.fails"), "{err}");
    assert!(err.contains("filter.fails"), "{err}");
}

#[test]
fn a_custom_policy_that_is_not_there_is_a_read_error() {
    let check = ActiveHealthCheck {
        policy: Some(PluginSource::File("/no/such/policy.wasm".into())),
        ..active(3, 2)
    };
    match engine().active_health(&check) {
        Err(LoadError::Read { plugin, path, .. }) => {
            assert_eq!(plugin, "policy");
            assert_eq!(path, Path::new("/no/such/policy.wasm"));
        }
        other => panic!("expected a read error, got {:?}", other.map(|_| ())),
    }
}

#[cfg(feature = "test-plugins")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_policy_costs_one_call_and_its_state() {
    let p = engine()
        .health_policy_from_file(Path::new(HEALTH_COUNT), &serde_json::json!({"fails": 1}))
        .unwrap();
    p.observe("a", false, at(0)).await.unwrap();
    assert!(!p.healthy("a", at(0)).await.unwrap());
    match p.healthy("hostile", at(1)).await {
        Err(BackendError::Trapped { plugin, message }) => {
            assert_eq!(plugin, "shoal_test_plugin_health_count");
            // The SDK's panic hook said where and why.
            assert!(
                message.contains("panicked at testing/health-count/src/lib.rs:")
                    && message.contains("test policy panics on hostile"),
                "{message}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // The next call runs on a fresh instance: nothing observed yet.
    assert!(p.healthy("a", at(2)).await.unwrap());
    p.observe("a", false, at(3)).await.unwrap();
    assert!(
        !p.healthy("a", at(3)).await.unwrap(),
        "and it keeps state again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_built_in_given_a_bad_config_traps_on_every_call_until_the_breaker_opens() {
    // Through `policy` the host's own checks are skipped: the guest's check is what stops it.
    let wasm = std::fs::read(HEALTH_ACTIVE).unwrap();
    let p = engine()
        .policy("health-active", &wasm, &serde_json::json!({"fails": 0}))
        .unwrap();
    for _ in 0..3 {
        assert!(matches!(
            p.healthy("a", at(0)).await,
            Err(BackendError::Trapped { .. })
        ));
    }
    assert!(matches!(
        p.healthy("a", at(0)).await,
        Err(BackendError::BreakerOpen { .. })
    ));
}
