//! What the scheduler tests share: an in-process tracker that counts announces, blobs, and
//! schedulers on loopback sockets. Each test binary uses a part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use shoal_config::{SchedulerConfig, StoreConfig};
use shoal_p2p::error::SchedulerError;
use shoal_p2p::metainfo::{InfoHash, Metainfo};
use shoal_p2p::store::{CompleteBlob, PieceStore};
use shoal_p2p::tls::PeerTls;
use shoal_p2p::{Announce, AnnounceReply, Identity, PeerAddr, PeerId, Scheduler, Tracker};
use shoal_registry::Digest;
use tokio::net::TcpListener;

pub const NS: &str = "library/test";

/// A tracker in memory: everyone who announced, complete peers first. It answers every
/// announce with its `interval` (zero: "no interval", the peer falls back to its own
/// `scheduler.announce_interval`) and counts announces per peer.
pub struct FakeTracker {
    interval: Duration,
    peers: Mutex<HashMap<InfoHash, Vec<PeerAddr>>>,
    metainfo: Mutex<HashMap<Digest, Metainfo>>,
    announces: Mutex<HashMap<PeerId, usize>>,
}

impl Default for FakeTracker {
    fn default() -> Self {
        FakeTracker::with_interval(Duration::from_millis(300))
    }
}

impl FakeTracker {
    /// A tracker whose replies name `interval` as the time to the next announce.
    pub fn with_interval(interval: Duration) -> Self {
        FakeTracker {
            interval,
            peers: Mutex::default(),
            metainfo: Mutex::default(),
            announces: Mutex::default(),
        }
    }

    pub fn publish(&self, m: Metainfo) {
        self.metainfo.lock().unwrap().insert(m.digest().clone(), m);
    }

    /// Lists a peer that never announces itself (the corrupt fake).
    pub fn add_peer(&self, info_hash: InfoHash, peer: PeerAddr) {
        self.peers
            .lock()
            .unwrap()
            .entry(info_hash)
            .or_default()
            .push(peer);
    }

    /// Announces received from `peer` so far, over all its torrents.
    pub fn announces_of(&self, peer: PeerId) -> usize {
        self.announces
            .lock()
            .unwrap()
            .get(&peer)
            .copied()
            .unwrap_or(0)
    }
}

#[async_trait]
impl Tracker for FakeTracker {
    async fn announce(&self, a: &Announce) -> Result<AnnounceReply, SchedulerError> {
        *self.announces.lock().unwrap().entry(a.peer_id).or_default() += 1;
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
            interval: self.interval,
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

pub fn blob(len: usize, seed: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = u32::from(seed) + 1;
    while out.len() < len {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn digest_of(bytes: &[u8]) -> Digest {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
        .parse()
        .unwrap()
}

/// The tests' scheduler settings: quick announces, a leecher TTI no healthy test reaches.
pub fn config() -> SchedulerConfig {
    SchedulerConfig {
        announce_interval: shoal_config::Duration::from_millis(300),
        leecher_tti: shoal_config::Duration::from_secs(30),
        ..SchedulerConfig::default()
    }
}

pub async fn node(
    dir: &Path,
    name: &str,
    tracker: Arc<FakeTracker>,
    config: SchedulerConfig,
    origin: bool,
) -> Scheduler {
    tls_node(dir, name, tracker, config, origin, None).await
}

pub async fn tls_node(
    dir: &Path,
    name: &str,
    tracker: Arc<FakeTracker>,
    config: SchedulerConfig,
    origin: bool,
    tls: Option<PeerTls>,
) -> Scheduler {
    node_with_tracker(dir, name, tracker, config, origin, tls, None).await
}

/// A scheduler like [`node`] that holds at most `bytes` of pieces read for peers and not yet
/// sent ([`Scheduler::with_upload_buffer`]).
pub async fn node_with_upload_buffer(
    dir: &Path,
    name: &str,
    tracker: Arc<FakeTracker>,
    config: SchedulerConfig,
    bytes: u64,
) -> Scheduler {
    node_with_tracker(dir, name, tracker, config, false, None, Some(bytes)).await
}

/// A scheduler on loopback with any tracker.
pub async fn node_on(
    dir: &Path,
    name: &str,
    tracker: Arc<dyn Tracker>,
    config: SchedulerConfig,
    origin: bool,
) -> Scheduler {
    node_with_tracker(dir, name, tracker, config, origin, None, None).await
}

async fn node_with_tracker(
    dir: &Path,
    name: &str,
    tracker: Arc<dyn Tracker>,
    config: SchedulerConfig,
    origin: bool,
    tls: Option<PeerTls>,
    upload_buffer: Option<u64>,
) -> Scheduler {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = PieceStore::open(&dir.join(name), &StoreConfig::default()).unwrap();
    let me = Identity {
        peer_id: PeerId::random(),
        advertise: addr,
        origin,
    };
    let mut s = Scheduler::new(me, config, store, tracker, tls).unwrap();
    if let Some(bytes) = upload_buffer {
        s = s.with_upload_buffer(bytes);
    }
    let serving = s.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    s
}

/// Imports `bytes` into `seeder`'s store and seeds it; returns its metainfo.
pub async fn seed_blob(seeder: &Scheduler, bytes: &[u8], piece_length: u64) -> Metainfo {
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
pub async fn leechers(dir: &Path, tracker: &Arc<FakeTracker>, n: usize) -> Vec<Scheduler> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("leech{i}");
        out.push(node(dir, &name, tracker.clone(), config(), false).await);
    }
    out
}

/// Downloads `m`'s blob on every one of `leechers` at once; panics on a failed download.
pub async fn download_everywhere(leechers: &[Scheduler], m: &Metainfo) -> Vec<CompleteBlob> {
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

pub async fn read_all(blob: &CompleteBlob) -> Vec<u8> {
    tokio::fs::read(blob.path()).await.unwrap()
}

/// Polls `done` every 20 ms until it holds; panics saying `what` if `within` passes first.
pub async fn eventually(within: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {within:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
