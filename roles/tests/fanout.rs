//! One tracker, three origins with `max_replica: 2` and six agents in one process pull a
//! 256 MiB blob: every agent gets it verified, the origins send at most twice the blob, and at
//! least half of what the agents receive comes from other agents. The origins' egress is capped
//! (as in production: a few origins behind many agents), the agents' is not.

mod common;

use common::{Cluster, Spec, noise};

const NS: &str = "library/fanout";
const SENT: &str = "shoal_p2p_piece_bytes_sent_total ";
const RECEIVED: &str = "shoal_p2p_piece_bytes_received_total ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_agents_pull_a_256_mib_blob_mostly_from_each_other() {
    let size: u64 = 256 << 20;
    let cluster = Cluster::start(Spec {
        trackers: 1,
        origins: 3,
        agents: 6,
        max_replica: 2,
        origin_egress_bits: Some(400_000_000),
        ..Spec::default()
    })
    .await;
    let digest = cluster.push_to_owner(NS, noise(size as usize, 7)).await;
    let pulls = cluster.pull_everywhere(NS, &digest).await.unwrap();
    for (i, got) in pulls.into_iter().enumerate() {
        let got = got.unwrap_or_else(|e| panic!("agent{i}: {e}"));
        assert_eq!(got, digest, "agent{i} got other bytes");
    }

    let mut origins_sent = 0;
    for o in &cluster.origins {
        origins_sent += cluster.metric(o, SENT).await.unwrap();
    }
    let (mut agents_sent, mut agents_received) = (0, 0);
    for a in &cluster.agents {
        agents_sent += cluster.metric(a, SENT).await.unwrap();
        agents_received += cluster.metric(a, RECEIVED).await.unwrap();
    }
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
