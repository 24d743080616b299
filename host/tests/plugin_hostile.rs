//! Misbehaving plugins (panic, endless loop, memory hog, a request to a host not granted):
//! each costs exactly one failed call and the next call succeeds; repeated traps open the
//! breaker, which closes after its cool-down. Also the `.cwasm` cache, a health policy
//! with state, and `plugin check`.

use shoal_host::plugin;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use plugin::{
    Backend, BackendError, HealthPolicy, PluginEngine, PluginLimits, WasmBackend, WorldKind,
};
use shoal_config::Backend as BackendConfig;

/// One fixture for every misdeed: its config's `mode` says which (panic, spin, hog, sneak).
const MISBEHAVE: &str = env!("SHOAL_TEST_PLUGIN_MISBEHAVE");
const HEALTH: &str = env!("SHOAL_TEST_PLUGIN_HEALTH_COUNT");
const FS: &str = env!("SHOAL_PLUGIN_FS");

fn limits() -> PluginLimits {
    PluginLimits {
        memory_bytes: 32 << 20,
        call_timeout: Duration::from_millis(500),
        tick: Duration::from_millis(10),
        breaker_threshold: 3,
        breaker_cool_down: Duration::from_millis(300),
        max_instances: 16,
    }
}

fn load(engine: &PluginEngine, path: &str, config: &str, allowed: &[&str]) -> WasmBackend {
    let yaml =
        format!("plugin:\n  plugin: {path}\n  config: {config}\n  allowed_hosts: {allowed:?}\n");
    let config: BackendConfig = serde_yaml_ng::from_str(&yaml).expect("plugin yaml");
    engine
        .backend(&config, BTreeMap::new())
        .expect("plugin loads")
}

/// One hostile call fails with `Trapped` naming the plugin; the next call succeeds.
async fn one_failure_then_fine(plugin: &WasmBackend, expect: &str) {
    match plugin.stat("ns", "hostile").await {
        Err(BackendError::Trapped {
            plugin: name,
            message,
        }) => {
            assert_eq!(name, plugin.name());
            assert!(
                message.contains(expect),
                "{message:?} should mention {expect:?}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(
        plugin.stat("ns", "ok").await.unwrap().size,
        2,
        "the next call succeeds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_costs_one_call() {
    let engine = PluginEngine::new(limits(), None).unwrap();
    let p = load(&engine, MISBEHAVE, "{mode: panic}", &[]);
    one_failure_then_fine(&p, "unreachable").await;
    // The SDK's panic hook told the host where and why, and the trap says it.
    one_failure_then_fine(&p, "panicked at testing/misbehave/src/lib.rs:").await;
    one_failure_then_fine(&p, ": test plugin panics on hostile").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_loop_hits_the_deadline_and_costs_one_call() {
    let engine = PluginEngine::new(limits(), None).unwrap();
    let p = load(&engine, MISBEHAVE, "{mode: spin}", &[]);
    one_failure_then_fine(&p, "deadline (plugins.call_timeout)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocating_past_the_cap_costs_one_call() {
    let engine = PluginEngine::new(limits(), None).unwrap();
    let p = load(&engine, MISBEHAVE, "{mode: hog}", &[]);
    // The cap, and the key that sets it.
    one_failure_then_fine(&p, "cap of 33554432 bytes (32 MiB, plugins.memory_bytes)").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_not_granted_is_denied_before_any_connection() {
    // A real server the plugin could reach if the hook let it: it must see nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let server = tokio::spawn(async move {
        while listener.accept().await.is_ok() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    let engine = PluginEngine::new(limits(), None).unwrap();
    let config = format!("{{mode: sneak, url: \"http://{addr}/steal\"}}");
    let p = load(&engine, MISBEHAVE, &config, &["granted.example"]);
    match p.stat("ns", "hostile").await {
        Err(BackendError::HostDenied { plugin, url }) => {
            assert_eq!(plugin, "shoal_test_plugin_misbehave");
            assert_eq!(url, format!("http://{addr}/steal"));
        }
        other => panic!("expected HostDenied, got {other:?}"),
    }
    assert_eq!(p.stat("ns", "ok").await.unwrap().size, 2);
    assert_eq!(accepted.load(Ordering::SeqCst), 0, "no connection was made");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_after_repeated_traps_and_closes_after_the_cool_down() {
    let engine = PluginEngine::new(limits(), None).unwrap();
    let p = load(&engine, MISBEHAVE, "{mode: panic}", &[]);
    for _ in 0..3 {
        assert!(matches!(
            p.stat("ns", "hostile").await,
            Err(BackendError::Trapped { .. })
        ));
    }
    // Open: even a good call is refused without running the plugin.
    let retry_in = match p.stat("ns", "ok").await {
        Err(BackendError::BreakerOpen { retry_in, .. }) => retry_in,
        other => panic!("expected an open breaker, got {other:?}"),
    };
    assert!(retry_in <= limits().breaker_cool_down);
    tokio::time::sleep(retry_in + Duration::from_millis(20)).await;
    assert_eq!(
        p.stat("ns", "ok").await.unwrap().size,
        2,
        "closed after the cool-down"
    );

    // After a good call a single trap no longer opens it.
    assert!(matches!(
        p.stat("ns", "hostile").await,
        Err(BackendError::Trapped { .. })
    ));
    assert_eq!(p.stat("ns", "ok").await.unwrap().size, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trap_on_the_trial_call_reopens_the_breaker() {
    let engine = PluginEngine::new(limits(), None).unwrap();
    let p = load(&engine, MISBEHAVE, "{mode: panic}", &[]);
    for _ in 0..3 {
        let _ = p.stat("ns", "hostile").await;
    }
    let Err(BackendError::BreakerOpen { retry_in, .. }) = p.stat("ns", "ok").await else {
        panic!("the breaker should be open");
    };
    tokio::time::sleep(retry_in + Duration::from_millis(20)).await;
    assert!(matches!(
        p.stat("ns", "hostile").await,
        Err(BackendError::Trapped { .. })
    ));
    assert!(matches!(
        p.stat("ns", "ok").await,
        Err(BackendError::BreakerOpen { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn precompiled_plugins_are_cached_by_wasm_and_engine_hash() {
    let cache = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let yaml = format!("fs:\n  root: {}\n", root.path().display());
    let config: BackendConfig = serde_yaml_ng::from_str(&yaml).unwrap();
    let cwasm = || -> Vec<_> {
        std::fs::read_dir(cache.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect()
    };

    let engine = PluginEngine::new(limits(), Some(cache.path().to_owned())).unwrap();
    engine.backend(&config, BTreeMap::new()).unwrap();
    let files = cwasm();
    assert_eq!(files.len(), 1, "{files:?}");

    // A second engine with the same settings loads the same file.
    let again = PluginEngine::new(limits(), Some(cache.path().to_owned())).unwrap();
    let fs = again.backend(&config, BTreeMap::new()).unwrap();
    assert_eq!(cwasm(), files);
    assert!(matches!(
        fs.stat("ns", "x").await,
        Err(BackendError::NotFound { .. })
    ));

    // A corrupt cache entry is recompiled, not trusted.
    std::fs::write(&files[0], b"not a cwasm").unwrap();
    let fs = again.backend(&config, BTreeMap::new()).unwrap();
    assert!(matches!(
        fs.stat("ns", "x").await,
        Err(BackendError::NotFound { .. })
    ));
    assert!(std::fs::read(&files[0]).unwrap().len() > 1000, "rewritten");

    // Another component: another entry.
    let http: BackendConfig =
        serde_yaml_ng::from_str("http:\n  download_url: http://127.0.0.1:1/%s\n").unwrap();
    again.backend(&http, BTreeMap::new()).unwrap();
    assert_eq!(cwasm().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_policy_keeps_state_between_calls() {
    let engine = PluginEngine::new(limits(), None).unwrap();
    let wasm = std::fs::read(HEALTH).unwrap();
    let policy = engine
        .policy("health-count", &wasm, &serde_json::json!({"fails": 2}))
        .unwrap();
    let now = SystemTime::now();
    assert!(policy.healthy("a", now).await.unwrap());
    policy.observe("a", false, now).await.unwrap();
    assert!(
        policy.healthy("a", now).await.unwrap(),
        "one fail is below the limit"
    );
    policy.observe("a", false, now).await.unwrap();
    assert!(!policy.healthy("a", now).await.unwrap());
    assert!(
        policy.healthy("b", now).await.unwrap(),
        "hosts are tracked apart"
    );
    policy.observe("a", true, now).await.unwrap();
    assert!(policy.healthy("a", now).await.unwrap());
}

#[test]
fn check_reports_the_world_imports_and_whether_it_links() {
    let engine = PluginEngine::new(limits(), None).unwrap();
    let fs = plugin::inspect(&engine, "fs", &std::fs::read(FS).unwrap()).unwrap();
    assert_eq!(fs.world, WorldKind::Backend);
    assert!(fs.ok(), "{fs}");
    assert!(
        fs.imports
            .iter()
            .any(|i| i.starts_with("shoal:backend/config@")),
        "{fs}"
    );
    assert!(fs.to_string().contains("runnable: yes"));

    let health = plugin::inspect(&engine, "h", &std::fs::read(HEALTH).unwrap()).unwrap();
    assert_eq!(health.world, WorldKind::Policy);
    assert!(health.ok(), "{health}");
    assert!(
        !health.imports.iter().any(|i| i.starts_with("wasi:http")),
        "{health}"
    );

    let junk = plugin::inspect(&engine, "junk", b"\0asm junk");
    assert!(junk.is_err());
}

#[test]
fn the_plugin_check_command_reports_and_fails_on_non_plugins() {
    let shoal = env!("CARGO_BIN_EXE_shoal");
    let out = std::process::Command::new(shoal)
        .args(["plugin", "check", FS])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("world: shoal:backend/backend@0.1.0"),
        "{stdout}"
    );
    assert!(stdout.contains("shoal:backend/config@0.1.0"), "{stdout}");
    assert!(stdout.contains("runnable: yes"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0").unwrap();
    let out = std::process::Command::new(shoal)
        .args(["plugin", "check"])
        .arg(&junk)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a core module is not a plugin");
}

/// `plugins.max_instances` caps the instances alive at once across the engine's plugins: with
/// a cap of 1 and one backend keeping its instance warm, another backend's call is refused as
/// unavailable, naming the setting, and a refusal is not a trap (its breaker stays closed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_instances_caps_the_instances_alive_at_once() {
    let engine = PluginEngine::new(
        PluginLimits {
            max_instances: 1,
            ..limits()
        },
        None,
    )
    .expect("engine");
    let first = load(&engine, MISBEHAVE, "{mode: panic}", &[]);
    let second = load(&engine, MISBEHAVE, "{mode: panic}", &[]);
    assert_eq!(first.stat("ns", "ok").await.unwrap().size, 2);
    for _ in 0..5 {
        match second.stat("ns", "ok").await {
            Err(BackendError::Unavailable { message, .. }) => {
                assert!(message.contains("plugins.max_instances (1)"), "{message}");
            }
            other => panic!("expected the cap to refuse the call, got {other:?}"),
        }
    }
    assert_eq!(
        first.stat("ns", "ok").await.unwrap().size,
        2,
        "the warm instance still serves"
    );
}

/// A `plugin:` backend with `username:` receives every key of its `auth.plugin` entry through
/// `get-secret` (with `${ENV}` substituted), and `config check` prints the entry redacted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_backend_gets_its_auth_plugin_secrets_and_config_check_redacts_them() {
    let yaml = format!(
        "backends:\n  - namespace: .*\n    backend:\n      plugin:\n        plugin: {MISBEHAVE}\n        \
         username: azure-prod\n        config: {{mode: secret, key: account_key}}\n\
         auth:\n  plugin:\n    azure-prod:\n      account_key: ${{TEST_ACCOUNT_KEY}}\n"
    );
    let env = |name: &str| (name == "TEST_ACCOUNT_KEY").then(|| "s3cr3t-from-env".to_owned());
    let origin: shoal_config::DevConfig = shoal_config::load_str(&yaml, &env).expect("loads");
    let entry = &origin.backends[0].backend;
    let engine = PluginEngine::new(limits(), None).expect("engine");
    let plugin = engine
        .backend(entry, origin.auth.secrets_for(entry))
        .expect("plugin loads");
    match plugin.stat("ns", "hostile").await {
        Err(BackendError::Other { message, .. }) => {
            assert!(
                message.contains("secret account_key is s3cr3t-from-env"),
                "{message}"
            );
        }
        other => panic!("expected the fixture to report its secret, got {other:?}"),
    }
    // Without the entry's name the plugin gets nothing.
    let anonymous = engine
        .backend(entry, BTreeMap::new())
        .expect("plugin loads");
    assert!(matches!(
        anonymous.stat("ns", "hostile").await,
        Err(BackendError::NotFound { .. })
    ));
    // config check prints the effective config with the secret redacted.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dev.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["config", "check", "dev"])
        .arg(&file)
        .env("TEST_ACCOUNT_KEY", "s3cr3t-from-env")
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("account_key"), "{printed}");
    assert!(!printed.contains("s3cr3t-from-env"), "{printed}");
    // A name with no entry is refused at its key.
    let unknown = yaml.replace("username: azure-prod", "username: azure-test");
    let err = shoal_config::load_str::<shoal_config::DevConfig>(&unknown, &env).unwrap_err();
    assert!(
        err.to_string()
            .contains("backends[0].backend.plugin.username"),
        "{err}"
    );
}
