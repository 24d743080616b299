//! The purge of abandoned upload sessions in `shoal dev` (`uploads:` in its YAML): once at
//! start, so what a `kill -9` during a push left behind goes as soon as it is old enough, and
//! then every `uploads.interval`.

use std::sync::Arc;

use shoal_config::UploadsConfig;
use shoal_p2p::{StopOnDrop, Tasks};
use shoal_registry::Registry;

/// The periodic purge; stops when dropped or [`UploadPurger::stop`]ped.
pub(crate) struct UploadPurger {
    tasks: Tasks,
    _stop: StopOnDrop,
}

impl UploadPurger {
    /// Purges now, then every `uploads.interval`, the sessions idle for `uploads.max_age`.
    pub(crate) fn start(registry: Arc<Registry>, config: &UploadsConfig) -> UploadPurger {
        let tasks = Tasks::new();
        let purger = UploadPurger {
            _stop: StopOnDrop(tasks.clone()),
            tasks: tasks.clone(),
        };
        let (max_age, period) = (config.max_age.get(), config.interval.get());
        tracing::info!(?max_age, interval = ?period, "purging abandoned upload sessions");
        tasks.spawn(async move {
            // The first tick is immediate: the purge at start.
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                match registry.store.purge_uploads(max_age).await {
                    Ok(r) if r.purged > 0 || r.kept_busy > 0 => tracing::info!(
                        purged = r.purged,
                        bytes_freed = r.bytes_freed,
                        kept_busy = r.kept_busy,
                        "purged abandoned upload sessions"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(%e, "purging upload sessions failed"),
                }
            }
        });
        purger
    }

    /// Stops the purge and waits for it.
    pub(crate) async fn stop(self) {
        self.tasks.shutdown().await;
    }
}
