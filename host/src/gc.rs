//! The local store's garbage collector in the binary: the periodic collection `shoal dev` runs
//! (`gc:` in its YAML), the one-shot `shoal gc`, and the lock on the data directory that keeps
//! two processes from sharing one store.
//!
//! Within one process the store's fence keeps pushes and the collector apart; across processes
//! nothing would, so `shoal dev` and `shoal gc` both take `<data_dir>/cache.lock` (an advisory
//! lock the kernel drops when the process dies, `kill -9` included) and refuse to run when
//! another process holds it.

use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use shoal_config::GcConfig;
use shoal_p2p::{StopOnDrop, Tasks};
use shoal_registry::{GcPolicy, GcReport, Registry};

use crate::cli::{DevArgs, GcArgs};

/// Exclusive use of a data directory's local store, until dropped.
#[derive(Debug)]
pub(crate) struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    /// Locks `data_dir`, or says which directory another shoal process is using.
    pub(crate) fn acquire(data_dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
        let path = data_dir.join("cache.lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {
                // The holder's pid, for the message of whoever is refused next. Written under
                // the lock; the lock, not the file's content, is what keeps them out.
                let mut file = file;
                file.set_len(0)
                    .and_then(|()| write!(file, "{}", std::process::id()))
                    .with_context(|| format!("writing the pid into {}", path.display()))?;
                Ok(DataDirLock { _file: file })
            }
            Err(TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path)
                    .ok()
                    .and_then(|pid| pid.trim().parse::<u32>().ok())
                    .map_or_else(|| "another process".to_owned(), |pid| format!("pid {pid}"));
                anyhow::bail!(
                    "{} is in use by another shoal dev or shoal gc ({holder} holds the lock on \
                     {}); a running shoal dev collects garbage itself every gc.interval",
                    data_dir.display(),
                    path.display()
                )
            }
            Err(TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("locking {}", path.display()))
            }
        }
    }
}

/// The collector's policy from the `gc:` block.
pub(crate) fn policy(config: &GcConfig) -> GcPolicy {
    GcPolicy {
        grace: config.grace.get(),
        delete_from_backing: config.backends,
    }
}

/// The periodic collection of a `shoal dev`; stops when dropped or [`Collector::stop`]ped.
pub(crate) struct Collector {
    tasks: Tasks,
    _stop: StopOnDrop,
}

impl Collector {
    /// Collects every `gc.interval`, the first time one interval after start; nothing when
    /// the interval is 0.
    pub(crate) fn start(registry: Arc<Registry>, config: &GcConfig) -> Collector {
        let tasks = Tasks::new();
        let collector = Collector {
            _stop: StopOnDrop(tasks.clone()),
            tasks: tasks.clone(),
        };
        if config.interval.is_zero() {
            tracing::info!("garbage collection is off (gc.interval: 0s)");
            return collector;
        }
        let period = config.interval.get();
        let policy = policy(config);
        tracing::info!(
            interval = ?period,
            grace = ?policy.grace,
            backends = policy.delete_from_backing,
            "collecting garbage periodically"
        );
        // A collection stopped at shutdown is resumed by the next one; what it unlinked but
        // did not delete yet is found again as unlinked. Only a backing copy whose local file
        // went just before the stop stays behind.
        tasks.spawn(async move {
            let start = tokio::time::Instant::now() + period;
            let mut ticker = tokio::time::interval_at(start, period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                match registry.collect_garbage(&policy).await {
                    Ok(report) => log_report(&report),
                    Err(e) => tracing::warn!(%e, "garbage collection failed; nothing was deleted"),
                }
            }
        });
        collector
    }

    /// Stops the collection and waits for it.
    pub(crate) async fn stop(self) {
        self.tasks.shutdown().await;
    }
}

/// One info line per collection.
fn log_report(r: &GcReport) {
    tracing::info!(
        repositories = r.repositories,
        manifests_removed = r.manifests_removed,
        referrers_removed = r.referrers_removed,
        layer_links_removed = r.layer_links_removed,
        blobs_deleted = r.blobs_deleted,
        bytes_freed = r.bytes_freed,
        kept_young = r.kept_young,
        kept_in_use = r.kept_in_use,
        backing_deleted = r.backing_deleted,
        backing_failed = r.backing_failed,
        backing_skipped = r.backing_skipped.as_deref().unwrap_or(""),
        deleted_marks_dropped = r.deleted_marks_dropped,
        errors = r.errors,
        elapsed = ?r.elapsed,
        "garbage collected"
    );
}

/// `shoal gc`: one collection of a data directory no `shoal dev` is using, with the backends
/// and `gc:` settings of `--config`; prints the report.
pub async fn run(args: GcArgs) -> anyhow::Result<()> {
    let dev = DevArgs {
        listen: None,
        data_dir: args.data_dir,
        config: args.config,
    };
    let mut opened = crate::dev::open_for_gc(dev).await?;
    if let Some(grace) = args.grace {
        opened.gc.grace = grace;
    }
    let data_dir = opened.data_dir.display();
    // Upload sessions nobody wrote to for `uploads.max_age` are abandoned (no `shoal dev`
    // holds the directory, so none is in use).
    let purge = opened
        .registry
        .store
        .purge_uploads(opened.uploads.max_age.get())
        .await
        .with_context(|| format!("purging upload sessions in {data_dir}"))?;
    let report = opened
        .registry
        .collect_garbage(&policy(&opened.gc))
        .await
        .with_context(|| format!("collecting garbage in {data_dir}"))?;
    log_report(&report);
    println!(
        "upload sessions: {} purged ({} bytes), older than uploads.max_age {}",
        purge.purged, purge.bytes_freed, opened.uploads.max_age
    );
    println!("{report}");
    Ok(())
}
