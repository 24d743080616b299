//! A whole cluster in one process: tracker, two origins, build-index and three agents over a
//! native in-memory backend. An image's tag and manifest resolve through every agent, and a
//! layer reaches every agent while the origin that was sending it is killed mid-transfer; the
//! other origin's active check marks it unhealthy, and healthy again once it is restarted.
//! Nothing sleeps to synchronize: every wait polls a condition with a deadline.

mod common;

use std::time::Duration;

use common::images::image_manifest;
use common::{Cluster, Spec, digest_of, noise, poll_until};

const NS: &str = "team/app";
const SENT: &str = "shoal_p2p_piece_bytes_sent_total ";
const RECEIVED: &str = "shoal_p2p_piece_bytes_received_total ";

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_killed_mid_transfer_costs_nothing_and_the_active_check_follows_it() {
    // 64 Mbit/s out of each origin: a 48 MiB layer takes seconds, so there is a middle.
    let cluster = Cluster::start(Spec {
        origin_egress_bits: Some(64 << 20),
        ..Spec::default()
    })
    .await;

    let layer = noise(48 << 20, 1);
    let config = br#"{"architecture":"amd64","os":"linux"}"#.to_vec();
    let manifest = image_manifest(&config, &layer);
    let (layer_digest, manifest_digest) = (digest_of(&layer), digest_of(&manifest));
    for blob in [&layer, &config, &manifest] {
        cluster
            .backend
            .insert(NS, hex(&digest_of(blob)), blob.clone());
    }
    cluster
        .backend
        .insert(NS, &format!("{NS}:v1"), manifest_digest.clone());

    // The tag resolves at build-index and the manifest comes over P2P, at every agent.
    let manifest_path = format!("/v2/{NS}/manifests/v1");
    let pulls = (0..cluster.agents.len()).map(|i| cluster.get(i, &manifest_path));
    for (i, (status, body)) in futures_util::future::join_all(pulls)
        .await
        .into_iter()
        .enumerate()
    {
        assert_eq!(status, 200, "agent{i}: {}", String::from_utf8_lossy(&body));
        assert_eq!(digest_of(&body), manifest_digest, "agent{i}");
    }

    // The layer, at every agent at once.
    let downloads_before = cluster.backend.downloads();
    let pulls = cluster.pull_everywhere(NS, &layer_digest);

    // Mid-transfer: an origin has sent 4 MiB of the layer, and both origins hold it whole (the
    // replica is in place, as a ring with max_replica 2 promises).
    let victim = std::sync::Mutex::new(None);
    let found = poll_until(Duration::from_secs(120), || async {
        if !(cluster.holds(&cluster.origins[0], NS, &layer_digest).await
            && cluster.holds(&cluster.origins[1], NS, &layer_digest).await)
        {
            return false;
        }
        for (i, o) in cluster.origins.iter().enumerate() {
            let sent = cluster.metric(o, SENT).await.unwrap_or(0);
            if sent >= 4 << 20 {
                *victim.lock().unwrap() = Some((i, sent));
                return true;
            }
        }
        false
    })
    .await;
    assert!(found, "no origin started sending the layer");
    let (victim, sent_before_kill) = victim.into_inner().unwrap().unwrap();
    let mut cluster = cluster;
    cluster.origins[victim].kill().await;
    // The manifest (under 1 KiB) and the layer: the victim had not sent the whole layer yet.
    assert!(
        sent_before_kill < layer.len() as u64,
        "origin{victim} had already sent {sent_before_kill} bytes: nothing was left to cut"
    );

    for (i, got) in pulls.await.unwrap().into_iter().enumerate() {
        let got = got.unwrap_or_else(|e| panic!("agent{i}: {e}"));
        assert_eq!(got, layer_digest, "agent{i} got other bytes");
    }
    // Each agent received each piece once, from the survivor or from each other; the layer was
    // read from the backend once (by the first owner), or twice if the tracker asked the
    // second owner before the replica landed.
    for (i, a) in cluster.agents.iter().enumerate() {
        let received = cluster.metric(a, RECEIVED).await.unwrap();
        assert!(
            received >= layer.len() as u64,
            "agent{i} received only {received} bytes"
        );
    }
    let reads = cluster.backend.downloads() - downloads_before;
    assert!(
        (1..=2).contains(&reads),
        "{reads} backend reads of one layer"
    );
    let survivor = &cluster.origins[1 - victim];
    assert!(survivor.running());

    // The survivor's active check (fails: 2, passes: 2, every 500 ms) follows the victim: out
    // of its ring once dead...
    let dead = cluster.origins[victim].http;
    assert!(
        cluster.until_judged(1 - victim, victim, false).await,
        "origin{} never marked the killed {dead} unhealthy",
        1 - victim
    );
    // ...and back in once restarted on the same addresses and data directory, where the layer
    // it held whole is still in its piece store.
    cluster.restart_origin(victim).await;
    assert!(
        cluster.until_judged(1 - victim, victim, true).await,
        "origin{} never marked the restarted {dead} healthy again",
        1 - victim
    );
    let restarted = &cluster.origins[victim];
    assert!(cluster.holds(restarted, NS, &layer_digest).await);
}
