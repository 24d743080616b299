//! Schedulers on real loopback sockets, with an in-process tracker: a seeder and several
//! leechers finish with the right bytes and trade pieces among themselves; a peer that serves
//! corrupt pieces is blacklisted and everyone still completes; the egress cap holds; with
//! `peer.tls` peers trade over TLS and a peer without a certificate from the CA is refused.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use shoal_config::{BandwidthConfig, SchedulerConfig, StoreConfig};
use shoal_p2p::error::SchedulerError;
use shoal_p2p::metainfo::{InfoHash, Metainfo};
use shoal_p2p::store::{CompleteBlob, PieceStore};
use shoal_p2p::testing::{CorruptPeer, TestCa};
use shoal_p2p::tls::PeerTls;
use shoal_p2p::{Announce, AnnounceReply, Identity, PeerAddr, PeerId, Scheduler, Tracker};
use shoal_registry::Digest;
use tokio::net::TcpListener;

const NS: &str = "library/test";

/// A tracker in memory: everyone who announced, complete peers first.
#[derive(Default)]
struct FakeTracker {
    peers: Mutex<HashMap<InfoHash, Vec<PeerAddr>>>,
    metainfo: Mutex<HashMap<Digest, Metainfo>>,
}

impl FakeTracker {
    fn publish(&self, m: Metainfo) {
        self.metainfo.lock().unwrap().insert(m.digest().clone(), m);
    }

    /// Lists a peer that never announces itself (the corrupt fake).
    fn add_peer(&self, info_hash: InfoHash, peer: PeerAddr) {
        self.peers
            .lock()
            .unwrap()
            .entry(info_hash)
            .or_default()
            .push(peer);
    }
}

#[async_trait]
impl Tracker for FakeTracker {
    async fn announce(&self, a: &Announce) -> Result<AnnounceReply, SchedulerError> {
        let mut peers = self.peers.lock().unwrap();
        let list = peers.entry(a.info_hash).or_default();
        list.retain(|p| p.peer_id != a.peer_id);
        list.push(PeerAddr {
            peer_id: a.peer_id,
            addr: a.addr,
            complete: a.complete,
            origin: a.origin,
        });
        let mut out: Vec<PeerAddr> = list
            .iter()
            .filter(|p| p.peer_id != a.peer_id)
            .cloned()
            .collect();
        out.sort_by_key(|p| !p.complete);
        Ok(AnnounceReply {
            peers: out,
            interval: Duration::from_millis(300),
        })
    }

    async fn metainfo(
        &self,
        _namespace: &str,
        digest: &Digest,
    ) -> Result<Option<Metainfo>, SchedulerError> {
        Ok(self.metainfo.lock().unwrap().get(digest).cloned())
    }
}

fn blob(len: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = u32::from(seed) + 1;
    while out.len() < len {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn digest_of(bytes: &[u8]) -> Digest {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
        .parse()
        .unwrap()
}

fn config() -> SchedulerConfig {
    SchedulerConfig {
        announce_interval: shoal_config::Duration::from_millis(300),
        leecher_tti: shoal_config::Duration::from_secs(30),
        ..SchedulerConfig::default()
    }
}

async fn node(
    dir: &Path,
    name: &str,
    tracker: Arc<FakeTracker>,
    config: SchedulerConfig,
    origin: bool,
) -> Scheduler {
    tls_node(dir, name, tracker, config, origin, None).await
}

async fn tls_node(
    dir: &Path,
    name: &str,
    tracker: Arc<FakeTracker>,
    config: SchedulerConfig,
    origin: bool,
    tls: Option<PeerTls>,
) -> Scheduler {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = PieceStore::open(&dir.join(name), &StoreConfig::default()).unwrap();
    let me = Identity {
        peer_id: PeerId::random(),
        advertise: addr,
        origin,
    };
    let s = Scheduler::new(me, config, store, tracker, tls).unwrap();
    let serving = s.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    s
}

async fn seed_blob(seeder: &Scheduler, bytes: &[u8], piece_length: u64) -> Metainfo {
    let d = digest_of(bytes);
    let body = futures_util::stream::iter(
        bytes
            .chunks(100_000)
            .map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let blob = seeder.store().import(&d, piece_length, body).await.unwrap();
    let m = (**blob.metainfo()).clone();
    seeder.seed(NS, blob);
    m
}

/// `n` leechers with the default test config, named `leech0`, `leech1`...
async fn leechers(dir: &Path, tracker: &Arc<FakeTracker>, n: usize) -> Vec<Scheduler> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("leech{i}");
        out.push(node(dir, &name, tracker.clone(), config(), false).await);
    }
    out
}

/// Downloads `m`'s blob on every one of `leechers` at once; panics on a failed download.
async fn download_everywhere(leechers: &[Scheduler], m: &Metainfo) -> Vec<CompleteBlob> {
    let downloads = leechers.iter().map(|l| {
        let (l, d) = (l.clone(), m.digest().clone());
        tokio::spawn(async move { l.download(NS, &d).await })
    });
    futures_util::future::join_all(downloads)
        .await
        .into_iter()
        .map(|d| d.unwrap().unwrap())
        .collect()
}

async fn read_all(blob: &CompleteBlob) -> Vec<u8> {
    tokio::fs::read(blob.path()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leechers_complete_and_trade_pieces_among_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Arc::new(FakeTracker::default());
    let seeder = node(dir.path(), "seed", tracker.clone(), config(), true).await;
    let bytes = blob(6 << 20, 1);
    let m = seed_blob(&seeder, &bytes, 256 << 10).await;
    tracker.publish(m.clone());

    let leechers = leechers(dir.path(), &tracker, 5).await;
    for blob in download_everywhere(&leechers, &m).await {
        assert_eq!(read_all(&blob).await, bytes, "bytes differ");
    }
    let (seeder_sent, _) = seeder.traffic();
    let received: u64 = leechers.iter().map(|l| l.traffic().1).sum();
    let from_peers: u64 = leechers.iter().map(|l| l.traffic().0).sum();
    assert!(received >= 5 * bytes.len() as u64, "received {received}");
    assert!(
        from_peers > 0,
        "leechers sent nothing to each other (seeder sent {seeder_sent}, received {received})"
    );
    // A second download of a complete blob is served from the store.
    let again = leechers[0].download(NS, m.digest()).await.unwrap();
    assert_eq!(again.len(), bytes.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_corrupt_pieces_is_blacklisted_and_downloads_complete() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Arc::new(FakeTracker::default());
    let bytes = blob(3 << 20, 2);
    let seeder = node(dir.path(), "seed", tracker.clone(), config(), true).await;
    let m = seed_blob(&seeder, &bytes, 128 << 10).await;
    tracker.publish(m.clone());
    let liar = CorruptPeer::start(Ipv4Addr::LOCALHOST.into(), m.clone())
        .await
        .unwrap();
    // The liar is listed first, as a complete peer.
    tracker.add_peer(m.info_hash(), liar.as_peer());
    let leechers = leechers(dir.path(), &tracker, 3).await;
    for blob in download_everywhere(&leechers, &m).await {
        assert_eq!(read_all(&blob).await, bytes);
    }
    // Each leecher dialed the liar at most once: blacklisted after its first bad piece.
    let tries = liar.connections();
    assert!(tries >= 1, "the corrupt peer was never contacted");
    assert!(
        tries <= 3,
        "the corrupt peer was dialed {tries} times by 3 leechers"
    );
    let again = liar.dials().into_values().filter(|&n| n > 1).count();
    assert_eq!(
        again,
        0,
        "a leecher came back to the liar: {:?}",
        liar.dials()
    );
    // Every leecher that was sent a corrupt piece banned its sender.
    let banned: u64 = leechers.iter().map(Scheduler::blacklisted).sum();
    assert!(
        liar.pieces_served() == 0 || banned >= 1,
        "{} corrupt pieces served and nobody blacklisted the liar",
        liar.pieces_served()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_stays_near_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Arc::new(FakeTracker::default());
    let cap_bytes: u64 = 4 << 20; // 4 MiB/s
    let mut seed_config = config();
    seed_config.conn.bandwidth = BandwidthConfig {
        enable: true,
        egress_bits_per_sec: cap_bytes * 8,
        ingress_bits_per_sec: 1 << 40,
        ..BandwidthConfig::default()
    };
    let seeder = node(dir.path(), "seed", tracker.clone(), seed_config, true).await;
    let bytes = blob(16 << 20, 3);
    let m = seed_blob(&seeder, &bytes, 256 << 10).await;
    tracker.publish(m.clone());
    let leecher = node(dir.path(), "leech", tracker.clone(), config(), false).await;
    let start = Instant::now();
    let blob = leecher.download(NS, m.digest()).await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(read_all(&blob).await, bytes);
    // One second of burst is allowed up front; the rest is paced.
    let rate = (bytes.len() as u64 - cap_bytes) as f64 / secs;
    let ratio = rate / cap_bytes as f64;
    eprintln!("egress {rate:.0} B/s against a cap of {cap_bytes} B/s: {ratio:.3}");
    assert!(ratio <= 1.10, "egress {ratio:.3}x the cap");
}

/// `peer.tls` of a peer with a certificate from `ca`.
fn peer_tls(ca: &TestCa, leaf: &str) -> PeerTls {
    let (cert, key) = ca.issue(leaf);
    PeerTls::load(&shoal_config::PeerTls {
        cert,
        key,
        ca: ca.cert(),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_tls_trade_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "cluster");
    let tracker = Arc::new(FakeTracker::default());
    let tls = peer_tls(&ca, "node");
    let seeder = tls_node(
        dir.path(),
        "seed",
        tracker.clone(),
        config(),
        true,
        Some(tls.clone()),
    )
    .await;
    let bytes = blob(3 << 20, 4);
    let m = seed_blob(&seeder, &bytes, 256 << 10).await;
    tracker.publish(m.clone());
    let mut leechers = Vec::new();
    for i in 0..3 {
        let tls = Some(peer_tls(&ca, &format!("leech{i}")));
        let name = format!("leech{i}");
        leechers.push(tls_node(dir.path(), &name, tracker.clone(), config(), false, tls).await);
    }
    for blob in download_everywhere(&leechers, &m).await {
        assert_eq!(read_all(&blob).await, bytes, "bytes differ");
    }
    assert!(seeder.traffic().0 >= bytes.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_peer_refuses_peers_without_a_certificate_from_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "cluster");
    let other = TestCa::new(dir.path(), "other");
    let tracker = Arc::new(FakeTracker::default());
    let seeder = tls_node(
        dir.path(),
        "seed",
        tracker.clone(),
        config(),
        true,
        Some(peer_tls(&ca, "seed")),
    )
    .await;
    let bytes = blob(1 << 20, 5);
    let m = seed_blob(&seeder, &bytes, 256 << 10).await;
    tracker.publish(m.clone());
    let short = SchedulerConfig {
        leecher_tti: shoal_config::Duration::from_secs(3),
        ..config()
    };

    // A peer whose certificate comes from another CA, and one that speaks plain TCP: neither
    // gets a byte.
    let stranger = tls_node(
        dir.path(),
        "stranger",
        tracker.clone(),
        short.clone(),
        false,
        Some(peer_tls(&other, "stranger")),
    )
    .await;
    let plain = node(dir.path(), "plain", tracker.clone(), short, false).await;
    for peer in [&stranger, &plain] {
        let outcome = peer.download(NS, m.digest()).await;
        assert!(
            outcome.is_err(),
            "a peer outside the CA downloaded the blob"
        );
        assert_eq!(
            peer.traffic().1,
            0,
            "a peer outside the CA received piece bytes"
        );
    }
    assert_eq!(
        seeder.traffic().0,
        0,
        "the seeder sent piece bytes to a stranger"
    );

    // A TLS client that trusts the CA but presents no certificate is refused in the handshake.
    let seeder_addr = seeder.identity().advertise;
    let mut roots = rustls::RootCertStore::empty();
    for cert in shoal_p2p::tls::certificates(&ca.cert()).unwrap() {
        roots.add(cert).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(seeder_addr).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(seeder_addr.ip().into());
    let refused = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await?;
        // TLS 1.3 reports a refused client certificate at the first read.
        tls.write_all(b"hello").await?;
        let mut byte = [0u8; 1];
        let n = tls.read(&mut byte).await?;
        Ok::<usize, std::io::Error>(n)
    }
    .await;
    match refused {
        Err(_) | Ok(0) => {}
        Ok(n) => panic!("the seeder answered {n} bytes to a client without a certificate"),
    }
}
