//! An empty file gives Kraken's defaults for every role.

use std::net::SocketAddr;

use shoal_config::{
    AgentConfig, Backend, BuildIndexConfig, DevConfig, Duration, LogFormat, LogLevel, OriginConfig,
    PeerStoreConfig, ProxyConfig, TrackerConfig, load_str,
};

fn no_env(_: &str) -> Option<String> {
    None
}

fn addr(text: &str) -> SocketAddr {
    text.parse().unwrap()
}

#[test]
fn agent() {
    let agent: AgentConfig = load_str("", &no_env).unwrap();
    let s = &agent.scheduler;
    assert_eq!(s.seeder_tti, Duration::from_mins(5));
    assert_eq!(s.leecher_tti, Duration::from_mins(5));
    assert_eq!(s.conn.tti, Duration::from_mins(5));
    assert!(!s.conn.bandwidth.enable);
    assert_eq!(s.conn.bandwidth.egress_bits_per_sec, 1_677_721_600);
    assert_eq!(s.conn.bandwidth.ingress_bits_per_sec, 2_516_582_400);
    assert_eq!(s.connstate.max_open_conn, 10);
    assert_eq!(s.connstate.blacklist_duration, Duration::from_secs(30));
    assert_eq!(s.dispatch.pipeline_limit, 3);
    assert_eq!(s.announce_interval, Duration::from_secs(3));
    assert_eq!(agent.store.cache_cleanup.tti, Duration::from_hours(6));
    assert_eq!(agent.store.download_cleanup.tti, Duration::from_hours(6));
    let passive = &agent.tracker.cluster.healthcheck;
    assert_eq!(passive.fails, 3);
    assert_eq!(passive.fail_timeout, Duration::from_mins(5));
    assert_eq!(agent.registry.listen, addr("127.0.0.1:16000"));
    assert_eq!(agent.registry.tag_ttl, Duration::ZERO);
    assert_eq!(agent.registry.mirrors, None);
    assert_eq!(agent.peer.listen, addr("0.0.0.0:16001"));
    assert_eq!(agent.peer.ip, None);
    assert_eq!(agent.allowed_cidrs, None);
    assert_eq!(agent.log.level, LogLevel::INFO);
    assert_eq!(agent.log.format, LogFormat::Text);
    assert_eq!(agent.metrics.listen, None);
}

#[test]
fn origin() {
    let origin: OriginConfig = load_str("", &no_env).unwrap();
    assert_eq!(origin.listen, addr("0.0.0.0:15002"));
    assert_eq!(origin.peer.listen, addr("0.0.0.0:15001"));
    assert_eq!(origin.hashring.max_replica, 3);
    assert_eq!(origin.store.capacity, 1_000_000);
    assert_eq!(origin.store.capacity_bytes, None);
    assert_eq!(origin.store.cache_cleanup.tti, Duration::from_hours(6));
    assert_eq!(origin.scheduler.seeder_tti, Duration::from_mins(5));
    assert_eq!(origin.scheduler.connstate.max_open_conn, 10);
    let active = &origin.cluster.healthcheck;
    assert_eq!(active.filter.fails, 3);
    assert_eq!(active.filter.passes, 2);
    assert_eq!(active.monitor.interval, Duration::from_secs(30));
    assert_eq!(active.timeout, Duration::from_secs(3));
    assert_eq!(origin.cluster.hosts, None);
    assert_eq!(origin.writeback.retries, 5);
    assert_eq!(origin.writeback.delay, Duration::from_secs(10));
    assert!(origin.backends.is_empty());
}

#[test]
fn tracker() {
    let tracker: TrackerConfig = load_str("", &no_env).unwrap();
    assert_eq!(tracker.listen, addr("0.0.0.0:15003"));
    let PeerStoreConfig::Memory(memory) = &tracker.peerstore else {
        panic!("default store is memory")
    };
    assert_eq!(memory.peer_set_window_size, Duration::from_hours(1));
    assert_eq!(memory.max_peer_set_windows, 5);
    assert_eq!(tracker.peerstore.ttl(), Duration::from_hours(5));
    assert_eq!(tracker.announce_interval, Duration::from_secs(3));
    assert_eq!(tracker.peer_handout_limit, 50);

    let redis: TrackerConfig = load_str("peerstore: {redis: {}}", &no_env).unwrap();
    let PeerStoreConfig::Redis(redis) = &redis.peerstore else {
        panic!("redis")
    };
    assert_eq!(redis.addr.to_string(), "127.0.0.1:6379");
    assert_eq!(redis.peer_set_window_size, Duration::from_hours(1));
    assert_eq!(redis.max_peer_set_windows, 5);
    assert_eq!(redis.dial_timeout, Duration::from_secs(5));
    assert!(redis.password.is_none());
}

#[test]
fn build_index_proxy_and_dev() {
    let index: BuildIndexConfig = load_str("", &no_env).unwrap();
    assert_eq!(index.listen, addr("0.0.0.0:15004"));
    assert_eq!(index.tag_cache.tti, Duration::from_hours(6));
    assert_eq!(index.replication.retries, 5);
    assert_eq!(index.replication.delay, Duration::from_secs(10));

    let proxy: ProxyConfig = load_str("", &no_env).unwrap();
    assert_eq!(proxy.registry.listen, addr("0.0.0.0:15000"));
    assert!(proxy.origin.hosts.is_none() && proxy.build_index.hosts.is_none());

    let dev: DevConfig = load_str("", &no_env).unwrap();
    assert_eq!(dev.listen, addr("127.0.0.1:5000"));
    assert_eq!(dev.data_dir, std::path::Path::new("./shoal-data"));
    // With no backends the dev role keeps everything in a folder under data_dir.
    assert_eq!(dev.backends.len(), 1);
    assert!(dev.backends[0].namespace.matches("any/thing"));
    let Backend::Fs(fs) = &dev.backends[0].backend else {
        panic!("fs backend")
    };
    assert_eq!(fs.root, std::path::Path::new("./shoal-data/backend"));
    assert_eq!(dev.gc.interval, Duration::from_hours(1));
    assert_eq!(dev.gc.grace, Duration::from_hours(1));
    assert!(dev.gc.backends);
    assert_eq!(dev.uploads.max_age, Duration::from_hours(24));
    assert_eq!(dev.uploads.interval, Duration::from_hours(1));
}

#[test]
fn backend_defaults() {
    let yaml = r#"
backends:
  - namespace: a/.*
    backend: {registry_blob: {address: index.docker.io}}
  - namespace: b/.*
    backend: {http: {download_url: "http://h/%s"}}
  - namespace: c/.*
    backend: {s3: {region: r, bucket: b, username: u}}
  - namespace: d/.*
    backend: {hdfs: {namenodes: [nn1:50070]}}
auth:
  s3: {u: {s3: {aws_access_key_id: k, aws_secret_access_key: s}}}
"#;
    let origin: OriginConfig = load_str(yaml, &no_env).unwrap_or_else(|e| panic!("{e}"));
    let Backend::RegistryBlob(r) = &origin.backends[0].backend else {
        unreachable!()
    };
    assert_eq!(r.timeout, Duration::from_secs(60));
    assert!(!r.security.tls.client.disabled);
    let Backend::Http(h) = &origin.backends[1].backend else {
        unreachable!()
    };
    let b = &h.download_backoff;
    assert!(!b.enabled);
    assert_eq!(b.initial_interval, Duration::from_secs(1));
    assert_eq!(b.max_interval, Duration::from_secs(30));
    assert_eq!(b.max_elapsed_time, Duration::from_mins(5));
    assert_eq!(b.multiplier, 2.0);
    assert_eq!(h.timeout, Duration::from_secs(60));
    let Backend::S3(s) = &origin.backends[2].backend else {
        unreachable!()
    };
    assert_eq!(s.root_directory, "");
    assert_eq!(s.upload_part_size, 64 * 1024 * 1024);
    assert!(!s.disable_ssl && !s.force_path_style && s.endpoint.is_none());
    let Backend::Hdfs(d) = &origin.backends[3].backend else {
        unreachable!()
    };
    assert_eq!(d.root_directory, "/infra/dockerRegistry/");
    assert!(!origin.backends[0].bandwidth.enable);
}
