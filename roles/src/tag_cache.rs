//! The build-index's tag cache (`tag_cache.tti`, `tag_cache.capacity`), as a synchronous state
//! machine over an injected clock.
//!
//! An entry is fresh for `tti` after the backend last confirmed it (a read, or a write through
//! this build-index), however often it is used meanwhile: a tag changed behind the
//! build-index's back, in a read-only upstream (`registry_tag`), is seen within `tti`. A stale
//! entry is revalidated by the next request; while the backend does not answer it is still
//! what the build-index knows, and is served as such. A write or delete through this
//! build-index updates its entry at once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use shoal_registry::{Digest, TagKey};

/// What the cache knows about a tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cached {
    /// Confirmed within `tti`: serve it.
    Fresh(Digest),
    /// Confirmed longer ago: ask the backend, and serve this only if it does not answer.
    Stale(Digest),
    /// Not cached.
    Missing,
}

#[derive(Debug)]
struct Entry {
    digest: Digest,
    /// When the backend last said this (when its read started, or its write finished).
    confirmed: Instant,
    /// When a request last used it, for eviction.
    used: Instant,
}

/// Tags and the digests the backend last gave for them, bounded by `capacity` entries.
#[derive(Debug)]
pub struct TagCache {
    entries: HashMap<TagKey, Entry>,
    tti: Duration,
    capacity: usize,
}

impl TagCache {
    /// An empty cache whose entries are fresh for `tti`, holding at most `capacity` (at least 1).
    pub fn new(tti: Duration, capacity: usize) -> Self {
        TagCache {
            entries: HashMap::new(),
            tti,
            capacity: capacity.max(1),
        }
    }

    /// What the cache holds for `key` at `now`; a hit counts as a use.
    pub fn get(&mut self, key: &TagKey, now: Instant) -> Cached {
        let Some(e) = self.entries.get_mut(key) else {
            return Cached::Missing;
        };
        e.used = now;
        if now.saturating_duration_since(e.confirmed) < self.tti {
            Cached::Fresh(e.digest.clone())
        } else {
            Cached::Stale(e.digest.clone())
        }
    }

    /// Records that the backend said `key` is `digest` as of `at` (when a read started, or a
    /// write finished); ignored when the entry was confirmed later than that, so a slow read
    /// never undoes a write that finished while it ran.
    pub fn confirm(&mut self, key: TagKey, digest: Digest, at: Instant) {
        if let Some(e) = self.entries.get_mut(&key) {
            if e.confirmed <= at {
                e.digest = digest;
                e.confirmed = at;
                e.used = e.used.max(at);
            }
            return;
        }
        if self.entries.len() >= self.capacity {
            self.evict(at);
        }
        self.entries.insert(
            key,
            Entry {
                digest,
                confirmed: at,
                used: at,
            },
        );
    }

    /// Drops `key` (the backend has no such tag, or it was deleted).
    pub fn forget(&mut self, key: &TagKey) {
        self.entries.remove(key);
    }

    /// Entries held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is cached.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Makes room for one entry: drops every entry unused for `tti`, then, if still full, the
    /// least recently used one.
    fn evict(&mut self, now: Instant) {
        let tti = self.tti;
        self.entries
            .retain(|_, e| now.saturating_duration_since(e.used) < tti);
        if self.entries.len() >= self.capacity
            && let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
        {
            self.entries.remove(&oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTI: Duration = Duration::from_secs(60);

    fn key(tag: &str) -> TagKey {
        format!("team/app:{tag}").parse().unwrap()
    }

    fn digest(n: u8) -> Digest {
        Digest::sha256_of(&[n])
    }

    #[test]
    fn an_entry_is_fresh_for_tti_after_it_was_confirmed_however_often_it_is_used() {
        let t0 = Instant::now();
        let mut cache = TagCache::new(TTI, 10);
        assert_eq!(cache.get(&key("a"), t0), Cached::Missing);
        cache.confirm(key("a"), digest(1), t0);
        for s in [1, 30, 59] {
            let now = t0 + Duration::from_secs(s);
            assert_eq!(cache.get(&key("a"), now), Cached::Fresh(digest(1)), "{s}s");
        }
        assert_eq!(cache.get(&key("a"), t0 + TTI), Cached::Stale(digest(1)));
        // Revalidated: fresh again for another tti.
        cache.confirm(key("a"), digest(2), t0 + TTI);
        assert_eq!(
            cache.get(&key("a"), t0 + TTI + Duration::from_secs(59)),
            Cached::Fresh(digest(2))
        );
    }

    #[test]
    fn a_read_that_started_before_a_write_finished_does_not_undo_it() {
        let t0 = Instant::now();
        let mut cache = TagCache::new(TTI, 10);
        let read_started = t0;
        cache.confirm(key("a"), digest(2), t0 + Duration::from_secs(1)); // the write
        cache.confirm(key("a"), digest(1), read_started); // the slow read
        assert_eq!(
            cache.get(&key("a"), t0 + Duration::from_secs(2)),
            Cached::Fresh(digest(2))
        );
    }

    #[test]
    fn forgetting_removes_the_entry() {
        let t0 = Instant::now();
        let mut cache = TagCache::new(TTI, 10);
        cache.confirm(key("a"), digest(1), t0);
        cache.forget(&key("a"));
        assert_eq!(cache.get(&key("a"), t0), Cached::Missing);
        assert!(cache.is_empty());
    }

    #[test]
    fn capacity_drops_the_idle_then_the_least_recently_used() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut cache = TagCache::new(TTI, 3);
        cache.confirm(key("a"), digest(1), t0);
        cache.confirm(key("b"), digest(2), t0 + s(1));
        cache.confirm(key("c"), digest(3), t0 + s(2));
        // `a` is used, so `b` is the least recently used.
        cache.get(&key("a"), t0 + s(3));
        cache.confirm(key("d"), digest(4), t0 + s(4));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&key("b"), t0 + s(5)), Cached::Missing);
        for k in ["a", "c", "d"] {
            assert_ne!(cache.get(&key(k), t0 + s(5)), Cached::Missing, "{k}");
        }
        // Long after: everything is idle, and one insert clears the idle ones.
        cache.confirm(key("e"), digest(5), t0 + s(5) + TTI);
        assert_eq!(cache.len(), 1);
    }
}
