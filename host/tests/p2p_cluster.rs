//! The P2P roles as separate `shoal` processes on their own 127.0.0.x addresses: a tracker,
//! origins over one `fs` backend with `max_replica` copies, and agents pulling through the
//! registry API. What issue 6 accepts: every agent gets the verified blob, the origins send
//! about one copy, the agents trade most bytes among themselves; an origin killed mid-transfer
//! costs nothing; a dead tracker is skipped.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Cluster, Spec, pull_everywhere};
use common::skopeo::{skopeo, skopeo_push};
use common::{DevServer, assert_same_blobs, image, poll_until, require, run_ok};

/// An origin `scheduler.conn.bandwidth` block capping egress at `bits` per second.
fn origin_egress(bits: u64) -> String {
    format!(
        "  conn:\n    bandwidth:\n      enable: true\n      egress_bits_per_sec: {bits}\n      \
         ingress_bits_per_sec: 100000000000\n"
    )
}

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
        origin_extra: origin_egress(400_000_000),
        ..Spec::default()
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

/// An origin holding the blob is killed while agents download it: they finish from the replica
/// (and each other). The other origins' active check marks it unhealthy; restarted, healthy.
#[test]
fn an_origin_killed_mid_transfer_costs_nothing_and_the_active_check_follows_it() {
    let cluster = Cluster::start(Spec {
        agents: 3,
        // 100 Mbit/s per origin: 64 MiB takes seconds, long enough to kill one mid-way.
        origin_extra: origin_egress(100_000_000),
        ..Spec::default()
    });
    let size = 64 << 20;
    let digest = cluster.push(0, NS, pseudo_random(size, 11));
    let holders = || {
        (0..cluster.origins.len())
            .filter(|&i| cluster.origins[i].holds(NS, &digest))
            .count()
    };
    assert!(
        poll_until(Duration::from_secs(120), || holders() >= 2),
        "the blob never reached a second origin\n{}",
        cluster.logs()
    );
    let (victim, results) = std::thread::scope(|s| {
        let pulls = s.spawn(|| pull_everywhere(&cluster.agents, NS, &digest));
        let started = Instant::now();
        let victim = loop {
            if let Some(i) = (0..cluster.origins.len()).find(|&i| cluster.origins[i].sent() > 0) {
                break i;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no origin ever sent"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let sent = cluster.origins[victim].sent();
        cluster.origins[victim].kill();
        eprintln!("killed origin{victim} after it sent {sent} of {size} bytes");
        (victim, pulls.join().unwrap())
    });
    for (agent, got) in &results {
        assert_eq!(got, &digest, "{agent} got other bytes\n{}", cluster.logs());
    }
    let dead = cluster.origins[victim].http;
    let witness = &cluster.origins[(victim + 1) % cluster.origins.len()];
    assert!(
        poll_until(Duration::from_secs(30), || witness.sees_healthy(dead)
            == Some(false)),
        "{} never marked the killed origin {dead} unhealthy\n{}",
        witness.name,
        cluster.logs()
    );
    cluster.origins[victim].start();
    assert!(
        poll_until(Duration::from_secs(30), || witness.sees_healthy(dead)
            == Some(true)),
        "{} never marked the restarted origin {dead} healthy again\n{}",
        witness.name,
        cluster.logs()
    );
}

/// Two trackers; the one this blob ranks first is dead (its address answered by a listener
/// that counts connections and drops them). Every agent still completes, through the other,
/// and each stops contacting the dead one after `fails` errors until `fail_timeout`.
#[test]
fn a_dead_tracker_is_skipped_after_fails_errors() {
    use shoal_p2p::HashRing;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    let cluster = Cluster::start(Spec {
        trackers: 2,
        origins: 1,
        agents: 3,
        max_replica: 1,
        // Long enough that no retry of the dead tracker is due during the test.
        tracker_fail_timeout: "10m",
        ..Spec::default()
    });
    let bytes = pseudo_random(16 << 20, 5);
    let digest = {
        use sha2::Digest as _;
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)))
    };
    let ring = HashRing::new(
        cluster
            .trackers
            .iter()
            .map(|t| shoal_config::HostPort::new(t.http.ip().to_string(), t.http.port())),
    )
    .unwrap();
    let first = ring.ranked(&digest.parse().unwrap())[0].clone();
    let dead = cluster
        .trackers
        .iter()
        .position(|t| t.http.port() == first.port())
        .unwrap();
    cluster.trackers[dead].kill();
    let addr = cluster.trackers[dead].http;
    let listener = std::net::TcpListener::bind(addr).expect("taking over the dead tracker's port");
    let contacts = Arc::new(AtomicUsize::new(0));
    let counted = contacts.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counted.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    assert_eq!(cluster.push(0, NS, bytes), digest);
    let results = pull_everywhere(&cluster.agents, NS, &digest);
    for (agent, got) in &results {
        assert_eq!(got, &digest, "{agent} got other bytes\n{}", cluster.logs());
    }
    // Each client (agents and the origin) gives up on the dead tracker after `fails` (2) errors,
    // a few more at most for requests already in flight; a client with one error so far meets
    // its second at its next announce (every 500 ms). Then it stays out of rotation until
    // `fail_timeout` (10m): the seeders go on announcing, and none reaches it.
    let clients = cluster.agents.len() + cluster.origins.len();
    std::thread::sleep(Duration::from_secs(2));
    let seen = contacts.load(Ordering::SeqCst);
    eprintln!("the dead tracker was contacted {seen} times by {clients} clients");
    assert!(
        seen >= 1,
        "the dead tracker was never tried: the test proves nothing"
    );
    assert!(
        seen <= 4 * clients,
        "the dead tracker was contacted {seen} times by {clients} clients with fails: 2"
    );
    std::thread::sleep(Duration::from_secs(3));
    let later = contacts.load(Ordering::SeqCst);
    assert_eq!(
        later, seen,
        "the dead tracker was contacted again within fail_timeout"
    );
}

/// What users run: skopeo pushes an image into the backend (through `shoal dev` over the same
/// folder), then pulls it by tag from each agent: the tag from the build-index, the manifest
/// and layers over P2P.
#[test]
fn skopeo_pulls_an_image_by_tag_through_every_agent() {
    if !require("skopeo") {
        return;
    }
    let cluster = Cluster::start(Spec {
        origins: 2,
        agents: 3,
        build_index: true,
        ..Spec::default()
    });
    let work = common::tempdir("shoal-p2p-image-");
    let layout = work.path().join("layout");
    let built = image::write_image_layout(&layout, "v1", "p2p");
    let dev_config = work.path().join("dev.yaml");
    std::fs::write(
        &dev_config,
        format!(
            "backends:\n  - namespace: .*\n    backend:\n      fs:\n        root: {}\n",
            cluster.backend.display()
        ),
    )
    .unwrap();
    let dev = DevServer::start_with_config(&work.path().join("dev"), &dev_config);
    skopeo_push(&dev, &layout, "v1", "team/app:v1", false);
    dev.stop();
    for agent in &cluster.agents {
        let out = work.path().join(format!("pulled-{}", agent.name));
        run_ok(
            skopeo()
                .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
                .arg(format!("docker://{}/team/app:v1", agent.http))
                .arg(format!("oci:{}:v1", out.display())),
        );
        assert_same_blobs(&layout, &out);
        assert_eq!(
            image::layout_digest_for_tag(&out, "v1"),
            built.manifest_digest,
            "{}",
            agent.name
        );
    }
    // Pushing to an agent is refused: it is read-only.
    let status = std::process::Command::new("skopeo")
        .args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/team/other:v1", cluster.agents[0].http))
        .output()
        .unwrap();
    assert!(!status.status.success(), "an agent accepted a push");
    let received: u64 = cluster.agents.iter().map(|a| a.received()).sum();
    assert!(received > 0, "the agents received nothing over P2P");
}

/// A peer that hands out corrupt pieces, announced to the real tracker as complete (so agents
/// dial it first): every agent blacklists it after its first bad piece and still completes
/// with the right bytes from the origin and each other.
#[test]
fn a_peer_serving_corrupt_pieces_is_blacklisted_by_every_agent() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::{Bytes, BytesMut};
    use shoal_p2p::wire::{FrameDecoder, encode};
    use shoal_p2p::{Bitfield, Frame, Handshake, Metainfo, PeerId};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let cluster = Cluster::start(Spec {
        origins: 1,
        agents: 3,
        max_replica: 1,
        origin_extra: origin_egress(200_000_000),
        ..Spec::default()
    });
    let digest = cluster.push(0, NS, pseudo_random(24 << 20, 3));
    let tracker = cluster.trackers[0].http;
    let url = format!(
        "http://{tracker}/namespace/{}/blobs/{digest}/metainfo",
        NS.replace('/', "%2F")
    );
    let mut raw = None;
    assert!(poll_until(Duration::from_secs(60), || {
        raw = common::cluster::get(&url)
            .filter(|(s, _)| *s == 200)
            .map(|(_, b)| b);
        raw.is_some()
    }));
    let metainfo = Metainfo::decode(&raw.unwrap()).unwrap();

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let liar_ip = common::cluster::ip(200);
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind((liar_ip, 0)))
        .unwrap();
    let liar = listener.local_addr().unwrap();
    let id = PeerId::random();
    let accepted = Arc::new(AtomicUsize::new(0));
    let bad_pieces = Arc::new(AtomicUsize::new(0));
    {
        let (accepted, bad_pieces, m) = (accepted.clone(), bad_pieces.clone(), metainfo.clone());
        runtime.spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let (m, bad_pieces) = (m.clone(), bad_pieces.clone());
                tokio::spawn(async move {
                    let decoder = FrameDecoder::for_torrent(&m);
                    let (mut buf, mut out) = (BytesMut::new(), BytesMut::new());
                    loop {
                        while let Ok(Some((frame, used))) = decoder.decode(&buf) {
                            let _ = buf.split_to(used);
                            out.clear();
                            match frame {
                                Frame::Handshake(h) => {
                                    let ours = Handshake {
                                        peer_id: id,
                                        bitfield: Bitfield::full(m.piece_count()),
                                        ..h
                                    };
                                    encode(&Frame::Handshake(ours), &mut out).unwrap();
                                }
                                Frame::PieceRequest { index } => {
                                    bad_pieces.fetch_add(1, Ordering::SeqCst);
                                    let size = m.piece_size(index).unwrap() as usize;
                                    let data = Bytes::from(vec![0x5A; size]);
                                    encode(&Frame::PiecePayload { index, data }, &mut out).unwrap();
                                }
                                _ => {}
                            }
                            if s.write_all(&out).await.is_err() {
                                return;
                            }
                        }
                        match s.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                });
            }
        });
    }
    // Announce the liar as a complete peer, again and again, as a real one would.
    let announce = serde_json::json!({
        "namespace": NS,
        "digest": digest,
        "peer": {
            "peer_id": id.to_string(),
            "ip": liar.ip().to_string(),
            "port": liar.port(),
            "complete": true,
            "origin": false,
        },
    });
    let announce_url = format!("http://{tracker}/announce/{}", metainfo.info_hash());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let announcer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            while !stop.load(Ordering::SeqCst) {
                let r = client
                    .post(&announce_url)
                    .header("content-type", "application/json")
                    .body(announce.to_string())
                    .send()
                    .unwrap();
                assert_eq!(r.status().as_u16(), 200, "{:?}", r.text());
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let results = pull_everywhere(&cluster.agents, NS, &digest);
    stop.store(true, Ordering::SeqCst);
    announcer.join().unwrap();
    for (agent, got) in &results {
        assert_eq!(got, &digest, "{agent} got other bytes\n{}", cluster.logs());
    }
    let (tries, bad) = (
        accepted.load(Ordering::SeqCst),
        bad_pieces.load(Ordering::SeqCst),
    );
    eprintln!("the liar was dialed {tries} times and asked for {bad} pieces");
    assert!(
        tries >= 1,
        "no agent ever dialed the liar: the test proves nothing"
    );
    assert!(
        tries <= cluster.agents.len(),
        "an agent came back to the liar ({tries} dials)"
    );
    let banned = cluster
        .agents
        .iter()
        .filter(|a| a.log().iter().any(|l| l.contains("peer blacklisted")))
        .count();
    // An agent that dialed the liar and was asked nothing of it (it had finished) has no bad
    // piece to judge it by; every one that was sent one blacklisted it.
    assert!(
        bad >= 1 && banned >= 1,
        "nobody blacklisted the liar ({bad} bad pieces)"
    );
    assert!(banned <= tries);
}
