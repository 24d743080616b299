//! The scheduler of one agent or origin: one owner task per torrent (see [`torrent`]), the
//! listener that hands incoming connections to them, and the entry points the roles call:
//! [`Scheduler::download`] (agent: get a blob from peers) and [`Scheduler::seed`] (origin:
//! offer a blob it holds).
//!
//! Settings come from `scheduler:` in the seed's config: `seeder_tti`, `leecher_tti`,
//! `conn.tti`, `conn.bandwidth` (one egress and one ingress bucket for the whole host),
//! `connstate.max_open_conn` and `blacklist_duration`, `dispatch.pipeline_limit`,
//! `announce_interval` (used until the tracker names its own).

mod lend;
mod stats;
mod torrent;
mod upload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use shoal_config::SchedulerConfig;
use shoal_registry::Digest;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::bandwidth::BandwidthLimiter;
use crate::conn::{self, ConnSettings};
use crate::error::{ConnError, SchedulerError};
use crate::metainfo::{InfoHash, Metainfo};
use crate::peer_id::PeerId;
use crate::store::{CompleteBlob, ImportProgress, PieceStore};
use crate::tls::{PeerStream, PeerTls};
use crate::wire::{FrameDecoder, Handshake};

pub use stats::{ANNOUNCE_WARNING_EVERY, Stats};
use stats::{Counters, Throttle};
pub use torrent::UPLOADS_PER_PEER;
use torrent::{Cmd, Status, Torrent};
pub use upload::UPLOAD_BUFFER_BYTES;
use upload::UploadBudget;

/// How long a peer has to send its handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Incoming connections that may be in their handshake at once; more are closed at once, so
/// strangers that connect and stall cannot hold the host's memory or file descriptors.
pub const MAX_HANDSHAKING: usize = 256;

/// A peer the tracker handed out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddr {
    /// Its identity (checked against its handshake).
    pub peer_id: PeerId,
    /// Where it listens for peers.
    pub addr: SocketAddr,
    /// Whether it has the whole blob.
    pub complete: bool,
    /// Whether it is an origin.
    pub origin: bool,
}

/// One announce of one torrent.
#[derive(Clone, Debug)]
pub struct Announce {
    /// The blob's namespace.
    pub namespace: String,
    /// The blob.
    pub digest: Digest,
    /// The torrent.
    pub info_hash: InfoHash,
    /// This peer's identity.
    pub peer_id: PeerId,
    /// Where this peer listens.
    pub addr: SocketAddr,
    /// Whether this peer has the whole blob.
    pub complete: bool,
    /// Whether this peer is an origin.
    pub origin: bool,
}

/// What the tracker answers.
#[derive(Clone, Debug, Default)]
pub struct AnnounceReply {
    /// Peers to connect to.
    pub peers: Vec<PeerAddr>,
    /// When to announce next (zero: use `scheduler.announce_interval`).
    pub interval: Duration,
}

/// The scheduler's view of the tracker cluster: the client the roles build implements it, and
/// tests can put a fake in its place.
#[async_trait]
pub trait Tracker: Send + Sync + 'static {
    /// Announces one torrent and returns peers to connect to.
    async fn announce(&self, announce: &Announce) -> Result<AnnounceReply, SchedulerError>;
    /// The blob's metainfo: `None` while its origin is still fetching it.
    async fn metainfo(
        &self,
        namespace: &str,
        digest: &Digest,
    ) -> Result<Option<Metainfo>, SchedulerError>;

    /// As [`metainfo`](Tracker::metainfo), but a pending answer may be held (a second or two)
    /// until the origin's fetch ends, so a download starts as soon as the blob is there. The
    /// scheduler's poll of a cold blob asks this way.
    async fn metainfo_waiting(
        &self,
        namespace: &str,
        digest: &Digest,
    ) -> Result<Option<Metainfo>, SchedulerError> {
        self.metainfo(namespace, digest).await
    }

    /// For a download that knows `known` hashes of the blob's metainfo prefix: the metainfo
    /// once it knows more, held (a second or two) until it does; `None` while it does not.
    /// The default asks [`metainfo`](Tracker::metainfo) and leaves the comparing to the caller.
    async fn more_hashes(
        &self,
        namespace: &str,
        digest: &Digest,
        known: u32,
    ) -> Result<Option<Metainfo>, SchedulerError> {
        let _ = known;
        self.metainfo(namespace, digest).await
    }
}

/// Who this scheduler is.
#[derive(Clone, Debug)]
pub struct Identity {
    /// The peer id sent in handshakes and announces.
    pub peer_id: PeerId,
    /// The address other peers reach this one at (announced to the tracker).
    pub advertise: SocketAddr,
    /// Whether this is an origin (announced, so the tracker ranks it).
    pub origin: bool,
}

/// The P2P engine of one process; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) me: Identity,
    pub(crate) config: SchedulerConfig,
    pub(crate) store: PieceStore,
    pub(crate) tracker: Arc<dyn Tracker>,
    pub(crate) conn: ConnSettings,
    /// What the torrents count for metrics.
    pub(crate) counters: Counters,
    /// Announce failures in the log: the first of a run, then a summary at most every
    /// [`ANNOUNCE_WARNING_EVERY`], over all torrents.
    pub(crate) announce_warnings: Mutex<Throttle>,
    /// Room for pieces read for peers and not yet sent, over every torrent.
    pub(crate) uploads: UploadBudget,
    torrents: Mutex<HashMap<InfoHash, TorrentEntry>>,
}

#[derive(Clone)]
struct TorrentEntry {
    cmd: mpsc::Sender<Cmd>,
    status: watch::Receiver<Status>,
    /// Bytes from the blob's start on disk with no piece missing.
    landed: watch::Receiver<u64>,
    /// The file the pieces land in.
    path: PathBuf,
}

/// A download that a client reads while it lands ([`Scheduler::landing`]).
#[derive(Debug)]
pub struct Landing {
    path: PathBuf,
    length: u64,
    landed: watch::Receiver<u64>,
    status: watch::Receiver<Status>,
    store: PieceStore,
    digest: Digest,
}

impl Landing {
    /// The file the pieces are written into, each at its offset. Open it at once: the file is
    /// renamed into the cache when the download finishes (an open handle keeps reading it).
    /// Bytes below [`Landing::landed`] never change.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The blob's length.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// How many bytes from the blob's start are on disk, every piece among them verified
    /// against the metainfo. The blob's last byte may not be sent to a client before
    /// [`Landing::finished`] returns: for a metainfo whose pieces do not prove the digest, only
    /// the whole-file check does. The sender is gone once nothing more will land.
    pub fn landed(&self) -> watch::Receiver<u64> {
        self.landed.clone()
    }

    /// Waits for the download to end: the complete blob, verified as a whole.
    pub async fn finished(self) -> Result<CompleteBlob, SchedulerError> {
        wait_done(self.status, &self.store, &self.digest).await
    }
}

/// Waits for a torrent's verdict.
async fn wait_done(
    mut status: watch::Receiver<Status>,
    store: &PieceStore,
    digest: &Digest,
) -> Result<CompleteBlob, SchedulerError> {
    loop {
        match &*status.borrow_and_update() {
            Status::Running => {}
            Status::Done(blob) => return Ok(blob.clone()),
            Status::Failed(why) => return Err(SchedulerError::Download(why.clone())),
        }
        if status.changed().await.is_err() {
            // The torrent stopped without a verdict (seeder TTI after completion).
            return match store.complete(digest).await? {
                Some(blob) => Ok(blob),
                None => Err(SchedulerError::Stopped),
            };
        }
    }
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("peer_id", &self.inner.me.peer_id)
            .field("advertise", &self.inner.me.advertise)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler over `store`, announcing to `tracker`; its peer connections speak TLS when
    /// `tls` is given (`peer.tls`), plain TCP otherwise.
    pub fn new(
        me: Identity,
        config: SchedulerConfig,
        store: PieceStore,
        tracker: Arc<dyn Tracker>,
        tls: Option<PeerTls>,
    ) -> Result<Self, SchedulerError> {
        let bandwidth = BandwidthLimiter::new(&config.conn.bandwidth)?;
        let conn = ConnSettings {
            tti: config.conn.tti.get(),
            bandwidth,
            traffic: Arc::default(),
            tasks: crate::Tasks::new(),
            tls,
        };
        Ok(Scheduler {
            inner: Arc::new(Inner {
                me,
                config,
                store,
                tracker,
                conn,
                counters: Counters::default(),
                announce_warnings: Mutex::new(Throttle::new(ANNOUNCE_WARNING_EVERY)),
                uploads: UploadBudget::new(UPLOAD_BUFFER_BYTES),
                torrents: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The same scheduler holding at most `bytes` of pieces read for peers and not yet sent
    /// ([`UPLOAD_BUFFER_BYTES`] by default); for tests and embedders. Call it on a new
    /// scheduler: it panics on one already cloned or serving.
    pub fn with_upload_buffer(mut self, bytes: u64) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_upload_buffer on a scheduler already shared")
            .uploads = UploadBudget::new(bytes);
        self
    }

    /// This peer's identity.
    pub fn identity(&self) -> &Identity {
        &self.inner.me
    }

    /// The piece store.
    pub fn store(&self) -> &PieceStore {
        &self.inner.store
    }

    /// The tasks this scheduler runs (torrents, connections, dials); [`Scheduler::shutdown`]
    /// stops them.
    pub fn tasks(&self) -> &crate::Tasks {
        &self.inner.conn.tasks
    }

    /// Stops every torrent and connection and waits for their tasks to end. Peers see the
    /// connections close, as if the process had gone.
    pub async fn shutdown(&self) {
        self.inner.conn.tasks.shutdown().await;
    }

    /// Accepts peer connections on `listener` until the scheduler is shut down. At most
    /// [`MAX_HANDSHAKING`] connections may be in their handshake at once (each with a
    /// [`FrameDecoder::for_handshake`] cap and [`HANDSHAKE_TIMEOUT`]); beyond that a new
    /// connection is closed at once and the first refusal of a burst is logged.
    pub async fn serve(&self, listener: TcpListener) {
        let tasks = self.inner.conn.tasks.clone();
        let stopped = tasks.clone();
        tokio::select! {
            _ = stopped.stopped() => {}
            _ = self.accept_loop(listener, tasks) => {}
        }
    }

    async fn accept_loop(&self, listener: TcpListener, tasks: crate::Tasks) {
        let handshaking = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKING));
        let mut refused: u64 = 0;
        loop {
            match listener.accept().await {
                Ok((stream, addr)) => {
                    let Ok(permit) = handshaking.clone().try_acquire_owned() else {
                        if refused == 0 {
                            tracing::warn!(
                                %addr,
                                limit = MAX_HANDSHAKING,
                                "too many peer connections in their handshake: closing new ones"
                            );
                        }
                        refused += 1;
                        drop(stream);
                        continue;
                    };
                    if refused > 0 {
                        tracing::info!(refused, "peer connections accepted again");
                        refused = 0;
                    }
                    let this = self.clone();
                    tasks.spawn(async move {
                        if let Err(e) = this.accept(stream, permit).await {
                            tracing::debug!(%addr, %e, "incoming peer connection refused");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(%e, "accepting a peer connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn accept(
        &self,
        tcp: TcpStream,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<(), SchedulerError> {
        let mut stream = match &self.inner.conn.tls {
            None => PeerStream::Plain(tcp),
            Some(tls) => tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(tcp))
                .await
                .map_err(|_| ConnError::HandshakeTimeout(HANDSHAKE_TIMEOUT))?
                .map_err(|e| ConnError::Handshake(format!("TLS: {e}")))?,
        };
        let mut buf = BytesMut::new();
        let decoder = FrameDecoder::for_handshake();
        let theirs =
            conn::read_handshake(&mut stream, &mut buf, &decoder, HANDSHAKE_TIMEOUT).await?;
        drop(permit);
        let entry = match self.entry(&theirs.info_hash) {
            Some(e) => e,
            None => {
                // Not active: seed it if the store holds this very torrent.
                let Some(blob) = self.inner.store.complete(&theirs.digest).await? else {
                    return Err(SchedulerError::UnknownTorrent(theirs.info_hash));
                };
                if blob.metainfo().info_hash() != theirs.info_hash {
                    return Err(SchedulerError::UnknownTorrent(theirs.info_hash));
                }
                self.start_seeding(&theirs.namespace, blob)
            }
        };
        entry
            .cmd
            .send(Cmd::Incoming {
                stream,
                handshake: theirs,
                leftover: buf,
            })
            .await
            .map_err(|_| SchedulerError::Stopped)
    }

    fn entry(&self, info_hash: &InfoHash) -> Option<TorrentEntry> {
        let torrents = self
            .inner
            .torrents
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        torrents.get(info_hash).cloned()
    }

    /// Gets the blob from peers (or the store, if it is already complete there), verified
    /// piece by piece and as a whole.
    pub async fn download(
        &self,
        namespace: &str,
        digest: &Digest,
    ) -> Result<CompleteBlob, SchedulerError> {
        if let Some(blob) = self.inner.store.complete(digest).await? {
            return Ok(blob);
        }
        let entry = self.join(namespace, digest).await?;
        wait_done(entry.status, &self.inner.store, digest).await
    }

    /// Gets the blob from peers as [`Scheduler::download`] does, for a client that reads it
    /// while it lands: the landing says how much of the front is on disk, and the torrent
    /// picks the lowest pieces first while every connected peer is complete
    /// ([`crate::PiecePicker::prefer_front`]). A blob already complete has landed whole.
    pub async fn landing(
        &self,
        namespace: &str,
        digest: &Digest,
    ) -> Result<Landing, SchedulerError> {
        let store = self.inner.store.clone();
        if let Some(blob) = store.complete(digest).await? {
            let (_, landed) = watch::channel(blob.len());
            return Ok(Landing {
                path: blob.path().to_owned(),
                length: blob.len(),
                landed,
                status: watch::channel(Status::Done(blob)).1,
                store,
                digest: digest.clone(),
            });
        }
        let metainfo = self.metainfo(namespace, digest).await?;
        let length = metainfo.length();
        let entry = self.entry_for(namespace, metainfo).await?;
        // A torrent that ended meanwhile has nothing to prefer; its status says how it ended.
        let _ = entry.cmd.send(Cmd::Followed).await;
        Ok(Landing {
            path: entry.path,
            length,
            landed: entry.landed,
            status: entry.status,
            store,
            digest: digest.clone(),
        })
    }

    /// The running torrent of the blob, started as a download when none runs.
    async fn join(&self, namespace: &str, digest: &Digest) -> Result<TorrentEntry, SchedulerError> {
        let metainfo = self.metainfo(namespace, digest).await?;
        self.entry_for(namespace, metainfo).await
    }

    async fn entry_for(
        &self,
        namespace: &str,
        metainfo: Metainfo,
    ) -> Result<TorrentEntry, SchedulerError> {
        match self.entry(&metainfo.info_hash()) {
            Some(e) => Ok(e),
            None => {
                let partial = self.inner.store.download(Arc::new(metainfo)).await?;
                Ok(self.start(namespace, torrent::Role::Leech(partial)))
            }
        }
    }

    /// Whether `namespace` holds `digest`, as its origins see it: the tracker hands out the
    /// blob's metainfo (or says an origin is fetching it) only when the namespace's backend has
    /// it. What an agent asks before it serves a blob it holds for another repository.
    pub async fn confirm(&self, namespace: &str, digest: &Digest) -> Result<bool, SchedulerError> {
        match self.inner.tracker.metainfo(namespace, digest).await {
            Ok(Some(m)) => Ok(m.digest() == digest),
            Ok(None) => Ok(true),
            Err(SchedulerError::UnknownBlob(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits for the blob's metainfo, polling the tracker while the origin fetches it.
    async fn metainfo(&self, namespace: &str, digest: &Digest) -> Result<Metainfo, SchedulerError> {
        let deadline = tokio::time::Instant::now() + self.inner.config.leecher_tti.get();
        let mut wait = Duration::from_millis(100);
        loop {
            let asked = tokio::time::Instant::now();
            if let Some(m) = self
                .inner
                .tracker
                .metainfo_waiting(namespace, digest)
                .await?
            {
                if m.digest() != digest {
                    return Err(SchedulerError::Download(format!(
                        "the tracker sent the metainfo of {} for {digest}",
                        m.digest()
                    )));
                }
                return Ok(m);
            }
            if tokio::time::Instant::now() + wait > deadline {
                return Err(SchedulerError::Download(format!(
                    "the metainfo of {digest} was still pending after {:?}",
                    self.inner.config.leecher_tti.get()
                )));
            }
            // A request the tracker held counts towards the pause between polls.
            tokio::time::sleep_until(asked + wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }

    /// Offers the pieces of a blob an origin is importing from its backend as they land (see
    /// [`crate::metainfo`]'s hashes known so far): once `progress` has the hashes of a first
    /// piece, a torrent serves the pieces written so far and announces each new one; when the
    /// import ends verified the origin calls [`Scheduler::seed`] with the blob, and when it
    /// ends otherwise (the progress sender dropped unverified) the torrent stops, failing its
    /// connections. Returns at once; the watching runs in a task.
    pub fn seed_while_importing(
        &self,
        namespace: &str,
        mut progress: watch::Receiver<ImportProgress>,
    ) {
        let this = self.clone();
        let namespace = namespace.to_owned();
        self.inner.conn.tasks.spawn(async move {
            let mut entry: Option<TorrentEntry> = None;
            loop {
                let (hashes, path, verified) = {
                    let p = progress.borrow_and_update();
                    (p.hashes.clone(), p.file.clone(), p.verified)
                };
                if let (Some(m), Some(path)) = (hashes, path) {
                    match &entry {
                        Some(e) => {
                            if e.cmd.send(Cmd::Hashes(m)).await.is_err() {
                                return;
                            }
                        }
                        None => match std::fs::File::open(&path) {
                            Ok(file) => {
                                let role = torrent::Role::Growing {
                                    metainfo: m,
                                    file: Arc::new(file),
                                    path,
                                };
                                entry = Some(this.start(&namespace, role));
                            }
                            Err(e) => {
                                tracing::warn!(path = %path.display(), %e, "opening an import to seed it failed");
                                return;
                            }
                        },
                    }
                }
                if progress.changed().await.is_err() {
                    if !verified
                        && !progress.borrow().verified
                        && let Some(e) = &entry
                    {
                        let why = "the fetch from the storage backend failed".to_owned();
                        let _ = e.cmd.send(Cmd::Abort(why)).await;
                    }
                    return;
                }
            }
        });
    }

    /// Offers a complete blob to peers (an origin after fetching it from its backend, or an
    /// agent that already holds it), announcing it until `seeder_tti` passes without traffic.
    pub fn seed(&self, namespace: &str, blob: CompleteBlob) {
        self.start_seeding(namespace, blob);
    }

    fn start_seeding(&self, namespace: &str, blob: CompleteBlob) -> TorrentEntry {
        self.start(namespace, torrent::Role::Seed(blob))
    }

    /// The torrent's entry, starting its owner task if it is not running.
    fn start(&self, namespace: &str, role: torrent::Role) -> TorrentEntry {
        let info_hash = role.metainfo().info_hash();
        let mut torrents = self
            .inner
            .torrents
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(e) = torrents.get(&info_hash)
            && !e.cmd.is_closed()
        {
            // A growing torrent of this blob becomes its seed (a leech ignores it; a seed has
            // nothing to become).
            if let torrent::Role::Seed(blob) = role
                && matches!(*e.status.borrow(), Status::Running)
            {
                let cmd = e.cmd.clone();
                self.inner
                    .conn
                    .tasks
                    .spawn(async move { cmd.send(Cmd::Seed(blob)).await });
            }
            return e.clone();
        }
        let (cmd_tx, cmd_rx) = mpsc::channel(64);
        let (status_tx, status_rx) = watch::channel(match &role {
            torrent::Role::Seed(blob) => Status::Done(blob.clone()),
            torrent::Role::Leech(_) | torrent::Role::Growing { .. } => Status::Running,
        });
        let (landed_tx, landed_rx) = watch::channel(role.landed());
        let entry = TorrentEntry {
            cmd: cmd_tx.clone(),
            status: status_rx,
            landed: landed_rx,
            path: role.path().to_owned(),
        };
        torrents.insert(info_hash, entry.clone());
        let torrent = Torrent::new(
            Arc::downgrade(&self.inner),
            self.inner.conn.tasks.clone(),
            namespace.to_owned(),
            role,
            cmd_tx,
            cmd_rx,
            torrent::Reports {
                status: status_tx,
                landed: landed_tx,
            },
        );
        self.inner.conn.tasks.spawn(torrent.run());
        entry
    }

    /// Piece bytes sent to and received from peers since start.
    pub fn traffic(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let t = &self.inner.conn.traffic;
        (t.sent.load(Relaxed), t.received.load(Relaxed))
    }

    /// Peers blacklisted since start (a corrupt piece or a protocol violation), for metrics:
    /// an operator sees a lying or broken peer without reading every host's log.
    pub fn blacklisted(&self) -> u64 {
        self.inner
            .counters
            .blacklisted
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Everything this scheduler counts, for metrics.
    pub fn stats(&self) -> Stats {
        use std::sync::atomic::Ordering::Relaxed;
        let c = &self.inner.counters;
        let t = &self.inner.conn.traffic;
        Stats {
            piece_bytes_sent: t.sent.load(Relaxed),
            piece_bytes_received: t.received.load(Relaxed),
            pieces_sent: t.pieces_sent.load(Relaxed),
            pieces_verified: c.pieces_verified.load(Relaxed),
            pieces_corrupt: c.pieces_corrupt.load(Relaxed),
            blacklisted: c.blacklisted.load(Relaxed),
            announces_ok: c.announces_ok.load(Relaxed),
            announces_failed: c.announces_failed.load(Relaxed),
            requests_refused_busy: c.requests_refused_busy.load(Relaxed),
            upload_bytes_buffered: self.inner.uploads.held(),
            torrents: self.active_torrents() as u64,
            peers: u64::try_from(c.peers.load(Relaxed)).unwrap_or(0),
        }
    }

    /// Torrents running now (for metrics and tests).
    pub fn active_torrents(&self) -> usize {
        let torrents = self
            .inner
            .torrents
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        torrents.values().filter(|e| !e.cmd.is_closed()).count()
    }
}

impl Inner {
    /// Called by a torrent's task as it ends.
    fn forget(&self, info_hash: &InfoHash, cmd: &mpsc::Sender<Cmd>) {
        let mut torrents = self.torrents.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = torrents.get(info_hash)
            && e.cmd.same_channel(cmd)
        {
            torrents.remove(info_hash);
        }
    }

    /// Our handshake for a torrent.
    fn handshake(&self, namespace: &str, metainfo: &Metainfo, have: crate::Bitfield) -> Handshake {
        Handshake {
            peer_id: self.me.peer_id,
            info_hash: metainfo.info_hash(),
            digest: metainfo.digest().clone(),
            namespace: namespace.to_owned(),
            bitfield: have,
        }
    }
}

/// Upgrades the weak pointer a torrent holds; `None` once the scheduler is gone.
fn upgrade(inner: &Weak<Inner>) -> Option<Arc<Inner>> {
    inner.upgrade()
}
