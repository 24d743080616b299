//! [`Counted`]: a request counted in a gauge while it lives (requests held on a lookup or a
//! running fetch), so the count cannot leak on an early return, an error or a cancellation.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts one in an [`AtomicUsize`] from its creation until it is dropped.
#[derive(Debug)]
pub struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    /// Counts one more in `n`.
    pub fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Counted(n)
    }

    /// Counts one more in `n` unless `limit` are counted already (then `None`, nothing counted).
    pub fn below(n: &'a AtomicUsize, limit: usize) -> Option<Self> {
        n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
            (c < limit).then_some(c + 1)
        })
        .ok()
        .map(|_| Counted(n))
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_lasts_as_long_as_its_guard_and_stops_at_its_limit() {
        let n = AtomicUsize::new(0);
        let a = Counted::new(&n);
        let b = Counted::below(&n, 2).expect("1 of 2 counted");
        assert_eq!(n.load(Ordering::Relaxed), 2);
        assert!(Counted::below(&n, 2).is_none(), "the limit is reached");
        assert_eq!(n.load(Ordering::Relaxed), 2, "a refusal counts nothing");
        drop(a);
        assert_eq!(n.load(Ordering::Relaxed), 1);
        let c = Counted::below(&n, 2).expect("room again");
        drop((b, c));
        assert_eq!(n.load(Ordering::Relaxed), 0);
    }
}
