//! The time windows announces are bucketed into.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::PeerStoreError;

/// `peer_set_window_size` x `max_peer_set_windows`: which window a moment falls in, and which
/// windows are still live. Windows are numbered from the Unix epoch, so every tracker sharing a
/// store numbers them alike.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerSetWindows {
    window_ms: u64,
    windows: u32,
}

impl PeerSetWindows {
    /// Windows of `window` (whole milliseconds), keeping `windows` of them.
    pub fn new(window: Duration, windows: u32) -> Result<Self, PeerStoreError> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        if window_ms == 0 {
            return Err(PeerStoreError::Settings(
                "peer_set_window_size must be at least 1ms",
            ));
        }
        if windows == 0 {
            return Err(PeerStoreError::Settings(
                "max_peer_set_windows must be at least 1",
            ));
        }
        Ok(PeerSetWindows { window_ms, windows })
    }

    /// From the tracker's `peerstore.memory` settings.
    pub fn from_config(c: &shoal_config::MemoryPeerStore) -> Result<Self, PeerStoreError> {
        Self::new(c.peer_set_window_size.get(), c.max_peer_set_windows)
    }

    fn millis(now: SystemTime) -> u64 {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
        u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
    }

    /// The number of the window `now` falls in.
    pub fn current(&self, now: SystemTime) -> u64 {
        Self::millis(now) / self.window_ms
    }

    /// The oldest window still live at `now`; windows before it are expired.
    pub fn oldest_live(&self, now: SystemTime) -> u64 {
        self.current(now)
            .saturating_sub(u64::from(self.windows) - 1)
    }

    /// How long after `now` the window `window` stops being live.
    pub fn remaining(&self, window: u64, now: SystemTime) -> Duration {
        let end = window
            .saturating_add(u64::from(self.windows))
            .saturating_mul(self.window_ms);
        Duration::from_millis(end.saturating_sub(Self::millis(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announce_lives_until_its_last_window_ends() {
        let w = PeerSetWindows::new(Duration::from_secs(10), 3).unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1000);
        assert_eq!(w.current(t0), 100);
        assert_eq!(w.oldest_live(t0 + Duration::from_secs(29)), 100);
        assert_eq!(w.oldest_live(t0 + Duration::from_secs(30)), 101);
        assert_eq!(w.remaining(100, t0), Duration::from_secs(30));
        assert_eq!(
            w.remaining(100, t0 + Duration::from_secs(40)),
            Duration::ZERO
        );
    }

    #[test]
    fn rejects_zero_settings() {
        assert!(PeerSetWindows::new(Duration::ZERO, 3).is_err());
        assert!(PeerSetWindows::new(Duration::from_micros(10), 3).is_err());
        assert!(PeerSetWindows::new(Duration::from_secs(1), 0).is_err());
    }

    #[test]
    fn uses_the_config_defaults() {
        let w = PeerSetWindows::from_config(&shoal_config::MemoryPeerStore::default()).unwrap();
        assert_eq!(
            w,
            PeerSetWindows::new(Duration::from_secs(3600), 5).unwrap()
        );
    }
}
