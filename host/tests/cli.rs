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
    let f = write(&dir, "origin.yaml", "scheduler:\n  seeder_tti: 10m\n");
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

#[test]
fn every_example_config_checks() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/devcluster");
    for role in ["agent", "origin", "tracker", "build-index", "proxy"] {
        for file in ["base.yaml", "development.yaml"] {
            let path = format!("{root}/{role}/{file}");
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
        "listen: 127.0.0.1:0\nstore:\n  cache_cleanup:\n    tti: soon\n",
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
    assert!(err.contains("store.cache_cleanup.tti"), "{err}");
}
