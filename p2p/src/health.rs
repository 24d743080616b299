//! Which members of a ring to send requests to: the boundary between the callers that observe
//! hosts (the tracker client, later the origin ring client) and the policy that judges them.
//!
//! The policy is not written here. In production it is a WebAssembly health-policy component
//! (`wit/health/health.wit`, the passive `fails` / `fail_timeout` filter or the active
//! `fails` / `passes` one, or a custom policy named in YAML), which `shoal-host` wraps in this
//! trait. Time is passed in, never read, so a policy is deterministic and a caller can be tested
//! on a manual clock.

use std::time::SystemTime;

use async_trait::async_trait;

/// A health policy: fed the outcome of each request to a host, asked whether to use it.
///
/// Infallible on purpose: an implementation whose policy cannot answer (a trapped plugin)
/// should say "healthy", failing open, so a broken policy never takes a whole ring out of
/// rotation. Hosts are named by their `host:port` text (`HostPort`'s `Display`).
#[async_trait]
pub trait HealthFilter: Send + Sync {
    /// Records that a request to `host` at `now` succeeded (`ok`) or failed with a network error.
    async fn observe(&self, host: &str, ok: bool, now: SystemTime);

    /// Whether `host` should be sent requests at `now`.
    async fn healthy(&self, host: &str, now: SystemTime) -> bool;
}

/// A test-only stand-in for the passive health-policy component, with its semantics: `fails`
/// failures within `fail_timeout` take a host out of rotation for `fail_timeout`. Not the
/// product: production uses the WebAssembly component.
#[cfg(test)]
pub(crate) mod testing {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::time::{Duration, SystemTime};

    use async_trait::async_trait;

    use super::HealthFilter;

    #[derive(Debug, Default)]
    struct Host {
        /// Times of failures still inside the counting window.
        failures: Vec<SystemTime>,
        /// Out of rotation until this moment.
        down_until: Option<SystemTime>,
    }

    /// The passive filter's semantics in a few lines, for tests of its callers.
    #[derive(Debug)]
    pub(crate) struct PassiveFilter {
        fails: usize,
        fail_timeout: Duration,
        hosts: Mutex<HashMap<String, Host>>,
    }

    impl PassiveFilter {
        pub(crate) fn new(fails: u32, fail_timeout: Duration) -> Self {
            PassiveFilter {
                fails: fails.max(1) as usize,
                fail_timeout,
                hosts: Mutex::new(HashMap::new()),
            }
        }
    }

    #[async_trait]
    impl HealthFilter for PassiveFilter {
        async fn observe(&self, host: &str, ok: bool, now: SystemTime) {
            if ok {
                return;
            }
            let mut hosts = self.hosts.lock().unwrap();
            let h = hosts.entry(host.to_owned()).or_default();
            let window = self.fail_timeout;
            h.failures
                .retain(|&t| now.duration_since(t).is_ok_and(|d| d < window));
            h.failures.push(now);
            if h.failures.len() >= self.fails {
                h.failures.clear();
                h.down_until = Some(now + self.fail_timeout);
            }
        }

        async fn healthy(&self, host: &str, now: SystemTime) -> bool {
            let hosts = self.hosts.lock().unwrap();
            hosts
                .get(host)
                .and_then(|h| h.down_until)
                .is_none_or(|until| now >= until)
        }
    }

    #[tokio::test]
    async fn fails_within_the_window_take_a_host_out_until_the_timeout() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let f = PassiveFilter::new(3, Duration::from_secs(300));
        f.observe("a:1", false, t0).await;
        f.observe("a:1", true, t0).await;
        f.observe("a:1", false, t0 + Duration::from_secs(1)).await;
        assert!(f.healthy("a:1", t0 + Duration::from_secs(1)).await);
        f.observe("a:1", false, t0 + Duration::from_secs(2)).await;
        assert!(!f.healthy("a:1", t0 + Duration::from_secs(2)).await);
        assert!(f.healthy("b:1", t0).await, "other hosts are untouched");
        assert!(!f.healthy("a:1", t0 + Duration::from_secs(301)).await);
        assert!(f.healthy("a:1", t0 + Duration::from_secs(302)).await);
    }

    #[tokio::test]
    async fn failures_older_than_the_window_do_not_count() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let f = PassiveFilter::new(2, Duration::from_secs(10));
        f.observe("a:1", false, t0).await;
        f.observe("a:1", false, t0 + Duration::from_secs(11)).await;
        assert!(f.healthy("a:1", t0 + Duration::from_secs(11)).await);
    }
}
