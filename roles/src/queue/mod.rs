//! [`Queue`]: a durable job queue on disk, for work a role has promised and must not forget:
//! an origin's write-back of a pushed blob to its backend and its copies to the replica set,
//! a build-index's copies of tags to remote build-indexes. A job is acknowledged once its file
//! is on disk; it survives `kill -9` and is run again, with backoff, until it succeeds.
//!
//! # Layout
//!
//! ```text
//! <dir>/pending/<id>.json   a job to run: the job, failed attempts, next due time, last error
//! <dir>/failed/<id>.json    a job parked after its retries (logged as an error); still retried
//! <dir>/corrupt/<name>      a file found at open that is not a job, moved aside and logged
//! <dir>/tmp/                files being written; emptied at open
//! ```
//!
//! # Guarantees
//!
//! - [`Queue::push`] returns once the job file is written, fsynced, renamed into `pending/`
//!   and the folder fsynced: a crash after it returns keeps the job.
//! - At least once: a job file is removed after its job succeeded, so a crash in between runs
//!   it again; jobs are idempotent (a blob or a tag copied twice is the same blob or tag).
//! - Jobs with the same [`Job::key`] are one job: pushing again replaces the payload, resets the
//!   attempts and makes it due now. Two versions never run at once; one pushed while the older
//!   one runs runs after it, so the newest payload is the last one applied.
//! - Nothing is dropped silently: every failure is logged, parking is logged as an error with
//!   the job, and a parked job keeps its file in `failed/` and is retried every
//!   [`Policy::parked_every`] until it succeeds (Kraken's persisted retries never give up either).
//! - A job whose runner says it waits ([`Outcome::Wait`], e.g. its target is unhealthy) is
//!   tried again after [`Policy::delay`] without counting an attempt.
//!
//! Time: due times are kept as [`tokio::time::Instant`] in memory (tests drive them with
//! tokio's paused clock) and as wall-clock milliseconds in the file, read back at open.

mod disk;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Display;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::FutureExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use shoal_config::RetryConfig;
use shoal_p2p::Tasks;
use shoal_registry::Digest;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;

use disk::{Area, Dirs, Op, millis, until};
use state::{State, encode};

/// Longest wait between two retries of a pending job (the doubling stops there).
pub const MAX_DELAY: Duration = Duration::from_secs(5 * 60);

/// How often a parked job is retried.
pub const PARKED_EVERY: Duration = Duration::from_secs(30 * 60);

/// Jobs run at once by default; a slow one (a large blob to a slow backend) does not hold up
/// the rest.
pub const DEFAULT_WORKERS: usize = 8;

/// A unit of work a queue keeps on disk until it is done.
pub trait Job: Serialize + DeserializeOwned + Clone + Display + Send + Sync + 'static {
    /// Every [`Job::kind`] there is, so metrics list each (at zero too).
    const KINDS: &'static [&'static str];

    /// What kind of job this is (the `kind` label of the queue's metrics).
    fn kind(&self) -> &'static str;

    /// Jobs with the same key are the same job (see the module docs).
    fn key(&self) -> String;

    /// The blob this job reads from the piece store, which must stay there while the job
    /// exists ([`Queue::pins`]).
    fn pins(&self) -> Option<&Digest> {
        None
    }
}

/// How one attempt went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done: the job is removed.
    Done,
    /// Failed: tried again after a backoff, parked after the policy's retries.
    Retry(String),
    /// Not tried, because it cannot succeed now (its target is unhealthy): tried again after
    /// [`Policy::delay`], without counting an attempt.
    Wait(String),
    /// No longer needed (its target left the ring): removed, and logged.
    Obsolete(String),
}

/// Runs one attempt of a job.
#[async_trait::async_trait]
pub trait Runner<J>: Send + Sync + 'static {
    /// One attempt; a panic counts as a failed attempt.
    async fn run(&self, job: &J) -> Outcome;
}

/// When jobs are retried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Wait before the first retry, and before trying a waiting job again.
    pub delay: Duration,
    /// Retries before a job is parked.
    pub retries: u32,
    /// Longest wait between retries.
    pub max_delay: Duration,
    /// Wait between retries of a parked job.
    pub parked_every: Duration,
    /// Jobs run at once.
    pub workers: usize,
}

impl Policy {
    /// The policy of a `writeback:` or `replication:` section.
    pub fn from_config(c: &RetryConfig) -> Policy {
        Policy {
            delay: c.delay.get(),
            retries: c.retries,
            max_delay: MAX_DELAY,
            parked_every: PARKED_EVERY,
            workers: DEFAULT_WORKERS,
        }
    }

    /// The wait after the `failures`-th failed attempt: `delay`, doubled per further failure,
    /// at most `max_delay` (or `delay`, if that is longer).
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(32);
        let wait = self.delay.saturating_mul(1u32 << doublings.min(31));
        wait.min(self.max_delay.max(self.delay))
    }
}

/// A durable job queue; cheap to clone, every clone is the same queue.
pub struct Queue<J: Job> {
    inner: Arc<Inner<J>>,
}

impl<J: Job> Clone for Queue<J> {
    fn clone(&self) -> Self {
        Queue {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<J> {
    policy: Policy,
    state: Mutex<State<J>>,
    /// Told when a job becomes due earlier than the dispatcher thought (a push, a finish).
    wake: Notify,
}

/// Queue depth by kind and state, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Depth {
    /// `(kind, pending, failed)` for every kind in [`Job::KINDS`].
    pub by_kind: Vec<(&'static str, usize, usize)>,
}

impl Depth {
    /// Gauge `name` into `out`: one sample per kind and state.
    pub fn write(&self, out: &mut shoal_metrics::Exposition, name: &str, help: &str) {
        let mut samples = out.family(name, help, shoal_metrics::Kind::Gauge);
        for (kind, pending, failed) in &self.by_kind {
            samples
                .add(&[("kind", kind), ("state", "pending")], *pending as f64)
                .add(&[("kind", kind), ("state", "failed")], *failed as f64);
        }
    }
}

impl<J: Job> Queue<J> {
    /// Opens the queue in `dir` (created if needed) and reloads its jobs, pending and parked; a
    /// pending job whose due time passed while the role was down is due at once. The file
    /// journal runs in `tasks`; jobs run once [`Queue::start`] is called.
    pub fn open(dir: &Path, policy: Policy, tasks: &Tasks) -> io::Result<Queue<J>> {
        let dirs = Dirs {
            root: dir.to_owned(),
        };
        dirs.prepare()?;
        let (journal, ops) = mpsc::unbounded_channel();
        let mut state = State {
            entries: HashMap::new(),
            by_key: HashMap::new(),
            schedule: BTreeSet::new(),
            pins: HashMap::new(),
            next_generation: 0,
            journal,
        };
        let now = Instant::now();
        for area in [Area::Pending, Area::Failed] {
            let cap = match area {
                Area::Pending => policy.max_delay.max(policy.delay),
                Area::Failed => policy.parked_every,
            };
            for (id, record) in dirs.scan::<J>(area)? {
                let key = record.job.key();
                if let Some(other) = state.by_key.get(&key).cloned() {
                    // Two files for one job (a copy an operator made): the newer push wins.
                    let other_is_older = state
                        .entries
                        .get(&other)
                        .is_none_or(|e| e.record.queued_ms <= record.queued_ms);
                    let (gone, gone_area) = if other_is_older {
                        let area = state.remove(&other).map_or(area, |e| e.area);
                        (other, area)
                    } else {
                        (id.clone(), area)
                    };
                    tracing::warn!(job = %record.job, file = gone, "two files for one job: keeping the newer");
                    let _ = state.journal.send(Op::Remove {
                        area: gone_area,
                        id: gone.clone(),
                    });
                    if gone == id {
                        continue;
                    }
                }
                let due = now + until(record.due_ms, cap);
                state.insert(id, record, area, due);
            }
        }
        let (pending, failed) = state.counts();
        if pending + failed > 0 {
            tracing::info!(dir = %dir.display(), pending, failed, "queue reloaded");
        }
        tasks.spawn(disk::journal(dirs, ops));
        Ok(Queue {
            inner: Arc::new(Inner {
                policy,
                state: Mutex::new(state),
                wake: Notify::new(),
            }),
        })
    }

    /// Starts running jobs in `tasks` with `runner`, at most [`Policy::workers`] at once.
    pub fn start<R: Runner<J>>(&self, runner: Arc<R>, tasks: &Tasks) {
        let inner = self.inner.clone();
        let spawner = tasks.clone();
        tasks.spawn(async move { inner.dispatch(runner, spawner).await });
    }

    /// Queues `job` (or replaces the queued job with its key) and returns once it is on disk.
    pub async fn push(&self, job: J) -> io::Result<()> {
        self.push_all(vec![job]).await
    }

    /// Queues every job of `jobs`; returns once all are on disk.
    pub async fn push_all(&self, jobs: Vec<J>) -> io::Result<()> {
        let waits: Vec<_> = {
            let mut state = self.inner.lock();
            jobs.into_iter().map(|job| state.push(job)).collect()
        };
        self.inner.wake.notify_one();
        for wait in waits {
            wait.await
                .map_err(|_| io::Error::other("the queue's journal stopped"))??;
        }
        Ok(())
    }

    /// Whether a queued job (pending or parked) still needs blob `d` in the piece store.
    pub fn pins(&self, d: &Digest) -> bool {
        self.inner.lock().pins.contains_key(d)
    }

    /// Jobs queued, by kind and state.
    pub fn depth(&self) -> Depth {
        let state = self.inner.lock();
        let mut by_kind: Vec<_> = J::KINDS.iter().map(|k| (*k, 0, 0)).collect();
        for e in state.entries.values() {
            let kind = e.record.job.kind();
            if let Some(row) = by_kind.iter_mut().find(|r| r.0 == kind) {
                match e.area {
                    Area::Pending => row.1 += 1,
                    Area::Failed => row.2 += 1,
                }
            }
        }
        Depth { by_kind }
    }

    /// Every queued job (tests, diagnostics).
    pub fn jobs(&self) -> Vec<J> {
        let state = self.inner.lock();
        state
            .entries
            .values()
            .map(|e| e.record.job.clone())
            .collect()
    }
}

impl<J: Job> Inner<J> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<J>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn dispatch<R: Runner<J>>(self: Arc<Self>, runner: Arc<R>, tasks: Tasks) {
        let slots = Arc::new(Semaphore::new(self.policy.workers.max(1)));
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (id, job, generation) = loop {
                let next = self.lock().take_due(Instant::now());
                match next {
                    Ok(ready) => break ready,
                    Err(Some(at)) => {
                        tokio::select! {
                            () = tokio::time::sleep_until(at) => {}
                            () = self.wake.notified() => {}
                        }
                    }
                    Err(None) => self.wake.notified().await,
                }
            };
            let (inner, runner) = (self.clone(), runner.clone());
            tasks.spawn(async move {
                let attempt = std::panic::AssertUnwindSafe(runner.run(&job)).catch_unwind();
                let outcome = attempt
                    .await
                    .unwrap_or_else(|_| Outcome::Retry("the job panicked".into()));
                inner.finish(&id, generation, outcome);
                drop(slot);
            });
        }
    }

    /// Records how a run of `id` (at `generation`) went.
    fn finish(&self, id: &str, generation: u64, outcome: Outcome) {
        let policy = &self.policy;
        let mut state = self.lock();
        let Some(entry) = state.entries.get_mut(id) else {
            return;
        };
        entry.running = false;
        let job = entry.record.job.clone();
        let now = Instant::now();
        if entry.generation != generation {
            // Pushed again while it ran: the newer version runs next, whatever this one did.
            let due = entry.due;
            state.schedule.insert((due, id.to_owned()));
            drop(state);
            self.wake.notify_one();
            return;
        }
        match outcome {
            Outcome::Done => {
                tracing::debug!(%job, "job done");
                let area = entry.area;
                state.remove(id);
                let _ = state.journal.send(Op::Remove {
                    area,
                    id: id.to_owned(),
                });
            }
            Outcome::Obsolete(why) => {
                tracing::info!(%job, reason = why, "job no longer needed");
                let area = entry.area;
                state.remove(id);
                let _ = state.journal.send(Op::Remove {
                    area,
                    id: id.to_owned(),
                });
            }
            Outcome::Wait(why) => {
                tracing::debug!(%job, reason = why, "job waits");
                entry.due = now + policy.delay;
                let due = entry.due;
                state.schedule.insert((due, id.to_owned()));
            }
            Outcome::Retry(why) => {
                entry.record.attempts = entry.record.attempts.saturating_add(1);
                let attempts = entry.record.attempts;
                let park = entry.area == Area::Pending && attempts > policy.retries;
                let wait = if park || entry.area == Area::Failed {
                    policy.parked_every
                } else {
                    policy.backoff(attempts)
                };
                entry.due = now + wait;
                entry.record.due_ms = millis(SystemTime::now()) + wait.as_millis() as u64;
                entry.record.last_error = Some(why.clone());
                let from = entry.area;
                if park {
                    entry.area = Area::Failed;
                    tracing::error!(
                        %job,
                        attempts,
                        error = why,
                        retry_in = ?wait,
                        "job failed after its retries: parked in failed/, retried rarely"
                    );
                } else {
                    tracing::warn!(%job, attempts, error = why, retry_in = ?wait, "job failed");
                }
                let bytes = encode(&entry.record);
                let due = entry.due;
                let id = id.to_owned();
                let op = if park {
                    Op::Move {
                        from,
                        to: Area::Failed,
                        id: id.clone(),
                        bytes,
                        done: None,
                    }
                } else {
                    Op::Write {
                        area: from,
                        id: id.clone(),
                        bytes,
                        done: None,
                    }
                };
                let _ = state.journal.send(op);
                state.schedule.insert((due, id));
            }
        }
        drop(state);
        self.wake.notify_one();
    }
}
