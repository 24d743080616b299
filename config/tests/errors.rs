//! Error messages name the key path, the value and what was expected.

use shoal_config::{
    AgentConfig, BuildIndexConfig, ConfigError, OriginConfig, TrackerConfig, load_str,
};

fn no_env(_: &str) -> Option<String> {
    None
}

fn error<T: shoal_config::RoleConfig + std::fmt::Debug>(yaml: &str) -> ConfigError {
    match load_str::<T>(yaml, &no_env) {
        Ok(config) => panic!("expected an error, loaded {config:?}"),
        Err(e) => e,
    }
}

const S3_AUTH: &str =
    "auth:\n  s3:\n    kraken-user:\n      s3: {aws_access_key_id: k, aws_secret_access_key: s}\n";

#[test]
fn unknown_key_with_path_and_suggestion() {
    let yaml = format!(
        "backends:\n  - namespace: .*\n    backend:\n      s3:\n        regon: us-west-1\n        bucket: b\n        username: kraken-user\n{S3_AUTH}"
    );
    let err = error::<OriginConfig>(&yaml);
    let text = err.to_string();
    assert!(text.contains("backends[0].backend.s3.regon"), "{text}");
    assert!(text.contains("unknown key `regon`"), "{text}");
    assert!(text.contains("did you mean `region`?"), "{text}");
    assert!(text.contains("<inline>"), "{text}");
}

#[test]
fn unknown_key_deep_in_scheduler() {
    let err = error::<AgentConfig>("scheduler:\n  conn:\n    bandwith:\n      enable: true\n");
    let text = err.to_string();
    assert!(text.contains("scheduler.conn.bandwith"), "{text}");
    assert!(text.contains("did you mean `bandwidth`?"), "{text}");
}

#[test]
fn unknown_backend_kind_suggests_the_kind() {
    let err = error::<OriginConfig>("backends:\n  - namespace: .*\n    backend:\n      s4: {}\n");
    let text = err.to_string();
    assert!(text.contains("backends[0].backend.s4"), "{text}");
    assert!(text.contains("did you mean `s3`?"), "{text}");
}

#[test]
fn two_backend_kinds_in_one_item() {
    let yaml = "backends:\n  - namespace: .*\n    backend:\n      fs: {root: /a}\n      http: {download_url: 'http://h/%s'}\n";
    let text = error::<OriginConfig>(yaml).to_string();
    assert!(text.contains("backends[0].backend"), "{text}");
    assert!(
        text.contains("2 backend kinds given") && text.contains("exactly one"),
        "{text}"
    );
}

#[test]
fn bad_duration_with_path_and_value() {
    let err = error::<AgentConfig>("scheduler:\n  seeder_tti: 5 minutes\n");
    let problem = &err.problems()[0];
    assert_eq!(problem.path, "scheduler.seeder_tti");
    let text = err.to_string();
    assert!(text.contains("\"5 minutes\""), "{text}");
    assert!(text.contains("a duration like 30s, 5m or 6h"), "{text}");

    let text = error::<AgentConfig>("scheduler:\n  seeder_tti: 5\n").to_string();
    assert!(
        text.contains("scheduler.seeder_tti") && text.contains("30s, 5m or 6h"),
        "{text}"
    );
}

#[test]
fn wrong_type_names_path_value_and_type() {
    let err = error::<AgentConfig>(
        "scheduler:\n  conn:\n    bandwidth:\n      egress_bits_per_sec: lots\n",
    );
    let problem = &err.problems()[0];
    assert_eq!(problem.path, "scheduler.conn.bandwidth.egress_bits_per_sec");
    assert_eq!(problem.value.as_deref(), Some("\"lots\""));
    assert_eq!(problem.expected.as_deref(), Some("u64"));

    let err = error::<AgentConfig>("scheduler:\n  connstate:\n    max_open_conn: -1\n");
    assert_eq!(err.problems()[0].path, "scheduler.connstate.max_open_conn");
}

#[test]
fn bad_listen_address_shows_the_value() {
    let err = error::<AgentConfig>("registry:\n  listen: localhost\n");
    let problem = &err.problems()[0];
    assert_eq!(problem.path, "registry.listen");
    assert_eq!(problem.value.as_deref(), Some("\"localhost\""));
}

#[test]
fn bad_regex_names_the_item() {
    let yaml = "backends:\n  - namespace: a/.*\n    backend: {fs: {root: /a}}\n  - namespace: b/.*\n    backend: {fs: {root: /b}}\n  - namespace: 'c/(.*'\n    backend: {fs: {root: /c}}\n";
    let text = error::<BuildIndexConfig>(yaml).to_string();
    assert!(text.contains("backends[2].namespace"), "{text}");
    assert!(text.contains("regular expression"), "{text}");
}

#[test]
fn missing_auth_user_names_the_username_key() {
    let yaml = format!(
        "backends:\n  - namespace: .*\n    backend:\n      s3: {{region: r, bucket: b, username: kraken-usr}}\n{S3_AUTH}"
    );
    let err = error::<OriginConfig>(&yaml);
    let text = err.to_string();
    assert!(text.contains("backends[0].backend.s3.username"), "{text}");
    assert!(text.contains("kraken-usr"), "{text}");
    assert!(text.contains("did you mean `kraken-user`?"), "{text}");

    let yaml =
        "backends:\n  - namespace: .*\n    backend:\n      gcs: {bucket: b, username: nobody}\n";
    let text = error::<OriginConfig>(yaml).to_string();
    assert!(text.contains("backends[0].backend.gcs.username"), "{text}");
    assert!(text.contains("auth.gcs.nobody"), "{text}");
}

#[test]
fn validation_collects_every_problem() {
    let yaml = "hashring: {max_replica: 0}\n\
                cluster:\n  hosts: {dns: origin:15002}\n  healthcheck: {filter: {fails: 0, passes: 0}}\n\
                backends:\n  - namespace: .*\n    backend: {http: {download_url: 'http://h/no-placeholder'}}\n";
    let err = error::<OriginConfig>(yaml);
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    for want in [
        "hashring.max_replica",
        "cluster.healthcheck.filter.fails",
        "cluster.healthcheck.filter.passes",
        "backends[0].backend.http.download_url",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
    let text = err.to_string();
    assert!(
        text.starts_with("invalid configuration (4 problems)"),
        "{text}"
    );
    assert!(text.contains("%s"), "{text}");
}

#[test]
fn hosts_need_exactly_one_form() {
    let text =
        error::<OriginConfig>("cluster:\n  hosts:\n    static: [a:1]\n    dns: b:1\n").to_string();
    assert!(
        text.contains("cluster.hosts") && text.contains("exactly one"),
        "{text}"
    );
    let text = error::<OriginConfig>("cluster:\n  hosts: {}\n").to_string();
    assert!(
        text.contains("cluster.hosts") && text.contains("no hosts given"),
        "{text}"
    );
    let text = error::<OriginConfig>("cluster:\n  healthcheck: {timeout: 1s}\n").to_string();
    assert!(text.contains("missing required key `hosts`"), "{text}");
    let text = error::<TrackerConfig>("origin:\n  hosts:\n    static: [origin1]\n").to_string();
    assert!(
        text.contains("origin.hosts.static[0]") && text.contains("host:port"),
        "{text}"
    );
}

#[test]
fn peerstore_is_one_backend() {
    let text = error::<TrackerConfig>("peerstore:\n  redis: {}\n  memory: {}\n").to_string();
    assert!(
        text.contains("peerstore") && text.contains("exactly one"),
        "{text}"
    );
    let text = error::<TrackerConfig>("peerstore:\n  reddis: {}\n").to_string();
    assert!(text.contains("did you mean `redis`?"), "{text}");
}

#[test]
fn secrets_are_not_echoed() {
    let yaml = "peerstore:\n  redis:\n    password: 12345678\n";
    let text = error::<TrackerConfig>(yaml).to_string();
    assert!(text.contains("peerstore.redis.password"), "{text}");
    assert!(!text.contains("12345678"), "{text}");
}

#[test]
fn yaml_syntax_errors_carry_a_location() {
    let err = error::<AgentConfig>("scheduler: [\nstore: 1\n");
    assert!(matches!(err, ConfigError::Syntax { .. }), "{err:?}");
    assert!(err.to_string().contains("line"), "{err}");
    let text = error::<AgentConfig>("- a\n- b\n").to_string();
    assert!(text.contains("not a mapping"), "{text}");
}

#[test]
fn plugin_limits_are_checked_with_their_paths() {
    let err = error::<OriginConfig>("plugins:\n  call_timeout: 0s\n  memory_bytes: 1024\n");
    let text = err.to_string();
    assert!(text.contains("plugins.call_timeout"), "{text}");
    assert!(text.contains("plugins.memory_bytes"), "{text}");
    assert!(text.contains("1048576 or more"), "{text}");
    let ok = load_str::<shoal_config::DevConfig>(
        "plugins:\n  call_timeout: 2s\n  breaker_threshold: 3\n",
        &no_env,
    )
    .unwrap();
    assert_eq!(
        ok.plugins.call_timeout.get(),
        std::time::Duration::from_secs(2)
    );
    assert_eq!(
        ok.plugins.breaker_cool_down.get(),
        std::time::Duration::from_secs(30)
    );
}

#[test]
fn upload_expiry_is_checked_with_its_paths() {
    let text = error::<shoal_config::DevConfig>("uploads:\n  max_age: 100ms\n  interval: 0s\n")
        .to_string();
    assert!(text.contains("uploads.max_age"), "{text}");
    assert!(text.contains("uploads.interval"), "{text}");
    assert!(text.contains("24h"), "{text}");
}

#[test]
fn a_day_long_tag_ttl_is_refused_with_its_path() {
    let text = error::<shoal_config::DevConfig>("tag_ttl: 48h\n").to_string();
    assert!(text.contains("tag_ttl"), "{text}");
    assert!(text.contains("0s"), "{text}");
}

#[test]
fn gc_settings_are_checked_with_their_paths() {
    let text =
        error::<shoal_config::DevConfig>("gc:\n  interval: 100ms\n  grace: 9000h\n").to_string();
    assert!(text.contains("gc.interval"), "{text}");
    assert!(text.contains("0s (off)"), "{text}");
    assert!(text.contains("gc.grace"), "{text}");
    let text = error::<shoal_config::DevConfig>("gc:\n  every: 1h\n").to_string();
    assert!(text.contains("every"), "{text}");
    let ok = load_str::<shoal_config::DevConfig>(
        "gc:\n  interval: 0s\n  grace: 0s\n  backends: false\n",
        &no_env,
    )
    .unwrap();
    assert!(ok.gc.interval.is_zero() && ok.gc.grace.is_zero() && !ok.gc.backends);
}

#[test]
fn a_health_policy_path_must_be_an_existing_wasm_file() {
    let text = error::<OriginConfig>(
        "cluster:\n  hosts: {dns: origin:15002}\n  healthcheck: {policy: /no/such/policy.wasm}\n",
    )
    .to_string();
    assert!(text.contains("cluster.healthcheck.policy"), "{text}");
    assert!(
        text.contains("/no/such/policy.wasm does not exist"),
        "{text}"
    );

    let text = error::<AgentConfig>("tracker:\n  cluster:\n    healthcheck: {policy: policy.so}\n")
        .to_string();
    assert!(
        text.contains("tracker.cluster.healthcheck.policy"),
        "{text}"
    );
    assert!(text.contains("not a .wasm file"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let wasm = dir.path().join("policy.wasm");
    std::fs::write(&wasm, b"\0asm").unwrap();
    let yaml = format!(
        "tracker:\n  cluster:\n    healthcheck: {{fails: 2, policy: {}}}\n",
        wasm.display()
    );
    let agent: AgentConfig = load_str(&yaml, &no_env).unwrap();
    assert_eq!(
        agent
            .tracker
            .cluster
            .healthcheck
            .policy
            .as_ref()
            .and_then(|p| p.file()),
        Some(wasm.as_path())
    );
    let yaml = format!(
        "cluster:\n  hosts: {{dns: origin:15002}}\n  healthcheck: {{policy: {}}}\n",
        wasm.display()
    );
    let origin: OriginConfig = load_str(&yaml, &no_env).unwrap();
    assert_eq!(
        origin
            .cluster
            .healthcheck
            .policy
            .as_ref()
            .and_then(|p| p.file()),
        Some(wasm.as_path())
    );
}

#[test]
fn passive_health_check_bounds_fails_and_fail_timeout() {
    let err = error::<AgentConfig>(
        "tracker:\n  cluster:\n    healthcheck: {fails: 1001, fail_timeout: 0s}\n",
    );
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    for want in [
        "tracker.cluster.healthcheck.fails",
        "tracker.cluster.healthcheck.fail_timeout",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
    let text =
        error::<AgentConfig>("tracker:\n  cluster:\n    healthcheck: {policies: x}\n").to_string();
    assert!(text.contains("policies"), "{text}");
}

#[test]
fn metainfogen_piece_lengths_by_blob_size() {
    let c: OriginConfig = load_str(
        "metainfogen:\n  piece_lengths:\n    0: 4MB\n    2GB: 8MB\n    100GB: 64MB\n",
        &no_env,
    )
    .unwrap();
    let m = &c.metainfogen;
    assert_eq!(m.piece_length(Some(0)), 4 << 20);
    assert_eq!(m.piece_length(Some((2 << 30) - 1)), 4 << 20);
    assert_eq!(m.piece_length(Some(2 << 30)), 8 << 20);
    assert_eq!(m.piece_length(Some(200 << 30)), 64 << 20);
    assert_eq!(m.piece_length(None), 4 << 20);
    let text = error::<OriginConfig>("metainfogen:\n  piece_lengths:\n    0: 128MB\n").to_string();
    assert!(text.contains("metainfogen.piece_lengths"), "{text}");
    assert!(text.contains("64MB"), "{text}");
    let text = error::<OriginConfig>("metainfogen:\n  piece_lengths:\n    0: 4XB\n").to_string();
    assert!(text.contains("metainfogen.piece_lengths"), "{text}");
    assert!(text.contains("4MB, 512KB"), "{text}");
}

#[test]
fn agent_mirrors_need_hosts_and_repository_prefixes() {
    let ok: AgentConfig = load_str(
        "registry:\n  tag_ttl: 2s\n  mirrors:\n    docker.io: \"\"\n    ghcr.io: ghcr.io\n    registry.local:5000: mirrors/local\n    \"[::1]:5000\": v6\n",
        &no_env,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.registry.tag_ttl, shoal_config::Duration::from_secs(2));
    let mirrors = ok.registry.mirrors.unwrap();
    assert_eq!(mirrors["ghcr.io"], "ghcr.io");
    assert_eq!(mirrors["docker.io"], "");

    let err = error::<AgentConfig>(
        "registry:\n  mirrors:\n    ghcr.io/org: \"\"\n    quay.io: Quay\n    a.io:99999: x\n",
    );
    let paths: Vec<&str> = err.problems().iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "registry.mirrors.a.io:99999",
            "registry.mirrors.ghcr.io/org",
            "registry.mirrors.quay.io"
        ],
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("\"Quay\" is not a repository name"), "{text}");
    assert!(text.contains("host or host:port"), "{text}");
}

#[test]
fn a_zero_retry_delay_is_refused_at_its_key() {
    let text = error::<OriginConfig>("writeback:\n  delay: 0s\n").to_string();
    assert!(text.contains("writeback.delay"), "{text}");
    let text = error::<BuildIndexConfig>("replication:\n  delay: 0s\n").to_string();
    assert!(text.contains("replication.delay"), "{text}");
}

#[test]
fn server_settings_are_checked_with_their_paths() {
    let text = error::<AgentConfig>(
        "server:\n  max_connections: 0\n  header_timeout: 10ms\n  body_timeout: 1ms\n",
    )
    .to_string();
    assert!(text.contains("server.max_connections"), "{text}");
    assert!(text.contains("server.header_timeout"), "{text}");
    assert!(text.contains("server.body_timeout"), "{text}");
    let text = error::<OriginConfig>("server:\n  tls:\n    cert: a.pem\n").to_string();
    assert!(text.contains("server.tls"), "{text}");
    assert!(text.contains("key"), "{text}");
    let ok = load_str::<shoal_config::DevConfig>(
        "server:\n  idle_timeout: 5m\n  tls: {cert: a.pem, key: b.pem, client_ca: ca.pem}\nallowed_cidrs: [10.0.0.0/8]\n",
        &no_env,
    )
    .unwrap();
    assert_eq!(ok.server.idle_timeout.get().as_secs(), 300);
    assert_eq!(ok.server.max_connections, 4096);
    let tls = ok.server.tls.expect("tls");
    assert_eq!(
        tls.client_ca.as_deref(),
        Some(std::path::Path::new("ca.pem"))
    );
    assert_eq!(ok.allowed_cidrs.map(|c| c.len()), Some(1));
}

#[test]
fn every_role_takes_tls_and_a_half_certificate_names_its_missing_key() {
    let tls = "server:\n  tls: {cert: a.pem, key: b.pem, client_ca: ca.pem}\n\
               client_tls: {ca: ca.pem, cert: a.pem, key: b.pem}\n";
    load_str::<OriginConfig>(
        &format!("{tls}peer:\n  tls: {{cert: a.pem, key: b.pem, ca: ca.pem}}\n"),
        &no_env,
    )
    .unwrap();
    load_str::<TrackerConfig>(tls, &no_env).unwrap();
    load_str::<BuildIndexConfig>(tls, &no_env).unwrap();
    load_str::<shoal_config::ProxyConfig>(tls, &no_env).unwrap();
    load_str::<shoal_config::AgentConfig>(
        &format!("{tls}peer:\n  tls: {{cert: a.pem, key: b.pem, ca: ca.pem}}\n"),
        &no_env,
    )
    .unwrap();

    let text = error::<OriginConfig>("client_tls: {ca: ca.pem, cert: a.pem}\n").to_string();
    assert!(text.contains("client_tls.key"), "{text}");
    assert!(text.contains("both cert and key"), "{text}");
    let text = error::<TrackerConfig>("client_tls: {cert: a.pem, key: b.pem}\n").to_string();
    assert!(text.contains("ca"), "{text}");
    let text =
        error::<OriginConfig>("peer:\n  tls: {cert: a.pem, key: '', ca: ca.pem}\n").to_string();
    assert!(text.contains("peer.tls.key"), "{text}");
    assert!(text.contains("is empty"), "{text}");
}

#[test]
fn a_bad_log_level_names_the_key_and_the_filter_form() {
    let text = error::<TrackerConfig>("log:\n  level: debgu\n").to_string();
    assert!(text.contains("log.level"), "{text}");
    assert!(text.contains("`debgu` is not a level"), "{text}");
    assert!(text.contains("like info,shoal=debug"), "{text}");
    let text = error::<AgentConfig>("log:\n  level: info,shoal_p2p=loud\n").to_string();
    assert!(
        text.contains("log.level") && text.contains("`loud`"),
        "{text}"
    );
    let text = error::<AgentConfig>("log:\n  format: xml\n").to_string();
    assert!(
        text.contains("log.format") && text.contains("json"),
        "{text}"
    );
}

#[test]
fn a_log_filter_and_json_load() {
    let agent: AgentConfig =
        load_str("log:\n  level: info,shoal=debug\n  format: json\n", &no_env).unwrap();
    assert_eq!(agent.log.level.to_string(), "info,shoal=debug");
    assert_eq!(agent.log.format, shoal_config::LogFormat::Json);
}

#[test]
fn an_aws_label_must_name_the_user_its_keys_sit_under() {
    let yaml = "auth:\n  s3:\n    kraken-user:\n      s3: {aws: minio-user, aws_access_key_id: k, \
                aws_secret_access_key: s}\n";
    let text = error::<OriginConfig>(yaml).to_string();
    assert!(text.contains("auth.s3.kraken-user.s3.aws"), "{text}");
    assert!(text.contains("`minio-user`"), "{text}");
    let right = yaml.replace("aws: minio-user", "aws: kraken-user");
    load_str::<OriginConfig>(&right, &no_env).expect("the label names its own user");
}

#[test]
fn registry_backends_refuse_client_certificates_they_could_not_present() {
    for key in ["cert", "key", "ca"] {
        let yaml = format!(
            "backends:\n  - namespace: .*\n    backend:\n      registry_blob:\n        address: r:5000\n        \
             security:\n          tls:\n            client:\n              {key}: /etc/x.pem\n"
        );
        let text = error::<OriginConfig>(&yaml).to_string();
        let at = format!("backends[0].backend.registry_blob.security.tls.client.{key}");
        assert!(text.contains(&at), "{text}");
        assert!(text.contains("not supported"), "{text}");
    }
    let tag = "backends:\n  - namespace: .*\n    backend:\n      registry_tag:\n        address: r:5000\n        \
               security:\n          tls:\n            client:\n              ca: /etc/ca.pem\n";
    let text = error::<BuildIndexConfig>(tag).to_string();
    assert!(
        text.contains("registry_tag.security.tls.client.ca"),
        "{text}"
    );
}

#[test]
fn a_plugin_backend_has_no_world_key_and_a_tracker_cluster_no_hosts() {
    let plugin = "backends:\n  - namespace: .*\n    backend:\n      plugin:\n        plugin: x.wasm\n        \
                  world: shoal:backend/backend\n";
    let text = error::<OriginConfig>(plugin).to_string();
    assert!(text.contains("unknown key `world`"), "{text}");
    let tracker = "cluster:\n  hosts:\n    static: [127.0.0.1:15002]\n";
    let text = error::<TrackerConfig>(tracker).to_string();
    assert!(text.contains("cluster.hosts"), "{text}");
    let build_index =
        "cluster:\n  hosts:\n    static: [127.0.0.1:1]\n  healthcheck:\n    timeout: 1s\n";
    let text = error::<BuildIndexConfig>(build_index).to_string();
    assert!(text.contains("cluster.healthcheck"), "{text}");
}
