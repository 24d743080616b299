//! The connection limit: a slot per open connection, each with what its watchdog and the
//! limit need to know (whether a request is in progress, since when it waits).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The open connections of one listener, at most `limit`.
pub(super) struct Slots {
    limit: usize,
    next_id: AtomicU64,
    inner: Mutex<Inner>,
    /// Told each time a slot is freed.
    freed: Arc<Notify>,
}

struct Inner {
    open: BTreeMap<u64, Arc<ConnState>>,
    /// Whether the limit was reached (logged once per episode).
    full: bool,
}

impl Slots {
    pub(super) fn new(limit: usize) -> Self {
        Slots {
            limit: limit.max(1),
            next_id: AtomicU64::new(0),
            inner: Mutex::new(Inner {
                open: BTreeMap::new(),
                full: false,
            }),
            freed: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a new connection. At the limit, the oldest connection with no request in
    /// progress is told to close and the new one waits until a slot is free.
    pub(super) async fn admit(self: &Arc<Self>) -> Slot {
        loop {
            let freed = self.freed.notified();
            {
                let mut inner = self.lock();
                if inner.open.len() < self.limit {
                    if inner.full {
                        inner.full = false;
                        tracing::info!(limit = self.limit, "accepting connections again");
                    }
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    let state = Arc::new(ConnState::new());
                    inner.open.insert(id, state.clone());
                    return Slot {
                        slots: self.clone(),
                        id,
                        state,
                    };
                }
                if !inner.full {
                    inner.full = true;
                    tracing::warn!(
                        limit = self.limit,
                        "connection limit reached (server.max_connections): closing idle \
                         connections; new ones wait until one closes"
                    );
                }
                // Oldest first: ids grow with time.
                if let Some(victim) = inner
                    .open
                    .values()
                    .find(|c| c.is_idle() && !c.close.is_cancelled())
                {
                    victim.close.cancel();
                }
            }
            freed.await;
        }
    }

    /// How many connections are open.
    #[cfg(test)]
    pub(super) fn open(&self) -> usize {
        self.lock().open.len()
    }
}

/// One open connection's place; dropping it frees the place.
pub(super) struct Slot {
    slots: Arc<Slots>,
    id: u64,
    pub(super) state: Arc<ConnState>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().open.remove(&self.id);
        self.slots.freed.notify_one();
    }
}

/// Where a connection is between requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a request head since then (a new connection, or the first byte of the next
    /// request arrived then).
    Head(Instant),
    /// Kept alive with no request since then.
    Idle(Instant),
    /// Requests in progress.
    Busy(usize),
}

/// What a connection's watchdog, its I/O and its service share.
pub(super) struct ConnState {
    phase: Mutex<Phase>,
    /// Cancelled to close the connection (the limit needs its slot).
    pub(super) close: CancellationToken,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            phase: Mutex::new(Phase::Head(Instant::now())),
            close: CancellationToken::new(),
        }
    }

    fn phase(&self) -> MutexGuard<'_, Phase> {
        self.phase.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Bytes arrived: an idle connection starts its next request head.
    pub(super) fn read_some(&self) {
        let mut phase = self.phase();
        if let Phase::Idle(_) = *phase {
            *phase = Phase::Head(Instant::now());
        }
    }

    /// A request head was read; the connection is busy until its response is sent.
    pub(super) fn request_started(&self) {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        };
    }

    /// A response was sent (or dropped).
    pub(super) fn request_finished(&self) {
        let mut phase = self.phase();
        *phase = match *phase {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        };
    }

    /// No request in progress: the limit may close it.
    fn is_idle(&self) -> bool {
        !matches!(*self.phase(), Phase::Busy(_))
    }

    /// When the connection must have moved on, and why; `None` while a request is in progress.
    pub(super) fn deadline(
        &self,
        header_timeout: Duration,
        idle_timeout: Duration,
    ) -> Option<(Instant, &'static str)> {
        match *self.phase() {
            Phase::Head(since) => Some((since + header_timeout, "header_timeout")),
            Phase::Idle(since) => Some((since + idle_timeout, "idle_timeout")),
            Phase::Busy(_) => None,
        }
    }
}
