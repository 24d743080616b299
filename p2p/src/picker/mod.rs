//! Which piece to ask which peer for next: a pure, synchronous state machine. The torrent's
//! owner feeds it events (a peer's bitfield, an announce, a verified or corrupt piece, a peer
//! gone, the clock) and sends the requests it returns; it never touches a socket or a clock.
//!
//! # States
//!
//! Every piece is in exactly one state:
//!
//! - **Missing**: not held, no request outstanding. Picked rarest first.
//! - **Requested**: not held, asked of one peer, or of several in endgame; each request records
//!   when it was sent so it can time out.
//! - **Have**: verified and stored. Final.
//!
//! # Transitions
//!
//! | event | from | to |
//! |---|---|---|
//! | [`pick`](PiecePicker::pick) | Missing | Requested (rarest first, random tie-break; for a followed download ([`prefer_front`](PiecePicker::prefer_front)) the lowest index among seeders only, and in a swarm within `follow_window` pieces of the first one not held first; up to `pipeline_limit` per peer) |
//! | [`pick`](PiecePicker::pick) in endgame | Requested | Requested by one more peer |
//! | [`piece_verified`](PiecePicker::piece_verified) | Requested / Missing | Have; other requesters are returned to be cancelled |
//! | [`piece_failed`](PiecePicker::piece_failed) | Requested | Missing (or still Requested from others); the sender is returned for blacklisting |
//! | [`request_refused`](PiecePicker::request_refused) | Requested | Missing (or still Requested from others); the peer no longer counts as having it |
//! | [`expire`](PiecePicker::expire) | Requested | Missing once its last request is older than `request_timeout` |
//! | [`remove_peer`](PiecePicker::remove_peer) | Requested | Missing for pieces only that peer was asked for |
//!
//! Endgame starts when no piece is Missing, i.e. every piece still needed is requested from
//! someone: then a peer with spare pipeline slots is asked for pieces already requested from
//! others, so one slow peer cannot hold up the last pieces of a blob. Endgame is bounded, since
//! every duplicate request is a piece sent twice: a piece is asked of a second peer only once
//! its request has *stalled* (waited [`ENDGAME_STALL_FACTOR`] times the recent time a piece
//! takes from request to verified, see [`PiecePicker::stall_after`]), of an origin only after
//! twice that, and of at most [`ENDGAME_MAX_REQUESTS`] peers at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use shoal_config::DispatchConfig;

use crate::bitfield::Bitfield;
use crate::error::PickerError;
use crate::peer_id::PeerId;
use crate::piece::PieceIndex;

/// An endgame duplicate waits until the piece's request is this many times older than the
/// recent request-to-verified time.
pub const ENDGAME_STALL_FACTOR: u32 = 2;

/// The shortest stall an endgame duplicate waits for, however fast pieces have been.
pub const MIN_STALL: Duration = Duration::from_millis(200);

/// Peers asked for one piece at once, endgame included.
pub const ENDGAME_MAX_REQUESTS: usize = 2;

/// The picker's knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PickerConfig {
    /// Requests outstanding per peer at once (`scheduler.dispatch.pipeline_limit`).
    pub pipeline_limit: u32,
    /// How long a request may go unanswered before the piece is asked of someone else.
    pub request_timeout: Duration,
    /// Pieces from the first one not held that a followed download in a swarm asks for before
    /// any others ([`PiecePicker::prefer_front`]).
    pub follow_window: u32,
}

/// The bytes a followed download in a swarm keeps its picks within, from its first piece not
/// held: what its client may still have to read once the last piece lands. The random picks
/// that spread a swarm's pieces stay random within it.
pub const FOLLOW_WINDOW_BYTES: u64 = 128 << 20;

/// The fewest pieces in that window, however long the pieces: enough for every peer's
/// pipeline to find pieces in it that the others have not asked for.
pub const MIN_FOLLOW_WINDOW: u32 = 32;

/// Kraken's dispatcher allows at least 4 s per piece request, and 4 s per MiB of piece.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
const REQUEST_TIMEOUT_PER_MIB: Duration = Duration::from_secs(4);

impl PickerConfig {
    /// The settings for one torrent: the configured pipeline limit, and a request timeout that
    /// grows with the piece length (as Kraken's `piece_request_timeout_per_mb`).
    pub fn new(dispatch: &DispatchConfig, piece_length: u64) -> Self {
        let mib = piece_length.div_ceil(1 << 20).min(u64::from(u32::MAX)) as u32;
        let window = (FOLLOW_WINDOW_BYTES / piece_length.max(1)).min(u64::from(u32::MAX)) as u32;
        PickerConfig {
            pipeline_limit: dispatch.pipeline_limit.max(1),
            request_timeout: MIN_REQUEST_TIMEOUT.max(REQUEST_TIMEOUT_PER_MIB * mib),
            follow_window: window.max(MIN_FOLLOW_WINDOW),
        }
    }
}

/// A piece's state as seen from outside, for the owner's logs and for tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PieceStatus {
    /// Not held, not requested.
    Missing,
    /// Requested from this many peers (more than one only in endgame).
    Requested(usize),
    /// Verified and stored.
    Have,
}

#[derive(Clone, Copy, Debug)]
struct Request {
    peer: PeerId,
    sent: Instant,
}

#[derive(Clone, Debug)]
enum PieceState {
    Missing,
    /// Never empty: the last request leaving turns the piece back to Missing.
    Requested(Vec<Request>),
    Have,
}

#[derive(Debug)]
struct PeerView {
    bitfield: Bitfield,
    outstanding: u32,
    /// An origin: it only sends ([`PiecePicker::mark_origin`]).
    origin: bool,
}

/// What [`PiecePicker::piece_verified`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verified {
    /// The piece is new: store it, announce it, and cancel it at these peers (endgame).
    Accepted {
        /// Peers still asked for this piece, to be sent `CancelPiece`.
        cancel: Vec<PeerId>,
    },
    /// The piece was already held (a late endgame duplicate): drop the bytes.
    Duplicate,
}

/// A peer that sent a piece not matching its hash; the owner blacklists and disconnects it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a peer that sent a corrupt piece must be blacklisted"]
pub struct Blacklist(pub PeerId);

/// The piece picker of one torrent; see the module docs for its states and transitions.
#[derive(Debug)]
pub struct PiecePicker {
    pieces: Vec<PieceState>,
    availability: Vec<u32>,
    have: Bitfield,
    peers: HashMap<PeerId, PeerView>,
    config: PickerConfig,
    rng: StdRng,
    /// Recent time from a request to its piece verified (moving average), once one arrived.
    piece_time: Option<Duration>,
    /// Whether ties of rarity go to the lowest index ([`PiecePicker::prefer_front`]).
    front_first: bool,
    /// Pieces from this index on are never picked: their hashes are not known yet
    /// ([`PiecePicker::set_pickable`]).
    pickable: u32,
    /// The first piece not held (the piece count when complete).
    front: u32,
}

impl PiecePicker {
    /// A picker for a torrent of `have.len()` pieces, of which `have` are already stored.
    pub fn new(have: Bitfield, config: PickerConfig) -> Self {
        Self::with_seed(have, config, rand::random())
    }

    /// As [`PiecePicker::new`] with a fixed seed for the tie-breaks, so tests are repeatable.
    pub fn with_seed(have: Bitfield, config: PickerConfig, seed: u64) -> Self {
        let pieces = (0..have.len())
            .map(|i| {
                if have.get(PieceIndex(i)) {
                    PieceState::Have
                } else {
                    PieceState::Missing
                }
            })
            .collect();
        let mut picker = PiecePicker {
            pieces,
            availability: vec![0; have.len() as usize],
            have,
            peers: HashMap::new(),
            config,
            rng: StdRng::seed_from_u64(seed),
            piece_time: None,
            front_first: false,
            pickable: u32::MAX,
            front: 0,
        };
        picker.step_front();
        picker
    }

    /// Moves `front` past the pieces held.
    fn step_front(&mut self) {
        while self.front < self.piece_count() && self.have.get(PieceIndex(self.front)) {
            self.front += 1;
        }
    }

    /// Only the first `known` pieces may be picked from now on: a download that knows only a
    /// prefix of the piece hashes (an origin still fetching the blob) asks for those alone, and
    /// for the rest once a longer prefix raised this. Pieces already requested stay requested.
    pub fn set_pickable(&mut self, known: u32) {
        self.pickable = known.min(self.piece_count());
    }

    /// A client reads the blob as it lands: from now on, while every connected peer has the
    /// whole blob (an origin, complete agents), ties of rarity go to the lowest index instead
    /// of a random one, so the verified front a client is sent grows with the download. While
    /// other leechers are connected (a fan-out) the picks stay rarest first with random ties,
    /// but among the [`PickerConfig::follow_window`] pieces from the first one not held before
    /// any others: leechers all asking for the same front pieces would queue on the same
    /// holders and make the origins send pieces twice (measured: origin egress 1.5x -> 1.9x
    /// the blob with 8 agents), and random picks are what spreads a swarm's pieces; without
    /// the window the front stays short until the last pieces land, and the client is sent
    /// nearly the whole blob only after them (8 agents read 8 GiB off one disk at once).
    /// A peer with no missing piece in the window is asked for others, so no connection
    /// idles for it.
    pub fn prefer_front(&mut self) {
        self.front_first = true;
    }

    /// Whether ties of rarity go to the lowest index now (see [`PiecePicker::prefer_front`]):
    /// every peer holds the whole blob or is an origin (one still fetching the blob holds only
    /// a front, and asks nothing of us).
    fn in_order(&self) -> bool {
        self.front_first
            && self
                .peers
                .values()
                .all(|v| v.origin || v.bitfield.is_full())
    }

    /// `peer` is an origin: it counts as complete for [`PiecePicker::prefer_front`].
    pub fn mark_origin(&mut self, peer: PeerId) {
        if let Some(v) = self.peers.get_mut(&peer) {
            v.origin = true;
        }
    }

    fn piece_count(&self) -> u32 {
        self.have.len()
    }

    fn check_index(&self, index: PieceIndex) -> Result<(), PickerError> {
        if index.0 >= self.piece_count() {
            return Err(PickerError::PieceOutOfRange {
                index,
                count: self.piece_count(),
            });
        }
        Ok(())
    }

    /// The pieces held.
    pub fn have(&self) -> &Bitfield {
        &self.have
    }

    /// True when every piece is held.
    pub fn is_complete(&self) -> bool {
        self.have.is_full()
    }

    /// A piece's state; `None` past the end.
    pub fn status(&self, index: PieceIndex) -> Option<PieceStatus> {
        self.pieces.get(index.as_usize()).map(|s| match s {
            PieceState::Missing => PieceStatus::Missing,
            PieceState::Requested(r) => PieceStatus::Requested(r.len()),
            PieceState::Have => PieceStatus::Have,
        })
    }

    /// How many peers have a piece, as far as their bitfields and announces say.
    pub fn availability(&self, index: PieceIndex) -> u32 {
        self.availability
            .get(index.as_usize())
            .copied()
            .unwrap_or(0)
    }

    /// Requests outstanding at a peer.
    pub fn outstanding(&self, peer: &PeerId) -> u32 {
        self.peers.get(peer).map_or(0, |p| p.outstanding)
    }

    /// True when no piece is Missing but some are still needed: duplicates may be requested.
    pub fn in_endgame(&self) -> bool {
        !self.is_complete() && !self.pieces.iter().any(|s| matches!(s, PieceState::Missing))
    }

    /// A peer connected and sent its bitfield (from the handshake). A second bitfield from the
    /// same peer replaces the first.
    pub fn add_peer(&mut self, peer: PeerId, bitfield: Bitfield) -> Result<(), PickerError> {
        bitfield.check_len(self.piece_count())?;
        // A replaced bitfield keeps the peer's requests, and so its outstanding count.
        let (outstanding, origin) = match self.peers.remove(&peer) {
            Some(old) => {
                for i in old.bitfield.ones() {
                    self.availability[i.as_usize()] -= 1;
                }
                (old.outstanding, old.origin)
            }
            None => (0, false),
        };
        for i in bitfield.ones() {
            self.availability[i.as_usize()] += 1;
        }
        self.peers.insert(
            peer,
            PeerView {
                bitfield,
                outstanding,
                origin,
            },
        );
        Ok(())
    }

    /// A peer announced a piece it now has.
    pub fn peer_announced(&mut self, peer: PeerId, index: PieceIndex) -> Result<(), PickerError> {
        self.check_index(index)?;
        let view = self
            .peers
            .get_mut(&peer)
            .ok_or(PickerError::UnknownPeer(peer))?;
        if !view.bitfield.get(index) {
            view.bitfield.set(index, true);
            self.availability[index.as_usize()] += 1;
        }
        Ok(())
    }

    /// A peer disconnected: its pieces no longer count, and pieces only it was asked for go back
    /// to Missing (returned, for the owner's logs).
    pub fn remove_peer(&mut self, peer: &PeerId) -> Vec<PieceIndex> {
        let Some(view) = self.peers.remove(peer) else {
            return Vec::new();
        };
        for i in view.bitfield.ones() {
            self.availability[i.as_usize()] -= 1;
        }
        let mut released = Vec::new();
        for (i, state) in self.pieces.iter_mut().enumerate() {
            if let PieceState::Requested(reqs) = state {
                reqs.retain(|r| r.peer != *peer);
                if reqs.is_empty() {
                    *state = PieceState::Missing;
                    released.push(PieceIndex(i as u32));
                }
            }
        }
        released
    }

    /// How long a request must have waited before endgame asks another peer for its piece:
    /// [`ENDGAME_STALL_FACTOR`] times the recent request-to-verified time (at least
    /// [`MIN_STALL`]), or a quarter of the request timeout before any piece arrived.
    pub fn stall_after(&self) -> Duration {
        match self.piece_time {
            Some(t) => (t * ENDGAME_STALL_FACTOR).max(MIN_STALL),
            None => self.config.request_timeout / 4,
        }
    }

    /// The pieces to request from `peer` now (possibly none), already marked Requested at
    /// `now`: rarest first with a random tie-break, or stalled pieces in endgame.
    pub fn pick(&mut self, peer: PeerId, now: Instant) -> Vec<PieceIndex> {
        let stall = self.stall_after();
        self.pick_where(peer, now, u32::MAX, |_| true, stall)
    }

    /// Like [`pick`](PiecePicker::pick), but only pieces for which `allow` says yes, outside
    /// endgame only those held by at most `max_availability` connected peers, and in endgame
    /// only pieces stalled twice as long. The owner asks an origin this way: with the number of
    /// connected origins as the cap, and only the pieces this origin is designated for among
    /// them, so each piece leaves the origins about once and the rest travels between agents.
    pub fn pick_capped(
        &mut self,
        peer: PeerId,
        now: Instant,
        max_availability: u32,
        allow: impl Fn(PieceIndex) -> bool,
    ) -> Vec<PieceIndex> {
        let stall = self.stall_after() * 2;
        self.pick_where(peer, now, max_availability, allow, stall)
    }

    fn pick_where(
        &mut self,
        peer: PeerId,
        now: Instant,
        max_availability: u32,
        allow: impl Fn(PieceIndex) -> bool,
        stall: Duration,
    ) -> Vec<PieceIndex> {
        let Some(view) = self.peers.get(&peer) else {
            return Vec::new();
        };
        let slots = self.config.pipeline_limit.saturating_sub(view.outstanding) as usize;
        if slots == 0 {
            return Vec::new();
        }
        let endgame = self.in_endgame();
        // (requesters, availability, index): fewest requesters first only matters in endgame.
        let mut candidates: Vec<(usize, u32, PieceIndex)> = view
            .bitfield
            .ones()
            .take_while(|i| i.0 < self.pickable)
            .filter_map(|i| match &self.pieces[i.as_usize()] {
                PieceState::Missing
                    if self.availability[i.as_usize()] <= max_availability && allow(i) =>
                {
                    Some((0, self.availability[i.as_usize()], i))
                }
                PieceState::Requested(reqs)
                    if endgame
                        && reqs.len() < ENDGAME_MAX_REQUESTS
                        && allow(i)
                        && reqs.iter().all(|r| {
                            r.peer != peer && now.saturating_duration_since(r.sent) >= stall
                        }) =>
                {
                    Some((reqs.len(), self.availability[i.as_usize()], i))
                }
                _ => None,
            })
            .collect();
        if self.in_order() {
            candidates.sort_by_key(|&(requesters, avail, i)| (requesters, avail, i));
        } else {
            candidates.shuffle(&mut self.rng);
            let window_end = if self.front_first {
                self.front.saturating_add(self.config.follow_window)
            } else {
                u32::MAX
            };
            candidates
                .sort_by_key(|&(requesters, avail, i)| (requesters, i.0 >= window_end, avail));
        }
        let picked: Vec<PieceIndex> = candidates
            .into_iter()
            .take(slots)
            .map(|(_, _, i)| i)
            .collect();
        for &i in &picked {
            let request = Request { peer, sent: now };
            let state = &mut self.pieces[i.as_usize()];
            match state {
                PieceState::Requested(reqs) => reqs.push(request),
                _ => *state = PieceState::Requested(vec![request]),
            }
        }
        if let Some(view) = self.peers.get_mut(&peer) {
            view.outstanding += picked.len() as u32;
        }
        picked
    }

    /// Drops `peer`'s request for `index`, if any; the piece turns Missing when it was the last.
    fn release(&mut self, peer: &PeerId, index: PieceIndex) {
        let state = &mut self.pieces[index.as_usize()];
        if let PieceState::Requested(reqs) = state {
            let before = reqs.len();
            reqs.retain(|r| r.peer != *peer);
            if reqs.len() < before
                && let Some(view) = self.peers.get_mut(peer)
            {
                view.outstanding = view.outstanding.saturating_sub(1);
            }
            if reqs.is_empty() {
                *state = PieceState::Missing;
            }
        }
    }

    /// A piece from `peer` passed verification and is stored: it becomes Have. Also accepted
    /// when it was not requested (it arrived after its request timed out): the bytes are good.
    pub fn piece_verified(
        &mut self,
        peer: PeerId,
        index: PieceIndex,
    ) -> Result<Verified, PickerError> {
        self.check_index(index)?;
        self.verified_from(peer, index)
    }

    /// [`piece_verified`](PiecePicker::piece_verified) at `now`: also learns how long `peer`
    /// took since it was asked, which sets when endgame calls a request stalled.
    pub fn piece_verified_at(
        &mut self,
        peer: PeerId,
        index: PieceIndex,
        now: Instant,
    ) -> Result<Verified, PickerError> {
        self.check_index(index)?;
        if let PieceState::Requested(reqs) = &self.pieces[index.as_usize()]
            && let Some(r) = reqs.iter().find(|r| r.peer == peer)
        {
            let took = now.saturating_duration_since(r.sent);
            self.piece_time = Some(match self.piece_time {
                // A moving average over about the last eight pieces.
                Some(t) => (t * 7 + took) / 8,
                None => took,
            });
        }
        self.verified_from(peer, index)
    }

    fn verified_from(&mut self, peer: PeerId, index: PieceIndex) -> Result<Verified, PickerError> {
        self.release(&peer, index);
        let state = &mut self.pieces[index.as_usize()];
        let others = match std::mem::replace(state, PieceState::Have) {
            PieceState::Have => return Ok(Verified::Duplicate),
            PieceState::Missing => Vec::new(),
            PieceState::Requested(reqs) => reqs,
        };
        self.have.set(index, true);
        self.step_front();
        let mut cancel = Vec::with_capacity(others.len());
        for r in others {
            if let Some(view) = self.peers.get_mut(&r.peer) {
                view.outstanding = view.outstanding.saturating_sub(1);
            }
            cancel.push(r.peer);
        }
        Ok(Verified::Accepted { cancel })
    }

    /// A piece from `peer` failed verification: the piece goes back to Missing (unless other
    /// peers were also asked) and the peer is returned for blacklisting.
    pub fn piece_failed(
        &mut self,
        peer: PeerId,
        index: PieceIndex,
    ) -> Result<Blacklist, PickerError> {
        self.check_index(index)?;
        self.release(&peer, index);
        Ok(Blacklist(peer))
    }

    /// `peer` answered a request with an error: the piece is asked of someone else, and the
    /// peer no longer counts as having it until it announces it again.
    pub fn request_refused(&mut self, peer: PeerId, index: PieceIndex) -> Result<(), PickerError> {
        self.check_index(index)?;
        self.release(&peer, index);
        if let Some(view) = self.peers.get_mut(&peer)
            && view.bitfield.get(index)
        {
            view.bitfield.set(index, false);
            self.availability[index.as_usize()] -= 1;
        }
        Ok(())
    }

    /// Drops every request sent at or before `now - request_timeout`, returning them so the
    /// owner can cancel them; their pieces turn Missing (unless also requested from a peer that
    /// is still in time) and are picked again by the next [`pick`](PiecePicker::pick).
    pub fn expire(&mut self, now: Instant) -> Vec<(PeerId, PieceIndex)> {
        let timeout = self.config.request_timeout;
        let mut expired = Vec::new();
        for (i, state) in self.pieces.iter_mut().enumerate() {
            let PieceState::Requested(reqs) = state else {
                continue;
            };
            reqs.retain(|r| {
                let late = now.saturating_duration_since(r.sent) >= timeout;
                if late {
                    expired.push((r.peer, PieceIndex(i as u32)));
                }
                !late
            });
            if reqs.is_empty() {
                *state = PieceState::Missing;
            }
        }
        for (peer, _) in &expired {
            if let Some(view) = self.peers.get_mut(peer) {
                view.outstanding = view.outstanding.saturating_sub(1);
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests;
