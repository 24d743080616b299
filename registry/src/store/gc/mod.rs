//! The local store's garbage collector: mark and sweep, while pushes and pulls go on.
//!
//! **Mark.** In each repository the live manifests are the tagged ones, the children of live
//! indexes, and the referrers of live manifests (a manifest whose `subject` is live), to a
//! fixpoint; a live manifest keeps its config and layers. A manifest that is neither tagged
//! nor reachable that way is dead: this is distribution's `--delete-untagged`, since an image
//! pushed by digest alone and never tagged or referenced is what a tag delete leaves behind.
//! Content younger than the grace period is a root too, whatever refers to it: a push uploads
//! its layers, then its config, then its manifest, and the collector must not sweep the first
//! before the last arrives.
//!
//! **Sweep.** Revision links, referrer entries and `_layers` links of dead content older than
//! the grace period go first, then every blob file that no repository links any more and no
//! live manifest names. One digest at a time, under the fence's exclusive side (`fence.rs`),
//! after re-checking that no write named it since the mark began. A blob file deleted here is
//! then deleted from the backing, if the policy says so.
//!
//! Upload sessions (`uploads/`) and scratch files (`tmp/`) are never touched: an upload is
//! not content until it commits, and its commit takes the fence like any other write.
//!
//! With a backing, the local store is a cache of it, and the collector trusts the cache to
//! know every tag the backing holds: it is the only writer of its backends (as `shoal dev`'s
//! own `fs` backend under the data directory is). A live manifest that the cache lacks is read
//! from the backing; when that fails, its repository's layer links stay and nothing is
//! deleted from the backing in that run.

mod mark;
mod sweep;

use std::fmt;
use std::io;
use std::time::{Duration, Instant, SystemTime};

use super::LocalStore;
use super::fence::Tracking;
use crate::backing::Backing;

/// What a collection may sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcPolicy {
    /// Content (blob files, links, manifests) modified more recently than this is kept, and
    /// so is everything it references. It must exceed the longest push: from a push's first
    /// layer upload (or its first check that a layer exists) to its manifest.
    pub grace: Duration,
    /// Whether blobs deleted locally are deleted from the backing too. Off when other
    /// writers share the backends, whose images the local store cannot see.
    pub delete_from_backing: bool,
}

impl Default for GcPolicy {
    fn default() -> Self {
        GcPolicy {
            grace: Duration::from_secs(3600),
            delete_from_backing: true,
        }
    }
}

/// What one collection did, for the log and for tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Repositories looked at.
    pub repositories: usize,
    /// Dead manifests unlinked from a repository (revision links removed).
    pub manifests_removed: usize,
    /// Referrer entries removed with their manifests (or left over from earlier deletes).
    pub referrers_removed: usize,
    /// `_layers` links of dead blobs removed.
    pub layer_links_removed: usize,
    /// Blob files deleted (manifests included).
    pub blobs_deleted: usize,
    /// Bytes of those files.
    pub bytes_freed: u64,
    /// Dead content kept because it is younger than the grace period.
    pub kept_young: usize,
    /// Dead content kept because a write named it while the collection ran.
    pub kept_in_use: usize,
    /// Backing copies deleted (one per repository the blob was deleted from).
    pub backing_deleted: usize,
    /// Backing deletes that failed; the copies stay there, and the failure is logged.
    pub backing_failed: usize,
    /// Why nothing was deleted from the backing, when it was not.
    pub backing_skipped: Option<String>,
    /// Marks of clients' deletes dropped because the content left the backing too.
    pub deleted_marks_dropped: usize,
    /// Files that could not be read or removed (logged); they are tried again next time.
    pub errors: usize,
    /// How long the collection took.
    pub elapsed: Duration,
}

impl fmt::Display for GcReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} repositories: {} manifests, {} referrers and {} layer links removed; \
             {} blobs deleted, {} bytes freed; kept {} young and {} in use; \
             backing: {} deleted, {} failed; {} delete marks dropped",
            self.repositories,
            self.manifests_removed,
            self.referrers_removed,
            self.layer_links_removed,
            self.blobs_deleted,
            self.bytes_freed,
            self.kept_young,
            self.kept_in_use,
            self.backing_deleted,
            self.backing_failed,
            self.deleted_marks_dropped,
        )?;
        if let Some(why) = &self.backing_skipped {
            write!(f, " (skipped: {why})")?;
        }
        write!(f, "; {} errors in {:?}", self.errors, self.elapsed)
    }
}

/// A finished mark, holding the collection open: writes are tracked until it is swept or
/// dropped. Splitting mark from sweep lets a test put writes in between.
pub struct Marked<'a> {
    store: &'a LocalStore,
    backing: Option<&'a dyn Backing>,
    _one: tokio::sync::MutexGuard<'a, ()>,
    _tracking: Tracking<'a>,
    plan: mark::Plan,
    report: GcReport,
    started: Instant,
}

impl LocalStore {
    /// Collects garbage in the store alone (no backing): mark, then sweep.
    pub async fn collect_garbage(&self, policy: &GcPolicy) -> io::Result<GcReport> {
        Ok(self.mark(policy, None).await?.sweep().await)
    }

    /// The mark phase. `backing` supplies live manifests the store lacks and, when the
    /// policy says so, receives the deletes of the sweep. One collection runs at a time; a
    /// second waits for the first.
    pub async fn mark<'a>(
        &'a self,
        policy: &GcPolicy,
        backing: Option<&'a dyn Backing>,
    ) -> io::Result<Marked<'a>> {
        let started = Instant::now();
        let one = self.collecting.lock().await;
        let tracking = self.fence.track().await;
        // Taken after tracking starts: whatever is written later is tracked, or young.
        let cutoff = SystemTime::now()
            .checked_sub(policy.grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut report = GcReport::default();
        let plan = mark::mark(self, cutoff, backing, &mut report).await?;
        let backing = backing.filter(|_| policy.delete_from_backing);
        if backing.is_some()
            && report.backing_skipped.is_none()
            && let Some(why) = &plan.incomplete
        {
            report.backing_skipped = Some(why.clone());
        }
        Ok(Marked {
            store: self,
            backing,
            _one: one,
            _tracking: tracking,
            plan,
            report,
            started,
        })
    }
}

impl LocalStore {
    /// Drops a deleted manifest's bytes from the in-memory cache.
    fn forget_cached_manifest(&self, d: &crate::digest::Digest) {
        let mut cache = self.manifest_cache.lock().expect("cache lock");
        if let Some(bytes) = cache.entries.remove(d) {
            cache.bytes -= bytes.len();
        }
    }
}

impl Marked<'_> {
    /// The sweep phase; ends the collection.
    pub async fn sweep(self) -> GcReport {
        let Marked {
            store,
            backing,
            plan,
            mut report,
            started,
            ..
        } = self;
        let backing = backing.filter(|_| report.backing_skipped.is_none());
        sweep::sweep(store, plan, backing, &mut report).await;
        // The sweep removed revision links behind the in-memory index.
        store.index.clear();
        report.elapsed = started.elapsed();
        report
    }
}

impl crate::api::Registry {
    /// Collects garbage in the local store; blobs it deletes are deleted from the backing
    /// too when `policy.delete_from_backing`.
    pub async fn collect_garbage(&self, policy: &GcPolicy) -> io::Result<GcReport> {
        let marked = self.store.mark(policy, self.backing.as_deref()).await?;
        Ok(marked.sweep().await)
    }
}
