//! shoal's Prometheus metrics, hand-written and small: [`Counter`], [`Gauge`] and
//! [`Histogram`], a [`Family`] of each by label values, the text exposition format that every
//! role's `/metrics` writes ([`Exposition`]), and a strict parser of that format ([`parse`]) that
//! the tests read scrapes with.
//!
//! There is no global registry. Whatever records metrics owns them (the HTTP server its request
//! counters, a storage router its backend calls, a scheduler its pieces) and implements
//! [`Collect`]; a role's `/metrics` asks each of its parts in turn. Several roles in one test
//! process then keep apart, as they would in their own processes.
//!
//! Names follow Prometheus' conventions: `shoal_` first, `_total` for counters, base units
//! (`_seconds`, `_bytes`) in the name.

#![warn(missing_docs)]

mod family;
pub mod parse;
mod process;
mod text;

pub use family::{Counter, Family, Gauge, Histogram};
pub use process::{Process, mark_process_start};
pub use text::{Exposition, Kind, Samples};

/// Something that has metrics to show: writes them into a scrape.
pub trait Collect: Send + Sync {
    /// Writes every family this part owns into `out`.
    fn collect(&self, out: &mut Exposition);
}

/// Bucket bounds for request and call latencies, in seconds: from a cached tag (under a
/// millisecond) to a large blob through a slow backend (minutes).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];
