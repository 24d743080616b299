//! What each `scheduler:` key changes, shown on schedulers over loopback sockets with an
//! in-process tracker: `seeder_tti`, `leecher_tti`, `conn.tti`, `connstate.max_open_conn`,
//! `connstate.blacklist_duration` and `announce_interval`. Every test sets the key on one
//! scheduler and leaves it at its default (or another value) on a second one in the same run,
//! so the difference shows without timing anything against the wall clock.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use shoal_config::{BandwidthConfig, ConnStateConfig, SchedulerConfig};
use shoal_p2p::testing::CorruptPeer;
use shoal_p2p::{Bitfield, Frame, Handshake, Metainfo, PeerId, Scheduler, wire};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use common::{
    FakeTracker, NS, blob, config, digest_of, download_everywhere, eventually, leechers, node,
    read_all, seed_blob,
};

/// Long enough for anything the tests wait for on a loaded machine; reached only on failure.
const PATIENCE: Duration = Duration::from_secs(20);

fn secs(s: u64) -> shoal_config::Duration {
    shoal_config::Duration::from_secs(s)
}

/// The metainfo of `bytes`, for a torrent nobody seeds.
fn metainfo_of(bytes: &[u8]) -> Metainfo {
    Metainfo::from_reader(bytes, &digest_of(bytes), 256 << 10).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeder_tti_ends_an_idle_seed_and_its_announces() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Arc::new(FakeTracker::default());
    let short = SchedulerConfig {
        seeder_tti: secs(1),
        ..config()
    };
    let seeder = node(dir.path(), "seed", tracker.clone(), short, true).await;
    let bytes = blob(1 << 20, 11);
    let m = seed_blob(&seeder, &bytes, 256 << 10).await;
    tracker.publish(m.clone());
    // The leecher keeps the default seeder_tti (5m): once complete it seeds on, the control.
    let leecher = node(dir.path(), "leech", tracker.clone(), config(), false).await;
    let got = leecher.download(NS, m.digest()).await.unwrap();
    assert_eq!(read_all(&got).await, bytes);

    eventually(PATIENCE, "the seed idle past seeder_tti ended", || {
        seeder.active_torrents() == 0
    })
    .await;
    assert_eq!(seeder.stats().torrents, 0);
    assert_eq!(
        leecher.active_torrents(),
        1,
        "the seed with the default seeder_tti ended too"
    );
    // An announce begun just before the end may still arrive: count from the control's next.
    let (me, control) = (seeder.identity().peer_id, leecher.identity().peer_id);
    let c0 = tracker.announces_of(control);
    eventually(PATIENCE, "the control announced", || {
        tracker.announces_of(control) > c0
    })
    .await;
    let ended = tracker.announces_of(me);
    let c1 = tracker.announces_of(control);
    eventually(PATIENCE, "the control announced three more times", || {
        tracker.announces_of(control) >= c1 + 3
    })
    .await;
    assert_eq!(
        tracker.announces_of(me),
        ended,
        "the seed still announced after its seeder_tti"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leecher_tti_fails_a_download_that_gets_no_piece() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Arc::new(FakeTracker::default());
    // Nobody seeds it: the tracker knows the blob and hands out no peer with a piece.
    let m = metainfo_of(&blob(1 << 20, 12));
    tracker.publish(m.clone());
    let short = SchedulerConfig {
        leecher_tti: secs(1),
        ..config()
    };
    let quick = node(dir.path(), "quick", tracker.clone(), short, false).await;
    // The test config's leecher_tti, 30s.
    let patient = node(dir.path(), "patient", tracker.clone(), config(), false).await;
    let download = |s: &Scheduler| {
        let (s, d) = (s.clone(), m.digest().clone());
        tokio::spawn(async move { s.download(NS, &d).await })
    };
    let (quick_download, patient_download) = (download(&quick), download(&patient));

    let outcome = tokio::time::timeout(PATIENCE, quick_download)
        .await
        .expect("a download with leecher_tti 1s was still waiting")
        .unwrap();
    let err = outcome.expect_err("a download with no peer succeeded");
    assert!(err.to_string().contains("leecher TTI"), "{err}");
    assert!(
        !patient_download.is_finished(),
        "the download with leecher_tti 30s ended as early"
    );
    patient_download.abort();
}

/// Connects to `addr` as a peer that has no piece, sends its handshake for `m`'s torrent and
/// then says nothing.
async fn silent_peer(addr: SocketAddr, m: &Metainfo) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let hello = Frame::Handshake(Handshake {
        peer_id: PeerId::random(),
        info_hash: m.info_hash(),
        digest: m.digest().clone(),
        namespace: NS.to_owned(),
        bitfield: Bitfield::empty(m.piece_count()),
    });
    let mut buf = BytesMut::new();
    wire::encode(&hello, &mut buf).unwrap();
    stream.write_all(&buf).await.unwrap();
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conn_tti_closes_a_connection_that_carries_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Arc::new(FakeTracker::default());
    let mut short = config();
    short.conn.tti = secs(1);
    let quick = node(dir.path(), "quick", tracker.clone(), short, true).await;
    // The default conn.tti, 5m.
    let patient = node(dir.path(), "patient", tracker.clone(), config(), true).await;
    let bytes = blob(1 << 20, 13);
    let m = seed_blob(&quick, &bytes, 256 << 10).await;
    seed_blob(&patient, &bytes, 256 << 10).await;

    let mut to_quick = silent_peer(quick.identity().advertise, &m).await;
    let _to_patient = silent_peer(patient.identity().advertise, &m).await;
    eventually(PATIENCE, "both seeds took the silent peer", || {
        quick.stats().peers == 1 && patient.stats().peers == 1
    })
    .await;
    // The seed answers (handshake, `complete`) and then closes the idle connection.
    let mut answered = Vec::new();
    let closed = tokio::time::timeout(PATIENCE, to_quick.read_to_end(&mut answered)).await;
    assert!(
        closed.is_ok(),
        "an idle connection to the seed with conn.tti 1s stayed open"
    );
    assert!(
        !answered.is_empty(),
        "the seed never answered the handshake"
    );
    eventually(PATIENCE, "the seed counted the connection closed", || {
        quick.stats().peers == 0
    })
    .await;
    assert_eq!(
        patient.stats().peers,
        1,
        "the seed with the default conn.tti closed its idle connection too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_open_conn_caps_a_seed_and_every_leecher_still_completes() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Arc::new(FakeTracker::default());
    let mut one = config();
    one.connstate.max_open_conn = 1;
    // Paced at 1 MiB/s, so the leechers are connected for seconds, all at once if allowed.
    one.conn.bandwidth = BandwidthConfig {
        enable: true,
        egress_bits_per_sec: 8 << 20,
        ingress_bits_per_sec: 1 << 40,
        ..BandwidthConfig::default()
    };
    let seeder = node(dir.path(), "seed", tracker.clone(), one, true).await;
    let bytes = blob(4 << 20, 14);
    let m = seed_blob(&seeder, &bytes, 256 << 10).await;
    tracker.publish(m.clone());
    let leechers = leechers(dir.path(), &tracker, 3).await;

    let most = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let watch = {
        let (seeder, most, done) = (seeder.clone(), most.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(seeder.stats().peers, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    for got in download_everywhere(&leechers, &m).await {
        assert_eq!(read_all(&got).await, bytes, "bytes differ");
    }
    done.store(true, Ordering::Relaxed);
    watch.await.unwrap();
    assert_eq!(
        most.load(Ordering::Relaxed),
        1,
        "the seed with max_open_conn 1 held that many connections at once"
    );
    // The other two got their pieces from the one the seed served.
    let from_peers: u64 = leechers.iter().map(|l| l.traffic().0).sum();
    assert!(from_peers > 0, "no leecher served another");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_blacklist_duration_a_banned_peer_is_dialled_again() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Arc::new(FakeTracker::default());
    // The only peer the tracker hands out serves corrupt pieces.
    let m = metainfo_of(&blob(1 << 20, 15));
    tracker.publish(m.clone());
    let liar = CorruptPeer::start(Ipv4Addr::LOCALHOST.into(), m.clone())
        .await
        .unwrap();
    tracker.add_peer(m.info_hash(), liar.as_peer());
    let short = SchedulerConfig {
        connstate: ConnStateConfig {
            blacklist_duration: secs(1),
            ..ConnStateConfig::default()
        },
        ..config()
    };
    let forgiving = node(dir.path(), "forgiving", tracker.clone(), short, false).await;
    // The default blacklist_duration, 30s.
    let strict = node(dir.path(), "strict", tracker.clone(), config(), false).await;
    let downloads: Vec<_> = [&forgiving, &strict]
        .into_iter()
        .map(|s| {
            let (s, d) = (s.clone(), m.digest().clone());
            tokio::spawn(async move { s.download(NS, &d).await })
        })
        .collect();
    let dials = |s: &Scheduler| liar.dials().get(&s.identity().peer_id).copied();

    eventually(PATIENCE, "both leechers banned the liar", || {
        forgiving.blacklisted() >= 1 && strict.blacklisted() >= 1
    })
    .await;
    eventually(
        PATIENCE,
        "the leecher with blacklist_duration 1s dialled the liar again",
        || dials(&forgiving) >= Some(2),
    )
    .await;
    assert_eq!(
        dials(&strict),
        Some(1),
        "the leecher with the default blacklist_duration dialled the liar again as early"
    );
    // Dialled again, the liar lies again and is banned again.
    eventually(PATIENCE, "the liar was banned a second time", || {
        forgiving.blacklisted() >= 2
    })
    .await;
    for d in downloads {
        d.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announce_interval_is_used_when_the_tracker_names_no_interval() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = blob(256 << 10, 16);
    let every = |ms: u64| SchedulerConfig {
        announce_interval: shoal_config::Duration::from_millis(ms),
        ..config()
    };
    // A tracker whose replies name no interval: each seed announces on its own clock.
    let silent = Arc::new(FakeTracker::with_interval(Duration::ZERO));
    let fast = node(dir.path(), "fast", silent.clone(), every(200), true).await;
    let slow = node(dir.path(), "slow", silent.clone(), every(60_000), true).await;
    // A tracker that names 60s: it wins over the seed's 200ms.
    let naming = Arc::new(FakeTracker::with_interval(Duration::from_secs(60)));
    let overruled = node(dir.path(), "overruled", naming.clone(), every(200), true).await;
    for s in [&fast, &slow, &overruled] {
        seed_blob(s, &bytes, 64 << 10).await;
    }
    let id = |s: &Scheduler| s.identity().peer_id;

    eventually(
        PATIENCE,
        "the seed with announce_interval 200ms announced five times",
        || silent.announces_of(id(&fast)) >= 5,
    )
    .await;
    assert_eq!(
        silent.announces_of(id(&slow)),
        1,
        "the seed with announce_interval 60s announced again as often"
    );
    assert_eq!(
        naming.announces_of(id(&overruled)),
        1,
        "announce_interval overruled the tracker's interval"
    );
}
