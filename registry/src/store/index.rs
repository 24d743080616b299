//! What manifest GETs read on every request, kept in memory: the digest each tag points at and
//! the media type of each manifest a repository holds. The files stay the truth: an entry is
//! filled from them on a miss, and every change to them (a tag written or removed, a manifest
//! deleted, a garbage collection) drops the entries it touches after the files changed. Only
//! what exists is remembered; a lookup that finds nothing reads the files again.
//!
//! A reader that read a file before a change must not put what it read back after the change
//! dropped it: every drop advances an epoch, and a fill is kept only when the epoch is still
//! the one the reader saw before it read the file.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::digest::Digest;
use crate::name::RepoName;

/// Entries kept per map; past it the map starts over (a mirror with more live tags than this
/// reads some of them from disk again, nothing worse).
const MAX_ENTRIES: usize = 100_000;

/// Per repository, `K` → `V`; looked up without allocating.
struct PerRepo<K, V> {
    entries: usize,
    repos: HashMap<RepoName, HashMap<K, V>>,
}

impl<K, V> Default for PerRepo<K, V> {
    fn default() -> Self {
        PerRepo {
            entries: 0,
            repos: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq, V: Clone> PerRepo<K, V> {
    fn get<Q: Hash + Eq + ?Sized>(&self, repo: &RepoName, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
    {
        self.repos.get(repo)?.get(key).cloned()
    }

    fn insert(&mut self, repo: &RepoName, key: K, value: V) {
        if self.entries >= MAX_ENTRIES {
            self.repos.clear();
            self.entries = 0;
        }
        let map = self.repos.entry(repo.clone()).or_default();
        if map.insert(key, value).is_none() {
            self.entries += 1;
        }
    }

    fn remove<Q: Hash + Eq + ?Sized>(&mut self, repo: &RepoName, key: &Q)
    where
        K: Borrow<Q>,
    {
        if let Some(map) = self.repos.get_mut(repo)
            && map.remove(key).is_some()
        {
            self.entries -= 1;
        }
    }
}

/// The in-memory index of tags and manifest revisions.
#[derive(Default)]
pub(super) struct MetaIndex {
    tags: RwLock<PerRepo<String, Digest>>,
    revisions: RwLock<PerRepo<Digest, Arc<str>>>,
    /// Advanced by every drop, under the lock of the map it drops from.
    epoch: AtomicU64,
}

impl MetaIndex {
    /// The epoch to pass to a fill made from files read after this call.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The digest `tag` of `repo` points at, when known.
    pub(super) fn tag(&self, repo: &RepoName, tag: &str) -> Option<Digest> {
        self.tags
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(repo, tag)
    }

    /// Notes that `tag` of `repo` points at `d`, as its file said after `epoch` was taken.
    pub(super) fn fill_tag(&self, epoch: u64, repo: &RepoName, tag: &str, d: &Digest) {
        let mut tags = self.tags.write().unwrap_or_else(|e| e.into_inner());
        if self.epoch() == epoch {
            tags.insert(repo, tag.to_owned(), d.clone());
        }
    }

    /// Drops `tag` of `repo`, whose file was just written or removed.
    pub(super) fn forget_tag(&self, repo: &RepoName, tag: &str) {
        let mut tags = self.tags.write().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        tags.remove(repo, tag);
    }

    /// The media type of manifest `d` of `repo`, when known.
    pub(super) fn revision(&self, repo: &RepoName, d: &Digest) -> Option<Arc<str>> {
        self.revisions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(repo, d)
    }

    /// Notes that `repo` holds manifest `d` of `media_type`, as its revision link said after
    /// `epoch` was taken.
    pub(super) fn fill_revision(&self, epoch: u64, repo: &RepoName, d: &Digest, media_type: &str) {
        let mut revisions = self.revisions.write().unwrap_or_else(|e| e.into_inner());
        if self.epoch() == epoch {
            revisions.insert(repo, d.clone(), Arc::from(media_type));
        }
    }

    /// Drops manifest `d` of `repo`, whose revision link was just removed.
    pub(super) fn forget_revision(&self, repo: &RepoName, d: &Digest) {
        let mut revisions = self.revisions.write().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        revisions.remove(repo, d);
    }

    /// Drops everything (a garbage collection removed files behind the index).
    pub(super) fn clear(&self) {
        let mut tags = self.tags.write().unwrap_or_else(|e| e.into_inner());
        let mut revisions = self.revisions.write().unwrap_or_else(|e| e.into_inner());
        self.epoch.fetch_add(1, Ordering::AcqRel);
        *tags = PerRepo::default();
        *revisions = PerRepo::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_kept_forgotten_and_bounded() {
        let index = MetaIndex::default();
        let repo: RepoName = "team/app".parse().unwrap();
        let d = Digest::sha256_of(b"m");
        let seen = index.epoch();
        index.fill_tag(seen, &repo, "v1", &d);
        index.fill_revision(
            seen,
            &repo,
            &d,
            "application/vnd.oci.image.manifest.v1+json",
        );
        assert_eq!(index.tag(&repo, "v1"), Some(d.clone()));
        assert_eq!(index.tag(&"team/other".parse().unwrap(), "v1"), None);
        assert!(index.revision(&repo, &d).is_some());
        index.forget_tag(&repo, "v1");
        index.forget_revision(&repo, &d);
        assert_eq!(index.tag(&repo, "v1"), None);
        assert!(index.revision(&repo, &d).is_none());
        // A fill from files read before a drop is not kept.
        index.fill_tag(seen, &repo, "v1", &d);
        assert_eq!(index.tag(&repo, "v1"), None);
        let now = index.epoch();
        for i in 0..MAX_ENTRIES + 10 {
            index.fill_tag(now, &repo, &format!("t{i}"), &d);
        }
        let tags = index.tags.read().unwrap();
        assert!(tags.entries <= MAX_ENTRIES, "{} entries", tags.entries);
    }
}
