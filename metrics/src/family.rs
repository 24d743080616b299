//! The metric types and their families by label values. Recording is a relaxed atomic
//! operation (a histogram's sum a compare-and-swap); a family takes a lock only to find its
//! series.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A count that only goes up (until the process restarts).
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one away.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// The value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Observations counted into buckets with fixed upper bounds, with their count and sum.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, and one past the last (`+Inf`); not cumulative.
    buckets: Box<[AtomicU64]>,
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds`, which must be increasing.
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Counts `value`.
    pub fn observe(&self, value: f64) {
        let i = self.bounds.partition_point(|b| *b < value);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let mut old = self.sum.load(Ordering::Relaxed);
        loop {
            let new = (f64::from_bits(old) + value).to_bits();
            match self
                .sum
                .compare_exchange_weak(old, new, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(now) => old = now,
            }
        }
    }

    /// Counts a duration, in seconds.
    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// The upper bounds, without `+Inf`.
    pub fn bounds(&self) -> &'static [f64] {
        self.bounds
    }

    /// Cumulative counts: for each bound, the observations at or below it, then the total.
    pub fn cumulative(&self) -> Vec<u64> {
        let mut total = 0;
        self.buckets
            .iter()
            .map(|b| {
                total += b.load(Ordering::Relaxed);
                total
            })
            .collect()
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Their sum.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }
}

/// One metric per combination of the values of `N` labels. Callers pass values from small,
/// fixed sets (a route template, a status, a plugin name), never a client's free text, so
/// the number of series stays bounded.
pub struct Family<M, const N: usize> {
    labels: [&'static str; N],
    make: fn() -> M,
    series: Mutex<BTreeMap<[String; N], Arc<M>>>,
}

impl<M, const N: usize> std::fmt::Debug for Family<M, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Family")
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

impl<M: Default, const N: usize> Family<M, N> {
    /// A family of counters or gauges labelled `labels`.
    pub fn new(labels: [&'static str; N]) -> Self {
        Family::with(labels, M::default)
    }
}

impl<M, const N: usize> Family<M, N> {
    /// A family whose series are made by `make` (a histogram's buckets).
    pub fn with(labels: [&'static str; N], make: fn() -> M) -> Self {
        Family {
            labels,
            make,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    /// The series of `values`, made at first use.
    pub fn get(&self, values: [&str; N]) -> Arc<M> {
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up by borrowed values first: most calls find an existing series.
        if let Some((_, m)) = series
            .iter()
            .find(|(k, _)| k.iter().zip(values.iter()).all(|(a, b)| a == b))
        {
            return m.clone();
        }
        let key = values.map(str::to_owned);
        series
            .entry(key)
            .or_insert_with(|| Arc::new((self.make)()))
            .clone()
    }

    /// The label names.
    pub fn labels(&self) -> &[&'static str; N] {
        &self.labels
    }

    /// Every series so far, in label order.
    pub fn series(&self) -> Vec<([String; N], Arc<M>)> {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        series.iter().map(|(k, m)| (k.clone(), m.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_into_the_first_bucket_at_or_above_the_value() {
        let h = Histogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 2.0] {
            h.observe(v);
        }
        assert_eq!(h.cumulative(), vec![2, 3, 4]);
        assert_eq!(h.count(), 4);
        assert!((h.sum() - 2.65).abs() < 1e-9);
    }

    #[test]
    fn a_family_keeps_one_series_per_label_values() {
        let f: Family<Counter, 2> = Family::new(["a", "b"]);
        f.get(["x", "1"]).inc();
        f.get(["x", "1"]).add(2);
        f.get(["y", "1"]).inc();
        let series = f.series();
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].0, ["x".to_owned(), "1".to_owned()]);
        assert_eq!(series[0].1.get(), 3);
    }
}
