//! Ports for the daemons tests start (Redis, docker-registry, moto, ...), which take a port
//! number on their command line and cannot report one the kernel picked.
//!
//! A port found by binding `127.0.0.1:0` and closing the listener again comes from the
//! kernel's ephemeral range, the same range every other `bind(0)` and every outgoing
//! connection of the test run draws from: between the close and the daemon's own bind, a
//! test server of another test could be handed that port. The daemon then fails to bind,
//! the readiness probe connects to the other test's server, and the test talks to it (CI saw
//! `Connection reset by peer` from a docker-registry "listening" there when the other test
//! ended). [`daemon_port`] takes ports below the ephemeral range instead, where the kernel
//! hands out none, from a counter per process, so two daemons of one process never get the
//! same port either.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::atomic::{AtomicU32, Ordering};

/// Where the kernel's ephemeral ports start when `/proc` does not say.
const EPHEMERAL_LOW: u32 = 32768;

/// Lowest port handed out: far above the well-known and the usual service ports.
const FLOOR: u32 = 10000;

/// A port of 127.0.0.1 that no listener holds now and that the kernel does not hand out to
/// `bind(0)` or to outgoing connections. Processes running at once start at different
/// points of the range (by process id); one process walks it in order.
pub fn daemon_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let high = ephemeral_low().clamp(FLOOR + 1000, 65536);
    let span = high - FLOOR;
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FLOOR + (start + n) % span) as u16;
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
    panic!("no port of 127.0.0.1 in {FLOOR}..{high} is free");
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_low() -> u32 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(EPHEMERAL_LOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_ports_are_distinct_free_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| daemon_port()).collect();
        let mut unique = ports.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        let low = ephemeral_low();
        for p in ports {
            assert!(u32::from(p) >= FLOOR && u32::from(p) < low, "{p}");
            TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("a daemon port is free");
        }
    }
}
