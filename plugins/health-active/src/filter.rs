//! The active filter as a pure state machine, Kraken's `lib/healthcheck/state.go` rule.
//!
//! Each host has a trend: negative counts failed checks in a row, positive counts passed
//! ones. A failure moves the trend to `min(trend - 1, -1)` (a fail after passes starts a new
//! run), floored at `-fails`; reaching `-fails` marks the host unhealthy. A pass moves it to
//! `max(trend + 1, 1)`, capped at `passes`; reaching `passes` marks it healthy. A host never
//! observed is healthy with trend 0.
//!
//! A healthy host with a trend of 0 or more behaves exactly like one never observed (its next
//! fail takes the trend to -1 either way), so it is not stored: the table holds only hosts
//! that are unhealthy or on a run of failures.

use shoal_plugin_sdk::host_table::HostTable;

/// How many hosts the filter remembers; past that the least recently observed is forgotten
/// (and so counts as healthy). A ring has tens of members: this is far above any real one.
pub const MAX_HOSTS: usize = 1024;

/// The thresholds (`cluster.healthcheck.filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    /// Failed checks in a row that mark a host unhealthy, at least 1.
    pub fails: u32,
    /// Passed checks in a row that mark an unhealthy host healthy again, at least 1.
    pub passes: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Trend {
    /// Negative: failed checks in a row; positive: passed checks in a row.
    run: i64,
    healthy: bool,
}

/// Consecutive fails and passes per host.
#[derive(Debug)]
pub struct ActiveFilter {
    fails: i64,
    passes: i64,
    hosts: HostTable<Trend>,
}

impl ActiveFilter {
    /// A filter that has observed nothing, tracking at most `max_hosts` hosts.
    pub fn new(t: Thresholds, max_hosts: usize) -> Self {
        ActiveFilter {
            fails: i64::from(t.fails.max(1)),
            passes: i64::from(t.passes.max(1)),
            hosts: HostTable::new(max_hosts),
        }
    }

    /// Records one check of `host`.
    pub fn observe(&mut self, host: &str, ok: bool) {
        if ok {
            // An untracked host is healthy with trend >= 0; a pass leaves it so.
            let Some(t) = self.hosts.get_mut(host) else {
                return;
            };
            t.run = (t.run + 1).max(1).min(self.passes);
            if t.run == self.passes {
                t.healthy = true;
            }
            if t.healthy {
                self.hosts.remove(host);
            }
        } else {
            let t = self.hosts.entry(host, || Trend {
                run: 0,
                healthy: true,
            });
            t.run = (t.run - 1).min(-1).max(-self.fails);
            if t.run == -self.fails {
                t.healthy = false;
            }
        }
    }

    /// Whether `host` is healthy.
    pub fn healthy(&self, host: &str) -> bool {
        self.hosts.get(host).is_none_or(|t| t.healthy)
    }

    /// How many hosts the filter holds state for.
    pub fn tracked(&self) -> usize {
        self.hosts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(fails: u32, passes: u32) -> ActiveFilter {
        ActiveFilter::new(Thresholds { fails, passes }, MAX_HOSTS)
    }

    #[test]
    fn a_host_never_observed_is_healthy() {
        assert!(filter(3, 2).healthy("a"));
    }

    #[test]
    fn fails_in_a_row_mark_unhealthy_and_passes_in_a_row_mark_healthy() {
        let mut f = filter(3, 2);
        f.observe("a", false);
        f.observe("a", false);
        assert!(f.healthy("a"), "fails - 1 failures: still healthy");
        f.observe("a", false);
        assert!(!f.healthy("a"), "fails failures: unhealthy");
        f.observe("a", true);
        assert!(!f.healthy("a"), "passes - 1 passes: still unhealthy");
        f.observe("a", true);
        assert!(f.healthy("a"), "passes passes: healthy");
        assert_eq!(f.tracked(), 0, "a healthy host is not stored");
    }

    #[test]
    fn a_pass_breaks_a_run_of_fails() {
        let mut f = filter(3, 2);
        f.observe("a", false);
        f.observe("a", false);
        f.observe("a", true);
        f.observe("a", false);
        f.observe("a", false);
        assert!(f.healthy("a"), "the run restarted after the pass");
        f.observe("a", false);
        assert!(!f.healthy("a"));
    }

    #[test]
    fn a_fail_breaks_a_run_of_passes() {
        let mut f = filter(1, 3);
        f.observe("a", false);
        assert!(!f.healthy("a"), "fails = 1: one failure is enough");
        f.observe("a", true);
        f.observe("a", true);
        f.observe("a", false);
        f.observe("a", true);
        f.observe("a", true);
        assert!(!f.healthy("a"), "the passes restarted after the fail");
        f.observe("a", true);
        assert!(f.healthy("a"));
    }

    #[test]
    fn extra_fails_do_not_need_extra_passes() {
        let mut f = filter(2, 2);
        for _ in 0..10 {
            f.observe("a", false);
        }
        f.observe("a", true);
        f.observe("a", true);
        assert!(f.healthy("a"), "the fail run is floored at -fails");
    }

    #[test]
    fn hosts_are_tracked_apart() {
        let mut f = filter(1, 1);
        f.observe("a", false);
        assert!(!f.healthy("a"));
        assert!(f.healthy("b"));
    }

    #[test]
    fn the_table_is_bounded_and_forgets_the_oldest() {
        let mut f = ActiveFilter::new(
            Thresholds {
                fails: 1,
                passes: 1,
            },
            4,
        );
        f.observe("victim", false);
        for i in 0..100 {
            f.observe(&format!("flood-{i}"), false);
        }
        assert_eq!(f.tracked(), 4);
        assert!(f.healthy("victim"), "forgotten means never observed");
        assert!(!f.healthy("flood-99"));
    }
}
