//! The effective config that `shoal config check` prints is complete, redacted, and loads back.

use shoal_config::{
    AgentConfig, BuildIndexConfig, DevConfig, OriginConfig, ProxyConfig, REDACTED, Role,
    RoleConfig, TrackerConfig, load_str, render,
};

fn no_env(_: &str) -> Option<String> {
    None
}

fn round_trip<T: RoleConfig + PartialEq + std::fmt::Debug>(yaml: &str) -> String {
    let config: T = load_str(yaml, &no_env).unwrap_or_else(|e| panic!("{e}"));
    let text = render(&config).unwrap();
    let again: T = load_str(&text, &no_env).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(again, config, "{text}");
    text
}

#[test]
fn defaults_round_trip_for_every_role() {
    let agent = round_trip::<AgentConfig>("");
    assert!(agent.contains("seeder_tti: 5m"), "{agent}");
    assert!(agent.contains("max_open_conn: 10"), "{agent}");
    round_trip::<OriginConfig>("");
    let tracker = round_trip::<TrackerConfig>("");
    assert!(tracker.contains("peer_set_window_size: 1h"), "{tracker}");
    round_trip::<BuildIndexConfig>("");
    round_trip::<ProxyConfig>("");
    round_trip::<DevConfig>("");
}

#[test]
fn full_configs_round_trip() {
    round_trip::<OriginConfig>(
        r#"
cluster:
  hosts: {static: ['[::1]:15002', origin2:15002]}
backends:
  - namespace: library/.*
    backend:
      registry_blob: {address: index.docker.io, security: {credsStore: ecr-login}}
  - namespace: .*
    backend:
      plugin:
        plugin: store.wasm
        config: {bucket: b, nested: {x: [1, 2]}}
        allowed_hosts: [cdn.example.com]
"#,
    );
    round_trip::<TrackerConfig>("peerstore: {redis: {addr: redis:6379, dial_timeout: 1s500ms}}\n");
    round_trip::<AgentConfig>(
        "allowed_cidrs: [10.0.0.0/8, '::1']\nlog: {level: debug}\nmetrics: {listen: 127.0.0.1:9100}\n",
    );
}

#[test]
fn secrets_are_redacted_but_reach_plugins() {
    let yaml = "backends:\n  - namespace: .*\n    backend:\n      registry_blob:\n        address: r\n        security: {basic: {username: u, password: hunter2}}\n";
    let origin: OriginConfig = load_str(yaml, &no_env).unwrap();
    let text = render(&origin).unwrap();
    assert!(
        text.contains(REDACTED) && !text.contains("hunter2"),
        "{text}"
    );
    assert!(!format!("{origin:?}").contains("hunter2"));

    let block = origin.backends[0].backend.plugin_config();
    let password = &block["security"]["basic"]["password"];
    assert_eq!(password.as_str(), Some("hunter2"));
    assert_eq!(block["address"].as_str(), Some("r"));
}

#[test]
fn check_names_the_role_in_errors_for_bad_roles() {
    let err = "edge".parse::<Role>().unwrap_err().to_string();
    assert!(err.contains("build-index"), "{err}");
}
