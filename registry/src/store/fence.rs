//! The fence between writes that create references (a blob committed and linked, a manifest
//! checked and recorded, a tag set) and the garbage collector's sweep.
//!
//! The invariant it keeps: **the sweep never deletes content that a write committed after the
//! collector's mark began, nor content such a write references.** Three parts make it hold:
//!
//! - Every write that creates a reference holds a [`CommitPermit`] (the shared side of one
//!   store-wide lock) from its existence checks to its last rename, and names, when it takes
//!   the permit, every digest it creates or references. While a collection runs, those
//!   digests are recorded as *touched*.
//! - The sweep deletes one digest at a time under the exclusive side ([`SweepPermit`]). Before
//!   each deletion it drains the touched set and skips anything reachable from it. So a write
//!   either finished before the deletion (and its digests are touched, hence kept) or starts
//!   after it (and its existence check finds the content gone: `BLOB_UNKNOWN` /
//!   `MANIFEST_BLOB_UNKNOWN`, never a manifest that points at nothing).
//! - Tracking starts under the exclusive side, so no write is half done when the mark starts
//!   reading: whatever the mark cannot see was committed with tracking on.
//!
//! A blob deleted locally is then deleted from the backing, outside the exclusive lock (a
//! backend call can be slow). Until that finishes the digest is *being deleted*, and a write
//! that would create it again waits: otherwise a push could find the backing's copy still
//! there, skip writing it through, and then lose it to the delete.

use std::collections::HashSet;
use std::sync::Mutex;

use tokio::sync::{Notify, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::digest::Digest;

/// See the module documentation.
#[derive(Default)]
pub(crate) struct Fence {
    lock: RwLock<()>,
    state: Mutex<State>,
    /// Woken each time a digest stops being deleted.
    deleted: Notify,
}

#[derive(Default)]
struct State {
    /// `Some` while a collection runs: digests that writes named since it started.
    touched: Option<HashSet<Digest>>,
    /// Digests deleted locally whose backing copies are being deleted.
    deleting: HashSet<Digest>,
}

/// Held by a write from its checks to its last rename.
pub(crate) struct CommitPermit<'a> {
    _shared: RwLockReadGuard<'a, ()>,
}

/// Held by the sweep while it deletes one digest.
pub(crate) struct SweepPermit<'a> {
    fence: &'a Fence,
    _exclusive: RwLockWriteGuard<'a, ()>,
}

/// Collection in progress: writes are tracked until this is dropped.
pub(crate) struct Tracking<'a> {
    fence: &'a Fence,
}

/// A digest whose backing copies are being deleted; writes of it wait until this is dropped.
pub(crate) struct Deleting<'a> {
    fence: &'a Fence,
    digest: Digest,
}

impl Fence {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a pair of sets, consistent after every statement: a panic elsewhere
        // cannot leave it half updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until no sweep is deleting any of `digests`, then admits a write naming them.
    pub(crate) async fn commit<'d>(
        &self,
        digests: impl IntoIterator<Item = &'d Digest> + Clone,
    ) -> CommitPermit<'_> {
        loop {
            // Registered before the check, so a wake-up between check and wait is not lost.
            let woken = self.deleted.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let shared = self.lock.read().await;
            {
                let mut state = self.state();
                if !digests
                    .clone()
                    .into_iter()
                    .any(|d| state.deleting.contains(d))
                {
                    if let Some(touched) = &mut state.touched {
                        touched.extend(digests.into_iter().cloned());
                    }
                    return CommitPermit { _shared: shared };
                }
            }
            drop(shared);
            woken.await;
        }
    }

    /// Starts recording touched digests, once every write in progress has finished.
    pub(crate) async fn track(&self) -> Tracking<'_> {
        let _exclusive = self.lock.write().await;
        self.state().touched = Some(HashSet::new());
        Tracking { fence: self }
    }

    /// Waits for every write in progress to finish and keeps new ones out.
    pub(crate) async fn sweep(&self) -> SweepPermit<'_> {
        SweepPermit {
            fence: self,
            _exclusive: self.lock.write().await,
        }
    }
}

impl<'a> SweepPermit<'a> {
    /// The digests writes named since the last call.
    pub(crate) fn drain_touched(&self) -> Vec<Digest> {
        match &mut self.fence.state().touched {
            Some(touched) => touched.drain().collect(),
            None => Vec::new(),
        }
    }

    /// Marks `digest` as being deleted from the backing until the result is dropped.
    pub(crate) fn deleting(&self, digest: &Digest) -> Deleting<'a> {
        self.fence.state().deleting.insert(digest.clone());
        Deleting {
            fence: self.fence,
            digest: digest.clone(),
        }
    }
}

impl Drop for Deleting<'_> {
    fn drop(&mut self) {
        self.fence.state().deleting.remove(&self.digest);
        self.fence.deleted.notify_waiters();
    }
}

impl Drop for Tracking<'_> {
    fn drop(&mut self) {
        self.fence.state().touched = None;
    }
}
