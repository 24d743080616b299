//! Two trackers; the one a blob ranks first is dead, its address answered by a listener that
//! counts connections and drops them. Every pull completes through the other, and each client
//! (agents and the origin) stops contacting the dead one after `fails` errors.
//!
//! Time is measured in announces, not seconds: a window is "every client has had N more of
//! its own requests answered by the live tracker", read from each client's ledger of tracker
//! requests (see `common::Observed`). The fixture's tracker filter keeps a host out until a
//! request to it succeeds, and none is sent while another tracker is healthy: the behaviour of
//! a `fail_timeout` longer than the test.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Cluster, Node, Spec, digest_of, noise, poll_until};
use shoal_config::HostPort;
use shoal_p2p::HashRing;

const NS: &str = "library/fanout";

/// `tracker.cluster.healthcheck.fails` of every client in the fixture.
const FAILS: u64 = 2;

/// Announces each client makes to the live tracker per window (every 500 ms each).
const WINDOW: u64 = 4;

/// Waits until each of `clients` has had `n` more requests answered by `tracker`.
async fn announces(clients: &[&Node], tracker: std::net::SocketAddr, n: u64) {
    let calls = |c: &Node| c.tracker_calls.as_ref().unwrap().answered(tracker);
    let before: Vec<u64> = clients.iter().map(|c| calls(c)).collect();
    let done = poll_until(Duration::from_secs(60), || async {
        clients.iter().zip(&before).all(|(c, b)| calls(c) >= b + n)
    })
    .await;
    let now: Vec<u64> = clients.iter().map(|c| calls(c)).collect();
    assert!(
        done,
        "the live tracker did not answer {n} more requests of every client: {before:?} -> {now:?}"
    );
}

/// Each client's failed requests to `tracker`, in `clients` order.
fn failures(clients: &[&Node], tracker: std::net::SocketAddr) -> Vec<u64> {
    clients
        .iter()
        .map(|c| c.tracker_calls.as_ref().unwrap().failed(tracker))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_tracker_is_skipped_after_fails_errors() {
    let mut cluster = Cluster::start(Spec {
        trackers: 2,
        origins: 1,
        agents: 3,
        max_replica: 1,
        origin_egress_bits: None,
        ..Spec::default()
    })
    .await;
    let bytes = noise(16 << 20, 5);
    let digest = digest_of(&bytes);
    let ring = HashRing::new(
        cluster
            .trackers
            .iter()
            .map(|t| HostPort::new(t.http.ip().to_string(), t.http.port())),
    )
    .unwrap();
    let first = ring.ranked(&digest.parse().unwrap())[0].clone();
    let dead = cluster
        .trackers
        .iter()
        .position(|t| t.http.port() == first.port())
        .unwrap();
    cluster.trackers[dead].kill().await;
    let (dead, live) = (cluster.trackers[dead].http, cluster.trackers[1 - dead].http);
    let listener = tokio::net::TcpListener::bind(dead)
        .await
        .expect("taking over the dead tracker's port");
    let contacts = Arc::new(AtomicUsize::new(0));
    let counting = tokio::spawn({
        let contacts = contacts.clone();
        async move {
            while let Ok((stream, _)) = listener.accept().await {
                contacts.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        }
    });

    assert_eq!(cluster.push(0, NS, bytes).await, digest);
    let pulls = cluster.pull_everywhere(NS, &digest).await.unwrap();
    for (i, got) in pulls.into_iter().enumerate() {
        let got = got.unwrap_or_else(|e| panic!("agent{i}: {e}"));
        assert_eq!(got, digest, "agent{i} got other bytes");
    }

    // Each client gives up on the dead tracker after `fails` (2) errors, a few more at most for
    // requests already in flight; a client with one error so far meets its second at its next
    // announce. After a window of announces every client has.
    let clients: Vec<&Node> = cluster.agents.iter().chain(&cluster.origins).collect();
    announces(&clients, live, WINDOW).await;
    let seen = contacts.load(Ordering::SeqCst);
    let failed = failures(&clients, dead);
    eprintln!(
        "the dead tracker was contacted {seen} times by {} clients (failures per client: {failed:?})",
        clients.len()
    );
    assert!(
        seen >= 1,
        "the dead tracker was never tried: the test proves nothing"
    );
    assert!(
        seen <= 4 * clients.len(),
        "the dead tracker was contacted {seen} times by {} clients with fails: 2",
        clients.len()
    );
    for (c, f) in clients.iter().zip(&failed) {
        assert!(
            (FAILS..=2 * FAILS).contains(f),
            "{} failed {f} times at the dead tracker, with fails: {FAILS}",
            c.name
        );
    }

    // Then it stays out of rotation: another window of announces, and none reaches it.
    announces(&clients, live, WINDOW).await;
    let later = contacts.load(Ordering::SeqCst);
    assert_eq!(
        later, seen,
        "the dead tracker was contacted again within fail_timeout"
    );
    assert_eq!(failures(&clients, dead), failed);
    counting.abort();
}
