//! Per-host state for health policies, bounded so that a flood of host names cannot grow a
//! guest's memory without limit: when the table is full, the host observed least recently is
//! forgotten, which a policy must treat as "never observed".

use std::collections::HashMap;

/// At most `capacity` hosts, each with its state `S` and the order it was last touched in.
#[derive(Debug)]
pub struct HostTable<S> {
    capacity: usize,
    /// Bumped on every touch; an entry's stamp is its place in the recency order.
    clock: u64,
    entries: HashMap<String, (u64, S)>,
}

impl<S> HostTable<S> {
    /// An empty table that holds at most `capacity` hosts (at least one).
    pub fn new(capacity: usize) -> Self {
        HostTable {
            capacity: capacity.max(1),
            clock: 0,
            entries: HashMap::new(),
        }
    }

    /// The state of `host`, if it is tracked. Reading does not count as a touch.
    pub fn get(&self, host: &str) -> Option<&S> {
        self.entries.get(host).map(|(_, s)| s)
    }

    /// The state of `host`, marked as the most recently touched, if it is tracked.
    pub fn get_mut(&mut self, host: &str) -> Option<&mut S> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(host).map(|(stamp, s)| {
            *stamp = clock;
            s
        })
    }

    /// The state of `host`, made by `make` when it is not tracked yet, marked as the most
    /// recently touched. Adding a host to a full table first forgets the least recent one.
    pub fn entry(&mut self, host: &str, make: impl FnOnce() -> S) -> &mut S {
        self.clock += 1;
        let clock = self.clock;
        if !self.entries.contains_key(host) && self.entries.len() >= self.capacity {
            // O(capacity), only when a new host meets a full table; capacities are small.
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (stamp, _))| *stamp)
                .map(|(h, _)| h.clone());
            if let Some(oldest) = oldest {
                self.entries.remove(&oldest);
            }
        }
        let (stamp, state) = self
            .entries
            .entry(host.to_owned())
            .or_insert_with(|| (clock, make()));
        *stamp = clock;
        state
    }

    /// Forgets `host`.
    pub fn remove(&mut self, host: &str) {
        self.entries.remove(host);
    }

    /// Keeps only the hosts whose state passes `keep`.
    pub fn retain(&mut self, mut keep: impl FnMut(&S) -> bool) {
        self.entries.retain(|_, (_, s)| keep(s));
    }

    /// How many hosts are tracked.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no host is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// True when adding a new host would forget another.
    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_forgets_the_least_recently_touched_host() {
        let mut t = HostTable::new(2);
        *t.entry("a", || 0) += 1;
        *t.entry("b", || 0) += 1;
        // Touching `a` makes `b` the oldest.
        *t.get_mut("a").unwrap() += 1;
        assert!(t.is_full());
        *t.entry("c", || 0) += 1;
        assert_eq!(t.len(), 2);
        assert_eq!(t.get("a"), Some(&2));
        assert_eq!(t.get("b"), None, "the least recent host is forgotten");
        assert_eq!(t.get("c"), Some(&1));
    }

    #[test]
    fn a_flood_of_names_stays_within_capacity() {
        let mut t = HostTable::new(16);
        for i in 0..10_000 {
            t.entry(&format!("host-{i}"), || i);
        }
        assert_eq!(t.len(), 16);
        assert_eq!(t.get("host-9999"), Some(&9999));
        assert_eq!(t.get("host-0"), None);
    }

    #[test]
    fn reading_does_not_refresh_and_retain_prunes() {
        let mut t = HostTable::new(2);
        t.entry("a", || 1);
        t.entry("b", || 2);
        let _ = t.get("a");
        t.entry("c", || 3);
        assert_eq!(t.get("a"), None, "get is not a touch");
        t.retain(|v| *v != 3);
        assert_eq!(t.len(), 1);
        t.remove("b");
        assert!(t.is_empty());
    }
}
