//! What every role shows about its process: when it started (so a counter that went back to
//! zero reads as a restart, not a quiet node) and which build it runs.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Collect, Exposition, Kind};

static STARTED: OnceLock<SystemTime> = OnceLock::new();

/// Records now as the process's start; the binary calls it first thing. Later calls, and the
/// first scrape of a process that never called it, keep the first time recorded.
pub fn mark_process_start() -> SystemTime {
    *STARTED.get_or_init(SystemTime::now)
}

/// `shoal_process_start_time_seconds` and `shoal_build_info`.
#[derive(Clone, Copy, Debug)]
pub struct Process {
    /// The version `shoal_build_info` names.
    pub version: &'static str,
}

impl Collect for Process {
    fn collect(&self, out: &mut Exposition) {
        let started = mark_process_start()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        out.gauge(
            "shoal_process_start_time_seconds",
            "When this process started, in seconds since the Unix epoch: a counter that fell back to zero after it moved is a restart.",
            started.floor(),
        );
        out.family(
            "shoal_build_info",
            "The build this process runs; always 1.",
            Kind::Gauge,
        )
        .add(&[("version", self.version)], 1.0);
    }
}
