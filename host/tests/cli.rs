//! The `shoal` command line as an operator uses it: `config check` exit codes and messages,
//! and `shoal dev` refusing a bad config before it binds anything.

use std::process::{Command, Output};

fn shoal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(args)
        .output()
        .expect("run shoal")
}

fn write(dir: &tempfile::TempDir, name: &str, body: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, body).unwrap();
    p.to_str().unwrap().to_owned()
}

#[test]
fn config_check_prints_the_effective_config_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "origin.yaml",
        &format!("scheduler:\n  seeder_tti: 10m\npeer:\n  ip: 127.0.0.1\n{TRACKER}"),
    );
    let out = shoal(&["config", "check", "origin", &f]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("seeder_tti: 10m"), "{text}");
    assert!(text.contains("max_open_conn: 10"), "{text}");
}

#[test]
fn config_check_names_an_unknown_key_and_suggests_the_right_one() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "agent.yaml", "scheduler:\n  seedr_tti: 5m\n");
    let out = shoal(&["config", "check", "agent", &f]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scheduler.seedr_tti"), "{err}");
    assert!(err.contains("seeder_tti"), "{err}");
}

#[test]
fn config_check_names_a_bad_duration() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "tracker.yaml",
        "peerstore:\n  redis:\n    peer_set_window_size: 5 minutes\n",
    );
    let out = shoal(&["config", "check", "tracker", &f]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("peerstore.redis.peer_set_window_size"),
        "{err}"
    );
    assert!(err.contains("5 minutes"), "{err}");
}

#[test]
fn config_check_refuses_an_unknown_role_and_a_missing_file() {
    let out = shoal(&["config", "check", "gateway", "x.yaml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("gateway"));
    let out = shoal(&["config", "check", "agent", "/nonexistent/agent.yaml"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/agent.yaml"));
}

/// Each role's `development.yaml` (which `extends:` its `base.yaml`, a layer that alone lacks
/// the cluster's addresses) checks.
#[test]
fn every_example_config_checks() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/devcluster");
    for role in ["agent", "origin", "tracker", "build-index", "proxy"] {
        {
            let path = format!("{root}/{role}/development.yaml");
            let out = shoal(&["config", "check", role, &path]);
            assert!(
                out.status.success(),
                "{path}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn dev_refuses_a_bad_config_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        &dir,
        "dev.yaml",
        "listen: 127.0.0.1:0\nuploads:\n  max_age: soon\n",
    );
    let out = shoal(&[
        "dev",
        "--config",
        &f,
        "--data-dir",
        dir.path().join("d").to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("uploads.max_age"), "{err}");
}

/// `config check ROLE FILE` and the role's start, on the same file: both refuse it with
/// `expected` in the message, and neither creates the data directory.
fn check_and_start_refuse(role: &str, yaml: &str, expected: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, &format!("{role}.yaml"), yaml);
    let check = shoal(&["config", "check", role, &f]);
    let data = dir.path().join("data");
    let start = shoal(&[role, "--config", &f, "--data-dir", data.to_str().unwrap()]);
    for (what, out) in [("config check", &check), ("start", &start)] {
        assert!(!out.status.success(), "{what} of {yaml:?} passed");
        let err = String::from_utf8_lossy(&out.stderr);
        for e in expected {
            assert!(err.contains(e), "{what} of {yaml:?}: no {e:?} in {err}");
        }
    }
    assert!(!data.exists(), "a refused start made {}", data.display());
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the config file is left: {left:?}");
}

const TRACKER: &str = "tracker:\n  hosts:\n    static: [127.0.0.1:1]\n";

#[test]
fn config_check_fails_on_what_the_start_fails_on_and_neither_creates_anything() {
    // A peer port on every address with no peer.ip, and no tracker.
    check_and_start_refuse(
        "agent",
        "peer:\n  listen: 0.0.0.0:0\nregistry:\n  listen: 127.0.0.1:0\n",
        &["`peer.ip`", "0.0.0.0:0", "`tracker.hosts`", "is not set"],
    );
    check_and_start_refuse(
        "origin",
        &format!("listen: 127.0.0.1:0\npeer:\n  listen: 0.0.0.0:0\n{TRACKER}"),
        &["`peer.ip`"],
    );
    // TLS files that do not load.
    check_and_start_refuse(
        "tracker",
        "listen: 127.0.0.1:0\nserver:\n  tls:\n    cert: /no/such/cert.pem\n    key: /no/such/key.pem\n",
        &["`server.tls`", "/no/such/cert.pem"],
    );
    check_and_start_refuse(
        "build-index",
        "listen: 127.0.0.1:0\nclient_tls:\n  ca: /no/such/ca.pem\n",
        &["`client_tls`", "/no/such/ca.pem"],
    );
}

#[test]
fn config_check_checks_paths_and_plugin_worlds() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(&dir, "a-file", "not a folder");
    // A store folder under a file.
    check_and_start_refuse(
        "agent",
        &format!(
            "peer:\n  listen: 127.0.0.1:0\nregistry:\n  listen: 127.0.0.1:0\n{TRACKER}\
             store:\n  root: {file}/store\n"
        ),
        &["`store.root`", "is not a folder"],
    );
    // A health policy given as a backend, a backend given as a policy, a missing component.
    let policy = env!("SHOAL_PLUGIN_HEALTH_ACTIVE");
    let backend = env!("SHOAL_PLUGIN_FS");
    check_and_start_refuse(
        "build-index",
        &format!(
            "listen: 127.0.0.1:0\nbackends:\n  - namespace: .*\n    backend:\n      plugin:\n        \
             plugin: {policy}\n        allowed_hosts: []\n"
        ),
        &["`backends[0].backend.plugin.plugin`", "implements"],
    );
    let agent = "peer:\n  listen: 127.0.0.1:0\nregistry:\n  listen: 127.0.0.1:0\n\
                 tracker:\n  hosts:\n    static: [127.0.0.1:1]\n  cluster:\n    healthcheck:\n      \
                 policy: ";
    check_and_start_refuse(
        "agent",
        &format!("{agent}{backend}\n"),
        &["`tracker.cluster.healthcheck.policy`", "implements"],
    );
    check_and_start_refuse(
        "agent",
        &format!("{agent}/no/such/policy.wasm\n"),
        &[
            "`tracker.cluster.healthcheck.policy`",
            "/no/such/policy.wasm",
        ],
    );
}

#[test]
fn a_start_whose_port_is_taken_creates_nothing() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let f = write(&dir, "tracker.yaml", &format!("listen: 127.0.0.1:{port}\n"));
    let data = dir.path().join("data");
    let out = shoal(&[
        "tracker",
        "--config",
        &f,
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!data.exists(), "a failed start made {}", data.display());
}

#[test]
fn dev_refuses_the_p2p_blocks_it_has_no_use_for() {
    let dir = tempfile::tempdir().unwrap();
    for block in ["scheduler:\n  seeder_tti: 5m\n", "store:\n  capacity: 10\n"] {
        let f = write(&dir, "dev.yaml", block);
        let out = shoal(&["config", "check", "dev", &f]);
        assert!(!out.status.success(), "{block}");
        let err = String::from_utf8_lossy(&out.stderr);
        let key = block.split(':').next().unwrap();
        assert!(err.contains(&format!("`{key}`")), "{err}");
    }
}
