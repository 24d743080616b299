//! The sweep phase: the plan's deletions, one digest at a time under the fence, skipping
//! whatever a write named since the mark began, then the backing's copies.

use std::collections::{HashMap, HashSet};
use std::io;
use std::path::Path;

use super::GcReport;
use super::mark::{Plan, Refs};
use crate::backing::Backing;
use crate::digest::Digest;
use crate::name::RepoName;
use crate::store::LocalStore;

pub(super) async fn sweep(
    store: &LocalStore,
    plan: Plan,
    backing: Option<&dyn Backing>,
    report: &mut GcReport,
) {
    let Plan {
        steps,
        refs,
        repos,
        mut deleted_marks,
        ..
    } = plan;
    let mut protected = HashSet::new();
    for (d, step) in steps {
        let permit = store.fence.sweep().await;
        for touched in permit.drain_touched() {
            protect(&refs, &mut protected, touched);
        }
        if protected.contains(&d) {
            report.kept_in_use += 1;
            continue;
        }
        let mut failed = false;
        let mut note = |what: &str, path: &Path, res: io::Result<bool>| match res {
            Ok(removed) => removed,
            Err(e) => {
                tracing::warn!(path = %path.display(), %e, "gc: could not remove {what}");
                failed = true;
                false
            }
        };
        for (_, path) in &step.revisions {
            if note("a revision link", path, remove(path).await) {
                report.manifests_removed += 1;
            }
        }
        for path in &step.referrers {
            if note("a referrer entry", path, remove(path).await) {
                report.referrers_removed += 1;
                if let Some(subject_dir) = path.parent() {
                    // Only succeeds once the subject has no referrers left.
                    let _ = tokio::fs::remove_dir(subject_dir).await;
                }
            }
        }
        for (_, path) in &step.layers {
            if note("a layer link", path, remove(path).await) {
                report.layer_links_removed += 1;
            }
        }
        let mut deleting = None;
        if step.file && !failed {
            let path = store.blob_path(&d);
            let size = tokio::fs::metadata(&path).await.map(|m| m.len());
            match (size, remove(&path).await) {
                (Ok(size), Ok(true)) => {
                    report.blobs_deleted += 1;
                    report.bytes_freed += size;
                    store.forget_cached_manifest(&d);
                    if backing.is_some() {
                        deleting = Some(permit.deleting(&d));
                    }
                }
                (_, Ok(_)) => {}
                (_, Err(e)) => {
                    tracing::warn!(path = %path.display(), %e, "gc: could not remove a blob");
                    failed = true;
                }
            }
        }
        report.errors += usize::from(failed);
        drop(permit);
        if let (Some(backing), Some(_deleting)) = (backing, &deleting) {
            // The repositories it was unlinked from; a blob no repository linked any more may
            // be in any of them.
            let mut targets: Vec<&RepoName> = step
                .revisions
                .iter()
                .chain(&step.layers)
                .map(|(r, _)| r)
                .collect();
            if targets.is_empty() {
                targets = repos.iter().collect();
            }
            targets.sort();
            targets.dedup();
            if delete_from_backing(backing, &targets, &d).await {
                report.backing_deleted += 1;
                // Nothing is left to fetch back into those repositories.
                for (repo, mark) in deleted_marks.remove(&d).unwrap_or_default() {
                    if targets.contains(&&repo) && remove(&mark).await.unwrap_or(false) {
                        report.deleted_marks_dropped += 1;
                    }
                }
            } else {
                report.backing_failed += 1;
            }
        }
        // Writes of `d` waiting for the backing delete go on from here.
        drop(deleting);
    }
}

/// Deletes `d` from the backing for each repository; true when every delete succeeded.
async fn delete_from_backing(backing: &dyn Backing, repos: &[&RepoName], d: &Digest) -> bool {
    let mut ok = true;
    for repo in repos {
        if let Err(e) = backing.delete_blob(repo, d).await {
            tracing::warn!(%repo, digest = %d, error = %e.message,
                "gc: deleting a blob from the backing failed; its copy there stays");
            ok = false;
        }
    }
    ok
}

/// Adds `d` and everything it references, transitively, to `protected`.
fn protect(refs: &HashMap<Digest, Refs>, protected: &mut HashSet<Digest>, d: Digest) {
    let mut queue = vec![d];
    while let Some(d) = queue.pop() {
        if let Some(r) = refs.get(&d)
            && !protected.contains(&d)
        {
            queue.extend(r.children.iter().chain(&r.blobs).cloned());
        }
        protected.insert(d);
    }
}

/// Removes a file; `false` when it was already gone.
async fn remove(path: &Path) -> io::Result<bool> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
