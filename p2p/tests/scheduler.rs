//! Schedulers on real loopback sockets, with an in-process tracker: a seeder and several
//! leechers finish with the right bytes and trade pieces among themselves; a peer that serves
//! corrupt pieces is blacklisted and everyone still completes; the egress cap holds; with
//! `peer.tls` peers trade over TLS and a peer without a certificate from the CA is refused.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_config::{BandwidthConfig, SchedulerConfig};
use shoal_p2p::testing::{CorruptPeer, GatedPeer, TestCa};
use shoal_p2p::tls::PeerTls;
use shoal_p2p::{PieceIndex, Scheduler};

use common::{
    FakeTracker, NS, blob, config, download_everywhere, leechers, node, read_all, seed_blob,
    tls_node,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leechers_complete_and_trade_pieces_among_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Arc::new(FakeTracker::default());
    let seeder = node(dir.path(), "seed", tracker.clone(), config(), true).await;
    let bytes = blob(6 << 20, 1);
    let m = seed_blob(&seeder, &bytes, 256 << 10).await;
    tracker.publish(m.clone());

    let leechers = leechers(dir.path(), &tracker, 5).await;
    for blob in download_everywhere(&leechers, &m).await {
        assert_eq!(read_all(&blob).await, bytes, "bytes differ");
    }
    let (seeder_sent, _) = seeder.traffic();
    let received: u64 = leechers.iter().map(|l| l.traffic().1).sum();
    let from_peers: u64 = leechers.iter().map(|l| l.traffic().0).sum();
    assert!(received >= 5 * bytes.len() as u64, "received {received}");
    assert!(
        from_peers > 0,
        "leechers sent nothing to each other (seeder sent {seeder_sent}, received {received})"
    );
    // A second download of a complete blob is served from the store.
    let again = leechers[0].download(NS, m.digest()).await.unwrap();
    assert_eq!(again.len(), bytes.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_corrupt_pieces_is_blacklisted_and_downloads_complete() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Arc::new(FakeTracker::default());
    let bytes = blob(3 << 20, 2);
    let seeder = node(dir.path(), "seed", tracker.clone(), config(), true).await;
    let m = seed_blob(&seeder, &bytes, 128 << 10).await;
    tracker.publish(m.clone());
    let liar = CorruptPeer::start(Ipv4Addr::LOCALHOST.into(), m.clone())
        .await
        .unwrap();
    // The liar is listed first, as a complete peer.
    tracker.add_peer(m.info_hash(), liar.as_peer());
    let leechers = leechers(dir.path(), &tracker, 3).await;
    for blob in download_everywhere(&leechers, &m).await {
        assert_eq!(read_all(&blob).await, bytes);
    }
    // Each leecher dialed the liar at most once: blacklisted after its first bad piece.
    let tries = liar.connections();
    assert!(tries >= 1, "the corrupt peer was never contacted");
    assert!(
        tries <= 3,
        "the corrupt peer was dialed {tries} times by 3 leechers"
    );
    let again = liar.dials().into_values().filter(|&n| n > 1).count();
    assert_eq!(
        again,
        0,
        "a leecher came back to the liar: {:?}",
        liar.dials()
    );
    // Every leecher that was sent a corrupt piece banned its sender.
    let banned: u64 = leechers.iter().map(Scheduler::blacklisted).sum();
    assert!(
        liar.pieces_served() == 0 || banned >= 1,
        "{} corrupt pieces served and nobody blacklisted the liar",
        liar.pieces_served()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_stays_near_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = Arc::new(FakeTracker::default());
    let cap_bytes: u64 = 4 << 20; // 4 MiB/s
    let mut seed_config = config();
    seed_config.conn.bandwidth = BandwidthConfig {
        enable: true,
        egress_bits_per_sec: cap_bytes * 8,
        ingress_bits_per_sec: 1 << 40,
        ..BandwidthConfig::default()
    };
    let seeder = node(dir.path(), "seed", tracker.clone(), seed_config, true).await;
    let bytes = blob(16 << 20, 3);
    let m = seed_blob(&seeder, &bytes, 256 << 10).await;
    tracker.publish(m.clone());
    let leecher = node(dir.path(), "leech", tracker.clone(), config(), false).await;
    let start = Instant::now();
    let blob = leecher.download(NS, m.digest()).await.unwrap();
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(read_all(&blob).await, bytes);
    // One second of burst is allowed up front; the rest is paced.
    let rate = (bytes.len() as u64 - cap_bytes) as f64 / secs;
    let ratio = rate / cap_bytes as f64;
    eprintln!("egress {rate:.0} B/s against a cap of {cap_bytes} B/s: {ratio:.3}");
    assert!(ratio <= 1.10, "egress {ratio:.3}x the cap");
}

/// `peer.tls` of a peer with a certificate from `ca`.
fn peer_tls(ca: &TestCa, leaf: &str) -> PeerTls {
    let (cert, key) = ca.issue(leaf);
    PeerTls::load(&shoal_config::PeerTls {
        cert,
        key,
        ca: ca.cert(),
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_with_tls_trade_pieces() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "cluster");
    let tracker = Arc::new(FakeTracker::default());
    let tls = peer_tls(&ca, "node");
    let seeder = tls_node(
        dir.path(),
        "seed",
        tracker.clone(),
        config(),
        true,
        Some(tls.clone()),
    )
    .await;
    let bytes = blob(3 << 20, 4);
    let m = seed_blob(&seeder, &bytes, 256 << 10).await;
    tracker.publish(m.clone());
    let mut leechers = Vec::new();
    for i in 0..3 {
        let tls = Some(peer_tls(&ca, &format!("leech{i}")));
        let name = format!("leech{i}");
        leechers.push(tls_node(dir.path(), &name, tracker.clone(), config(), false, tls).await);
    }
    for blob in download_everywhere(&leechers, &m).await {
        assert_eq!(read_all(&blob).await, bytes, "bytes differ");
    }
    assert!(seeder.traffic().0 >= bytes.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_peer_refuses_peers_without_a_certificate_from_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "cluster");
    let other = TestCa::new(dir.path(), "other");
    let tracker = Arc::new(FakeTracker::default());
    let seeder = tls_node(
        dir.path(),
        "seed",
        tracker.clone(),
        config(),
        true,
        Some(peer_tls(&ca, "seed")),
    )
    .await;
    let bytes = blob(1 << 20, 5);
    let m = seed_blob(&seeder, &bytes, 256 << 10).await;
    tracker.publish(m.clone());
    let short = SchedulerConfig {
        leecher_tti: shoal_config::Duration::from_secs(3),
        ..config()
    };

    // A peer whose certificate comes from another CA, and one that speaks plain TCP: neither
    // gets a byte.
    let stranger = tls_node(
        dir.path(),
        "stranger",
        tracker.clone(),
        short.clone(),
        false,
        Some(peer_tls(&other, "stranger")),
    )
    .await;
    let plain = node(dir.path(), "plain", tracker.clone(), short, false).await;
    for peer in [&stranger, &plain] {
        let outcome = peer.download(NS, m.digest()).await;
        assert!(
            outcome.is_err(),
            "a peer outside the CA downloaded the blob"
        );
        assert_eq!(
            peer.traffic().1,
            0,
            "a peer outside the CA received piece bytes"
        );
    }
    assert_eq!(
        seeder.traffic().0,
        0,
        "the seeder sent piece bytes to a stranger"
    );

    // A TLS client that trusts the CA but presents no certificate is refused in the handshake.
    let seeder_addr = seeder.identity().advertise;
    let mut roots = rustls::RootCertStore::empty();
    for cert in shoal_p2p::tls::certificates(&ca.cert()).unwrap() {
        roots.add(cert).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(seeder_addr).await.unwrap();
    let name = rustls_pki_types::ServerName::IpAddress(seeder_addr.ip().into());
    let refused = async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await?;
        // TLS 1.3 reports a refused client certificate at the first read.
        tls.write_all(b"hello").await?;
        let mut byte = [0u8; 1];
        let n = tls.read(&mut byte).await?;
        Ok::<usize, std::io::Error>(n)
    }
    .await;
    match refused {
        Err(_) | Ok(0) => {}
        Ok(n) => panic!("the seeder answered {n} bytes to a client without a certificate"),
    }
}

/// Piece length of the [`gated`] blobs.
const PIECE: u64 = 64 << 10;

/// A blob of `pieces` pieces of [`PIECE`] bytes, the last `tail` bytes long, published at a
/// fake tracker, and a [`GatedPeer`] for it serving the pieces below `open` (not yet listed).
struct Gated {
    tracker: Arc<FakeTracker>,
    bytes: Vec<u8>,
    m: shoal_p2p::Metainfo,
    peer: GatedPeer,
}

async fn gated(pieces: u32, tail: usize, open: u32) -> Gated {
    let tracker = Arc::new(FakeTracker::default());
    let bytes = blob((pieces as usize - 1) * PIECE as usize + tail, pieces as u8);
    let m =
        shoal_p2p::Metainfo::from_reader(&bytes[..], &common::digest_of(&bytes), PIECE).unwrap();
    tracker.publish(m.clone());
    let peer = GatedPeer::start(
        Ipv4Addr::LOCALHOST.into(),
        m.clone(),
        bytes::Bytes::from(bytes.clone()),
        open,
    )
    .await
    .unwrap();
    Gated {
        tracker,
        bytes,
        m,
        peer,
    }
}

/// An origin lends each piece it sends to one agent and refuses it to the others until that
/// agent has it (then they fetch it there): so the agent tells its origins of every piece it
/// writes, though they are complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_tells_its_origin_of_each_piece_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    // The last piece waits, so the download (which closes its connections when it ends) stays
    // open until every other piece was announced.
    let pieces: u32 = 9;
    let last = pieces - 1;
    let Gated {
        tracker,
        bytes,
        m,
        peer: origin,
    } = gated(pieces, 7, last).await;
    tracker.add_peer(m.info_hash(), origin.as_origin());
    let agent = node(dir.path(), "agent", tracker.clone(), config(), false).await;
    let mut announced = origin.announced();

    let landing = agent.landing(NS, m.digest()).await.unwrap();
    let front: std::collections::BTreeSet<PieceIndex> = (0..last).map(PieceIndex).collect();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        announced.wait_for(|a| *a == front),
    )
    .await
    .expect("the agent did not announce each piece it wrote to its origin")
    .unwrap();
    origin.open(u32::MAX);
    let blob = landing.finished().await.unwrap();
    assert_eq!(read_all(&blob).await, bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_download_lands_its_front_first_and_says_how_far() {
    let dir = tempfile::tempdir().unwrap();
    let piece = PIECE;
    // Only the first three pieces are served until the test opens the rest.
    let Gated {
        tracker,
        bytes,
        m,
        peer: seeder,
    } = gated(17, 100, 3).await;
    tracker.add_peer(m.info_hash(), seeder.as_peer());
    let leecher = node(dir.path(), "leech", tracker.clone(), config(), false).await;

    let landing = leecher.landing(NS, m.digest()).await.unwrap();
    assert_eq!(landing.length(), bytes.len() as u64);
    let mut landed = landing.landed();
    let front = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        landed.wait_for(|&n| n == 3 * piece),
    )
    .await
    .expect("the first three pieces never landed")
    .map(|n| *n)
    .expect("the download ended before its front landed");
    assert_eq!(front, 3 * piece);
    // What landed is the blob's front, in the file the landing names, while the rest waits.
    let file = std::fs::File::open(landing.path()).unwrap();
    let mut head = vec![0u8; 3 * piece as usize];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).unwrap();
    assert_eq!(head, bytes[..head.len()]);
    assert!(
        leecher
            .store()
            .complete(m.digest())
            .await
            .unwrap()
            .is_none()
    );

    seeder.open(u32::MAX);
    let blob = landing.finished().await.unwrap();
    assert_eq!(read_all(&blob).await, bytes);
    assert_eq!(*landed.borrow(), bytes.len() as u64);
    // The handle opened while it landed reads the finished file.
    let mut all = vec![0u8; bytes.len()];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut all, 0).unwrap();
    assert_eq!(all, bytes);

    // A blob already complete has landed whole.
    let again = leecher.landing(NS, m.digest()).await.unwrap();
    assert_eq!(*again.landed().borrow(), bytes.len() as u64);
    assert_eq!(again.path(), blob.path());
    assert_eq!(again.finished().await.unwrap().len(), bytes.len() as u64);
}

/// A peer that asks for every piece at once and reads nothing meanwhile gets at most
/// `UPLOADS_PER_PEER` pieces read and queued for it; the seeder refuses every request beyond
/// those (`PieceUnavailable`, counted in its stats) and, once the peer reads, sends exactly the
/// pieces it took on, each once and whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_asking_for_more_pieces_than_it_reads_is_refused_the_excess() {
    use bytes::BytesMut;
    use shoal_p2p::scheduler::UPLOADS_PER_PEER;
    use shoal_p2p::wire::{ErrorCode, Frame, FrameDecoder};
    use tokio::io::AsyncReadExt;

    let dir = tempfile::tempdir().unwrap();
    let tracker = Arc::new(FakeTracker::default());
    let seeder = node(dir.path(), "seed", tracker.clone(), config(), false).await;
    let bytes = blob(96 << 20, 8);
    let m = seed_blob(&seeder, &bytes, 1 << 20).await;
    let count = m.piece_count() as u64;

    let all: Vec<u32> = (0..m.piece_count()).collect();
    let mut tcp = raw_peer_asking(&seeder, &m, &all).await;

    // Reading nothing, the peer's socket takes a few MiB: the seeder sends some pieces, holds
    // at most 16 more, and refuses the rest. Wait until it has looked at every request (no
    // more than 16 can be neither sent nor refused).
    let refused = || seeder.stats().requests_refused_busy;
    common::eventually(Duration::from_secs(60), "every request looked at", || {
        let s = seeder.stats();
        s.requests_refused_busy > 0
            && s.requests_refused_busy + s.pieces_sent + UPLOADS_PER_PEER as u64 >= count
    })
    .await;

    // Now it reads until every request is accounted for: sent to it or refused. Exactly the
    // pieces taken on arrive, each whole, each once.
    let decoder = FrameDecoder::for_torrent(&m);
    let mut buf = BytesMut::new();
    let mut sent = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        while let Ok(Some((frame, used))) = decoder.decode(&buf) {
            let _ = buf.split_to(used);
            match frame {
                Frame::PiecePayload { index, data } => {
                    let range = m.piece_range(index).unwrap();
                    assert!(data[..] == bytes[range.start as usize..range.end as usize]);
                    assert!(sent.insert(index.0), "piece {index} sent twice");
                }
                Frame::Error { code, .. } => assert_eq!(code, ErrorCode::PieceUnavailable),
                _ => {}
            }
        }
        if sent.len() as u64 + refused() == count {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, tcp.read_buf(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{} sent, {} refused of {count} within 60 s",
                    sent.len(),
                    refused()
                )
            })
            .unwrap();
        assert!(n > 0, "the seeder closed the connection");
    }
    let taken = sent.len() as u64;
    assert!(
        taken >= UPLOADS_PER_PEER as u64 && taken < count / 2,
        "{taken} of {count} requests taken on"
    );
    assert_eq!(seeder.stats().pieces_sent, taken);
}

/// Peers that ask for pieces and read nothing, together, get at most the host's upload
/// buffer of pieces read for them; once they read, every piece arrives, each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_that_do_not_read_hold_at_most_the_upload_buffer_together() {
    use bytes::BytesMut;
    use shoal_p2p::scheduler::UPLOADS_PER_PEER;
    use shoal_p2p::wire::{Frame, FrameDecoder};
    use tokio::io::AsyncReadExt;

    const BUFFER: u64 = 8 << 20;
    const PEERS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let tracker = Arc::new(FakeTracker::default());
    let seeder =
        common::node_with_upload_buffer(dir.path(), "seed", tracker.clone(), config(), BUFFER)
            .await;
    let bytes = blob(96 << 20, 9);
    let m = seed_blob(&seeder, &bytes, 1 << 20).await;

    // Each peer asks for its own 16 pieces: 80 MiB in all, more than five sockets take.
    let mut peers = Vec::new();
    for p in 0..PEERS {
        let asked: Vec<u32> = (0..UPLOADS_PER_PEER as u32)
            .map(|i| p as u32 * UPLOADS_PER_PEER as u32 + i)
            .collect();
        let tcp = raw_peer_asking(&seeder, &m, &asked).await;
        peers.push((tcp, asked));
    }

    // The host fills its buffer and waits there: never more than the buffer held.
    common::eventually(Duration::from_secs(60), "the upload buffer full", || {
        let held = seeder.stats().upload_bytes_buffered;
        assert!(
            held <= BUFFER,
            "{held} bytes held for peers that read nothing"
        );
        held == BUFFER
    })
    .await;
    assert_eq!(seeder.stats().requests_refused_busy, 0);

    // They read: every piece asked for arrives whole, once.
    let decoder = FrameDecoder::for_torrent(&m);
    for (tcp, asked) in &mut peers {
        let mut buf = BytesMut::new();
        let mut got = std::collections::BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < asked.len() {
            while let Ok(Some((frame, used))) = decoder.decode(&buf) {
                let _ = buf.split_to(used);
                if let Frame::PiecePayload { index, data } = frame {
                    let range = m.piece_range(index).unwrap();
                    assert!(data[..] == bytes[range.start as usize..range.end as usize]);
                    assert!(asked.contains(&index.0), "piece {index} not asked for");
                    assert!(got.insert(index.0), "piece {index} sent twice");
                }
            }
            if got.len() == asked.len() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, tcp.read_buf(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{} of {} pieces within 60 s", got.len(), asked.len()))
                .unwrap();
            assert!(n > 0, "the seeder closed the connection");
        }
    }
    common::eventually(Duration::from_secs(30), "the upload buffer empty", || {
        seeder.stats().upload_bytes_buffered == 0
    })
    .await;
}

/// A connection to `seeder` that has sent a handshake for `m`'s torrent (holding nothing) and
/// a request for each of `pieces`, and has read nothing.
async fn raw_peer_asking(
    seeder: &Scheduler,
    m: &shoal_p2p::Metainfo,
    pieces: &[u32],
) -> tokio::net::TcpStream {
    use bytes::BytesMut;
    use shoal_p2p::wire::{Frame, Handshake, encode};
    use tokio::io::AsyncWriteExt;

    let mut tcp = tokio::net::TcpStream::connect(seeder.identity().advertise)
        .await
        .unwrap();
    let mut out = BytesMut::new();
    let hello = Frame::Handshake(Handshake {
        peer_id: shoal_p2p::PeerId::random(),
        info_hash: m.info_hash(),
        digest: m.digest().clone(),
        namespace: NS.into(),
        bitfield: shoal_p2p::Bitfield::empty(m.piece_count()),
    });
    encode(&hello, &mut out).unwrap();
    for &i in pieces {
        let request = Frame::PieceRequest {
            index: PieceIndex(i),
        };
        encode(&request, &mut out).unwrap();
    }
    tcp.write_all(&out).await.unwrap();
    tcp
}
