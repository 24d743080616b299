//! The order the tracker hands peers out in.

use std::collections::HashMap;

use rand::Rng;
use rand::seq::SliceRandom;

use super::PeerInfo;
use crate::peer_id::PeerId;

/// The classes peers are handed out in, best first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PeerClass {
    /// Agents with the whole blob: seeding from them spares the origins.
    Complete,
    /// Origins: always complete, but a shared resource, so after agents that can seed.
    Origin,
    /// Agents still downloading: they have some pieces, and their bitfields say which.
    Incomplete,
}

impl PeerClass {
    /// The class of an announce.
    pub fn of(peer: &PeerInfo) -> Self {
        if peer.origin {
            PeerClass::Origin
        } else if peer.complete {
            PeerClass::Complete
        } else {
            PeerClass::Incomplete
        }
    }
}

/// Merges the live windows' peer sets, oldest window first: a peer's newest announce wins (its
/// address may have changed), and `complete` sticks, since a peer never loses a blob it
/// finished while it keeps announcing.
pub fn merge<W, P>(windows: W) -> Vec<PeerInfo>
where
    W: IntoIterator<Item = P>,
    P: IntoIterator<Item = PeerInfo>,
{
    let mut merged: HashMap<PeerId, PeerInfo> = HashMap::new();
    for window in windows {
        for mut peer in window {
            if merged.get(&peer.peer_id).is_some_and(|p| p.complete) {
                peer.complete = true;
            }
            merged.insert(peer.peer_id, peer);
        }
    }
    merged.into_values().collect()
}

/// Orders peers complete first, then origins, then incomplete, shuffled within each class so
/// load spreads across seeders, and keeps at most `limit`.
pub fn hand_out(mut peers: Vec<PeerInfo>, limit: usize, rng: &mut impl Rng) -> Vec<PeerInfo> {
    peers.shuffle(rng);
    peers.sort_by_key(PeerClass::of);
    peers.truncate(limit);
    peers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer_id::PeerId;
    use rand::SeedableRng;
    use rand::rngs::StdRng;
    use std::collections::HashSet;
    use std::net::{IpAddr, Ipv6Addr};

    fn peer(n: u8, complete: bool, origin: bool) -> PeerInfo {
        PeerInfo {
            peer_id: PeerId([n; 20]),
            ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
            port: 7000 + u16::from(n),
            complete,
            origin,
        }
    }

    fn mixed() -> Vec<PeerInfo> {
        (0..12)
            .map(|n| match n % 3 {
                0 => peer(n, false, false),
                1 => peer(n, true, true),
                _ => peer(n, true, false),
            })
            .collect()
    }

    #[test]
    fn complete_then_origins_then_incomplete() {
        let out = hand_out(mixed(), 100, &mut StdRng::seed_from_u64(1));
        let classes: Vec<PeerClass> = out.iter().map(PeerClass::of).collect();
        let mut sorted = classes.clone();
        sorted.sort();
        assert_eq!(classes, sorted);
        assert_eq!(classes.first(), Some(&PeerClass::Complete));
        assert_eq!(classes.last(), Some(&PeerClass::Incomplete));
        assert_eq!(out.len(), 12);
    }

    #[test]
    fn limit_keeps_the_best_classes() {
        let out = hand_out(mixed(), 5, &mut StdRng::seed_from_u64(2));
        assert_eq!(out.len(), 5);
        assert!(
            out[..4]
                .iter()
                .all(|p| PeerClass::of(p) == PeerClass::Complete)
        );
        assert_eq!(PeerClass::of(&out[4]), PeerClass::Origin);
        assert!(hand_out(mixed(), 0, &mut StdRng::seed_from_u64(2)).is_empty());
    }

    #[test]
    fn shuffles_within_a_class() {
        let orders: HashSet<Vec<PeerId>> = (0..16)
            .map(|seed| {
                hand_out(mixed(), 4, &mut StdRng::seed_from_u64(seed))
                    .into_iter()
                    .map(|p| p.peer_id)
                    .collect()
            })
            .collect();
        assert!(orders.len() > 1);
    }
}
