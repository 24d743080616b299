//! The circuit breaker in front of every plugin: after `threshold` consecutive traps the
//! plugin is not called for `cool_down`; then one call is let through, and its outcome
//! closes the breaker or opens it again.
//!
//! A pure state machine: time is passed in, so each transition has a plain unit test.

use std::time::{Duration, Instant};

/// Breaker state of one plugin.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cool_down: Duration,
    /// Traps since the last call that returned normally.
    consecutive: u32,
    /// While set and in the future, calls are refused.
    open_until: Option<Instant>,
    /// Every trap since start, for metrics.
    traps: u64,
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cool_down: Duration) -> Self {
        Breaker {
            threshold: threshold.max(1),
            cool_down,
            consecutive: 0,
            open_until: None,
            traps: 0,
        }
    }

    /// `Ok` when a call may go ahead at `now`; otherwise how long until it may.
    pub(crate) fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        match self.open_until {
            Some(until) if now < until => Err(until - now),
            Some(_) => {
                // Half open: one trial call. One more trap opens the breaker again at once.
                self.open_until = None;
                self.consecutive = self.threshold - 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The plugin returned (with a value or a WIT error): it is behaving.
    pub(crate) fn succeeded(&mut self) {
        self.consecutive = 0;
        self.open_until = None;
    }

    /// The plugin trapped (panic, deadline, memory cap, host-side failure of the call).
    /// Returns true when this trap opened the breaker.
    pub(crate) fn trapped(&mut self, now: Instant) -> bool {
        self.traps += 1;
        self.consecutive += 1;
        if self.consecutive >= self.threshold {
            self.open_until = Some(now + self.cool_down);
            return true;
        }
        false
    }
}

impl Breaker {
    /// Traps since start, and whether calls are refused at `now`: for metrics.
    pub(crate) fn health(&self, now: Instant) -> shoal_storage::PluginHealth {
        shoal_storage::PluginHealth {
            traps: self.traps,
            breaker_open: self.open_until.is_some_and(|until| now < until),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COOL: Duration = Duration::from_secs(10);

    #[test]
    fn stays_closed_below_the_threshold() {
        let now = Instant::now();
        let mut b = Breaker::new(3, COOL);
        assert!(!b.trapped(now));
        assert!(!b.trapped(now));
        assert_eq!(b.admit(now), Ok(()));
    }

    #[test]
    fn a_success_resets_the_count() {
        let now = Instant::now();
        let mut b = Breaker::new(2, COOL);
        b.trapped(now);
        b.succeeded();
        assert!(!b.trapped(now));
        assert_eq!(b.admit(now), Ok(()));
    }

    #[test]
    fn opens_at_the_threshold_and_refuses_until_the_cool_down_ends() {
        let now = Instant::now();
        let mut b = Breaker::new(2, COOL);
        b.trapped(now);
        assert!(b.trapped(now));
        assert_eq!(
            b.health(now),
            shoal_storage::PluginHealth {
                traps: 2,
                breaker_open: true
            }
        );
        assert!(!b.health(now + COOL).breaker_open);
        assert_eq!(
            b.admit(now + Duration::from_secs(4)),
            Err(Duration::from_secs(6))
        );
        assert_eq!(b.admit(now + COOL), Ok(()));
    }

    #[test]
    fn a_trap_on_the_trial_call_opens_it_again() {
        let now = Instant::now();
        let mut b = Breaker::new(3, COOL);
        for _ in 0..3 {
            b.trapped(now);
        }
        let later = now + COOL;
        assert_eq!(b.admit(later), Ok(()));
        assert!(b.trapped(later));
        assert!(b.admit(later + Duration::from_secs(1)).is_err());
    }

    #[test]
    fn a_good_trial_call_closes_it() {
        let now = Instant::now();
        let mut b = Breaker::new(2, COOL);
        b.trapped(now);
        b.trapped(now);
        assert_eq!(b.admit(now + COOL), Ok(()));
        b.succeeded();
        assert!(
            !b.trapped(now + COOL),
            "one trap after a good call must not reopen it"
        );
    }
}
