//! What a scheduler counts for metrics ([`Stats`]), and the throttle that keeps a dead tracker
//! from filling the log with one `announce failed` line per torrent and interval.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How often, at most, a run of announce failures is summed up in the log after its first.
pub const ANNOUNCE_WARNING_EVERY: Duration = Duration::from_secs(30);

/// The counters the torrents and connections of one scheduler add to.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Peers blacklisted, over all torrents (each ban counts once).
    pub(crate) blacklisted: AtomicU64,
    /// Pieces that matched their hash.
    pub(crate) pieces_verified: AtomicU64,
    /// Pieces that did not.
    pub(crate) pieces_corrupt: AtomicU64,
    /// Announces the tracker answered.
    pub(crate) announces_ok: AtomicU64,
    /// Announces that failed.
    pub(crate) announces_failed: AtomicU64,
    /// Peer connections open now.
    pub(crate) peers: AtomicI64,
    /// Piece requests refused for the asker's pieces already in flight.
    pub(crate) requests_refused_busy: AtomicU64,
}

/// A scheduler's counts since start (gauges where said).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Piece payload bytes sent to peers.
    pub piece_bytes_sent: u64,
    /// Piece payload bytes received from peers (verified or not).
    pub piece_bytes_received: u64,
    /// Pieces sent to peers.
    pub pieces_sent: u64,
    /// Pieces received that matched their hash.
    pub pieces_verified: u64,
    /// Pieces received that did not (their sender is blacklisted).
    pub pieces_corrupt: u64,
    /// Peers blacklisted for a corrupt piece or a protocol violation.
    pub blacklisted: u64,
    /// Announces the tracker answered.
    pub announces_ok: u64,
    /// Announces that failed (no tracker answered, or it answered an error).
    pub announces_failed: u64,
    /// Piece requests refused because the asker already had
    /// [`UPLOADS_PER_PEER`](super::UPLOADS_PER_PEER) pieces on their way to it.
    pub requests_refused_busy: u64,
    /// Gauge: bytes of pieces read for peers and not yet sent, besides each peer's first
    /// ([`UPLOAD_BUFFER_BYTES`](super::UPLOAD_BUFFER_BYTES) at most).
    pub upload_bytes_buffered: u64,
    /// Gauge: torrents running now.
    pub torrents: u64,
    /// Gauge: peer connections open now.
    pub peers: u64,
}

/// Counts one open peer connection while it lives.
#[derive(Debug)]
pub(crate) struct Connected(std::sync::Weak<super::Inner>);

impl Connected {
    pub(crate) fn new(inner: &std::sync::Arc<super::Inner>) -> Connected {
        inner.counters.peers.fetch_add(1, Ordering::Relaxed);
        Connected(std::sync::Arc::downgrade(inner))
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        if let Some(inner) = self.0.upgrade() {
            inner.counters.peers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// The first warning of a run of failures, then at most one every `every` saying how many
/// were left out since; a success ends the run.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    /// When the last line was written, while a run of failures lasts.
    last: Option<Instant>,
    /// Failures not written since.
    suppressed: u64,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// A failure at `now`: `Some(n)` when it is to be written, `n` the failures left out
    /// before it; `None` when it is left out.
    pub(crate) fn failed(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// A success: the run is over. Returns the failures left out and never written.
    pub(crate) fn succeeded(&mut self) -> u64 {
        self.last = None;
        std::mem::take(&mut self.suppressed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_failures_is_written_once_per_period_with_what_was_left_out() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(30));
        assert_eq!(t.failed(t0), Some(0), "the first is written");
        for i in 1..=9 {
            assert_eq!(t.failed(t0 + Duration::from_millis(100 * i)), None);
        }
        assert_eq!(t.failed(t0 + Duration::from_secs(30)), Some(9));
        assert_eq!(t.failed(t0 + Duration::from_secs(31)), None);
        assert_eq!(t.succeeded(), 1);
        assert_eq!(
            t.failed(t0 + Duration::from_secs(32)),
            Some(0),
            "after a success the next failure is written at once"
        );
    }
}
