//! Failed logins per client address: after `max` in one window, every further login from that
//! address is refused until the window ends, whether its password is right or not (otherwise
//! a guesser would only have to keep going). A pure state machine over explicit instants.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Client addresses tracked at once; past it, finished windows are forgotten first, then the
/// whole table (a flood of addresses must not grow memory without bound).
const MAX_CLIENTS: usize = 65_536;

/// Counts logins per client address in fixed windows.
#[derive(Debug)]
pub struct LoginThrottle {
    max: u32,
    window: Duration,
    clients: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Clone, Copy, Debug)]
struct Window {
    start: Instant,
    /// Logins that failed, or are being checked, in this window.
    count: u32,
}

/// A refused login: how long until the client may try again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Throttled {
    /// Until the window ends.
    pub retry_after: Duration,
}

impl LoginThrottle {
    /// At most `max` failed logins per `window` per address.
    pub fn new(max: u32, window: Duration) -> Self {
        LoginThrottle {
            max: max.max(1),
            window,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        // A panic elsewhere while holding the lock leaves counts that are still usable.
        self.clients.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses a client that has used up its window, without counting anything.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), Throttled> {
        let clients = self.lock();
        match clients.get(&client) {
            Some(w) if now < w.start + self.window && w.count >= self.max => Err(Throttled {
                retry_after: w.start + self.window - now,
            }),
            _ => Ok(()),
        }
    }

    /// Starts a login that will be checked: counted as failed until [`LoginThrottle::succeeded`]
    /// says otherwise, so many guesses sent at once are counted before any is checked.
    pub fn begin(&self, client: IpAddr, now: Instant) -> Result<(), Throttled> {
        let mut clients = self.lock();
        if clients.len() >= MAX_CLIENTS && !clients.contains_key(&client) {
            let window = self.window;
            clients.retain(|_, w| now < w.start + window);
            if clients.len() >= MAX_CLIENTS {
                clients.clear();
            }
        }
        let w = clients.entry(client).or_insert(Window {
            start: now,
            count: 0,
        });
        if now >= w.start + self.window {
            *w = Window {
                start: now,
                count: 0,
            };
        }
        if w.count >= self.max {
            return Err(Throttled {
                retry_after: w.start + self.window - now,
            });
        }
        w.count += 1;
        if w.count == self.max {
            tracing::warn!(
                %client,
                max = self.max,
                window = ?self.window,
                "too many failed logins: this client's logins are refused until the window ends"
            );
        }
        Ok(())
    }

    /// The login begun last succeeded: it does not count.
    pub fn succeeded(&self, client: IpAddr) {
        if let Some(w) = self.lock().get_mut(&client) {
            w.count = w.count.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn a_client_is_refused_after_max_failures_until_its_window_ends() {
        let t = LoginThrottle::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(t.check(A, t0), Ok(()), "attempt {i}");
            assert_eq!(t.begin(A, t0), Ok(()), "attempt {i}");
        }
        let later = t0 + Duration::from_secs(20);
        let refused = Throttled {
            retry_after: Duration::from_secs(40),
        };
        assert_eq!(t.check(A, later), Err(refused));
        assert_eq!(t.begin(A, later), Err(refused));
        // Another address is not affected.
        assert_eq!(t.begin(B, later), Ok(()));
        // A new window starts afresh.
        let next = t0 + Duration::from_secs(60);
        assert_eq!(t.check(A, next), Ok(()));
        assert_eq!(t.begin(A, next), Ok(()));
    }

    #[test]
    fn successful_logins_do_not_count() {
        let t = LoginThrottle::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..10 {
            t.begin(A, t0).unwrap();
            t.succeeded(A);
        }
        t.begin(A, t0).unwrap();
        t.begin(A, t0).unwrap();
        assert!(t.begin(A, t0).is_err());
    }

    #[test]
    fn logins_in_flight_count_before_they_are_checked() {
        let t = LoginThrottle::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(t.begin(A, t0).is_ok());
        assert!(t.begin(A, t0).is_ok());
        assert!(
            t.begin(A, t0).is_err(),
            "a third concurrent guess was let through"
        );
    }

    #[test]
    fn the_table_stays_bounded() {
        let t = LoginThrottle::new(1, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS as u32 + 10) {
            let ip = IpAddr::V6(std::net::Ipv6Addr::from(u128::from(i)));
            let _ = t.begin(ip, t0);
        }
        assert!(t.lock().len() <= MAX_CLIENTS);
    }
}
