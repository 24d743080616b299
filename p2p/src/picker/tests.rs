//! Tests of the picker module, kept beside it so the module file stays about one concept.

use super::*;
use std::collections::HashSet;

const TIMEOUT: Duration = Duration::from_secs(10);
const WINDOW: u32 = 24;

fn config(pipeline_limit: u32) -> PickerConfig {
    PickerConfig {
        pipeline_limit,
        request_timeout: TIMEOUT,
        follow_window: WINDOW,
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
    // Not before the requests stall (a quarter of the timeout while no piece has arrived).
    assert!(
        p.pick(peer(2), now + TIMEOUT / 4 - Duration::from_millis(1))
            .is_empty()
    );
    let mut dup = p.pick(peer(2), now + TIMEOUT / 4);
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
fn endgame_asks_at_most_two_peers_for_a_piece() {
    let mut p = picker(1, 1);
    for n in 1..=4 {
        p.add_peer(peer(n), Bitfield::full(1)).unwrap();
    }
    let now = Instant::now();
    assert_eq!(p.pick(peer(1), now), idx(&[0]));
    let later = now + TIMEOUT;
    assert_eq!(p.pick(peer(2), later), idx(&[0]));
    assert!(p.pick(peer(3), later + TIMEOUT).is_empty());
    assert!(p.pick(peer(4), later + TIMEOUT).is_empty());
    assert_eq!(p.status(PieceIndex(0)), Some(PieceStatus::Requested(2)));
}

#[test]
fn the_stall_follows_how_long_pieces_take() {
    let mut p = picker(4, 1);
    p.add_peer(peer(1), Bitfield::full(4)).unwrap();
    p.add_peer(peer(2), Bitfield::full(4)).unwrap();
    assert_eq!(p.stall_after(), TIMEOUT / 4);
    let t0 = Instant::now();
    // Pieces take 300 ms from request to verified: a request stalls after 600 ms.
    for i in 0..2 {
        let at = t0 + Duration::from_millis(300) * i;
        let picked = p.pick(peer(1), at);
        assert_eq!(picked.len(), 1);
        p.piece_verified_at(peer(1), picked[0], at + Duration::from_millis(300))
            .unwrap();
    }
    assert_eq!(p.stall_after(), Duration::from_millis(600));
    let t1 = t0 + Duration::from_secs(1);
    let a = p.pick(peer(1), t1);
    let b = p.pick(peer(2), t1);
    assert_eq!((a.len(), b.len()), (1, 1));
    assert!(p.in_endgame());
    // Peer 2's request is fresh; peer 1's piece is asked of peer 2 only once peer 1 stalled,
    // and peer 2 has no free slot until its own piece arrives.
    p.piece_verified_at(peer(2), b[0], t1 + Duration::from_millis(300))
        .unwrap();
    assert!(p.pick(peer(2), t1 + Duration::from_millis(599)).is_empty());
    assert_eq!(p.pick(peer(2), t1 + Duration::from_millis(600)), a);
    // Very fast pieces still leave a request MIN_STALL before it is duplicated.
    let mut fast = picker(1, 1);
    fast.add_peer(peer(1), Bitfield::full(1)).unwrap();
    fast.pick(peer(1), t0);
    fast.piece_verified_at(peer(1), PieceIndex(0), t0).unwrap();
    assert_eq!(fast.stall_after(), MIN_STALL);
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
    p.pick(peer(2), now + TIMEOUT / 4);
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
    p.pick(peer(2), now + TIMEOUT / 4); // endgame duplicate of 0
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
            .filter(
                |(_, s)| matches!(s, PieceState::Requested(r) if r.iter().any(|r| r.peer == *peer)),
            )
            .map(|(i, _)| PieceIndex(i as u32))
            .collect()
    }
}

#[test]
fn an_origin_is_asked_only_for_pieces_nobody_else_has_until_they_stall_twice_as_long() {
    let mut p = picker(4, 4);
    let (origin, agent) = (peer(1), peer(2));
    p.add_peer(origin, bits(4, &[0, 1, 2, 3])).unwrap();
    p.add_peer(agent, bits(4, &[0, 1])).unwrap();
    let now = Instant::now();
    // One origin connected: pieces 0 and 1 are at the agent too, so only 2 and 3.
    let mut from_origin = p.pick_capped(origin, now, 1, |_| true);
    from_origin.sort();
    assert_eq!(from_origin, idx(&[2, 3]));
    let mut from_agent = p.pick(agent, now);
    from_agent.sort();
    assert_eq!(from_agent, idx(&[0, 1]));
    // Everything is requested now: endgame lets the origin duplicate the agent's pieces once
    // they have stalled twice as long as another agent would wait.
    assert!(p.in_endgame());
    assert!(
        p.pick_capped(origin, now + TIMEOUT / 4, 1, |_| true)
            .is_empty()
    );
    let mut duplicates = p.pick_capped(origin, now + TIMEOUT / 2, 1, |_| true);
    duplicates.sort();
    assert_eq!(duplicates, idx(&[0, 1]));
}

#[test]
fn a_capped_pick_skips_what_the_filter_refuses_until_endgame() {
    let mut p = picker(4, 4);
    p.add_peer(peer(1), bits(4, &[0, 1, 2, 3])).unwrap();
    let now = Instant::now();
    let mut odd = p.pick_capped(peer(1), now, u32::MAX, |i| i.0 % 2 == 1);
    odd.sort();
    assert_eq!(odd, idx(&[1, 3]));
}

#[test]
fn a_followed_download_picks_the_front_among_equally_rare_pieces() {
    let now = Instant::now();
    let all: Vec<u32> = (0..64).collect();
    let mut p = picker(64, 4);
    p.add_peer(peer(1), bits(64, &all)).unwrap();
    p.prefer_front();
    assert_eq!(p.pick(peer(1), now), idx(&[0, 1, 2, 3]));
    p.piece_verified(peer(1), PieceIndex(2)).unwrap();
    assert_eq!(p.pick(peer(1), now), idx(&[4]));

    // Rarity still comes first within the window: a piece only one of two peers has beats a
    // common front piece; past the window, the window's pieces come first.
    let without = |gone: u32| -> Vec<u32> { all.iter().copied().filter(|&i| i != gone).collect() };
    let mut p = picker(64, 1);
    p.add_peer(peer(1), bits(64, &all)).unwrap();
    p.add_peer(peer(2), bits(64, &without(20))).unwrap();
    p.prefer_front();
    assert_eq!(p.pick(peer(1), now), idx(&[20]));
    let mut p = picker(64, 1);
    p.add_peer(peer(1), bits(64, &all)).unwrap();
    p.add_peer(peer(2), bits(64, &without(63))).unwrap();
    p.prefer_front();
    let picked = p.pick(peer(1), now);
    assert!(picked[0].0 < WINDOW, "{picked:?}");
}

#[test]
fn without_a_follower_the_picks_are_spread_over_the_blob() {
    let now = Instant::now();
    let all: Vec<u32> = (0..64).collect();
    let mut p = picker(64, 16);
    p.add_peer(peer(1), bits(64, &all)).unwrap();
    let picked = p.pick(peer(1), now);
    assert!(
        picked != idx(&(0..16).collect::<Vec<_>>()),
        "random tie-breaks picked {picked:?}"
    );
}

#[test]
fn a_followed_download_picks_in_order_only_while_every_peer_is_complete() {
    let now = Instant::now();
    let all: Vec<u32> = (0..64).collect();
    let origin = peer(9);
    let mut p = picker(64, 4);
    p.add_peer(origin, bits(64, &all)).unwrap();
    p.prefer_front();
    assert_eq!(p.pick_capped(origin, now, 1, |_| true), idx(&[0, 1, 2, 3]));

    // Another leecher connected: the picks spread at random again.
    let mut p = picker(64, 16);
    p.add_peer(origin, bits(64, &all)).unwrap();
    p.add_peer(peer(1), bits(64, &[40])).unwrap();
    p.prefer_front();
    let picked = p.pick_capped(origin, now, 1, |_| true);
    assert_eq!(picked.len(), 16);
    assert_ne!(picked, idx(&(0..16).collect::<Vec<_>>()));
    // It leaves (or completes): in order again.
    p.remove_peer(&peer(1));
    for i in picked {
        p.piece_verified(origin, i).unwrap();
    }
    let lowest: Vec<PieceIndex> = (0..64)
        .map(PieceIndex)
        .filter(|i| p.status(*i) == Some(PieceStatus::Missing))
        .take(16)
        .collect();
    assert_eq!(p.pick_capped(origin, now, 1, |_| true), lowest);
}

#[test]
fn a_followed_download_in_a_swarm_picks_at_random_within_a_window_from_its_front() {
    let now = Instant::now();
    let all: Vec<u32> = (0..256).collect();
    let origin = peer(9);
    let mut p = picker(256, 16);
    p.add_peer(origin, bits(256, &all)).unwrap();
    p.add_peer(peer(1), bits(256, &all)).unwrap();
    p.add_peer(peer(2), bits(256, &[3])).unwrap();
    p.prefer_front();
    let first = p.pick(peer(1), now);
    assert_eq!(first.len(), 16);
    assert!(first.iter().all(|i| i.0 < WINDOW), "{first:?}");
    assert_ne!(first, idx(&(0..16).collect::<Vec<_>>()), "random within it");
    // Rarest first still rules inside the window: piece 3 is held by two peers of three.
    assert!(!first.contains(&PieceIndex(3)), "{first:?}");
    // The window holds 24 - 16 = 8 more: the next peer gets those, then pieces past it.
    let second = p.pick(origin, now);
    let (inside, outside): (Vec<PieceIndex>, Vec<PieceIndex>) =
        second.iter().partition(|i| i.0 < WINDOW);
    assert_eq!(inside.len(), (WINDOW - 16) as usize, "{second:?}");
    assert_eq!(outside.len(), 8, "a full window leaves no connection idle");
    // The window moves with the first piece not held.
    for i in first.iter().chain(&inside) {
        p.piece_verified(peer(1), *i).unwrap();
    }
    for i in outside {
        p.request_refused(origin, i).unwrap();
    }
    let third = p.pick(peer(1), now);
    assert!(
        third.iter().all(|i| (WINDOW..2 * WINDOW).contains(&i.0)),
        "{third:?}"
    );
}

#[test]
fn a_download_nobody_follows_spreads_its_picks_over_the_blob() {
    let now = Instant::now();
    let all: Vec<u32> = (0..256).collect();
    let mut p = picker(256, 16);
    p.add_peer(peer(1), bits(256, &all)).unwrap();
    p.add_peer(peer(2), bits(256, &[3])).unwrap();
    let picked = p.pick(peer(1), now);
    assert!(picked.iter().any(|i| i.0 >= WINDOW), "{picked:?}");
}

#[test]
fn pieces_past_the_known_hashes_are_not_picked_until_more_are_known() {
    let mut p = picker(6, 10);
    p.set_pickable(2);
    p.add_peer(peer(1), Bitfield::full(6)).unwrap();
    let now = Instant::now();
    let mut first = p.pick(peer(1), now);
    first.sort();
    assert_eq!(first, idx(&[0, 1]));
    // Requests outstanding in the prefix: no endgame while the rest is unknown.
    assert!(!p.in_endgame());
    assert!(p.pick(peer(1), now).is_empty());
    p.set_pickable(6);
    let mut rest = p.pick(peer(1), now);
    rest.sort();
    assert_eq!(rest, idx(&[2, 3, 4, 5]));
}

#[test]
fn a_followed_download_picks_in_order_from_an_origin_that_holds_only_a_front() {
    let now = Instant::now();
    let front: Vec<u32> = (0..40).collect();
    let origin = peer(9);
    // An origin still fetching the blob holds its first 40 pieces.
    let mut p = picker(64, 8);
    p.set_pickable(40);
    p.add_peer(origin, bits(64, &front)).unwrap();
    p.prefer_front();
    let picked = p.pick_capped(origin, now, 1, |_| true);
    assert_ne!(
        picked,
        idx(&(0..8).collect::<Vec<_>>()),
        "not yet known as an origin"
    );
    let mut p = picker(64, 8);
    p.set_pickable(40);
    p.add_peer(origin, bits(64, &front)).unwrap();
    p.mark_origin(origin);
    p.prefer_front();
    assert_eq!(
        p.pick_capped(origin, now, 1, |_| true),
        idx(&(0..8).collect::<Vec<_>>())
    );
    // A bitfield replaced later keeps the mark: the next picks are the next front.
    for i in 0..8 {
        p.piece_verified(origin, PieceIndex(i)).unwrap();
    }
    p.add_peer(origin, bits(64, &(0..50).collect::<Vec<_>>()))
        .unwrap();
    p.set_pickable(50);
    assert_eq!(
        p.pick_capped(origin, now, 1, |_| true),
        idx(&(8..16).collect::<Vec<_>>())
    );
}
