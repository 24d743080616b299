//! An origin's lends: a piece it just sent to one agent is "lent" to it, and other agents
//! asking for it meanwhile are refused, to get it from that agent instead, so each piece leaves
//! the origin about once.
//!
//! A lend lasts while the piece travels to its holder and then [`LEND_WINDOW`] more, for the
//! refused agents to fetch it there: it is timed from the holder's announce that it has the
//! piece (agents announce written pieces to their origins too), not from the request. A holder
//! whose ingress is saturated may take seconds to receive a piece; timed from the request, the
//! lend ran out first and the origin sent the piece again. A holder that never announces (an
//! older agent, or one whose request was lost) frees its lend once a request would have timed
//! out (`limit`); one that leaves frees its lends at once.
//!
//! Time is passed in, so the tests drive it by hand.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::peer_id::PeerId;
use crate::piece::PieceIndex;

/// How long a lend lasts after its holder announced the piece: the time the refused agents
/// have to fetch it from the holder before the origin serves it again.
pub(crate) const LEND_WINDOW: Duration = Duration::from_secs(3);

struct Lend {
    holder: PeerId,
    /// When the piece was sent, or when the holder announced it.
    since: Instant,
    announced: bool,
    /// Who was refused the piece meanwhile, to be told when the origin serves it again.
    refused: HashSet<PeerId>,
}

/// Whether a piece may go out to the peer that asked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Send it: it is now lent to that peer.
    Send,
    /// Refuse: it is lent to another peer, which the asker should get it from.
    Refuse,
}

/// The pieces an origin has lent, by index.
pub(crate) struct Lends {
    /// How long a lend waits for its holder's announce.
    limit: Duration,
    lent: HashMap<PieceIndex, Lend>,
}

impl Lends {
    /// Lends that wait at most `limit` for a holder's announce (the agents' request timeout).
    pub(crate) fn new(limit: Duration) -> Self {
        Lends {
            limit: limit.max(LEND_WINDOW),
            lent: HashMap::new(),
        }
    }

    fn running(&self, lend: &Lend, now: Instant) -> bool {
        let length = if lend.announced {
            LEND_WINDOW
        } else {
            self.limit
        };
        now.saturating_duration_since(lend.since) < length
    }

    /// `peer` asks for `index`; `connected` says whether a holder is still connected.
    pub(crate) fn ask(
        &mut self,
        index: PieceIndex,
        peer: PeerId,
        now: Instant,
        connected: impl Fn(&PeerId) -> bool,
    ) -> Decision {
        if let Some(lend) = self.lent.get(&index)
            && lend.holder != peer
            && connected(&lend.holder)
            && self.running(lend, now)
        {
            if let Some(lend) = self.lent.get_mut(&index) {
                lend.refused.insert(peer);
            }
            return Decision::Refuse;
        }
        // A new lend keeps the peers refused so far: they hear when it ends.
        let mut refused = self
            .lent
            .remove(&index)
            .map(|l| l.refused)
            .unwrap_or_default();
        refused.remove(&peer);
        self.lent.insert(
            index,
            Lend {
                holder: peer,
                since: now,
                announced: false,
                refused,
            },
        );
        Decision::Send
    }

    /// `peer` announced it has `index`: if it holds the lend, the window starts now.
    pub(crate) fn announced(&mut self, index: PieceIndex, peer: PeerId, now: Instant) {
        if let Some(lend) = self.lent.get_mut(&index)
            && lend.holder == peer
            && !lend.announced
        {
            lend.announced = true;
            lend.since = now;
        }
    }

    /// Ends the lends that ran out, returning each piece with the peers refused it.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<(PieceIndex, HashSet<PeerId>)> {
        let over: Vec<PieceIndex> = self
            .lent
            .iter()
            .filter(|(_, l)| !self.running(l, now))
            .map(|(i, _)| *i)
            .collect();
        self.end(over)
    }

    /// Ends the lends `peer` held (it left), as [`expire`](Lends::expire) does.
    pub(crate) fn holder_left(&mut self, peer: &PeerId) -> Vec<(PieceIndex, HashSet<PeerId>)> {
        let held: Vec<PieceIndex> = self
            .lent
            .iter()
            .filter(|(_, l)| l.holder == *peer)
            .map(|(i, _)| *i)
            .collect();
        self.end(held)
    }

    fn end(&mut self, indexes: Vec<PieceIndex>) -> Vec<(PieceIndex, HashSet<PeerId>)> {
        indexes
            .into_iter()
            .filter_map(|i| self.lent.remove(&i).map(|l| (i, l.refused)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: Duration = Duration::from_secs(16);

    fn peers() -> (PeerId, PeerId, PeerId) {
        (PeerId::random(), PeerId::random(), PeerId::random())
    }

    const P: PieceIndex = PieceIndex(7);

    #[test]
    fn a_lent_piece_is_refused_to_others_until_its_holder_announced_it_and_the_window_passed() {
        let (a, b, c) = peers();
        let t0 = Instant::now();
        let mut lends = Lends::new(LIMIT);
        let all = |_: &PeerId| true;
        assert_eq!(lends.ask(P, a, t0, all), Decision::Send);
        // Long past the window, the holder has not announced the piece: still lent.
        let late = t0 + LEND_WINDOW * 3;
        assert_eq!(lends.ask(P, b, late, all), Decision::Refuse);
        assert!(lends.expire(late).is_empty());
        // Announced: the others have the window to fetch it from the holder.
        lends.announced(P, a, late);
        assert_eq!(
            lends.ask(P, c, late + LEND_WINDOW / 2, all),
            Decision::Refuse
        );
        assert!(lends.expire(late + LEND_WINDOW / 2).is_empty());
        let ended = lends.expire(late + LEND_WINDOW);
        assert_eq!(ended, vec![(P, HashSet::from([b, c]))]);
        assert_eq!(lends.ask(P, b, late + LEND_WINDOW, all), Decision::Send);
    }

    #[test]
    fn a_holder_that_never_announces_frees_the_piece_at_the_limit() {
        let (a, b, _) = peers();
        let t0 = Instant::now();
        let mut lends = Lends::new(LIMIT);
        let all = |_: &PeerId| true;
        lends.ask(P, a, t0, all);
        assert_eq!(lends.ask(P, b, t0 + LIMIT / 2, all), Decision::Refuse);
        assert!(
            lends
                .expire(t0 + LIMIT - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(lends.expire(t0 + LIMIT), vec![(P, HashSet::from([b]))]);
    }

    #[test]
    fn only_the_holders_announce_starts_the_window() {
        let (a, b, c) = peers();
        let t0 = Instant::now();
        let mut lends = Lends::new(LIMIT);
        let all = |_: &PeerId| true;
        lends.ask(P, a, t0, all);
        // Another agent announcing the piece (it got it from the holder) changes nothing.
        lends.announced(P, c, t0);
        assert_eq!(lends.ask(P, b, t0 + LEND_WINDOW, all), Decision::Refuse);
        // A second announce from the holder does not restart the window.
        lends.announced(P, a, t0 + LEND_WINDOW);
        lends.announced(P, a, t0 + LEND_WINDOW * 2);
        assert_eq!(lends.expire(t0 + LEND_WINDOW * 2).len(), 1);
    }

    #[test]
    fn a_holder_that_left_or_asks_again_is_not_waited_for() {
        let (a, b, _) = peers();
        let t0 = Instant::now();
        let mut lends = Lends::new(LIMIT);
        lends.ask(P, a, t0, |_| true);
        // The holder asks again (its request timed out): it is sent the piece again.
        assert_eq!(lends.ask(P, a, t0, |_| true), Decision::Send);
        assert_eq!(lends.ask(P, b, t0, |_| true), Decision::Refuse);
        // Its connection is gone: the piece goes to whoever asks next.
        let gone = |p: &PeerId| *p != a;
        assert_eq!(lends.ask(P, b, t0, gone), Decision::Send);
        // And when it leaves while holding a lend, the refused hear at once.
        let mut lends = Lends::new(LIMIT);
        lends.ask(P, a, t0, |_| true);
        lends.ask(P, b, t0, |_| true);
        assert_eq!(lends.holder_left(&a), vec![(P, HashSet::from([b]))]);
        assert!(lends.expire(t0 + LIMIT).is_empty());
    }
}
