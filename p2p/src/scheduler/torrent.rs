//! One torrent's owner task: the only code that touches its picker and its connections. It
//! reacts to connection events, its own commands (incoming connections, dial results, store
//! writes, announce replies) and a one-second tick (request timeouts, TTIs, the announce
//! clock), and after each one asks the picker for more requests.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::net::TcpStream;

use crate::tls::{PeerStream, PeerTls};
use tokio::sync::{mpsc, watch};

use super::lend::{Decision, Lends};
use super::stats::Connected;
use super::{Announce, AnnounceReply, HANDSHAKE_TIMEOUT, Inner, PeerAddr, upgrade};
use crate::bitfield::Bitfield;
use crate::conn::{self, ConnEvent, ConnHandle};
use crate::error::{ConnError, SchedulerError, StoreError};
use crate::metainfo::Metainfo;
use crate::peer_id::PeerId;
use crate::picker::{PickerConfig, PiecePicker, Verified};
use crate::piece::PieceIndex;
use crate::store::{CompleteBlob, PartialBlob};
use crate::wire::{ErrorCode, Frame, FrameDecoder, Handshake};

/// How often the owner checks timeouts.
const TICK: Duration = Duration::from_millis(500);

/// Pieces read for one peer and not yet written to its socket, at most: each is a piece-sized
/// buffer (or map) until it is sent. A peer keeps its pipeline limit of requests in flight (3
/// by default); one asking for more than this is answered `PieceUnavailable` for the excess,
/// so a peer that requests without reading costs bounded memory.
pub const UPLOADS_PER_PEER: usize = 16;

/// How soon to announce again when the tracker handed out nobody to download from: the first
/// time (an origin that just answered the metainfo may not have announced its seed yet), and
/// at most, doubling in between.
const RETRY_EMPTY_FIRST: Duration = Duration::from_millis(50);
const RETRY_EMPTY: Duration = Duration::from_millis(500);

/// The least time between a download's asks for more piece hashes while it knows only a
/// prefix: each ask is held at the origin until there are more (or a second or two passed),
/// and the pause lets several pieces' hashes come in one answer.
const HASH_POLL: Duration = Duration::from_millis(250);

/// How long a download that knows only a prefix keeps asking for the rest while every answer
/// is an error (the origin's fetch failed, no tracker answers) before it gives up: this, or
/// the leecher TTI if shorter.
const HASH_POLL_GIVE_UP: Duration = Duration::from_secs(30);

/// What a torrent does.
pub(crate) enum Role {
    /// Downloads into a partial blob, serving the pieces it has.
    Leech(PartialBlob),
    /// Serves a complete blob.
    Seed(CompleteBlob),
    /// Serves the pieces of a blob an origin is still fetching from its backend, as their
    /// hashes become known ([`Cmd::Hashes`]), until the fetch ends ([`Cmd::Seed`]).
    Growing {
        /// The pieces written so far.
        metainfo: Arc<Metainfo>,
        /// The import's file, open (renamed into the cache once complete).
        file: Arc<std::fs::File>,
        path: std::path::PathBuf,
    },
}

impl Role {
    pub(crate) fn metainfo(&self) -> Arc<Metainfo> {
        match self {
            Role::Leech(p) => p.metainfo(),
            Role::Seed(c) => c.metainfo().clone(),
            Role::Growing { metainfo, .. } => metainfo.clone(),
        }
    }

    /// The file the blob's pieces are in.
    pub(crate) fn path(&self) -> &std::path::Path {
        match self {
            Role::Leech(p) => p.path(),
            Role::Seed(c) => c.path(),
            Role::Growing { path, .. } => path,
        }
    }

    /// Bytes from the blob's start that are on disk now, with no piece missing among them.
    pub(crate) fn landed(&self) -> u64 {
        match self {
            Role::Leech(p) => prefix_bytes(&p.metainfo(), first_absent(p, 0)),
            Role::Seed(c) => c.len(),
            Role::Growing { metainfo, .. } => prefix_bytes(metainfo, metainfo.known()),
        }
    }
}

/// The first piece from `from` on that `partial` does not hold on disk.
fn first_absent(partial: &PartialBlob, from: u32) -> u32 {
    let count = partial.metainfo().piece_count();
    let mut i = from;
    while i < count && partial.has(PieceIndex(i)) {
        i += 1;
    }
    i
}

/// The bytes of the first `pieces` pieces.
fn prefix_bytes(m: &Metainfo, pieces: u32) -> u64 {
    (u64::from(pieces) * m.piece_length()).min(m.length())
}

/// What a torrent tells the ones waiting on it.
pub(crate) struct Reports {
    /// Its verdict.
    pub(crate) status: watch::Sender<Status>,
    /// Bytes from the blob's start on disk with no piece missing.
    pub(crate) landed: watch::Sender<u64>,
}

/// A torrent's progress as its waiters see it.
#[derive(Clone, Debug)]
pub(crate) enum Status {
    Running,
    Done(CompleteBlob),
    Failed(String),
}

/// Messages to the owner from outside its connections.
pub(crate) enum Cmd {
    /// A peer connected to us and sent this handshake.
    Incoming {
        stream: PeerStream,
        handshake: Handshake,
        leftover: BytesMut,
    },
    /// A dial finished its handshakes.
    Dialed {
        stream: PeerStream,
        handshake: Handshake,
        leftover: BytesMut,
    },
    /// A dial failed.
    DialFailed { peer: PeerId, error: ConnError },
    /// The tracker answered.
    Announced(Result<AnnounceReply, SchedulerError>),
    /// A verified piece reached the disk (or did not).
    Written {
        index: PieceIndex,
        result: Result<(), StoreError>,
    },
    /// The partial blob was checked as a whole and moved into the cache.
    Finished(Result<CompleteBlob, StoreError>),
    /// A client reads the blob as it lands: the picker prefers the front (see
    /// [`PiecePicker::prefer_front`]).
    Followed,
    /// A metainfo that knows more piece hashes than the torrent's.
    Hashes(Arc<Metainfo>),
    /// The blob a growing torrent serves is complete: seed it.
    Seed(CompleteBlob),
    /// Stop the torrent (a growing torrent's fetch failed), failing its waiters with why.
    Abort(String),
}

struct Peer {
    handle: ConnHandle,
    complete: bool,
    /// [`UPLOADS_PER_PEER`] permits; a piece sent to the peer holds one until it is written.
    uploads: Arc<tokio::sync::Semaphore>,
    /// Its pieces read or being read and not yet sent, for the host's upload budget.
    buffered: super::upload::Buffered,
    /// Counted in the scheduler's open connections while it lives.
    _connected: Connected,
}

/// A piece's bytes on their way to a peer, holding one of its upload permits and their room
/// in the scheduler's upload budget.
struct Upload {
    data: bytes::Bytes,
    _permit: tokio::sync::OwnedSemaphorePermit,
    _room: super::upload::Slot,
}

impl AsRef<[u8]> for Upload {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

enum State {
    Leech {
        partial: PartialBlob,
        picker: Box<PiecePicker>,
        /// Pieces verified but not yet on disk.
        writing: usize,
        finishing: bool,
    },
    Seed(CompleteBlob),
    /// An origin's import still running: the pieces below the metainfo's `known` are in
    /// the file (open, and its path for errors).
    Growing(Arc<std::fs::File>, std::path::PathBuf),
}

pub(crate) struct Torrent {
    inner: Weak<Inner>,
    /// The host's tasks: every task this torrent starts stops with the host.
    tasks: crate::Tasks,
    namespace: String,
    /// The latest metainfo (a prefix grows: [`Cmd::Hashes`]); `hashes` holds the same for the
    /// connections' readers.
    metainfo: Arc<Metainfo>,
    hashes: watch::Sender<Arc<Metainfo>>,
    state: State,
    peers: HashMap<PeerId, Peer>,
    dialing: HashSet<PeerId>,
    /// Peers the tracker named as origins: asked only for pieces no other peer has.
    origins: HashSet<PeerId>,
    /// On an origin: pieces recently sent, to whom, and who was refused them meanwhile.
    lent: Lends,
    blacklist: HashMap<PeerId, Instant>,
    cmd_tx: mpsc::Sender<Cmd>,
    cmd_rx: mpsc::Receiver<Cmd>,
    events_tx: mpsc::Sender<ConnEvent>,
    events_rx: mpsc::Receiver<ConnEvent>,
    status: watch::Sender<Status>,
    /// Bytes from the start on disk with no piece missing, for clients that follow.
    landed: watch::Sender<u64>,
    /// The first piece not on disk (what `landed` was computed from).
    first_absent: u32,
    /// Last piece received (leecher TTI) or last connection activity (seeder TTI).
    last_progress: Instant,
    next_announce: Instant,
    announcing: bool,
    /// Announces in a row that handed out nobody to download from.
    empty_announces: u32,
}

impl Torrent {
    pub(crate) fn new(
        inner: Weak<Inner>,
        tasks: crate::Tasks,
        namespace: String,
        role: Role,
        cmd_tx: mpsc::Sender<Cmd>,
        cmd_rx: mpsc::Receiver<Cmd>,
        Reports { status, landed }: Reports,
    ) -> Self {
        let metainfo = role.metainfo();
        let first = match &role {
            Role::Leech(partial) => first_absent(partial, 0),
            Role::Seed(_) => metainfo.piece_count(),
            Role::Growing { metainfo, .. } => metainfo.known(),
        };
        let pipeline = upgrade(&inner)
            .map(|i| PickerConfig::new(&i.config.dispatch, metainfo.piece_length()))
            .unwrap_or(PickerConfig::new(
                &Default::default(),
                metainfo.piece_length(),
            ));
        let state = match role {
            Role::Leech(partial) => {
                let mut picker = Box::new(PiecePicker::new(partial.bitfield(), pipeline));
                picker.set_pickable(metainfo.known());
                State::Leech {
                    picker,
                    partial,
                    writing: 0,
                    finishing: false,
                }
            }
            Role::Seed(blob) => State::Seed(blob),
            Role::Growing { file, path, .. } => State::Growing(file, path),
        };
        let (events_tx, events_rx) = mpsc::channel(256);
        let now = Instant::now();
        Torrent {
            inner,
            tasks,
            namespace,
            hashes: watch::channel(metainfo.clone()).0,
            metainfo,
            state,
            peers: HashMap::new(),
            dialing: HashSet::new(),
            origins: HashSet::new(),
            lent: Lends::new(pipeline.request_timeout),
            blacklist: HashMap::new(),
            cmd_tx,
            cmd_rx,
            events_tx,
            events_rx,
            status,
            landed,
            first_absent: first,
            last_progress: now,
            next_announce: now,
            announcing: false,
            empty_announces: 0,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A leecher that is already complete (every piece on disk before a restart).
        self.maybe_finish();
        if matches!(self.state, State::Leech { .. }) && !self.metainfo.is_complete() {
            self.poll_hashes();
        }
        let why = loop {
            tokio::select! {
                Some(event) = self.events_rx.recv() => self.on_event(event),
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(cmd) => self.on_cmd(cmd),
                    None => break "stopped".to_owned(),
                },
                _ = tick.tick() => {
                    if let Some(why) = self.on_tick() {
                        break why;
                    }
                }
                // Every announce goes out when due (the interval, or a quick retry).
                _ = tokio::time::sleep_until(self.next_announce.into()), if !self.announcing => {
                    match upgrade(&self.inner) {
                        Some(inner) => self.announce(&inner),
                        None => break "the scheduler stopped".to_owned(),
                    }
                }
            }
            if let Some(why) = self.fatal() {
                break why;
            }
            self.request_more();
        };
        tracing::debug!(digest = %self.metainfo.digest(), %why, "torrent stopped");
        for p in self.peers.values() {
            p.handle.close();
        }
        if matches!(*self.status.borrow(), Status::Running) {
            let _ = self.status.send(Status::Failed(why));
        }
        if let Some(inner) = upgrade(&self.inner) {
            inner.forget(&self.metainfo.info_hash(), &self.cmd_tx);
        }
    }

    fn fatal(&self) -> Option<String> {
        match &*self.status.borrow() {
            Status::Failed(why) => Some(why.clone()),
            _ => None,
        }
    }

    fn is_seed(&self) -> bool {
        matches!(self.state, State::Seed(_))
    }

    /// A seed, or an origin seeding a blob as it fetches it: nothing to download from peers.
    fn is_source(&self) -> bool {
        matches!(self.state, State::Seed(_) | State::Growing(..))
    }

    fn have(&self) -> Bitfield {
        match &self.state {
            State::Leech { partial, .. } => partial.bitfield(),
            State::Seed(_) => Bitfield::full(self.metainfo.piece_count()),
            State::Growing(..) => {
                let mut have = Bitfield::empty(self.metainfo.piece_count());
                for i in 0..self.metainfo.known() {
                    have.set(PieceIndex(i), true);
                }
                have
            }
        }
    }

    /// While this download knows only a prefix of the hashes: asks the tracker for more (held
    /// until there are, at most every [`HASH_POLL`]) and hands each longer metainfo to the
    /// owner, until one is complete or the torrent stops. [`HASH_POLL_GIVE_UP`] (or the
    /// leecher TTI) from a failed ask without more hashes since (the origin's fetch failed,
    /// perhaps again after a retry) aborts the torrent.
    fn poll_hashes(&self) {
        let inner = self.inner.clone();
        let tx = self.cmd_tx.clone();
        let namespace = self.namespace.clone();
        let digest = self.metainfo.digest().clone();
        let mut known = self.metainfo.known();
        self.tasks.spawn(async move {
            let mut failing_since: Option<Instant> = None;
            let mut asked = tokio::time::Instant::now();
            loop {
                tokio::time::sleep_until(asked + HASH_POLL).await;
                if tx.is_closed() {
                    return;
                }
                let Some(inner) = upgrade(&inner) else {
                    return;
                };
                asked = tokio::time::Instant::now();
                let error = match inner.tracker.more_hashes(&namespace, &digest, known).await {
                    Ok(Some(m)) if m.digest() != &digest => {
                        format!("the tracker sent the metainfo of {}", m.digest())
                    }
                    Ok(Some(m)) => {
                        if m.known() > known {
                            // Only more hashes end a run of failures: a fetch that fails again
                            // and again answers between its failures with what it had.
                            failing_since = None;
                            known = m.known();
                            let complete = m.is_complete();
                            if tx.send(Cmd::Hashes(Arc::new(m))).await.is_err() || complete {
                                return;
                            }
                        }
                        continue;
                    }
                    // Pending: the origin restarted its fetch; its hashes come again.
                    Ok(None) => continue,
                    Err(e) => e.to_string(),
                };
                let since = *failing_since.get_or_insert_with(Instant::now);
                tracing::debug!(%digest, %error, "asking for more piece hashes failed");
                if since.elapsed() >= HASH_POLL_GIVE_UP.min(inner.config.leecher_tti.get()) {
                    let why = format!("the rest of the piece hashes did not come: {error}");
                    let _ = tx.send(Cmd::Abort(why)).await;
                    return;
                }
            }
        });
    }

    /// A metainfo that knows more hashes: verify against it, and ask for (or, growing, offer)
    /// the pieces it adds.
    fn on_hashes(&mut self, newer: Arc<Metainfo>) {
        if !self.metainfo.agrees_with(&newer) {
            let why = "the blob's piece hashes changed while it was downloaded (its origin \
                       fetched other bytes)";
            let _ = self.status.send(Status::Failed(why.to_owned()));
            return;
        }
        if newer.known() <= self.metainfo.known() {
            return;
        }
        let before = self.metainfo.known();
        match &mut self.state {
            State::Leech {
                partial, picker, ..
            } => {
                if let Err(e) = partial.learn(&newer) {
                    let _ = self.status.send(Status::Failed(e.to_string()));
                    return;
                }
                picker.set_pickable(newer.known());
            }
            State::Growing(..) => {
                self.last_progress = Instant::now();
                for index in (before..newer.known()).map(PieceIndex) {
                    for p in self.peers.values() {
                        p.handle.send(Frame::AnnouncePiece { index });
                    }
                }
                self.first_absent = newer.known();
                self.landed
                    .send_replace(prefix_bytes(&newer, newer.known()));
            }
            State::Seed(_) => return,
        }
        self.metainfo = newer.clone();
        self.hashes.send_replace(newer);
    }

    /// The blob a growing torrent served is complete: offer its remaining pieces and seed.
    fn on_seed(&mut self, blob: CompleteBlob) {
        if !matches!(self.state, State::Growing(..)) {
            return;
        }
        if blob.metainfo().info_hash() != self.metainfo.info_hash() {
            return;
        }
        let before = self.metainfo.known();
        self.metainfo = blob.metainfo().clone();
        self.hashes.send_replace(self.metainfo.clone());
        for p in self.peers.values() {
            for index in (before..self.metainfo.piece_count()).map(PieceIndex) {
                p.handle.send(Frame::AnnouncePiece { index });
            }
            p.handle.send(Frame::Complete);
        }
        self.first_absent = self.metainfo.piece_count();
        self.landed.send_replace(blob.len());
        self.state = State::Seed(blob.clone());
        let _ = self.status.send(Status::Done(blob));
        self.last_progress = Instant::now();
        self.next_announce = Instant::now();
    }

    /// Ended lends: the peers refused a piece meanwhile may ask the origin again.
    fn return_lent(&self, ended: Vec<(PieceIndex, HashSet<PeerId>)>) {
        for (index, refused) in ended {
            for peer in refused {
                if let Some(p) = self.peers.get(&peer) {
                    p.handle.send(Frame::AnnouncePiece { index });
                }
            }
        }
    }

    fn on_tick(&mut self) -> Option<String> {
        let inner = upgrade(&self.inner)?;
        let now = Instant::now();
        let ended = self.lent.expire(now);
        self.return_lent(ended);
        self.blacklist.retain(|_, until| *until > now);
        if let State::Leech { picker, .. } = &mut self.state {
            for (peer, index) in picker.expire(now) {
                if let Some(p) = self.peers.get(&peer) {
                    p.handle.send(Frame::CancelPiece { index });
                }
            }
            let tti = inner.config.leecher_tti.get();
            if now.duration_since(self.last_progress) >= tti {
                return Some(format!("no piece arrived for {tti:?} (leecher TTI)"));
            }
        } else if matches!(self.state, State::Growing(..)) {
            // Lives as long as its import: the fetch ends it ([`Cmd::Seed`], [`Cmd::Abort`]).
        } else {
            if !self.peers.is_empty() {
                // An open connection counts as activity until its own TTI closes it.
                self.last_progress = now;
            }
            let tti = inner.config.seeder_tti.get();
            if self.peers.is_empty() && now.duration_since(self.last_progress) >= tti {
                return Some(format!("no peer for {tti:?} (seeder TTI)"));
            }
        }
        None
    }

    fn announce(&mut self, inner: &Arc<Inner>) {
        self.announcing = true;
        let announce = Announce {
            namespace: self.namespace.clone(),
            digest: self.metainfo.digest().clone(),
            info_hash: self.metainfo.info_hash(),
            peer_id: inner.me.peer_id,
            addr: inner.me.advertise,
            complete: self.is_seed(),
            origin: inner.me.origin,
        };
        let tracker = inner.tracker.clone();
        let tx = self.cmd_tx.clone();
        self.tasks.spawn(async move {
            let reply = tracker.announce(&announce).await;
            let _ = tx.send(Cmd::Announced(reply)).await;
        });
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Incoming {
                mut stream,
                handshake,
                leftover,
            } => {
                if let Err(e) = self.check_peer(&handshake) {
                    tracing::debug!(peer = %handshake.peer_id, %e, "incoming peer refused");
                    return;
                }
                let Some(inner) = upgrade(&self.inner) else {
                    return;
                };
                let ours = inner.handshake(&self.namespace, &self.metainfo, self.have());
                let tx = self.cmd_tx.clone();
                // Reply off the owner task; the result comes back as a dial result.
                self.tasks.spawn(async move {
                    match conn::write_frame(&mut stream, &Frame::Handshake(ours)).await {
                        Ok(()) => {
                            let _ = tx
                                .send(Cmd::Dialed {
                                    stream,
                                    handshake,
                                    leftover,
                                })
                                .await;
                        }
                        Err(error) => {
                            let peer = handshake.peer_id;
                            let _ = tx.send(Cmd::DialFailed { peer, error }).await;
                        }
                    }
                });
            }
            Cmd::Dialed {
                stream,
                handshake,
                leftover,
            } => {
                self.dialing.remove(&handshake.peer_id);
                if let Err(e) = self.check_peer(&handshake) {
                    tracing::debug!(peer = %handshake.peer_id, %e, "peer dropped after handshake");
                    return;
                }
                self.add_peer(stream, handshake, leftover);
            }
            Cmd::DialFailed { peer, error } => {
                self.dialing.remove(&peer);
                tracing::debug!(%peer, %error, "dial failed");
            }
            Cmd::Announced(reply) => {
                self.announcing = false;
                let Some(inner) = upgrade(&self.inner) else {
                    return;
                };
                let interval = match &reply {
                    Ok(r) if !r.interval.is_zero() => r.interval,
                    _ => inner.config.announce_interval.get(),
                };
                let counters = &inner.counters;
                match reply {
                    Ok(reply) => {
                        counters.announces_ok.fetch_add(1, Ordering::Relaxed);
                        let left_out = lock(&inner.announce_warnings).succeeded();
                        if left_out > 0 {
                            tracing::info!(
                                left_out,
                                "announces succeed again, after failures not all logged"
                            );
                        }
                        let useful = self.dial(&inner, reply.peers);
                        let retry = !self.is_source() && useful == 0 && self.peers.is_empty();
                        let wait = if retry {
                            self.empty_announces += 1;
                            retry_empty(self.empty_announces)
                        } else {
                            self.empty_announces = 0;
                            interval
                        };
                        self.next_announce = Instant::now() + wait;
                    }
                    Err(e) => {
                        counters.announces_failed.fetch_add(1, Ordering::Relaxed);
                        let logged = lock(&inner.announce_warnings).failed(Instant::now());
                        if let Some(left_out) = logged {
                            // Every torrent announces each interval: one line per run of
                            // failures and period, not per torrent and interval.
                            tracing::warn!(
                                digest = %self.metainfo.digest(),
                                error = %e,
                                left_out,
                                "announce failed (more failures in the next {:?} are counted, not logged)",
                                super::ANNOUNCE_WARNING_EVERY
                            );
                        }
                        self.next_announce = Instant::now() + interval;
                    }
                }
            }
            Cmd::Written { index, result } => self.on_written(index, result),
            Cmd::Finished(result) => self.on_finished(result),
            Cmd::Followed => {
                if let State::Leech { picker, .. } = &mut self.state {
                    picker.prefer_front();
                }
            }
            Cmd::Hashes(newer) => self.on_hashes(newer),
            Cmd::Seed(blob) => self.on_seed(blob),
            Cmd::Abort(why) => {
                let _ = self.status.send(Status::Failed(why));
            }
        }
    }

    /// Whether a peer may join: not us, not blacklisted, not already connected, and room under
    /// `max_open_conn`.
    fn check_peer(&self, h: &Handshake) -> Result<(), ConnError> {
        let inner = upgrade(&self.inner).ok_or(ConnError::Closed)?;
        if h.info_hash != self.metainfo.info_hash() {
            return Err(ConnError::Handshake("another torrent".into()));
        }
        if h.peer_id == inner.me.peer_id {
            return Err(ConnError::Handshake("that is this peer".into()));
        }
        if self.blacklist.contains_key(&h.peer_id) {
            return Err(ConnError::Handshake("blacklisted".into()));
        }
        if self.peers.contains_key(&h.peer_id) {
            return Err(ConnError::Handshake("already connected".into()));
        }
        if self.peers.len() >= inner.config.connstate.max_open_conn as usize {
            return Err(ConnError::Handshake("max_open_conn reached".into()));
        }
        h.bitfield
            .check_len(self.metainfo.piece_count())
            .map_err(|e| ConnError::Handshake(e.to_string()))?;
        Ok(())
    }

    /// Dials handed-out peers while there is room; returns how many could give us pieces.
    fn dial(&mut self, inner: &Arc<Inner>, peers: Vec<PeerAddr>) -> usize {
        if self.is_source() {
            // A seeder waits to be dialed: it has nothing to ask for.
            return 0;
        }
        let max = inner.config.connstate.max_open_conn as usize;
        let mut useful = 0;
        for p in peers {
            if p.peer_id == inner.me.peer_id || self.blacklist.contains_key(&p.peer_id) {
                continue;
            }
            if p.origin {
                self.origins.insert(p.peer_id);
            }
            if self.peers.contains_key(&p.peer_id) {
                useful += 1;
                continue;
            }
            if self.dialing.contains(&p.peer_id) {
                continue;
            }
            // Two leechers that dialed each other at once would each keep the connection the
            // other dropped: between incomplete peers only the lower id dials.
            if !p.complete && !p.origin && p.peer_id < inner.me.peer_id {
                continue;
            }
            if self.peers.len() + self.dialing.len() >= max {
                break;
            }
            useful += 1;
            self.dialing.insert(p.peer_id);
            let ours = inner.handshake(&self.namespace, &self.metainfo, self.have());
            let tx = self.cmd_tx.clone();
            let metainfo = self.metainfo.clone();
            let tls = inner.conn.tls.clone();
            self.tasks.spawn(async move {
                let cmd = match dial(p.addr, p.peer_id, ours, &metainfo, tls.as_ref()).await {
                    Ok((stream, handshake, leftover)) => Cmd::Dialed {
                        stream,
                        handshake,
                        leftover,
                    },
                    Err(error) => Cmd::DialFailed {
                        peer: p.peer_id,
                        error,
                    },
                };
                let _ = tx.send(cmd).await;
            });
        }
        useful
    }

    fn add_peer(&mut self, stream: PeerStream, handshake: Handshake, leftover: BytesMut) {
        let Some(inner) = upgrade(&self.inner) else {
            return;
        };
        let peer = handshake.peer_id;
        let handle = conn::start(
            stream,
            leftover,
            peer,
            self.hashes.subscribe(),
            inner.conn.clone(),
            self.events_tx.clone(),
        );
        let complete = handshake.bitfield.is_full();
        if let State::Leech { picker, .. } = &mut self.state {
            if let Err(e) = picker.add_peer(peer, handshake.bitfield) {
                tracing::debug!(%peer, %e, "bitfield refused");
                handle.close();
                return;
            }
            if self.origins.contains(&peer) {
                picker.mark_origin(peer);
            }
        }
        if self.is_seed() {
            handle.send(Frame::Complete);
        }
        tracing::debug!(%peer, addr = %handle.addr, "peer connected");
        let connected = Connected::new(&inner);
        self.peers.insert(
            peer,
            Peer {
                handle,
                complete,
                uploads: Arc::new(tokio::sync::Semaphore::new(UPLOADS_PER_PEER)),
                buffered: Default::default(),
                _connected: connected,
            },
        );
    }

    fn on_event(&mut self, event: ConnEvent) {
        match event {
            ConnEvent::Closed { peer, reason } => {
                tracing::debug!(%peer, %reason, "peer connection closed");
                if matches!(reason, ConnError::Wire(_) | ConnError::Protocol(_)) {
                    self.ban(peer, &reason.to_string());
                }
                self.drop_peer(&peer);
            }
            ConnEvent::Frame { peer, frame } => self.on_frame(peer, frame),
            ConnEvent::Piece {
                peer,
                index,
                data,
                verified,
            } => self.on_piece(peer, index, data, verified),
        }
    }

    fn drop_peer(&mut self, peer: &PeerId) {
        if let Some(p) = self.peers.remove(peer) {
            p.handle.close();
        }
        let ended = self.lent.holder_left(peer);
        self.return_lent(ended);
        if let State::Leech { picker, .. } = &mut self.state {
            picker.remove_peer(peer);
        }
    }

    /// Blacklists `peer` for `blacklist_duration` and disconnects it.
    fn ban(&mut self, peer: PeerId, why: &str) {
        let inner = upgrade(&self.inner);
        if let Some(i) = &inner {
            i.counters
                .blacklisted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let duration = inner
            .map(|i| i.config.connstate.blacklist_duration.get())
            .unwrap_or(Duration::from_secs(30));
        tracing::warn!(%peer, %why, ?duration, digest = %self.metainfo.digest(), "peer blacklisted");
        self.blacklist.insert(peer, Instant::now() + duration);
        self.drop_peer(&peer);
    }

    fn on_frame(&mut self, peer: PeerId, frame: Frame) {
        match frame {
            Frame::PieceRequest { index } => self.serve(peer, index),
            Frame::AnnouncePiece { index } => {
                // On an origin: the agent a piece was lent to has it now.
                self.lent.announced(index, peer, Instant::now());
                if let State::Leech { picker, .. } = &mut self.state
                    && let Err(e) = picker.peer_announced(peer, index)
                {
                    tracing::debug!(%peer, %e, "announce ignored");
                }
            }
            Frame::CancelPiece { .. } => {
                // The payload may already be queued; sending it anyway costs one piece.
            }
            Frame::Error {
                index,
                code,
                message,
            } => {
                tracing::debug!(%peer, %index, ?code, %message, "request refused");
                if let State::Leech { picker, .. } = &mut self.state {
                    let _ = picker.request_refused(peer, index);
                }
            }
            Frame::Complete => {
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.complete = true;
                }
                if self.is_seed() {
                    // Two seeders have nothing to trade.
                    self.drop_peer(&peer);
                }
            }
            Frame::Handshake(_) | Frame::PiecePayload { .. } => {}
        }
    }

    /// Answers a piece request from the store, off the owner task.
    fn serve(&mut self, peer: PeerId, index: PieceIndex) {
        let Some(p) = self.peers.get(&peer) else {
            return;
        };
        let handle = p.handle.clone();
        let buffered = p.buffered.clone();
        let Ok(upload) = p.uploads.clone().try_acquire_owned() else {
            if let Some(inner) = upgrade(&self.inner) {
                inner
                    .counters
                    .requests_refused_busy
                    .fetch_add(1, Ordering::Relaxed);
            }
            handle.send(Frame::Error {
                index,
                code: ErrorCode::PieceUnavailable,
                message: format!("more than {UPLOADS_PER_PEER} pieces in flight to you"),
            });
            return;
        };
        let now = Instant::now();
        self.last_progress = self.last_progress.max(now);
        if self.is_source() && upgrade(&self.inner).is_some_and(|i| i.me.origin) {
            let peers = &self.peers;
            let connected = |id: &PeerId| peers.contains_key(id);
            if self.lent.ask(index, peer, now, connected) == Decision::Refuse {
                handle.send(Frame::Error {
                    index,
                    code: ErrorCode::PieceUnavailable,
                    message: "sent to another peer moments ago: get it there".into(),
                });
                return;
            }
        }
        enum Source {
            Partial(PartialBlob),
            Complete(CompleteBlob),
            Growing(Arc<std::fs::File>, std::path::PathBuf, std::ops::Range<u64>),
        }
        let source = match &self.state {
            State::Seed(blob) => Source::Complete(blob.clone()),
            State::Growing(file, path) if index.0 < self.metainfo.known() => {
                match self.metainfo.piece_range(index) {
                    Ok(range) => Source::Growing(file.clone(), path.clone(), range),
                    Err(_) => return,
                }
            }
            State::Growing(..) => {
                handle.send(Frame::Error {
                    index,
                    code: ErrorCode::PieceUnavailable,
                    message: "not fetched from the backend yet".into(),
                });
                return;
            }
            State::Leech { partial, .. } if partial.has(index) => Source::Partial(partial.clone()),
            State::Leech { .. } => {
                handle.send(Frame::Error {
                    index,
                    code: ErrorCode::PieceUnavailable,
                    message: "not held yet".into(),
                });
                return;
            }
        };
        let Some(budget) = upgrade(&self.inner).map(|i| i.uploads.clone()) else {
            return;
        };
        let len = self
            .metainfo
            .piece_range(index)
            .map_or(0, |r| r.end - r.start);
        self.tasks.spawn(async move {
            // Room first: a read waits while the host holds its budget of unsent pieces
            // (unless this peer has none buffered; see `upload.rs`).
            let room = budget.take(len, &buffered).await;
            let read = match source {
                Source::Partial(p) => p.read_piece(index).await,
                Source::Complete(c) => c.read_piece(index).await,
                // Read-only maps of the import file, as a complete blob's pieces are sent.
                Source::Growing(file, path, range) => {
                    crate::store::read_at(file, path, range.start, range.end - range.start).await
                }
            };
            let frame = match read {
                // The permit goes when the connection's writer drops the bytes, once sent.
                Ok(data) => Frame::PiecePayload {
                    index,
                    data: bytes::Bytes::from_owner(Upload {
                        data,
                        _permit: upload,
                        _room: room,
                    }),
                },
                Err(e) => Frame::Error {
                    index,
                    code: ErrorCode::StorageFailure,
                    message: e.to_string(),
                },
            };
            handle.send_wait(frame).await;
        });
    }

    fn on_piece(&mut self, peer: PeerId, index: PieceIndex, data: bytes::Bytes, verified: bool) {
        let State::Leech {
            partial,
            picker,
            writing,
            ..
        } = &mut self.state
        else {
            return;
        };
        if let Some(inner) = upgrade(&self.inner) {
            let counter = match verified {
                true => &inner.counters.pieces_verified,
                false => &inner.counters.pieces_corrupt,
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if !verified {
            if let Ok(b) = picker.piece_failed(peer, index) {
                self.ban(b.0, &format!("piece {index} does not match its hash"));
            }
            return;
        }
        self.last_progress = Instant::now();
        match picker.piece_verified_at(peer, index, Instant::now()) {
            Ok(Verified::Accepted { cancel }) => {
                for other in cancel {
                    if let Some(p) = self.peers.get(&other) {
                        p.handle.send(Frame::CancelPiece { index });
                    }
                }
                *writing += 1;
                let partial = partial.clone();
                let tx = self.cmd_tx.clone();
                self.tasks.spawn(async move {
                    let result = partial.write_verified_piece(index, data).await.map(|_| ());
                    let _ = tx.send(Cmd::Written { index, result }).await;
                });
            }
            Ok(Verified::Duplicate) => {}
            Err(e) => tracing::debug!(%peer, %e, "piece ignored"),
        }
    }

    fn on_written(&mut self, index: PieceIndex, result: Result<(), StoreError>) {
        let State::Leech { writing, .. } = &mut self.state else {
            return;
        };
        *writing -= 1;
        if let Err(e) = result {
            let _ = self
                .status
                .send(Status::Failed(format!("storing piece {index} failed: {e}")));
            return;
        }
        // Origins too, complete as they are: their lend of the piece to us ends (see
        // [`Lends`]) once the others had time to fetch it here.
        for (id, p) in &self.peers {
            if !p.complete || self.origins.contains(id) {
                p.handle.send(Frame::AnnouncePiece { index });
            }
        }
        if let State::Leech { partial, .. } = &self.state
            && index.0 == self.first_absent
        {
            self.first_absent = first_absent(partial, index.0);
            let bytes = prefix_bytes(&self.metainfo, self.first_absent);
            self.landed.send_replace(bytes);
        }
        self.maybe_finish();
    }

    /// Once every piece is on disk: check the whole blob and move it into the cache.
    fn maybe_finish(&mut self) {
        let State::Leech {
            partial,
            picker,
            writing,
            finishing,
        } = &mut self.state
        else {
            return;
        };
        if *finishing || *writing > 0 || !picker.is_complete() {
            return;
        }
        *finishing = true;
        let partial = partial.clone();
        let tx = self.cmd_tx.clone();
        self.tasks.spawn(async move {
            let result = partial.finish().await;
            let _ = tx.send(Cmd::Finished(result)).await;
        });
    }

    fn on_finished(&mut self, result: Result<CompleteBlob, StoreError>) {
        match result {
            Ok(blob) => {
                tracing::info!(digest = %self.metainfo.digest(), peers = self.peers.len(), "download complete");
                self.landed.send_replace(blob.len());
                self.state = State::Seed(blob.clone());
                let _ = self.status.send(Status::Done(blob));
                self.last_progress = Instant::now();
                let complete: Vec<PeerId> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| p.complete)
                    .map(|(id, _)| *id)
                    .collect();
                for p in self.peers.values() {
                    p.handle.send(Frame::Complete);
                }
                for id in complete {
                    self.drop_peer(&id);
                }
                // Tell the tracker at once, so others are handed a complete peer.
                self.next_announce = Instant::now();
            }
            Err(e) => {
                let _ = self
                    .status
                    .send(Status::Failed(format!("finishing the download: {e}")));
            }
        }
    }

    /// Asks every peer with free pipeline slots for the pieces the picker chooses.
    fn request_more(&mut self) {
        let State::Leech { picker, .. } = &mut self.state else {
            return;
        };
        let now = Instant::now();
        let connected = self
            .peers
            .keys()
            .filter(|id| self.origins.contains(id))
            .count();
        // Each piece is asked of one designated origin: rendezvous on the piece index among the
        // origins connected *or being dialed*, so an agent whose second origin is still
        // connecting waits for it rather than asking the first for everything (while agents
        // already connected to both split the pieces): two origins never both send a piece.
        // An origin whose dial failed, or that left, drops out and the rest take its pieces.
        let reachable: Vec<PeerId> = self
            .origins
            .iter()
            .filter(|id| self.peers.contains_key(id) || self.dialing.contains(id))
            .copied()
            .collect();
        let mut broken = Vec::new();
        for (id, p) in &self.peers {
            let picked = if self.origins.contains(id) {
                let designated = |i: PieceIndex| designated_origin(&reachable, i) == Some(*id);
                picker.pick_capped(*id, now, connected as u32, designated)
            } else {
                picker.pick(*id, now)
            };
            for index in picked {
                if !p.handle.send(Frame::PieceRequest { index }) {
                    let _ = picker.request_refused(*id, index);
                    broken.push(*id);
                    break;
                }
            }
        }
        for id in broken {
            self.drop_peer(&id);
        }
    }
}

/// The pause before the `n`th announce in a row that handed out nobody (`n` >= 1).
fn retry_empty(n: u32) -> Duration {
    RETRY_EMPTY_FIRST
        .saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(RETRY_EMPTY)
}

/// The origin among `origins` that piece `index` is asked of: the highest SHA-256 of the
/// origin's id and the index (rendezvous), the same choice on every agent that sees the same
/// origins.
fn designated_origin(origins: &[PeerId], index: PieceIndex) -> Option<PeerId> {
    use sha2::{Digest as _, Sha256};
    origins
        .iter()
        .max_by_key(|o| {
            let mut h = Sha256::new();
            h.update(o.0);
            h.update(index.0.to_be_bytes());
            <[u8; 32]>::from(h.finalize())
        })
        .copied()
}

/// Opens a connection to `addr` and exchanges handshakes, checking the peer is who the tracker
/// said and serves the same torrent.
async fn dial(
    addr: SocketAddr,
    expected: PeerId,
    ours: Handshake,
    metainfo: &Metainfo,
    tls: Option<&PeerTls>,
) -> Result<(PeerStream, Handshake, BytesMut), ConnError> {
    let tcp = tokio::time::timeout(HANDSHAKE_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| ConnError::HandshakeTimeout(HANDSHAKE_TIMEOUT))??;
    let mut stream = match tls {
        None => PeerStream::Plain(tcp),
        Some(tls) => tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.connect(addr, tcp))
            .await
            .map_err(|_| ConnError::HandshakeTimeout(HANDSHAKE_TIMEOUT))?
            .map_err(|e| ConnError::Handshake(format!("TLS: {e}")))?,
    };
    let info_hash = ours.info_hash;
    conn::write_frame(&mut stream, &Frame::Handshake(ours)).await?;
    let mut buf = BytesMut::new();
    let decoder = FrameDecoder::for_torrent(metainfo);
    let theirs = conn::read_handshake(&mut stream, &mut buf, &decoder, HANDSHAKE_TIMEOUT).await?;
    if theirs.info_hash != info_hash {
        return Err(ConnError::Handshake(
            "the peer answered for another torrent".into(),
        ));
    }
    if theirs.peer_id != expected {
        return Err(ConnError::Handshake(format!(
            "expected peer {expected}, the handshake says {}",
            theirs.peer_id
        )));
    }
    Ok((stream, theirs, buf))
}

/// `m` locked; a panic elsewhere cannot leave the plain counters behind it inconsistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_hand_out_is_retried_soon_then_less_often() {
        let pauses: Vec<u64> = (1..=7).map(|n| retry_empty(n).as_millis() as u64).collect();
        assert_eq!(pauses, [50, 100, 200, 400, 500, 500, 500]);
        assert_eq!(retry_empty(u32::MAX), RETRY_EMPTY);
    }
}
