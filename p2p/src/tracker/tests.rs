//! The tracker service driven through its router, its metainfo proxy against fake origins on
//! loopback sockets, two trackers sharing Redis, and the client against real trackers one of
//! which dies.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::BodyExt;
use shoal_config::{HostPort, Hosts, RemoteCluster, TrackerConfig};
use shoal_registry::{Algorithm, Digest};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tower::ServiceExt;

use super::proto::{AnnounceRequest, AnnounceResponse, ErrorBody};
use super::{MetainfoReply, TrackerClient, TrackerState, router, run};
use crate::error::TrackerError;
use crate::health::HealthFilter;
use crate::health::testing::PassiveFilter;
use crate::metainfo::{InfoHash, Metainfo, MetainfoBuilder};
use crate::peer_id::PeerId;
use crate::peerstore::{
    Clock, InMemoryPeerStore, ManualClock, PeerClass, PeerInfo, PeerSetWindows, PeerStore,
    RedisPeerStore, SystemClock,
};
use crate::ring::HashRing;
use crate::tls::ClusterTls;

const NS: &str = "library/alpine";

fn peer(n: u8, complete: bool, origin: bool) -> PeerInfo {
    PeerInfo {
        peer_id: PeerId([n; 20]),
        ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, n)),
        port: 16000 + u16::from(n),
        complete,
        origin,
    }
}

fn blob(n: u32) -> Digest {
    Digest::sha256_of(&n.to_be_bytes())
}

fn metainfo_of(data: &[u8]) -> Metainfo {
    let mut b = MetainfoBuilder::new(Algorithm::Sha256, 4).unwrap();
    b.update(data);
    b.finish().unwrap()
}

fn config(handout_limit: u32, origins: &[SocketAddr]) -> TrackerConfig {
    TrackerConfig {
        peer_handout_limit: handout_limit,
        origin: RemoteCluster {
            hosts: (!origins.is_empty()).then(|| Hosts::Static(origins.iter().map(host).collect())),
        },
        ..TrackerConfig::default()
    }
}

fn host(addr: &SocketAddr) -> HostPort {
    HostPort::new(addr.ip().to_string(), addr.port())
}

fn memory_store() -> Arc<InMemoryPeerStore> {
    Arc::new(InMemoryPeerStore::new(
        PeerSetWindows::new(Duration::from_secs(3600), 5).unwrap(),
    ))
}

fn app(config: &TrackerConfig, store: Arc<dyn PeerStore>) -> Router {
    router(Arc::new(TrackerState::new(config, store).unwrap()))
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body.to_vec())
}

fn announce_request(info_hash: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(format!("/announce/{info_hash}"))
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap()
}

async fn announce(app: &Router, t: InfoHash, p: &PeerInfo) -> AnnounceResponse {
    let body = serde_json::to_vec(&AnnounceRequest::new(NS, &blob(0), p)).unwrap();
    let (status, body) = send(app, announce_request(&t.to_string(), body)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn metainfo_request(ns: &str, digest: &Digest) -> Request<Body> {
    let ns = ns.replace('/', "%2F");
    Request::get(format!("/namespace/{ns}/blobs/{digest}/metainfo"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn announce_hands_out_others_best_class_first_within_the_limit() {
    let app = app(&config(4, &[]), memory_store());
    let t = InfoHash([1; 32]);
    for (n, complete, origin) in [
        (1, false, false),
        (2, false, false),
        (3, true, true),
        (4, true, false),
        (5, false, false),
        (6, true, false),
    ] {
        announce(&app, t, &peer(n, complete, origin)).await;
    }
    let asker = peer(9, false, false);
    let reply = announce(&app, t, &asker).await;
    assert_eq!(reply.interval_ms, 3000, "the default announce_interval");
    let peers = reply.peer_infos().unwrap();
    assert_eq!(peers.len(), 4, "peer_handout_limit");
    let classes: Vec<PeerClass> = peers.iter().map(PeerClass::of).collect();
    assert_eq!(
        classes,
        [
            PeerClass::Complete,
            PeerClass::Complete,
            PeerClass::Origin,
            PeerClass::Incomplete
        ]
    );
    // Announcing again, the asker is in the store but never handed to itself.
    let again = announce(&app, t, &asker).await.peer_infos().unwrap();
    assert!(again.iter().all(|p| p.peer_id != asker.peer_id));
    let from_another = announce(&app, t, &peer(10, false, false)).await;
    let everyone = announce(&app, t, &peer(11, true, false)).await;
    assert_eq!(from_another.peers.len(), 4);
    assert_eq!(everyone.peers.len(), 4);
    // Other torrents are separate.
    assert!(
        announce(&app, InfoHash([2; 32]), &asker)
            .await
            .peers
            .is_empty()
    );
}

#[tokio::test]
async fn a_flood_of_peer_ids_is_capped_but_known_peers_and_origins_still_announce() {
    let store = memory_store();
    let app = app(&config(1, &[]), store.clone());
    let t = InfoHash([3; 32]);
    for n in 0..20 {
        announce(&app, t, &peer(n, false, false)).await;
    }
    let cap = super::service::AGENTS_PER_HANDOUT;
    let kept = store.get(t, 1000).await.unwrap();
    assert_eq!(kept.len(), cap, "agents kept per torrent");
    // A peer already known may still announce, e.g. that it completed.
    let mut done = kept[0].clone();
    done.complete = true;
    announce(&app, t, &done).await;
    // Origins have their own room.
    announce(&app, t, &peer(100, true, true)).await;
    let kept = store.get(t, 1000).await.unwrap();
    assert_eq!(kept.len(), cap + 1);
    assert!(kept.iter().any(|p| p.peer_id == done.peer_id && p.complete));
    assert!(kept.iter().any(|p| p.origin));
}

#[tokio::test]
async fn bad_announces_are_400_naming_the_field() {
    let app = app(&config(50, &[]), memory_store());
    let good =
        serde_json::to_value(AnnounceRequest::new(NS, &blob(0), &peer(1, false, false))).unwrap();
    let hash = "ab".repeat(32);
    let with = |pointer: &str, value: serde_json::Value| {
        let mut v = good.clone();
        *v.pointer_mut(pointer).unwrap() = value;
        v.to_string()
    };
    let cases: Vec<(String, String, &str)> = vec![
        ("abc".into(), good.to_string(), "info_hash"),
        ("zz".repeat(32), good.to_string(), "info_hash"),
        (hash.clone(), with("/namespace", "".into()), "namespace"),
        (hash.clone(), with("/digest", "sha256:12".into()), "digest"),
        (
            hash.clone(),
            with("/peer/peer_id", "ab".into()),
            "peer.peer_id",
        ),
        (
            hash.clone(),
            with("/peer/ip", "localhost".into()),
            "peer.ip",
        ),
        (hash.clone(), with("/peer/port", 0.into()), "peer.port"),
        (hash.clone(), with("/peer/port", 70000.into()), "peer.port"),
        (
            hash.clone(),
            with("/peer/complete", "yes".into()),
            "peer.complete",
        ),
        (hash.clone(), "{not json".into(), "body"),
    ];
    for (path_hash, body, field) in cases {
        let (status, body) = send(&app, announce_request(&path_hash, body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{field}");
        let error: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(error.field.as_deref(), Some(field), "{}", error.message);
    }
    let (status, body) = send(&app, metainfo_request(NS, &blob(0))).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "no origins configured"
    );
    assert!(String::from_utf8_lossy(&body).contains("origin.hosts"));
    let bad = Request::get("/namespace/ns/blobs/sha256:1/metainfo")
        .body(Body::empty())
        .unwrap();
    let (status, body) = send(&app, bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let error: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert_eq!(error.field.as_deref(), Some("digest"));
    let health = Request::get("/health").body(Body::empty()).unwrap();
    assert_eq!(send(&app, health).await.0, StatusCode::OK);
    let ready = Request::get("/ready").body(Body::empty()).unwrap();
    assert_eq!(
        send(&app, ready).await,
        (StatusCode::OK, b"ready\n".to_vec())
    );
}

/// What a fake origin answers to metainfo requests.
#[derive(Clone)]
enum Origin {
    Ready(Vec<u8>),
    /// These bytes, once the gate opens.
    Gated(watch::Receiver<bool>, Vec<u8>),
    Pending,
    Missing,
    Garbage,
    Failing,
}

/// A fake origin on a loopback port: answers as told, counts requests and records the
/// namespace it was asked in. Named a fake: the real origin role is not built yet.
struct FakeOrigin {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    namespaces: Arc<Mutex<Vec<String>>>,
    /// The query string of each request.
    queries: Arc<Mutex<Vec<Option<String>>>>,
    _server: AbortOnDrop,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

type OriginState = (
    Origin,
    Arc<AtomicUsize>,
    Arc<Mutex<Vec<String>>>,
    Arc<Mutex<Vec<Option<String>>>>,
);

async fn fake_origin(answer: Origin) -> FakeOrigin {
    async fn serve(
        State((answer, hits, namespaces, queries)): State<OriginState>,
        Path((ns, _digest)): Path<(String, String)>,
        RawQuery(query): RawQuery,
    ) -> Response {
        hits.fetch_add(1, Ordering::SeqCst);
        namespaces.lock().unwrap().push(ns);
        queries.lock().unwrap().push(query);
        match answer {
            Origin::Ready(bytes) => bytes.into_response(),
            Origin::Gated(mut gate, bytes) => {
                let _ = gate.wait_for(|open| *open).await;
                bytes.into_response()
            }
            Origin::Pending => StatusCode::ACCEPTED.into_response(),
            Origin::Missing => StatusCode::NOT_FOUND.into_response(),
            Origin::Garbage => b"not metainfo".to_vec().into_response(),
            Origin::Failing => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }
    let hits = Arc::new(AtomicUsize::new(0));
    let namespaces = Arc::new(Mutex::new(Vec::new()));
    let queries = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/namespace/{ns}/blobs/{digest}/metainfo", get(serve))
        .with_state((answer, hits.clone(), namespaces.clone(), queries.clone()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    FakeOrigin {
        addr,
        hits,
        namespaces,
        queries,
        _server: AbortOnDrop(server),
    }
}

/// An address nothing listens on: bound, then released.
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A digest whose first owner in a ring of `hosts` is `first`.
fn digest_owned_first_by(hosts: &[SocketAddr], first: &SocketAddr) -> Digest {
    let ring = HashRing::new(hosts.iter().map(host)).unwrap();
    (0..1000)
        .map(blob)
        .find(|d| *ring.ranked(d)[0] == host(first))
        .unwrap()
}

#[tokio::test]
async fn metainfo_is_proxied_from_the_owning_origin() {
    let m = metainfo_of(b"some blob bytes");
    let d = m.digest().clone();
    let ready = fake_origin(Origin::Ready(m.encode())).await;
    let app = app(&config(50, &[ready.addr]), memory_store());
    let (status, body) = send(&app, metainfo_request(NS, &d)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(Metainfo::decode(&body).unwrap(), m);
    assert_eq!(ready.namespaces.lock().unwrap().as_slice(), [NS.to_owned()]);

    for (answer, expected) in [
        (Origin::Pending, StatusCode::ACCEPTED),
        (Origin::Missing, StatusCode::NOT_FOUND),
        (Origin::Garbage, StatusCode::BAD_GATEWAY),
        (Origin::Failing, StatusCode::SERVICE_UNAVAILABLE),
        // Good metainfo, but for another blob: a lying origin.
        (
            Origin::Ready(metainfo_of(b"other").encode()),
            StatusCode::BAD_GATEWAY,
        ),
    ] {
        let origin = fake_origin(answer).await;
        let app = self::app(&config(50, &[origin.addr]), memory_store());
        let (status, body) = send(&app, metainfo_request(NS, &d)).await;
        assert_eq!(status, expected, "{}", String::from_utf8_lossy(&body));
        assert_eq!(origin.hits.load(Ordering::SeqCst), 1);
    }
}

/// `?wait_ms=` (hold a pending answer until the origin's fetch ends) reaches the origin as the
/// longest wait, [`MAX_METAINFO_WAIT`](super::MAX_METAINFO_WAIT) (the lookup is shared by
/// every waiting request); a client asks for half its timeout, at most that.
#[tokio::test]
async fn a_metainfo_wait_goes_on_to_the_origin_capped() {
    let d = blob(7);
    let origin = fake_origin(Origin::Pending).await;
    let app = app(&config(50, &[origin.addr]), memory_store());
    let with_query = |q: &str| {
        let ns = NS.replace('/', "%2F");
        Request::get(format!("/namespace/{ns}/blobs/{d}/metainfo{q}"))
            .body(Body::empty())
            .unwrap()
    };
    for (query, forwarded) in [
        ("", None),
        ("?wait_ms=0", None),
        // A wait shares a lookup that asks the origin for the longest wait.
        ("?wait_ms=500", Some("wait_ms=2000")),
        ("?wait_ms=99999999999", Some("wait_ms=2000")),
        // A download asking for more hashes of a prefix: the count goes on too.
        ("?wait_ms=500&known=3", Some("wait_ms=2000&known=3")),
        ("?known=3", Some("known=3")),
    ] {
        let (status, _) = send(&app, with_query(query)).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{query}");
        let asked = origin.queries.lock().unwrap().pop().unwrap();
        assert_eq!(asked.as_deref(), forwarded, "{query}");
    }
    let (status, _) = send(&app, with_query("?wait_ms=soon")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = send(&app, with_query("?known=-1")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(origin.hits.load(Ordering::SeqCst), 6);

    let tracker = RunningTracker::start(config(50, &[origin.addr])).await;
    for (timeout, hold) in [(5000, 2000), (1000, 500)] {
        let client = TrackerClient::new(
            [host(&tracker.addr)],
            Arc::new(PassiveFilter::new(3, Duration::from_secs(300))),
            Duration::from_millis(timeout),
            &ClusterTls::plain(),
        )
        .unwrap();
        assert_eq!(client.hold(), Duration::from_millis(hold));
        assert_eq!(
            client.metainfo_within(NS, &d, client.hold()).await.unwrap(),
            MetainfoReply::Pending
        );
        let asked = origin.queries.lock().unwrap().pop().unwrap();
        assert_eq!(asked.as_deref(), Some("wait_ms=2000"));
        client
            .metainfo_beyond(NS, &d, Some(5), client.hold())
            .await
            .unwrap();
        let asked = origin.queries.lock().unwrap().pop().unwrap();
        assert_eq!(asked.as_deref(), Some("wait_ms=2000&known=5"));
        client.metainfo(NS, &d).await.unwrap();
        assert_eq!(origin.queries.lock().unwrap().pop().unwrap(), None);
    }
    tracker.kill().await;
}

/// Requests that wait (`?wait_ms=`) for one blob share one lookup: the origin is asked once
/// however many agents poll, and each gets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_metainfo_requests_for_one_blob_share_one_lookup() {
    let m = metainfo_of(b"a blob many agents want");
    let d = m.digest().clone();
    let (gate, opened) = watch::channel(false);
    let origin = fake_origin(Origin::Gated(opened, m.encode())).await;
    let state = Arc::new(TrackerState::new(&config(50, &[origin.addr]), memory_store()).unwrap());
    let app = router(state.clone());
    let ns = NS.replace('/', "%2F");
    let requests: Vec<_> = (0..20)
        .map(|_| {
            let (app, url) = (
                app.clone(),
                format!("/namespace/{ns}/blobs/{d}/metainfo?wait_ms=60000"),
            );
            tokio::spawn(
                async move { send(&app, Request::get(url).body(Body::empty()).unwrap()).await },
            )
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while state.metainfo_waiting() < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the requests never all waited"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gate.send_replace(true);
    for r in requests {
        let (status, body) = r.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(Metainfo::decode(&body).unwrap(), m);
    }
    assert_eq!(origin.hits.load(Ordering::SeqCst), 1);
    assert_eq!(
        origin.queries.lock().unwrap().as_slice(),
        [Some("wait_ms=2000".to_owned())]
    );
    assert_eq!(state.metainfo_waiting(), 0);
}

#[tokio::test]
async fn a_dead_first_owner_is_skipped_for_the_next() {
    let live = fake_origin(Origin::Pending).await;
    let dead = dead_addr().await;
    let hosts = [dead, live.addr];
    let d = digest_owned_first_by(&hosts, &dead);
    let app = app(&config(50, &hosts), memory_store());
    let (status, _) = send(&app, metainfo_request(NS, &d)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(live.hits.load(Ordering::SeqCst), 1);

    let all_dead = self::app(&config(50, &[dead]), memory_store());
    let (status, body) = send(&all_dead, metainfo_request(NS, &d)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let error: ErrorBody = serde_json::from_slice(&body).unwrap();
    assert!(
        error.message.contains(&dead.to_string()),
        "{}",
        error.message
    );
}

#[tokio::test]
async fn an_owner_the_health_check_calls_unhealthy_is_not_asked() {
    let first = fake_origin(Origin::Pending).await;
    let second = fake_origin(Origin::Pending).await;
    let hosts = [first.addr, second.addr];
    let d = digest_owned_first_by(&hosts, &first.addr);
    let down = HostPort::new(first.addr.ip().to_string(), first.addr.port());
    let state = TrackerState::new(&config(50, &hosts), memory_store())
        .unwrap()
        .with_origin_health(Arc::new(move |h: &HostPort| *h != down));
    let app = router(Arc::new(state));
    let (status, _) = send(&app, metainfo_request(NS, &d)).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(
        first.hits.load(Ordering::SeqCst),
        0,
        "an unhealthy owner was asked"
    );
    assert_eq!(second.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn two_trackers_sharing_redis_see_each_others_announces() {
    let Some(redis) = crate::peerstore::redis_fixture::start_redis() else {
        return;
    };
    let connect = || async {
        let store = RedisPeerStore::connect(
            &crate::peerstore::redis_fixture::config(redis.port),
            Arc::new(SystemClock),
        )
        .await
        .unwrap();
        Arc::new(store) as Arc<dyn PeerStore>
    };
    let a = app(&config(50, &[]), connect().await);
    let b = app(&config(50, &[]), connect().await);
    let t = InfoHash([7; 32]);
    assert!(
        announce(&a, t, &peer(1, true, false))
            .await
            .peers
            .is_empty()
    );
    let from_b = announce(&b, t, &peer(2, false, false)).await;
    assert_eq!(from_b.peer_infos().unwrap(), vec![peer(1, true, false)]);
    let from_a = announce(&a, t, &peer(3, false, false)).await;
    assert_eq!(from_a.peers.len(), 2);
}

#[tokio::test]
async fn ready_says_whether_the_redis_peer_store_answers() {
    let Some(redis) = crate::peerstore::redis_fixture::start_redis() else {
        return;
    };
    let store = RedisPeerStore::connect(
        &crate::peerstore::redis_fixture::config(redis.port),
        Arc::new(SystemClock),
    )
    .await
    .unwrap();
    let app = app(&config(50, &[]), Arc::new(store));
    let ready = || Request::get("/ready").body(Body::empty()).unwrap();
    assert_eq!(send(&app, ready()).await.0, StatusCode::OK);
    drop(redis);
    let (status, body) = send(&app, ready()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body = String::from_utf8(body).unwrap();
    assert!(body.starts_with("peer store: "), "{body}");
    // Liveness is not readiness.
    let health = Request::get("/health").body(Body::empty()).unwrap();
    assert_eq!(send(&app, health).await.0, StatusCode::OK);
}

/// A tracker served by [`run`] on a loopback port, stopped through its shutdown signal.
struct RunningTracker {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), TrackerError>>,
}

impl RunningTracker {
    async fn start(config: TrackerConfig) -> Self {
        Self::start_on(config, "127.0.0.1:0".parse().unwrap()).await
    }

    async fn start_on(config: TrackerConfig, addr: SocketAddr) -> Self {
        // Bound before `run` starts, so it accepts connections from the first moment.
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config, listener, async {
            let _ = stopped.await;
        }));
        RunningTracker {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn kill(mut self) {
        drop(self.stop.take());
        self.task.await.unwrap().unwrap();
    }
}

/// Listens where a dead tracker was and closes every connection at once, counting them: a
/// host that is down, whose contacts a test can count.
async fn closing_listener(addr: SocketAddr) -> (Arc<AtomicUsize>, AbortOnDrop) {
    let listener = TcpListener::bind(addr).await.unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (accepted, AbortOnDrop(task))
}

type Check = fn(&Result<MetainfoReply, TrackerError>) -> bool;

fn announce_of(d: &Digest, p: &PeerInfo) -> AnnounceRequest {
    AnnounceRequest::new(NS, d, p)
}

#[tokio::test]
async fn the_client_announces_and_fetches_metainfo_through_a_tracker() {
    let m = metainfo_of(b"blob for the client");
    let origin = fake_origin(Origin::Ready(m.encode())).await;
    let tracker = RunningTracker::start(config(50, &[origin.addr])).await;
    let health = Arc::new(PassiveFilter::new(3, Duration::from_secs(300)));
    let client = TrackerClient::new(
        [host(&tracker.addr)],
        health,
        Duration::from_secs(5),
        &ClusterTls::plain(),
    )
    .unwrap();
    let t = m.info_hash();
    let d = m.digest().clone();
    let first = client
        .announce(t, &announce_of(&d, &peer(1, true, false)))
        .await;
    assert!(first.unwrap().peers.is_empty());
    let second = client
        .announce(t, &announce_of(&d, &peer(2, false, false)))
        .await
        .unwrap();
    assert_eq!(second.peer_infos().unwrap(), vec![peer(1, true, false)]);
    assert_eq!(second.interval(), Duration::from_secs(3));
    assert_eq!(
        client.metainfo(NS, &d).await.unwrap(),
        MetainfoReply::Ready(m.clone())
    );

    // A request the client can tell is wrong is not sent.
    let mut bad = announce_of(&d, &peer(3, false, false));
    bad.peer.port = 0;
    let err = client.announce(t, &bad).await.unwrap_err();
    assert!(
        matches!(&err, TrackerError::InvalidRequest(e) if e.field.as_deref() == Some("peer.port")),
        "{err}"
    );
    tracker.kill().await;

    let pending = fake_origin(Origin::Pending).await;
    let missing = fake_origin(Origin::Missing).await;
    for (origin, check) in [
        (
            pending,
            (|r| matches!(r, Ok(MetainfoReply::Pending))) as Check,
        ),
        (missing, |r| {
            matches!(r, Err(TrackerError::BlobUnknown { .. }))
        }),
    ] {
        let tracker = RunningTracker::start(config(50, &[origin.addr])).await;
        let health = Arc::new(PassiveFilter::new(3, Duration::from_secs(300)));
        let client = TrackerClient::new(
            [host(&tracker.addr)],
            health,
            Duration::from_secs(5),
            &ClusterTls::plain(),
        )
        .unwrap();
        let reply = client.metainfo(NS, &d).await;
        assert!(check(&reply), "{reply:?}");
        tracker.kill().await;
    }
}

#[tokio::test]
async fn the_client_leaves_a_dead_tracker_alone_until_fail_timeout() {
    const FAILS: u32 = 3;
    const FAIL_TIMEOUT: Duration = Duration::from_secs(300);
    let a = RunningTracker::start(config(50, &[])).await;
    let b = RunningTracker::start(config(50, &[])).await;
    let (a_addr, b_addr) = (a.addr, b.addr);
    let d = digest_owned_first_by(&[a_addr, b_addr], &b_addr);
    let clock = Arc::new(ManualClock::new(SystemTime::now()));
    let health = Arc::new(PassiveFilter::new(FAILS, FAIL_TIMEOUT));
    let client = TrackerClient::new(
        [host(&a_addr), host(&b_addr)],
        health.clone(),
        Duration::from_secs(5),
        &ClusterTls::plain(),
    )
    .unwrap()
    .with_clock(clock.clone() as Arc<dyn Clock>);
    let t = InfoHash([9; 32]);

    // Both up: the blob's announces go to its first-ranked tracker, B.
    let seeder = peer(1, true, false);
    client.announce(t, &announce_of(&d, &seeder)).await.unwrap();
    let seen_by_b = client
        .announce(t, &announce_of(&d, &peer(2, false, false)))
        .await
        .unwrap();
    assert_eq!(seen_by_b.peer_infos().unwrap(), vec![seeder.clone()]);

    // B dies; something at its address closes every connection and counts them.
    b.kill().await;
    let (contacts, _closer) = closing_listener(b_addr).await;

    // Each of the first `fails` announces fails at B and moves on to A.
    for n in 0..FAILS {
        client
            .announce(t, &announce_of(&d, &peer(10 + n as u8, false, false)))
            .await
            .unwrap();
        assert_eq!(contacts.load(Ordering::SeqCst), n as usize + 1);
    }
    assert!(
        !health
            .healthy(&host(&b_addr).to_string(), clock.now())
            .await
    );

    // Then B is out of rotation: announces go straight to A, for all of fail_timeout.
    for n in 0..5 {
        client
            .announce(t, &announce_of(&d, &peer(20 + n, false, false)))
            .await
            .unwrap();
        clock.advance(FAIL_TIMEOUT / 10);
    }
    clock.advance(FAIL_TIMEOUT / 2 - Duration::from_secs(1));
    client
        .announce(t, &announce_of(&d, &peer(30, false, false)))
        .await
        .unwrap();
    assert_eq!(contacts.load(Ordering::SeqCst), FAILS as usize);

    // After fail_timeout B is tried again (and still fails over to A).
    clock.advance(Duration::from_secs(1));
    let reply = client
        .announce(t, &announce_of(&d, &peer(31, false, false)))
        .await
        .unwrap();
    assert_eq!(contacts.load(Ordering::SeqCst), FAILS as usize + 1);
    // A has heard of the peers that announced while B was down.
    assert!(reply.peers.len() >= FAILS as usize);
    a.kill().await;
}

#[tokio::test]
async fn with_every_tracker_unhealthy_the_client_tries_them_anyway() {
    let dead = dead_addr().await;
    let (contacts, _closer) = closing_listener(dead).await;
    let health = Arc::new(PassiveFilter::new(1, Duration::from_secs(300)));
    let client = TrackerClient::new(
        [host(&dead)],
        health,
        Duration::from_secs(5),
        &ClusterTls::plain(),
    )
    .unwrap();
    let d = blob(1);
    for expected in 1..=2 {
        let err = client
            .announce(InfoHash([1; 32]), &announce_of(&d, &peer(1, false, false)))
            .await
            .unwrap_err();
        assert!(
            matches!(err, TrackerError::Unavailable { tried: 1, .. }),
            "{err}"
        );
        assert_eq!(contacts.load(Ordering::SeqCst), expected);
    }
}
