//! A peer that serves corrupt pieces ([`CorruptPeer`]), announced to the real tracker as
//! complete so agents dial it first: every agent that is sent a bad piece blacklists it, none
//! dials it twice, and every agent still completes with the right bytes from the origin and
//! each other. Blacklisting is read from state (each agent's
//! `shoal_p2p_peers_blacklisted_total`, the liar's own count of who dialed it), not from logs.

mod common;

use std::time::Duration;

use common::{Cluster, Consecutive, Spec, ip, noise, poll_until};
use shoal_config::HostPort;
use shoal_p2p::testing::CorruptPeer;
use shoal_p2p::tracker::client::DEFAULT_TIMEOUT;
use shoal_p2p::{AnnounceRequest, Metainfo, PeerInfo, TrackerClient};
use shoal_registry::Digest;

const NS: &str = "library/fanout";
const BLACKLISTED: &str = "shoal_p2p_peers_blacklisted_total ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_serving_corrupt_pieces_is_blacklisted_by_every_agent() {
    let cluster = Cluster::start(Spec {
        trackers: 1,
        origins: 1,
        agents: 3,
        max_replica: 1,
        origin_egress_bits: Some(200_000_000),
        ..Spec::default()
    })
    .await;
    let digest = cluster.push(0, NS, noise(24 << 20, 3)).await;
    let tracker = cluster.trackers[0].http;
    let url = format!(
        "http://{tracker}/namespace/{}/blobs/{digest}/metainfo",
        shoal_roles::http::segment(NS)
    );
    let raw = std::sync::Mutex::new(None);
    let ready = poll_until(Duration::from_secs(60), || async {
        let Ok(resp) = cluster.http.get(&url).send().await else {
            return false;
        };
        if resp.status().as_u16() != 200 {
            return false;
        }
        let body = resp.bytes().await.ok();
        let got = body.is_some();
        *raw.lock().unwrap() = body;
        got
    })
    .await;
    assert!(ready, "the tracker never served the metainfo of {digest}");
    let metainfo = Metainfo::decode(&raw.into_inner().unwrap().unwrap()).unwrap();
    let info_hash = metainfo.info_hash();
    let liar = CorruptPeer::start(ip(150).into(), metainfo).await.unwrap();

    // The liar announces itself as a complete peer, once before any agent asks and then at the
    // interval the tracker names, as a real peer would.
    let client = TrackerClient::new(
        [HostPort::new(tracker.ip().to_string(), tracker.port())],
        Consecutive::new(2, 1),
        DEFAULT_TIMEOUT,
        &shoal_p2p::tls::ClusterTls::plain(),
    )
    .unwrap();
    let d: Digest = digest.parse().unwrap();
    let me = PeerInfo {
        peer_id: liar.peer_id(),
        ip: liar.addr().ip(),
        port: liar.addr().port(),
        complete: true,
        origin: false,
    };
    let announce = AnnounceRequest::new(NS, &d, &me);
    let first = client.announce(info_hash, &announce).await.unwrap();
    let announcer = tokio::spawn(async move {
        let mut every = tokio::time::interval(first.interval());
        loop {
            every.tick().await;
            client.announce(info_hash, &announce).await.unwrap();
        }
    });

    let pulls = cluster.pull_everywhere(NS, &digest).await.unwrap();
    announcer.abort();
    for (i, got) in pulls.into_iter().enumerate() {
        let got = got.unwrap_or_else(|e| panic!("agent{i}: {e}"));
        assert_eq!(got, digest, "agent{i} got other bytes");
    }

    let (tries, bad) = (liar.connections(), liar.pieces_served());
    eprintln!("the liar was dialed {tries} times and asked for {bad} pieces");
    assert!(
        tries >= 1,
        "no agent ever dialed the liar: the test proves nothing"
    );
    assert!(
        tries <= cluster.agents.len(),
        "an agent came back to the liar ({tries} dials)"
    );
    let dials = liar.dials();
    assert!(
        dials.values().all(|&n| n == 1),
        "an agent dialed the liar twice: {dials:?}"
    );
    let mut banned = 0;
    for a in &cluster.agents {
        if cluster.metric(a, BLACKLISTED).await.unwrap() >= 1 {
            banned += 1;
        }
    }
    eprintln!(
        "{banned} of {} agents blacklisted a peer",
        cluster.agents.len()
    );
    // An agent that dialed the liar and was asked nothing of it (it had finished) has no bad
    // piece to judge it by; every one that was sent one blacklisted it.
    assert!(
        bad >= 1 && banned >= 1,
        "nobody blacklisted the liar ({bad} bad pieces)"
    );
    assert!(banned <= tries);
}
