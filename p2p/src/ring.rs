//! Which origins own a blob: rendezvous (highest random weight) hashing over the ring's hosts.
//!
//! Each host scores each digest with a hash of both; the owners are the highest scorers. Unlike
//! a consistent-hash circle there are no virtual nodes to tune, and a host joining or leaving
//! moves only the blobs it gains or loses: the relative order of every other host is unchanged.
//!
//! Health is an input, not state: the caller passes a predicate (from the active or passive
//! health filter), so the ring stays a pure function of its host list.

use std::cmp::Reverse;

use sha2::{Digest as _, Sha256};
use shoal_config::HostPort;
use shoal_registry::Digest;

use crate::error::RingError;

/// The members of a cluster (origins or trackers) and the rendezvous hash over them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashRing {
    /// Sorted and without duplicates, so the ring's answers do not depend on list order.
    hosts: Vec<HostPort>,
}

/// A host's weight for a key: the first eight bytes of SHA-256 over the key and the host. The
/// fields are length-prefixed so no two (key, host) pairs hash the same bytes.
fn score(key: &[u8], host: &HostPort) -> u64 {
    let mut h = Sha256::new();
    h.update((key.len() as u32).to_be_bytes());
    h.update(key);
    h.update((host.host().len() as u32).to_be_bytes());
    h.update(host.host().as_bytes());
    h.update(host.port().to_be_bytes());
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out[..8]);
    u64::from_be_bytes(first)
}

impl HashRing {
    /// A ring over `hosts`; at least one is needed, so the ring can always name an owner.
    pub fn new(hosts: impl IntoIterator<Item = HostPort>) -> Result<Self, RingError> {
        let mut hosts: Vec<HostPort> = hosts.into_iter().collect();
        hosts.sort();
        hosts.dedup();
        if hosts.is_empty() {
            return Err(RingError::NoHosts);
        }
        Ok(HashRing { hosts })
    }

    /// The members, sorted.
    pub fn hosts(&self) -> &[HostPort] {
        &self.hosts
    }

    /// Whether `host` is a member (an origin checks this before accepting a blob it does not own).
    pub fn contains(&self, host: &HostPort) -> bool {
        self.hosts.binary_search(host).is_ok()
    }

    /// Every member, highest score for `digest` first. Scores are computed once per host, then
    /// sorted; ties (a 2^-64 chance) fall back to host order so the answer is still total.
    pub fn ranked(&self, digest: &Digest) -> Vec<&HostPort> {
        let key = digest.to_string();
        let mut scored: Vec<(u64, &HostPort)> = self
            .hosts
            .iter()
            .map(|h| (score(key.as_bytes(), h), h))
            .collect();
        scored.sort_by_key(|&(s, h)| (Reverse(s), h));
        scored.into_iter().map(|(_, h)| h).collect()
    }

    /// The `max_replica` hosts that own `digest` regardless of health: where it is stored and
    /// replicated to.
    pub fn replica_set(&self, digest: &Digest, max_replica: usize) -> Vec<&HostPort> {
        let mut ranked = self.ranked(digest);
        ranked.truncate(max_replica.max(1));
        ranked
    }

    /// Where to send a request for `digest` now, best first: the healthy members of its replica
    /// set. If every replica is unhealthy, the next healthy host in score order; if every host
    /// is unhealthy, the first owner anyway. Never empty (Kraken's `Locations` contract), so a
    /// caller always has somewhere to try.
    pub fn owners(
        &self,
        digest: &Digest,
        max_replica: usize,
        healthy: impl Fn(&HostPort) -> bool,
    ) -> Vec<&HostPort> {
        let ranked = self.ranked(digest);
        let replicas = max_replica.max(1);
        let mut owners: Vec<&HostPort> = ranked
            .iter()
            .take(replicas)
            .copied()
            .filter(|h| healthy(h))
            .collect();
        if owners.is_empty() {
            let fallback = ranked
                .iter()
                .skip(replicas)
                .find(|h| healthy(h))
                .unwrap_or(&ranked[0]);
            owners.push(fallback);
        }
        owners
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn host(n: u16) -> HostPort {
        HostPort::new(format!("origin{n}"), 15002)
    }

    fn ring(n: u16) -> HashRing {
        HashRing::new((0..n).map(host)).unwrap()
    }

    fn key(i: u32) -> Digest {
        Digest::sha256_of(&i.to_be_bytes())
    }

    #[test]
    fn an_empty_ring_is_refused() {
        assert_eq!(HashRing::new([]), Err(RingError::NoHosts));
    }

    #[test]
    fn order_and_duplicates_of_the_host_list_do_not_matter() {
        let a = HashRing::new([host(1), host(2), host(3)]).unwrap();
        let b = HashRing::new([host(3), host(1), host(2), host(1)]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.ranked(&key(5)), b.ranked(&key(5)));
        assert!(a.contains(&host(2)));
        assert!(!a.contains(&host(4)));
    }

    #[test]
    fn the_port_is_part_of_the_identity() {
        let r = HashRing::new([HostPort::new("o", 1), HostPort::new("o", 2)]).unwrap();
        assert_eq!(r.hosts().len(), 2);
        let firsts: std::collections::HashSet<_> =
            (0..64).map(|i| r.ranked(&key(i))[0].port()).collect();
        assert_eq!(firsts.len(), 2);
    }

    #[test]
    fn replica_set_is_the_top_scorers() {
        let r = ring(5);
        let d = key(1);
        assert_eq!(r.replica_set(&d, 2), r.ranked(&d)[..2].to_vec());
        assert_eq!(r.replica_set(&d, 10).len(), 5);
        assert_eq!(r.replica_set(&d, 0).len(), 1);
    }

    #[test]
    fn owners_skip_unhealthy_replicas_in_score_order() {
        let r = ring(5);
        let d = key(2);
        let ranked = r.ranked(&d);
        let down = ranked[0].clone();
        let owners = r.owners(&d, 3, |h| *h != down);
        assert_eq!(owners, vec![ranked[1], ranked[2]]);
    }

    #[test]
    fn owners_fall_back_to_the_next_healthy_host() {
        let r = ring(5);
        let d = key(3);
        let ranked = r.ranked(&d);
        let up = ranked[3].clone();
        assert_eq!(r.owners(&d, 2, |h| *h == up), vec![ranked[3]]);
    }

    #[test]
    fn owners_fall_back_to_the_first_owner_when_all_are_down() {
        let r = ring(4);
        let d = key(4);
        assert_eq!(r.owners(&d, 2, |_| false), vec![r.ranked(&d)[0]]);
    }

    #[test]
    fn spreads_keys_roughly_evenly() {
        let r = ring(4);
        let mut counts: HashMap<&HostPort, u32> = HashMap::new();
        for i in 0..4000 {
            *counts.entry(r.ranked(&key(i))[0]).or_default() += 1;
        }
        // SHA-256 is deterministic, so this is a fixed check, not a flaky statistical one.
        assert_eq!(counts.len(), 4);
        assert!(
            counts.values().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
    }

    proptest! {
        #[test]
        fn adding_a_host_moves_only_keys_it_now_owns(n in 1u16..12, k in any::<u32>(), replicas in 1usize..4) {
            let before = ring(n);
            let after = ring(n + 1);
            let new = host(n);
            let d = key(k);
            // The others keep their relative order ...
            let rest: Vec<&HostPort> = after.ranked(&d).into_iter().filter(|h| **h != new).collect();
            prop_assert_eq!(rest, before.ranked(&d));
            // ... so a replica set changes only by taking in the new host.
            let old: Vec<&HostPort> = before.replica_set(&d, replicas);
            let now: Vec<&HostPort> = after.replica_set(&d, replicas);
            if now.contains(&&new) {
                let kept: Vec<&HostPort> = now.into_iter().filter(|h| **h != new).collect();
                prop_assert_eq!(&kept[..], &old[..kept.len()]);
            } else {
                prop_assert_eq!(now, old);
            }
        }

        #[test]
        fn removing_a_host_moves_only_keys_it_owned(n in 2u16..12, gone in any::<u16>(), k in any::<u32>()) {
            let gone = host(gone % n);
            let before = ring(n);
            let after = HashRing::new(before.hosts().iter().filter(|h| **h != gone).cloned()).unwrap();
            let d = key(k);
            let first = before.ranked(&d)[0];
            if *first != gone {
                prop_assert_eq!(after.ranked(&d)[0], first);
            }
        }

        #[test]
        fn owners_are_never_empty_and_never_exceed_the_replica_count(
            n in 1u16..10, k in any::<u32>(), replicas in 0usize..5, mask in any::<u16>()
        ) {
            let r = ring(n);
            let owners = r.owners(&key(k), replicas, |h| {
                let i: u16 = h.host().trim_start_matches("origin").parse().unwrap();
                mask & (1 << i) != 0
            });
            prop_assert!(!owners.is_empty());
            prop_assert!(owners.len() <= replicas.max(1));
        }
    }
}
