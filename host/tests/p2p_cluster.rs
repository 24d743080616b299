//! The P2P roles as separate `shoal` processes on their own 127.0.0.x addresses: a tracker,
//! origins over one `fs` backend with `max_replica` copies, and agents pulling through the
//! registry API. What issue 6 accepts: every agent gets the verified blob, the origins send
//! about one copy, the agents trade most bytes among themselves; an origin killed mid-transfer
//! costs nothing; a dead tracker is skipped.

mod common;

use common::cluster::{Cluster, Spec, pull_everywhere};

const NS: &str = "library/fanout";

fn pseudo_random(len: usize, seed: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// 1 tracker, 3 origins with max_replica 2, 6 agents, a 256 MiB blob: every agent gets it
/// verified; origins send at most 2x the blob; at least half of what agents received came from
/// other agents. Origins' egress is capped (as it is in production: a few origins behind many
/// agents), agents' is not.
#[test]
fn six_agents_pull_a_256_mib_blob_mostly_from_each_other() {
    let size = 256 << 20;
    let cluster = Cluster::start(Spec {
        trackers: 1,
        origins: 3,
        agents: 6,
        max_replica: 2,
        // 400 Mbit/s per origin.
        origin_extra: "  conn:\n    bandwidth:\n      enable: true\n      egress_bits_per_sec: 400000000\n      ingress_bits_per_sec: 100000000000\n".to_owned(),
        agent_extra: String::new(),
    });
    let bytes = pseudo_random(size, 7);
    let digest = cluster.push(0, NS, bytes);
    let results = pull_everywhere(&cluster.agents, NS, &digest);
    for (agent, got) in &results {
        assert_eq!(got, &digest, "{agent} got other bytes\n{}", cluster.logs());
    }
    let size = size as u64;
    let origins_sent: u64 = cluster.origins.iter().map(|o| o.sent()).sum();
    let agents_received: u64 = cluster.agents.iter().map(|a| a.received()).sum();
    let agents_sent: u64 = cluster.agents.iter().map(|a| a.sent()).sum();
    eprintln!(
        "blob {size} B; origins sent {origins_sent} B ({:.2}x); agents received {agents_received} B, \
         of which agents sent {agents_sent} B ({:.2})",
        origins_sent as f64 / size as f64,
        agents_sent as f64 / agents_received as f64
    );
    assert!(
        agents_received >= 6 * size,
        "agents received {agents_received} B"
    );
    assert!(
        origins_sent <= 2 * size,
        "origins sent {origins_sent} B, more than twice the blob"
    );
    assert!(
        agents_sent * 2 >= agents_received,
        "only {agents_sent} of {agents_received} B came from other agents"
    );
}
