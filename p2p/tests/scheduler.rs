//! Schedulers on real loopback sockets, with an in-process tracker: a seeder and several
//! leechers finish with the right bytes and trade pieces among themselves; a peer that serves
//! corrupt pieces is blacklisted and everyone still completes; the egress cap holds.

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
use shoal_p2p::testing::CorruptPeer;
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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = PieceStore::open(&dir.join(name), &StoreConfig::default()).unwrap();
    let me = Identity {
        peer_id: PeerId::random(),
        advertise: addr,
        origin,
    };
    let s = Scheduler::new(me, config, store, tracker).unwrap();
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
