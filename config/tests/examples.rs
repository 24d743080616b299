//! The example configs under `examples/` load, each `development.yaml` on top of its base.

use std::path::{Path, PathBuf};

use shoal_config::{
    AgentConfig, BuildIndexConfig, DevConfig, OriginConfig, ProxyConfig, Role, RoleConfig,
    TrackerConfig, check, load,
};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// The examples must load on a fresh machine, so they may not need any variable.
fn env(_: &str) -> Option<String> {
    None
}

fn load_both<T: RoleConfig>(role: &str) -> (T, T) {
    let dir = examples().join("devcluster").join(role);
    let base = load(dir.join("base.yaml"), &env).unwrap_or_else(|e| panic!("{role} base:\n{e}"));
    let dev = load(dir.join("development.yaml"), &env)
        .unwrap_or_else(|e| panic!("{role} development:\n{e}"));
    (base, dev)
}

#[test]
fn every_devcluster_role_loads() {
    let (_, agent): (AgentConfig, AgentConfig) = load_both("agent");
    assert!(agent.tracker.hosts.is_some() && agent.build_index.hosts.is_some());
    let (base, origin): (OriginConfig, OriginConfig) = load_both("origin");
    assert!(!origin.backends.is_empty());
    assert_ne!(base, origin, "development.yaml should change something");
    let (_, tracker): (TrackerConfig, TrackerConfig) = load_both("tracker");
    assert!(tracker.origin.hosts.is_some());
    let (_, index): (BuildIndexConfig, BuildIndexConfig) = load_both("build-index");
    assert!(!index.backends.is_empty());
    let (_, proxy): (ProxyConfig, ProxyConfig) = load_both("proxy");
    assert!(proxy.origin.hosts.is_some());
}

#[test]
fn dev_example_loads() {
    let dev: DevConfig = load(examples().join("dev.yaml"), &env).unwrap_or_else(|e| panic!("{e}"));
    assert!(!dev.backends.is_empty());
}

#[test]
fn check_renders_every_example() {
    for role in Role::ALL {
        let path = match role {
            Role::Dev => examples().join("dev.yaml"),
            _ => examples()
                .join("devcluster")
                .join(role.as_str())
                .join("development.yaml"),
        };
        let yaml = check(role, &path, &env).unwrap_or_else(|e| panic!("{role}:\n{e}"));
        assert!(yaml.contains("level: info"), "{role}:\n{yaml}");
    }
}
