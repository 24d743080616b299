//! [`Tasks`]: the background tasks one host owns (torrent owners, connection readers and
//! writers, dials, announces, a role's monitors and copies). Every task is spawned through it,
//! so stopping a host stops all of them: nothing outlives its owner, and a test can take a
//! whole origin away mid-transfer inside one process.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A set of tasks that stop together; cheap to clone, every clone is the same set.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Tasks {
    /// An empty set.
    pub fn new() -> Self {
        Tasks::default()
    }

    /// Runs `task` until it ends or the set is stopped, whichever comes first.
    pub fn spawn<F>(&self, task: F)
    where
        F: Future + Send + 'static,
        F::Output: Send,
    {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            cancel.run_until_cancelled(task).await;
        });
    }

    /// A child set: stopped with this one, or on its own.
    pub fn child(&self) -> Tasks {
        Tasks {
            tracker: self.tracker.clone(),
            cancel: self.cancel.child_token(),
        }
    }

    /// Completes once the set is stopped.
    pub async fn stopped(&self) {
        self.cancel.cancelled().await;
    }

    /// Whether the set was stopped.
    pub fn is_stopped(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Stops every task (each is dropped at its next await) without waiting.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Stops every task and waits until all have ended.
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Tasks still running (metrics, tests).
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Whether no task is running.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }
}

/// Stops a set when dropped: the guard a service holds so that an aborted service stops its
/// tasks too.
#[derive(Debug)]
pub struct StopOnDrop(pub Tasks);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_stops_tasks_that_would_run_forever() {
        let tasks = Tasks::new();
        for _ in 0..3 {
            tasks.spawn(std::future::pending::<()>());
        }
        assert_eq!(tasks.len(), 3);
        tasks.shutdown().await;
        assert!(tasks.is_empty());
    }

    #[tokio::test]
    async fn a_dropped_guard_stops_the_set_and_a_child_stops_alone() {
        let tasks = Tasks::new();
        let child = tasks.child();
        child.spawn(std::future::pending::<()>());
        child.stop();
        assert!(!tasks.is_stopped());
        drop(StopOnDrop(tasks.clone()));
        assert!(tasks.is_stopped() && child.is_stopped());
        tasks.shutdown().await;
        assert!(tasks.is_empty());
    }
}
