//! Which entries a cleanup pass removes: a pure function of the entries, the time and the
//! limits, so every rule (TTI, count, bytes, least recent first, open entries kept) is tested
//! without a file system.

use std::time::{Duration, SystemTime};

/// One blob or download as the planner sees it.
#[derive(Clone, Debug)]
pub(crate) struct Candidate<K> {
    pub(crate) key: K,
    pub(crate) last_access: SystemTime,
    pub(crate) bytes: u64,
    /// A live handle exists; the entry is never removed while it does.
    pub(crate) open: bool,
}

/// The limits of one area.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Limits {
    /// Remove entries idle for at least this long; `None` never expires by time.
    pub(crate) tti: Option<Duration>,
    /// Most entries kept.
    pub(crate) max_count: Option<u64>,
    /// Most bytes kept.
    pub(crate) max_bytes: Option<u64>,
}

/// The keys to remove, least recently accessed first: every closed entry idle for `tti`, then
/// more closed entries in least-recent order until the count and bytes fit. Open entries count
/// toward the totals but are skipped, so the limits may stay exceeded while they are open.
pub(crate) fn plan<K: Clone>(entries: &[Candidate<K>], now: SystemTime, limits: Limits) -> Vec<K> {
    let mut order: Vec<&Candidate<K>> = entries.iter().collect();
    order.sort_by_key(|c| c.last_access);
    // A clock that went backwards makes an entry look fresh, never stale.
    let idle = |c: &Candidate<K>| now.duration_since(c.last_access).unwrap_or(Duration::ZERO);
    let (expired, mut kept): (Vec<_>, Vec<_>) = order
        .into_iter()
        .partition(|c| !c.open && limits.tti.is_some_and(|tti| idle(c) >= tti));
    let mut count = kept.len() as u64;
    let mut bytes: u64 = kept.iter().map(|c| c.bytes).sum();
    let over = |count: u64, bytes: u64| {
        limits.max_count.is_some_and(|m| count > m) || limits.max_bytes.is_some_and(|m| bytes > m)
    };
    let mut out: Vec<K> = expired.iter().map(|c| c.key.clone()).collect();
    for c in kept.drain(..) {
        if !over(count, bytes) {
            break;
        }
        if !c.open {
            count -= 1;
            bytes -= c.bytes;
            out.push(c.key.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn entry(key: &'static str, secs: u64, bytes: u64, open: bool) -> Candidate<&'static str> {
        Candidate {
            key,
            last_access: at(secs),
            bytes,
            open,
        }
    }

    #[test]
    fn nothing_to_do_within_limits() {
        let e = [entry("a", 100, 10, false)];
        let l = Limits {
            tti: Some(Duration::from_secs(60)),
            max_count: Some(1),
            max_bytes: Some(10),
        };
        assert!(plan(&e, at(150), l).is_empty());
    }

    #[test]
    fn tti_removes_idle_closed_entries_only() {
        let e = [
            entry("old", 0, 1, false),
            entry("old-open", 0, 1, true),
            entry("fresh", 90, 1, false),
        ];
        let l = Limits {
            tti: Some(Duration::from_secs(60)),
            ..Limits::default()
        };
        assert_eq!(plan(&e, at(100), l), vec!["old"]);
    }

    #[test]
    fn a_clock_gone_backwards_expires_nothing() {
        let e = [entry("a", 500, 1, false)];
        let l = Limits {
            tti: Some(Duration::from_secs(1)),
            ..Limits::default()
        };
        assert!(plan(&e, at(100), l).is_empty());
    }

    #[test]
    fn count_limit_evicts_least_recent_first() {
        let e = [
            entry("c", 30, 1, false),
            entry("a", 10, 1, false),
            entry("b", 20, 1, false),
        ];
        let l = Limits {
            max_count: Some(1),
            ..Limits::default()
        };
        assert_eq!(plan(&e, at(40), l), vec!["a", "b"]);
    }

    #[test]
    fn byte_limit_evicts_until_it_fits() {
        let e = [
            entry("a", 10, 50, false),
            entry("b", 20, 30, false),
            entry("c", 30, 30, false),
        ];
        let l = Limits {
            max_bytes: Some(60),
            ..Limits::default()
        };
        assert_eq!(plan(&e, at(40), l), vec!["a"]);
    }

    #[test]
    fn open_entries_are_skipped_and_the_next_least_recent_goes() {
        let e = [
            entry("a", 10, 1, true),
            entry("b", 20, 1, false),
            entry("c", 30, 1, false),
        ];
        let l = Limits {
            max_count: Some(2),
            ..Limits::default()
        };
        assert_eq!(plan(&e, at(40), l), vec!["b"]);
    }

    #[test]
    fn limits_stay_exceeded_when_everything_is_open() {
        let e = [entry("a", 10, 100, true), entry("b", 20, 100, true)];
        let l = Limits {
            max_count: Some(1),
            max_bytes: Some(1),
            ..Limits::default()
        };
        assert!(plan(&e, at(40), l).is_empty());
    }

    #[test]
    fn tti_removals_count_toward_the_limits() {
        let e = [
            entry("old", 0, 10, false),
            entry("b", 80, 10, false),
            entry("c", 90, 10, false),
        ];
        let l = Limits {
            tti: Some(Duration::from_secs(60)),
            max_count: Some(2),
            ..Limits::default()
        };
        assert_eq!(plan(&e, at(100), l), vec!["old"]);
    }
}
