//! Every snippet of the configuration reference loads into the role it is written for, with the
//! meaning the reference gives it.

use std::path::PathBuf;

use shoal_config::{
    AgentConfig, Backend, BuildIndexConfig, Duration, HostPort, Hosts, NamePath, OriginConfig,
    PeerStoreConfig, RoleConfig, TrackerConfig, load,
};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn load_as<T: RoleConfig>(name: &str) -> T {
    load(fixture(name), &no_env).unwrap_or_else(|e| panic!("{name}:\n{e}"))
}

#[test]
fn tracker_peer_ttl() {
    let tracker: TrackerConfig = load_as("tracker-peerstore.yaml");
    let PeerStoreConfig::Redis(redis) = &tracker.peerstore else {
        panic!("expected redis, got {:?}", tracker.peerstore)
    };
    assert_eq!(redis.peer_set_window_size, Duration::from_hours(1));
    assert_eq!(redis.max_peer_set_windows, 5);
    assert_eq!(tracker.peerstore.ttl(), Duration::from_hours(5));
}

#[test]
fn scheduler_snippets_work_for_agents_and_origins() {
    let agent: AgentConfig = load_as("bandwidth.yaml");
    let origin: OriginConfig = load_as("bandwidth.yaml");
    for bandwidth in [
        &agent.scheduler.conn.bandwidth,
        &origin.scheduler.conn.bandwidth,
    ] {
        assert!(bandwidth.enable);
        assert_eq!(bandwidth.egress_bits_per_sec, 1_677_721_600);
        assert_eq!(bandwidth.ingress_bits_per_sec, 2_516_582_400);
    }

    let agent: AgentConfig = load_as("connection-limits.yaml");
    let _: OriginConfig = load_as("connection-limits.yaml");
    assert_eq!(agent.scheduler.connstate.max_open_conn, 10);

    let agent: AgentConfig = load_as("seeder-tti.yaml");
    let _: OriginConfig = load_as("seeder-tti.yaml");
    assert_eq!(agent.scheduler.seeder_tti, Duration::from_mins(5));

    let origin: OriginConfig = load_as("torrent-tti-on-disk.yaml");
    let _: AgentConfig = load_as("torrent-tti-on-disk.yaml");
    assert_eq!(origin.store.cache_cleanup.tti, Duration::from_hours(6));
    assert_eq!(origin.store.download_cleanup.tti, Duration::from_hours(6));

    let origin: OriginConfig = load_as("origin-capacity.yaml");
    assert_eq!(origin.store.capacity, 1_000_000);
}

#[test]
fn hash_ring_static_and_dns() {
    let origin: OriginConfig = load_as("origin-static-hosts.yaml");
    assert_eq!(origin.hashring.max_replica, 2);
    let want: Vec<HostPort> = (1..=3)
        .map(|i| HostPort::new(format!("origin{i}"), 15002))
        .collect();
    assert_eq!(origin.cluster.hosts, Some(Hosts::Static(want)));

    let origin: OriginConfig = load_as("origin-dns.yaml");
    assert_eq!(
        origin.cluster.hosts,
        Some(Hosts::Dns(HostPort::new("origin.example.com", 15002)))
    );
}

#[test]
fn active_health_check_needs_hosts_beside_it() {
    // The reference shows the healthcheck block on its own; in a real origin.yaml it sits next to
    // `hosts:`, which a `cluster:` section must have.
    let err = load::<OriginConfig>(fixture("active-health-check.yaml"), &no_env).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("`cluster`") && text.contains("hosts"),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("origin.yaml");
    let snippet = std::fs::read_to_string(fixture("active-health-check.yaml")).unwrap();
    let hosts = "   hosts:\n     static: [origin1:15002]\n";
    std::fs::write(&path, format!("{snippet}{hosts}")).unwrap();
    let origin: OriginConfig = load(&path, &no_env).unwrap_or_else(|e| panic!("{e}"));
    let check = &origin.cluster.healthcheck;
    assert_eq!((check.filter.fails, check.filter.passes), (3, 2));
    assert_eq!(check.monitor.interval, Duration::from_secs(30));
}

#[test]
fn passive_health_check() {
    let agent: AgentConfig = load_as("passive-health-check.yaml");
    let check = &agent.tracker.cluster.healthcheck;
    assert_eq!(check.fails, 3);
    assert_eq!(check.fail_timeout, Duration::from_mins(5));
}

#[test]
fn multiple_backends_with_auth() {
    let origin: OriginConfig = load_as("origin-backends.yaml");
    let kinds: Vec<&str> = origin.backends.iter().map(|b| b.backend.kind()).collect();
    assert_eq!(
        kinds,
        ["registry_blob", "http", "registry_tag", "s3", "s3", "gcs"]
    );
    assert!(origin.backends[0].namespace.matches("library/ubuntu"));

    let Backend::RegistryBlob(hub) = &origin.backends[0].backend else {
        unreachable!()
    };
    assert_eq!(hub.address, "index.docker.io");
    assert_eq!(hub.timeout, Duration::from_secs(60));
    let basic = hub.security.basic.as_ref().unwrap();
    assert!(basic.username.is_empty() && basic.password.is_empty());

    let Backend::Http(http) = &origin.backends[1].backend else {
        unreachable!()
    };
    assert!(http.download_backoff.enabled);
    assert_eq!(http.download_backoff.max_interval, Duration::from_secs(30));

    let Backend::RegistryTag(ecr) = &origin.backends[2].backend else {
        unreachable!()
    };
    assert_eq!(ecr.security.creds_store.as_deref(), Some("ecr-login"));

    let Backend::S3(minio) = &origin.backends[4].backend else {
        unreachable!()
    };
    assert_eq!(minio.name_path, NamePath::ShardedDockerBlob);
    assert_eq!(minio.endpoint.as_deref(), Some("http://172.17.0.1:9000"));
    assert!(minio.disable_ssl && minio.force_path_style);
    assert!(origin.backends[4].bandwidth.enable);

    let Backend::Gcs(gcs) = &origin.backends[5].backend else {
        unreachable!()
    };
    assert_eq!(gcs.upload_chunk_size, 16 * 1024 * 1024);

    assert_eq!(
        origin.auth.s3["minio-user"]
            .s3
            .aws_secret_access_key
            .expose(),
        "<key>"
    );
    assert_eq!(
        origin.auth.gcs["kraken-user"].gcs.access_blob.expose(),
        "<service_account_key>"
    );
}

#[test]
fn read_only_registry_backends() {
    let origin: OriginConfig = load_as("origin-registry-backend.yaml");
    let Backend::RegistryBlob(registry) = &origin.backends[0].backend else {
        unreachable!()
    };
    assert!(registry.security.tls.client.disabled);

    let index: BuildIndexConfig = load_as("build-index-registry-backend.yaml");
    let Backend::RegistryTag(registry) = &index.backends[0].backend else {
        unreachable!()
    };
    assert_eq!(registry.address, "host.docker.internal:5000");
    assert!(registry.security.tls.client.disabled);
}

#[test]
fn bandwidth_on_origin_accepts_enabled() {
    let origin: OriginConfig = load_as("origin-backend-bandwidth.yaml");
    let bandwidth = &origin.backends[0].bandwidth;
    assert!(bandwidth.enable);
    assert_eq!(bandwidth.egress_bits_per_sec, 8_589_934_592);
    assert_eq!(bandwidth.ingress_bits_per_sec, 85_899_345_920);
}
