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
//! | [`pick`](PiecePicker::pick) | Missing | Requested (rarest first, random tie-break, up to `pipeline_limit` per peer) |
//! | [`pick`](PiecePicker::pick) in endgame | Requested | Requested by one more peer |
//! | [`piece_verified`](PiecePicker::piece_verified) | Requested / Missing | Have; other requesters are returned to be cancelled |
//! | [`piece_failed`](PiecePicker::piece_failed) | Requested | Missing (or still Requested from others); the sender is returned for blacklisting |
//! | [`request_refused`](PiecePicker::request_refused) | Requested | Missing (or still Requested from others); the peer no longer counts as having it |
//! | [`expire`](PiecePicker::expire) | Requested | Missing once its last request is older than `request_timeout` |
//! | [`remove_peer`](PiecePicker::remove_peer) | Requested | Missing for pieces only that peer was asked for |
//!
//! Endgame starts when no piece is Missing, i.e. every piece still needed is requested from
//! someone: then a peer with spare pipeline slots is asked for pieces already requested from
//! others, so one slow peer cannot hold up the last pieces of a blob.

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

/// The picker's knobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PickerConfig {
    /// Requests outstanding per peer at once (`scheduler.dispatch.pipeline_limit`).
    pub pipeline_limit: u32,
    /// How long a request may go unanswered before the piece is asked of someone else.
    pub request_timeout: Duration,
}

/// Kraken's dispatcher allows at least 4 s per piece request, and 4 s per MiB of piece.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(4);
const REQUEST_TIMEOUT_PER_MIB: Duration = Duration::from_secs(4);

impl PickerConfig {
    /// The settings for one torrent: the configured pipeline limit, and a request timeout that
    /// grows with the piece length (as Kraken's `piece_request_timeout_per_mb`).
    pub fn new(dispatch: &DispatchConfig, piece_length: u64) -> Self {
        let mib = piece_length.div_ceil(1 << 20).min(u64::from(u32::MAX)) as u32;
        PickerConfig {
            pipeline_limit: dispatch.pipeline_limit.max(1),
            request_timeout: MIN_REQUEST_TIMEOUT.max(REQUEST_TIMEOUT_PER_MIB * mib),
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
        PiecePicker {
            pieces,
            availability: vec![0; have.len() as usize],
            have,
            peers: HashMap::new(),
            config,
            rng: StdRng::seed_from_u64(seed),
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
        let outstanding = match self.peers.remove(&peer) {
            Some(old) => {
                for i in old.bitfield.ones() {
                    self.availability[i.as_usize()] -= 1;
                }
                old.outstanding
            }
            None => 0,
        };
        for i in bitfield.ones() {
            self.availability[i.as_usize()] += 1;
        }
        self.peers.insert(
            peer,
            PeerView {
                bitfield,
                outstanding,
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

    /// The pieces to request from `peer` now (possibly none), already marked Requested at
    /// `now`: rarest first with a random tie-break, or duplicates in endgame.
    pub fn pick(&mut self, peer: PeerId, now: Instant) -> Vec<PieceIndex> {
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
            .filter_map(|i| match &self.pieces[i.as_usize()] {
                PieceState::Missing => Some((0, self.availability[i.as_usize()], i)),
                PieceState::Requested(reqs) if endgame && reqs.iter().all(|r| r.peer != peer) => {
                    Some((reqs.len(), self.availability[i.as_usize()], i))
                }
                _ => None,
            })
            .collect();
        candidates.shuffle(&mut self.rng);
        candidates.sort_by_key(|&(requesters, avail, _)| (requesters, avail));
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
        self.release(&peer, index);
        let state = &mut self.pieces[index.as_usize()];
        let others = match std::mem::replace(state, PieceState::Have) {
            PieceState::Have => return Ok(Verified::Duplicate),
            PieceState::Missing => Vec::new(),
            PieceState::Requested(reqs) => reqs,
        };
        self.have.set(index, true);
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
mod tests {
    use super::*;
    use std::collections::HashSet;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn config(pipeline_limit: u32) -> PickerConfig {
        PickerConfig {
            pipeline_limit,
            request_timeout: TIMEOUT,
        }
    }

    fn peer(n: u8) -> PeerId {
        PeerId([n; 20])
    }

    fn bits(len: u32, ones: &[u32]) -> Bitfield {
        let mut b = Bitfield::empty(len);
        for &i in ones {
            b.set(PieceIndex(i), true);
        }
        b
    }

    fn picker(len: u32, pipeline_limit: u32) -> PiecePicker {
        PiecePicker::with_seed(Bitfield::empty(len), config(pipeline_limit), 7)
    }

    fn idx(v: &[u32]) -> Vec<PieceIndex> {
        v.iter().copied().map(PieceIndex).collect()
    }

    #[test]
    fn config_scales_the_timeout_with_the_piece_length() {
        let d = DispatchConfig { pipeline_limit: 3 };
        assert_eq!(
            PickerConfig::new(&d, 4 << 20).request_timeout,
            Duration::from_secs(16)
        );
        assert_eq!(
            PickerConfig::new(&d, 1024).request_timeout,
            MIN_REQUEST_TIMEOUT
        );
        assert_eq!(PickerConfig::new(&d, 1024).pipeline_limit, 3);
    }

    #[test]
    fn starts_from_the_pieces_already_stored() {
        let p = PiecePicker::with_seed(bits(3, &[1]), config(3), 0);
        assert_eq!(p.status(PieceIndex(0)), Some(PieceStatus::Missing));
        assert_eq!(p.status(PieceIndex(1)), Some(PieceStatus::Have));
        assert_eq!(p.status(PieceIndex(3)), None);
    }

    #[test]
    fn add_peer_counts_availability_and_replaces_an_old_bitfield() {
        let mut p = picker(3, 3);
        p.add_peer(peer(1), bits(3, &[0, 1])).unwrap();
        p.add_peer(peer(2), bits(3, &[1])).unwrap();
        assert_eq!(p.availability(PieceIndex(1)), 2);
        p.add_peer(peer(1), bits(3, &[2])).unwrap();
        assert_eq!(
            (0..3)
                .map(|i| p.availability(PieceIndex(i)))
                .collect::<Vec<_>>(),
            [0, 1, 1]
        );
    }

    #[test]
    fn add_peer_rejects_a_bitfield_of_the_wrong_length() {
        let mut p = picker(3, 3);
        assert!(matches!(
            p.add_peer(peer(1), bits(4, &[])),
            Err(PickerError::Bitfield(_))
        ));
    }

    #[test]
    fn announce_adds_availability_once() {
        let mut p = picker(3, 3);
        p.add_peer(peer(1), bits(3, &[])).unwrap();
        p.peer_announced(peer(1), PieceIndex(2)).unwrap();
        p.peer_announced(peer(1), PieceIndex(2)).unwrap();
        assert_eq!(p.availability(PieceIndex(2)), 1);
        assert_eq!(p.pick(peer(1), Instant::now()), idx(&[2]));
    }

    #[test]
    fn announce_rejects_unknown_peers_and_bad_indices() {
        let mut p = picker(3, 3);
        assert_eq!(
            p.peer_announced(peer(9), PieceIndex(0)),
            Err(PickerError::UnknownPeer(peer(9)))
        );
        p.add_peer(peer(1), bits(3, &[])).unwrap();
        assert!(matches!(
            p.peer_announced(peer(1), PieceIndex(3)),
            Err(PickerError::PieceOutOfRange { .. })
        ));
    }

    #[test]
    fn pick_takes_the_rarest_piece_first() {
        let mut p = picker(4, 1);
        p.add_peer(peer(1), bits(4, &[0, 1, 2, 3])).unwrap();
        p.add_peer(peer(2), bits(4, &[0, 1, 3])).unwrap();
        p.add_peer(peer(3), bits(4, &[0, 3])).unwrap();
        // Availability: 0 -> 3, 1 -> 2, 2 -> 1, 3 -> 3.
        assert_eq!(p.pick(peer(1), Instant::now()), idx(&[2]));
        assert_eq!(p.status(PieceIndex(2)), Some(PieceStatus::Requested(1)));
    }

    #[test]
    fn pick_breaks_ties_at_random() {
        let mut firsts = HashSet::new();
        for seed in 0..32 {
            let mut p = PiecePicker::with_seed(Bitfield::empty(8), config(1), seed);
            p.add_peer(peer(1), Bitfield::full(8)).unwrap();
            firsts.extend(p.pick(peer(1), Instant::now()));
        }
        assert!(firsts.len() > 1, "every seed picked {firsts:?}");
    }

    #[test]
    fn pick_only_asks_for_pieces_the_peer_has_and_we_lack() {
        let mut p = PiecePicker::with_seed(bits(4, &[0]), config(10), 1);
        p.add_peer(peer(1), bits(4, &[0, 1, 3])).unwrap();
        let mut got = p.pick(peer(1), Instant::now());
        got.sort();
        assert_eq!(got, idx(&[1, 3]));
        assert_eq!(p.outstanding(&peer(1)), 2);
    }

    #[test]
    fn pick_respects_the_pipeline_limit() {
        let mut p = picker(10, 3);
        p.add_peer(peer(1), Bitfield::full(10)).unwrap();
        let now = Instant::now();
        assert_eq!(p.pick(peer(1), now).len(), 3);
        assert_eq!(p.pick(peer(1), now), idx(&[]));
        p.piece_verified(peer(1), p.pieces_requested_from(&peer(1))[0])
            .unwrap();
        assert_eq!(p.pick(peer(1), now).len(), 1);
    }

    #[test]
    fn pick_does_not_duplicate_before_endgame() {
        let mut p = picker(3, 1);
        p.add_peer(peer(1), bits(3, &[0])).unwrap();
        p.add_peer(peer(2), bits(3, &[0, 1])).unwrap();
        let now = Instant::now();
        assert_eq!(p.pick(peer(1), now), idx(&[0]));
        // Piece 2 is Missing (nobody has it), so this is not endgame: no duplicate of 0.
        assert!(!p.in_endgame());
        assert_eq!(p.pick(peer(2), now), idx(&[1]));
    }

    #[test]
    fn pick_for_an_unknown_peer_is_empty() {
        assert!(picker(3, 3).pick(peer(5), Instant::now()).is_empty());
    }

    #[test]
    fn endgame_requests_duplicates_and_cancels_the_rest_on_arrival() {
        let mut p = picker(2, 2);
        p.add_peer(peer(1), Bitfield::full(2)).unwrap();
        p.add_peer(peer(2), Bitfield::full(2)).unwrap();
        let now = Instant::now();
        assert_eq!(p.pick(peer(1), now).len(), 2);
        assert!(p.in_endgame());
        let mut dup = p.pick(peer(2), now);
        dup.sort();
        assert_eq!(dup, idx(&[0, 1]));
        assert_eq!(p.status(PieceIndex(0)), Some(PieceStatus::Requested(2)));
        assert_eq!(
            p.piece_verified(peer(2), PieceIndex(0)).unwrap(),
            Verified::Accepted {
                cancel: vec![peer(1)]
            }
        );
        assert_eq!(p.outstanding(&peer(1)), 1);
        assert_eq!(p.outstanding(&peer(2)), 1);
        // The cancelled request may still arrive: it is a duplicate.
        assert_eq!(
            p.piece_verified(peer(1), PieceIndex(0)).unwrap(),
            Verified::Duplicate
        );
        assert_eq!(p.outstanding(&peer(1)), 1);
    }

    #[test]
    fn endgame_never_asks_the_same_peer_twice() {
        let mut p = picker(1, 5);
        p.add_peer(peer(1), Bitfield::full(1)).unwrap();
        let now = Instant::now();
        assert_eq!(p.pick(peer(1), now), idx(&[0]));
        assert!(p.pick(peer(1), now).is_empty());
    }

    #[test]
    fn verified_piece_becomes_have_and_completes_the_torrent() {
        let mut p = picker(1, 1);
        p.add_peer(peer(1), Bitfield::full(1)).unwrap();
        p.pick(peer(1), Instant::now());
        assert_eq!(
            p.piece_verified(peer(1), PieceIndex(0)).unwrap(),
            Verified::Accepted { cancel: vec![] }
        );
        assert_eq!(p.status(PieceIndex(0)), Some(PieceStatus::Have));
        assert_eq!(p.outstanding(&peer(1)), 0);
        assert!(p.is_complete());
        assert!(!p.in_endgame());
    }

    #[test]
    fn unrequested_verified_piece_is_accepted() {
        let mut p = picker(2, 1);
        p.add_peer(peer(1), Bitfield::full(2)).unwrap();
        assert_eq!(
            p.piece_verified(peer(1), PieceIndex(1)).unwrap(),
            Verified::Accepted { cancel: vec![] }
        );
        assert!(p.have().get(PieceIndex(1)));
        assert_eq!(p.outstanding(&peer(1)), 0);
    }

    #[test]
    fn bad_piece_goes_back_to_missing_and_blacklists_the_sender() {
        let mut p = picker(1, 1);
        p.add_peer(peer(1), Bitfield::full(1)).unwrap();
        p.pick(peer(1), Instant::now());
        assert_eq!(
            p.piece_failed(peer(1), PieceIndex(0)).unwrap(),
            Blacklist(peer(1))
        );
        assert_eq!(p.status(PieceIndex(0)), Some(PieceStatus::Missing));
        assert_eq!(p.outstanding(&peer(1)), 0);
    }

    #[test]
    fn bad_piece_in_endgame_keeps_the_other_request() {
        let mut p = picker(1, 1);
        p.add_peer(peer(1), Bitfield::full(1)).unwrap();
        p.add_peer(peer(2), Bitfield::full(1)).unwrap();
        let now = Instant::now();
        p.pick(peer(1), now);
        p.pick(peer(2), now);
        let _ = p.piece_failed(peer(1), PieceIndex(0)).unwrap();
        assert_eq!(p.status(PieceIndex(0)), Some(PieceStatus::Requested(1)));
    }

    #[test]
    fn refused_request_is_reassigned_and_the_peer_stops_counting() {
        let mut p = picker(1, 1);
        p.add_peer(peer(1), Bitfield::full(1)).unwrap();
        p.add_peer(peer(2), Bitfield::full(1)).unwrap();
        let now = Instant::now();
        assert_eq!(p.pick(peer(1), now), idx(&[0]));
        p.request_refused(peer(1), PieceIndex(0)).unwrap();
        assert_eq!(p.status(PieceIndex(0)), Some(PieceStatus::Missing));
        assert_eq!(p.availability(PieceIndex(0)), 1);
        assert!(p.pick(peer(1), now).is_empty());
        assert_eq!(p.pick(peer(2), now), idx(&[0]));
    }

    #[test]
    fn expired_request_returns_to_missing_and_is_picked_again() {
        let mut p = picker(1, 1);
        p.add_peer(peer(1), Bitfield::full(1)).unwrap();
        p.add_peer(peer(2), Bitfield::full(1)).unwrap();
        let t0 = Instant::now();
        p.pick(peer(1), t0);
        assert!(p.expire(t0 + TIMEOUT - Duration::from_millis(1)).is_empty());
        assert_eq!(p.expire(t0 + TIMEOUT), vec![(peer(1), PieceIndex(0))]);
        assert_eq!(p.status(PieceIndex(0)), Some(PieceStatus::Missing));
        assert_eq!(p.outstanding(&peer(1)), 0);
        assert_eq!(p.pick(peer(2), t0 + TIMEOUT), idx(&[0]));
    }

    #[test]
    fn expire_keeps_a_later_duplicate() {
        let mut p = picker(1, 1);
        p.add_peer(peer(1), Bitfield::full(1)).unwrap();
        p.add_peer(peer(2), Bitfield::full(1)).unwrap();
        let t0 = Instant::now();
        p.pick(peer(1), t0);
        p.pick(peer(2), t0 + Duration::from_secs(5));
        assert_eq!(p.expire(t0 + TIMEOUT), vec![(peer(1), PieceIndex(0))]);
        assert_eq!(p.status(PieceIndex(0)), Some(PieceStatus::Requested(1)));
    }

    #[test]
    fn removed_peer_releases_its_requests_and_availability() {
        let mut p = picker(3, 3);
        p.add_peer(peer(1), Bitfield::full(3)).unwrap();
        p.add_peer(peer(2), bits(3, &[0])).unwrap();
        let now = Instant::now();
        assert_eq!(p.pick(peer(1), now).len(), 3);
        p.pick(peer(2), now); // endgame duplicate of 0
        let mut released = p.remove_peer(&peer(1));
        released.sort();
        assert_eq!(released, idx(&[1, 2]));
        assert_eq!(p.status(PieceIndex(0)), Some(PieceStatus::Requested(1)));
        assert_eq!(p.availability(PieceIndex(1)), 0);
        assert!(p.remove_peer(&peer(1)).is_empty());
    }

    #[test]
    fn out_of_range_events_are_errors_not_panics() {
        let mut p = picker(2, 1);
        p.add_peer(peer(1), Bitfield::full(2)).unwrap();
        let bad = PieceIndex(2);
        assert!(p.piece_verified(peer(1), bad).is_err());
        assert!(p.piece_failed(peer(1), bad).is_err());
        assert!(p.request_refused(peer(1), bad).is_err());
    }

    #[test]
    fn downloads_everything_from_several_peers() {
        let n = 50;
        let mut p = picker(n, 3);
        for k in 1..=4 {
            p.add_peer(peer(k), Bitfield::full(n)).unwrap();
        }
        let now = Instant::now();
        for _round in 0..1000 {
            if p.is_complete() {
                break;
            }
            for k in 1..=4 {
                for i in p.pick(peer(k), now) {
                    p.piece_verified(peer(k), i).unwrap();
                }
            }
        }
        assert!(p.is_complete());
        assert!((1..=4).all(|k| p.outstanding(&peer(k)) == 0));
    }

    #[derive(Clone, Debug)]
    enum Event {
        AddPeer(u8, Vec<bool>),
        Announce(u8, u32),
        Remove(u8),
        Pick(u8),
        Verified(u8, u32),
        Failed(u8, u32),
        Refused(u8, u32),
        Expire(u64),
    }

    fn arb_event(n: u32) -> impl proptest::strategy::Strategy<Value = Event> {
        use proptest::prelude::*;
        let k = 1u8..5;
        let i = 0..n + 1;
        prop_oneof![
            (
                k.clone(),
                proptest::collection::vec(any::<bool>(), n as usize)
            )
                .prop_map(|(k, b)| Event::AddPeer(k, b)),
            (k.clone(), i.clone()).prop_map(|(k, i)| Event::Announce(k, i)),
            k.clone().prop_map(Event::Remove),
            k.clone().prop_map(Event::Pick),
            k.clone().prop_map(Event::Pick),
            (k.clone(), i.clone()).prop_map(|(k, i)| Event::Verified(k, i)),
            (k.clone(), i.clone()).prop_map(|(k, i)| Event::Failed(k, i)),
            (k, i).prop_map(|(k, i)| Event::Refused(k, i)),
            (0u64..15).prop_map(Event::Expire),
        ]
    }

    /// The invariants the module docs promise, checked after every event.
    fn check_invariants(p: &PiecePicker) {
        let mut outstanding: HashMap<PeerId, u32> = HashMap::new();
        for (i, s) in p.pieces.iter().enumerate() {
            let index = PieceIndex(i as u32);
            assert_eq!(p.have.get(index), matches!(s, PieceState::Have));
            if let PieceState::Requested(reqs) = s {
                assert!(!reqs.is_empty(), "piece {i} requested from nobody");
                let peers: HashSet<PeerId> = reqs.iter().map(|r| r.peer).collect();
                assert_eq!(peers.len(), reqs.len(), "piece {i} asked twice of one peer");
                for r in reqs {
                    assert!(p.peers.contains_key(&r.peer), "request to a removed peer");
                    *outstanding.entry(r.peer).or_default() += 1;
                }
            }
            let avail = p.peers.values().filter(|v| v.bitfield.get(index)).count() as u32;
            assert_eq!(p.availability[i], avail, "availability of piece {i}");
        }
        for (id, v) in &p.peers {
            let want = outstanding.get(id).copied().unwrap_or(0);
            assert_eq!(v.outstanding, want, "outstanding count of {id}");
            assert!(v.outstanding <= p.config.pipeline_limit);
        }
    }

    proptest::proptest! {
        #[test]
        fn invariants_hold_under_any_event_sequence(
            events in proptest::collection::vec(arb_event(6), 0..60)
        ) {
            let mut p = picker(6, 2);
            let t0 = Instant::now();
            let mut now = t0;
            for e in events {
                match e {
                    Event::AddPeer(k, b) => {
                        let ones: Vec<u32> = (0..6).filter(|&i| b[i as usize]).collect();
                        p.add_peer(peer(k), bits(6, &ones)).unwrap();
                    }
                    Event::Announce(k, i) => { let _ = p.peer_announced(peer(k), PieceIndex(i)); }
                    Event::Remove(k) => { p.remove_peer(&peer(k)); }
                    Event::Pick(k) => {
                        for i in p.pick(peer(k), now) {
                            proptest::prop_assert!(!p.have.get(i));
                        }
                    }
                    Event::Verified(k, i) => { let _ = p.piece_verified(peer(k), PieceIndex(i)); }
                    Event::Failed(k, i) => { let _ = p.piece_failed(peer(k), PieceIndex(i)); }
                    Event::Refused(k, i) => { let _ = p.request_refused(peer(k), PieceIndex(i)); }
                    Event::Expire(s) => {
                        now += Duration::from_secs(s);
                        p.expire(now);
                    }
                }
                check_invariants(&p);
            }
        }
    }

    proptest::proptest! {
        /// Liveness: when the peers together have every piece and answer honestly, picking and
        /// verifying always finishes, whatever the bitfields, pipeline limit and seed.
        #[test]
        fn honest_peers_covering_every_piece_always_finish(
            n in 1u32..40,
            limit in 1u32..5,
            seed in proptest::prelude::any::<u64>(),
            masks in proptest::collection::vec(proptest::prelude::any::<u64>(), 1..5),
        ) {
            let mut p = PiecePicker::with_seed(Bitfield::empty(n), config(limit), seed);
            let mut covered = Bitfield::empty(n);
            for (k, mask) in masks.iter().enumerate() {
                let ones: Vec<u32> = (0..n).filter(|i| mask & (1 << i) != 0).collect();
                for &i in &ones {
                    covered.set(PieceIndex(i), true);
                }
                p.add_peer(peer(k as u8), bits(n, &ones)).unwrap();
            }
            // The last peer fills the gaps, so every piece is available somewhere.
            let gaps: Vec<u32> = (0..n).filter(|&i| !covered.get(PieceIndex(i))).collect();
            p.add_peer(peer(99), bits(n, &gaps)).unwrap();
            let now = Instant::now();
            for _round in 0..=n {
                for k in (0..masks.len() as u8).chain([99]) {
                    for i in p.pick(peer(k), now) {
                        p.piece_verified(peer(k), i).unwrap();
                    }
                }
            }
            proptest::prop_assert!(p.is_complete());
        }
    }

    impl PiecePicker {
        fn pieces_requested_from(&self, peer: &PeerId) -> Vec<PieceIndex> {
            self.pieces
                .iter()
                .enumerate()
                .filter(|(_, s)| matches!(s, PieceState::Requested(r) if r.iter().any(|r| r.peer == *peer)))
                .map(|(i, _)| PieceIndex(i as u32))
                .collect()
        }
    }
}
