//! `extends` layering and `${ENV}` substitution, through the public loader.

use std::path::Path;

use shoal_config::{
    AgentConfig, ConfigError, Duration, HostPort, Hosts, OriginConfig, TrackerConfig, load,
    load_str,
};

fn no_env(_: &str) -> Option<String> {
    None
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn later_file_wins_maps_merge_lists_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "base.yaml",
        "scheduler:\n  seeder_tti: 10m\n  connstate: {max_open_conn: 20}\n\
         cluster:\n  hosts: {static: [a:1, b:1, c:1]}\n\
         hashring: {max_replica: 2}\n",
    );
    let dev = write(
        dir.path(),
        "development.yaml",
        "extends: base.yaml\nscheduler:\n  leecher_tti: 1m\n  connstate: {max_open_conn: 5}\n\
         cluster:\n  hosts: {static: [d:1]}\n",
    );
    let origin: OriginConfig = load(&dev, &no_env).unwrap_or_else(|e| panic!("{e}"));
    // Nested maps merge: the base's seeder_tti survives beside the override's leecher_tti.
    assert_eq!(origin.scheduler.seeder_tti, Duration::from_mins(10));
    assert_eq!(origin.scheduler.leecher_tti, Duration::from_mins(1));
    // Scalars: later wins.
    assert_eq!(origin.scheduler.connstate.max_open_conn, 5);
    assert_eq!(origin.hashring.max_replica, 2);
    // Lists are replaced, not appended.
    assert_eq!(
        origin.cluster.hosts,
        Some(Hosts::Static(vec![HostPort::new("d", 1)]))
    );
}

#[test]
fn chains_resolve_relative_to_each_file() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "common/root.yaml",
        "announce_interval: 7s\npeer_handout_limit: 9\n",
    );
    write(
        dir.path(),
        "common/base.yaml",
        "extends: root.yaml\npeer_handout_limit: 10\n",
    );
    let top = write(
        dir.path(),
        "prod/tracker.yaml",
        "extends: ../common/base.yaml\nlisten: 0.0.0.0:9000\n",
    );
    let tracker: TrackerConfig = load(&top, &no_env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tracker.announce_interval, Duration::from_secs(7));
    assert_eq!(tracker.peer_handout_limit, 10);
    assert_eq!(tracker.listen.port(), 9000);
}

#[test]
fn null_in_a_later_file_unsets_a_key() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "base.yaml", "peer: {ip: 10.0.0.1}\n");
    let top = write(
        dir.path(),
        "top.yaml",
        "extends: base.yaml\npeer: {ip: ~}\n",
    );
    let agent: AgentConfig = load(&top, &no_env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(agent.peer.ip, None);
}

#[test]
fn cycles_are_reported_with_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", "extends: b.yaml\n");
    write(dir.path(), "b.yaml", "extends: a.yaml\n");
    let err = load::<AgentConfig>(dir.path().join("a.yaml"), &no_env).unwrap_err();
    assert!(
        matches!(err, ConfigError::Cycle { ref chain } if chain.len() == 3),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("cycle") && text.contains("a.yaml") && text.contains("b.yaml"),
        "{text}"
    );

    let own = write(dir.path(), "self.yaml", "extends: self.yaml\n");
    let err = load::<AgentConfig>(&own, &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::Cycle { .. }), "{err:?}");
}

#[test]
fn missing_base_names_both_files() {
    let dir = tempfile::tempdir().unwrap();
    let top = write(dir.path(), "development.yaml", "extends: nowhere.yaml\n");
    let err = load::<AgentConfig>(&top, &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::MissingBase { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("development.yaml") && text.contains("nowhere.yaml"),
        "{text}"
    );
}

#[test]
fn missing_file_and_bad_extends() {
    let err = load::<AgentConfig>("/nonexistent/agent.yaml", &no_env).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    let err = load_str::<AgentConfig>("extends: [a, b]\n", &no_env).unwrap_err();
    assert!(
        err.to_string().contains("`extends` must name a file"),
        "{err}"
    );
}

#[test]
fn errors_name_the_file_that_set_the_key() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "base.yaml", "scheduler:\n  seeder_tti: 5 m\n");
    let top = write(
        dir.path(),
        "development.yaml",
        "extends: base.yaml\nstore: {capacity: 5}\n",
    );
    let err = load::<AgentConfig>(&top, &no_env).unwrap_err();
    let problem = &err.problems()[0];
    assert!(problem.file.ends_with("base.yaml"), "{err}");
    assert_eq!(problem.path, "scheduler.seeder_tti");

    // A key overridden in the later file is blamed on that file.
    let top = write(
        dir.path(),
        "fixed.yaml",
        "extends: base.yaml\nscheduler: {seeder_tti: 5x}\n",
    );
    let err = load::<AgentConfig>(&top, &no_env).unwrap_err();
    assert!(err.problems()[0].file.ends_with("fixed.yaml"), "{err}");
}

fn env(name: &str) -> Option<String> {
    match name {
        "TRACKER" => Some("tracker.internal:15003".to_owned()),
        "TTI" => Some("2m".to_owned()),
        _ => None,
    }
}

#[test]
fn env_substitution_in_strings() {
    let yaml = "tracker:\n  hosts:\n    dns: ${TRACKER}\nscheduler:\n  seeder_tti: ${TTI}\n";
    let agent: AgentConfig = load_str(yaml, &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        agent.tracker.hosts,
        Some(Hosts::Dns(HostPort::new("tracker.internal", 15003)))
    );
    assert_eq!(agent.scheduler.seeder_tti, Duration::from_mins(2));
}

#[test]
fn env_missing_variable_names_key_and_variable() {
    let yaml = "backends:\n  - namespace: .*\n    backend:\n      s3: {region: r, bucket: b, username: u}\n\
                auth:\n  s3:\n    u:\n      s3:\n        aws_access_key_id: ${KEY_ID}\n        aws_secret_access_key: x\n";
    let err = load_str::<OriginConfig>(yaml, &env).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("auth.s3.u.s3.aws_access_key_id"), "{text}");
    assert!(text.contains("`KEY_ID`"), "{text}");
}

#[test]
fn env_escape_writes_a_literal() {
    let yaml = "backends:\n  - namespace: .*\n    backend:\n      http:\n        download_url: \"http://h/%s?x=$${NOT_A_VAR}\"\n";
    let origin: OriginConfig = load_str(yaml, &env).unwrap_or_else(|e| panic!("{e}"));
    let shoal_config::Backend::Http(http) = &origin.backends[0].backend else {
        unreachable!()
    };
    assert_eq!(http.download_url, "http://h/%s?x=${NOT_A_VAR}");
}
