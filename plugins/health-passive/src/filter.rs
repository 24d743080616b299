//! The passive filter as a pure state machine, Kraken's `lib/healthcheck/passive_filter.go`
//! rule, with times in milliseconds passed in by the host.
//!
//! - A failure at `now` first drops the host's failures older than `fail_timeout`
//!   (`now - t > fail_timeout`: one exactly `fail_timeout` old still counts), then counts
//!   itself; when `fails` or more remain, the host is unhealthy as of `now`. Every failure that
//!   keeps the count at `fails` or more moves that mark forward.
//! - A host is unhealthy while `now - marked <= fail_timeout`: still out at exactly
//!   `marked + fail_timeout`, back one millisecond later.
//! - A success changes nothing. Kraken's passive filter is only told of failures (`Failed`);
//!   a flaky host that fails `fails` times in the window goes out even if requests between
//!   those failures succeeded.
//!
//! Only the newest `fails` failures are kept: older ones leave the window first, so they can
//! never be what makes the count reach `fails`.

use std::collections::VecDeque;

use shoal_plugin_sdk::host_table::HostTable;

/// How many hosts the filter remembers; past that, hosts whose marks and failures have all
/// expired are dropped first, then the least recently failed. A tracker ring has a handful of
/// members: this is far above any real one.
pub const MAX_HOSTS: usize = 1024;

/// The largest `fails` accepted: each host keeps up to `fails` timestamps, so this bounds
/// the state at `MAX_HOSTS * MAX_FAILS * 8` bytes (8 MiB). Kept in step with
/// `shoal_config::PassiveHealthCheck::MAX_FAILS`.
pub const MAX_FAILS: u32 = 1000;

/// The settings (`tracker.cluster.healthcheck`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Failures within `fail_timeout_ms` that mark a host unhealthy, 1 to [`MAX_FAILS`].
    pub fails: u32,
    /// The counting window, and how long a host stays out after its last failure.
    pub fail_timeout_ms: u64,
}

#[derive(Debug, Default)]
struct Record {
    /// Failure times, oldest first, at most `fails` of them.
    failures: VecDeque<u64>,
    /// When the host was last marked unhealthy.
    marked: Option<u64>,
}

/// Failures in a sliding window per host.
#[derive(Debug)]
pub struct PassiveFilter {
    fails: usize,
    fail_timeout_ms: u64,
    hosts: HostTable<Record>,
}

impl PassiveFilter {
    /// A filter that has observed nothing, tracking at most `max_hosts` hosts.
    pub fn new(s: Settings, max_hosts: usize) -> Self {
        PassiveFilter {
            fails: usize::try_from(s.fails.clamp(1, MAX_FAILS)).unwrap_or(1),
            fail_timeout_ms: s.fail_timeout_ms,
            hosts: HostTable::new(max_hosts),
        }
    }

    fn expired(&self, t: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(t) > self.fail_timeout_ms
    }

    /// Records one request to `host` at `now_ms`; only failures count.
    pub fn observe(&mut self, host: &str, ok: bool, now_ms: u64) {
        if ok {
            return;
        }
        if self.hosts.is_full() && self.hosts.get(host).is_none() {
            // A host whose mark and failures have all expired is the same as one never seen.
            let timeout = self.fail_timeout_ms;
            let live = |t: &u64| now_ms.saturating_sub(*t) <= timeout;
            self.hosts
                .retain(|r| r.marked.as_ref().is_some_and(live) || r.failures.iter().any(live));
        }
        let (fails, timeout) = (self.fails, self.fail_timeout_ms);
        let record = self.hosts.entry(host, Record::default);
        while record
            .failures
            .front()
            .is_some_and(|t| now_ms.saturating_sub(*t) > timeout)
        {
            record.failures.pop_front();
        }
        record.failures.push_back(now_ms);
        if record.failures.len() > fails {
            record.failures.pop_front();
        }
        if record.failures.len() >= fails {
            record.marked = Some(now_ms);
        }
    }

    /// Whether `host` is healthy at `now_ms`.
    pub fn healthy(&self, host: &str, now_ms: u64) -> bool {
        match self.hosts.get(host).and_then(|r| r.marked) {
            Some(marked) => self.expired(marked, now_ms),
            None => true,
        }
    }

    /// How many hosts the filter holds state for.
    pub fn tracked(&self) -> usize {
        self.hosts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;

    fn filter(fails: u32, fail_timeout_ms: u64) -> PassiveFilter {
        PassiveFilter::new(
            Settings {
                fails,
                fail_timeout_ms,
            },
            MAX_HOSTS,
        )
    }

    #[test]
    fn a_host_never_observed_is_healthy() {
        assert!(filter(3, 5 * MIN).healthy("a", 0));
    }

    #[test]
    fn fails_within_the_window_take_a_host_out_until_the_timeout_after_the_last() {
        let t0 = 1_000_000;
        let mut f = filter(3, 5 * MIN);
        f.observe("a", false, t0);
        f.observe("a", false, t0 + MIN);
        assert!(
            f.healthy("a", t0 + MIN),
            "fails - 1 failures: still healthy"
        );
        f.observe("a", false, t0 + 2 * MIN);
        let last = t0 + 2 * MIN;
        assert!(!f.healthy("a", last));
        assert!(
            !f.healthy("a", last + 5 * MIN),
            "out at exactly last + fail_timeout"
        );
        assert!(f.healthy("a", last + 5 * MIN + 1), "back 1 ms later");
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let mut f = filter(3, 5 * MIN);
        f.observe("a", false, 0);
        f.observe("a", false, MIN);
        // 5m + 1ms after the first: it has left the window.
        f.observe("a", false, 5 * MIN + 1);
        assert!(f.healthy("a", 5 * MIN + 1));
        // Exactly 5m after the second: it still counts (Kraken drops only `> fail_timeout`).
        f.observe("a", false, 6 * MIN);
        assert!(!f.healthy("a", 6 * MIN));
    }

    #[test]
    fn a_success_changes_nothing() {
        let mut f = filter(2, MIN);
        f.observe("a", false, 0);
        f.observe("a", true, 10);
        f.observe("a", false, 20);
        assert!(
            !f.healthy("a", 20),
            "the success between did not reset the count"
        );
        f.observe("a", true, 30);
        assert!(!f.healthy("a", 30), "nor does one end the time out");
        assert!(f.healthy("a", 20 + MIN + 1));
    }

    #[test]
    fn a_failure_while_out_extends_the_time_out() {
        let mut f = filter(2, MIN);
        f.observe("a", false, 0);
        f.observe("a", false, 1000);
        f.observe("a", false, MIN);
        assert!(!f.healthy("a", 2 * MIN), "marked again at 1m");
        assert!(f.healthy("a", 2 * MIN + 1));
    }

    #[test]
    fn after_the_time_out_the_count_starts_over_from_the_window() {
        let mut f = filter(2, MIN);
        f.observe("a", false, 0);
        f.observe("a", false, 10);
        assert!(f.healthy("a", MIN + 11));
        f.observe("a", false, MIN + 20);
        assert!(
            f.healthy("a", MIN + 20),
            "the old failures have left the window"
        );
        f.observe("a", false, MIN + 30);
        assert!(!f.healthy("a", MIN + 30));
    }

    #[test]
    fn fails_of_one_takes_a_host_out_on_its_first_failure() {
        let mut f = filter(1, 500);
        f.observe("a", false, 100);
        assert!(!f.healthy("a", 600));
        assert!(f.healthy("a", 601));
    }

    #[test]
    fn a_clock_that_steps_back_does_not_bring_a_host_back() {
        let mut f = filter(1, MIN);
        f.observe("a", false, 10 * MIN);
        assert!(!f.healthy("a", 0));
    }

    #[test]
    fn the_table_is_bounded_and_drops_expired_hosts_first() {
        let mut f = PassiveFilter::new(
            Settings {
                fails: 1,
                fail_timeout_ms: MIN,
            },
            4,
        );
        f.observe("old", false, 0);
        f.observe("out", false, 2 * MIN);
        for i in 0..3 {
            f.observe(&format!("new-{i}"), false, 2 * MIN);
        }
        assert_eq!(f.tracked(), 4);
        assert!(!f.healthy("out", 2 * MIN), "the expired host went first");
        for i in 0..100 {
            f.observe(&format!("flood-{i}"), false, 2 * MIN);
        }
        assert_eq!(f.tracked(), 4, "bounded under a flood");
    }
}
