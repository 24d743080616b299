//! The tracker's HTTP service: announces into the peer store and hand-outs from it, and metainfo
//! fetched from the origin that owns the blob.
//!
//! [`run`] is what the binary calls; [`router`] over a [`TrackerState`] is what tests drive.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use shoal_config::{HashRingConfig, HostPort, Hosts, PeerStoreConfig, TrackerConfig};
use shoal_registry::Digest;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::proto::{
    AnnounceRequest, AnnounceResponse, ErrorBody, MAX_JSON_BYTES, MAX_METAINFO_BYTES, PeerJson,
    check_namespace, parse_digest,
};
use super::{MAX_METAINFO_WAIT, MetainfoWait, metainfo_url, read_capped};
use crate::counted::Counted;
use crate::error::{PeerStoreError, TrackerError};
use crate::metainfo::Metainfo;
use crate::peerstore::{self, InMemoryPeerStore, PeerSetWindows, PeerStore};
use crate::ring::HashRing;
use crate::tls::{ClusterHttp, ClusterTls};

/// Agents remembered per torrent, as a multiple of `peer_handout_limit`: enough that every
/// hand-out can be a fresh sample, few enough that a flood of made-up peer ids costs bounded
/// memory (200 records with the default limit of 50). Counted over the live windows, so the
/// bound holds per window too.
pub const AGENTS_PER_HANDOUT: usize = 4;

/// Origins remembered per torrent, apart from the agents so a flood of agents never crowds the
/// seeders of last resort out. Rings are a handful of hosts and `max_replica` is 2 or 3.
pub const MAX_ORIGINS_PER_TORRENT: usize = 32;

/// How long the tracker waits for an origin's metainfo answer. Origins answer 202 at once
/// while they fetch, so this bounds a hung origin, not a slow backend.
pub const ORIGIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What every request handler shares.
pub struct TrackerState {
    store: Arc<dyn PeerStore>,
    interval: Duration,
    handout_limit: usize,
    max_agents: usize,
    origins: Option<HashRing>,
    origin_replicas: usize,
    origin_health: OriginHealth,
    http: ClusterHttp,
    /// Metainfo lookups that wait on an origin's fetch (`?wait_ms=`), shared by every request
    /// for the same blob: thousands of agents polling one cold blob hold one request at its
    /// origin, not one each (one per count of hashes known, for downloads asking for more
    /// hashes of a prefix: `?known=`).
    shared: Mutex<HashMap<LookupKey, SharedLookup>>,
    /// Requests waiting on a shared lookup now.
    waiting: AtomicUsize,
}

/// Whether an origin should be asked: the verdict of the tracker's active check of its origins
/// (the host runs it through the health-active component). Unhealthy owners are skipped in
/// score order; if every owner is, the ring's fallbacks apply.
pub type OriginHealth = Arc<dyn Fn(&HostPort) -> bool + Send + Sync>;

impl std::fmt::Debug for TrackerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackerState")
            .field("interval", &self.interval)
            .field("handout_limit", &self.handout_limit)
            .field("origins", &self.origins)
            .finish_non_exhaustive()
    }
}

impl TrackerState {
    /// The state for `config` over `store` (the caller picks the store, so tests and several
    /// trackers can share one). Origins come from `origin.hosts`; a static list only until DNS
    /// re-resolution lands, so a `dns:` name is refused here rather than resolved once and
    /// silently kept stale. No `origin:` section means metainfo requests answer 503.
    pub fn new(config: &TrackerConfig, store: Arc<dyn PeerStore>) -> Result<Self, TrackerError> {
        let origins = match &config.origin.hosts {
            None => None,
            Some(Hosts::Static(hosts)) => Some(HashRing::new(hosts.iter().cloned())?),
            Some(Hosts::Dns(name)) => {
                return Err(TrackerError::Config(format!(
                    "origin.hosts.dns ({name}) is not supported by the tracker yet: list the origins under origin.hosts.static"
                )));
            }
        };
        let handout_limit = config.peer_handout_limit.max(1) as usize;
        Ok(TrackerState {
            store,
            interval: config.announce_interval.get(),
            handout_limit,
            max_agents: handout_limit.saturating_mul(AGENTS_PER_HANDOUT),
            origins,
            // The tracker's config has no `hashring:` for the origins; Kraken's default
            // replica count is what origins run with unless told otherwise.
            origin_replicas: HashRingConfig::default().max_replica as usize,
            origin_health: Arc::new(|_| true),
            http: ClusterTls::load(config.client_tls.as_ref())
                .map_err(|e| TrackerError::Config(format!("client_tls: {e}")))?
                .http(Some(ORIGIN_TIMEOUT))
                .map_err(|e| TrackerError::Config(format!("building the HTTP client: {e}")))?,
            shared: Mutex::new(HashMap::new()),
            waiting: AtomicUsize::new(0),
        })
    }

    /// Metainfo requests waiting now on a lookup shared with others for the same blob.
    pub fn metainfo_waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Judges origins by `health` (every origin counts as healthy without one).
    pub fn with_origin_health(mut self, health: OriginHealth) -> Self {
        self.origin_health = health;
        self
    }

    /// How many ring members own a blob, when the origins run with another `max_replica`.
    pub fn with_origin_replicas(mut self, replicas: usize) -> Self {
        self.origin_replicas = replicas.max(1);
        self
    }
}

/// The tracker's routes over `state`.
pub fn router(state: Arc<TrackerState>) -> Router {
    Router::new()
        .route("/announce/{info_hash}", post(announce))
        .route("/namespace/{ns}/blobs/{digest}/metainfo", get(metainfo))
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/ready", get(ready))
        .layer(DefaultBodyLimit::max(MAX_JSON_BYTES))
        .with_state(state)
}

/// Serves the tracker on `listener` until `shutdown` completes. Builds the peer store from
/// `config.peerstore` (connecting to Redis first, so a wrong address fails at start) and, for
/// the in-memory store, prunes expired windows once per window.
pub async fn run(
    config: TrackerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), TrackerError> {
    run_with_origin_health(config, listener, shutdown, Arc::new(|_| true)).await
}

/// [`run`], judging origins by `health`.
pub async fn run_with_origin_health(
    config: TrackerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    health: OriginHealth,
) -> Result<(), TrackerError> {
    let tasks = crate::Tasks::new();
    let app = app(&config, health, &tasks).await?;
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "tracker listening");
    }
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    tasks.shutdown().await;
    served.map_err(TrackerError::Serve)
}

/// The tracker's router over the peer store `config` names, judging origins by `health`; the
/// in-memory store's pruning runs in `tasks`. For callers that serve it themselves.
pub async fn app(
    config: &TrackerConfig,
    health: OriginHealth,
    tasks: &crate::Tasks,
) -> Result<Router, TrackerError> {
    let store: Arc<dyn PeerStore> = match &config.peerstore {
        PeerStoreConfig::Memory(m) => {
            let store = Arc::new(InMemoryPeerStore::new(PeerSetWindows::from_config(m)?));
            let period = m.peer_set_window_size.get().max(Duration::from_secs(1));
            let pruned = store.clone();
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    pruned.prune();
                }
            });
            store
        }
        PeerStoreConfig::Redis(_) => peerstore::from_config(&config.peerstore).await?,
    };
    let state = Arc::new(TrackerState::new(config, store)?.with_origin_health(health));
    Ok(router(state))
}

/// How long `/ready` waits for the peer store.
pub const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /ready`: 200 while the peer store answers, else 503 saying why (plain text, as every
/// role's `/ready`). `/health` stays liveness only.
async fn ready(State(state): State<Arc<TrackerState>>) -> (StatusCode, String) {
    let failure = match tokio::time::timeout(READY_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => return (StatusCode::OK, "ready\n".to_owned()),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {READY_TIMEOUT:?}"),
    };
    tracing::debug!(%failure, "not ready: the peer store does not answer");
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("peer store: {failure}\n"),
    )
}

/// A failed request: its status and the JSON body saying why. The one error type every
/// handler returns, turned into a response here and nowhere else.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn bad_request(body: ErrorBody) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            body,
        }
    }

    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorBody::message(message),
        }
    }
}

impl From<PeerStoreError> for ApiError {
    fn from(e: PeerStoreError) -> Self {
        tracing::warn!(error = %e, "peer store failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// `POST /announce/{info_hash}`: record the asker (within the per-torrent caps), hand out the
/// others. One `get` serves both the cap check and the hand-out: it returns up to the cap in
/// hand-out order, so its first `peer_handout_limit` entries other than the asker are the
/// hand-out `PeerStore::get` would give.
async fn announce(
    State(state): State<Arc<TrackerState>>,
    Path(info_hash): Path<String>,
    body: Bytes,
) -> Result<axum::Json<AnnounceResponse>, ApiError> {
    let request: AnnounceRequest = parse_json(&body)?;
    let a = request
        .validate(&info_hash)
        .map_err(ApiError::bad_request)?;
    let cap = state.max_agents + MAX_ORIGINS_PER_TORRENT;
    let known = state.store.get(a.info_hash, cap).await?;
    let (origins, agents) =
        known.iter().fold(
            (0, 0),
            |(o, g), p| if p.origin { (o + 1, g) } else { (o, g + 1) },
        );
    let room = if a.peer.origin {
        origins < MAX_ORIGINS_PER_TORRENT
    } else {
        agents < state.max_agents
    };
    if room || known.iter().any(|p| p.peer_id == a.peer.peer_id) {
        state.store.update(a.info_hash, a.peer.clone()).await?;
    } else {
        tracing::warn!(info_hash = %a.info_hash, peer = %a.peer.peer_id, "torrent is full, announce not recorded");
    }
    let peers = known
        .iter()
        .filter(|p| p.peer_id != a.peer.peer_id)
        .take(state.handout_limit)
        .map(PeerJson::from)
        .collect();
    Ok(axum::Json(AnnounceResponse {
        peers,
        interval_ms: u64::try_from(state.interval.as_millis()).unwrap_or(u64::MAX),
    }))
}

/// Parses a JSON body, naming the field that failed (`peer.port`) rather than a byte offset.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        // "." is the whole document, "?" a place serde could not name (broken syntax).
        let field = if path == "." || path == "?" {
            "body".to_owned()
        } else {
            path
        };
        ApiError::bad_request(ErrorBody::field(field, e.into_inner().to_string()))
    })
}

/// `GET /namespace/{ns}/blobs/{digest}/metainfo`: asks the blob's owners in score order. A 202
/// or 404 from an owner is the answer; an owner that cannot be reached or fails (5xx) is
/// skipped, and so is one whose metainfo does not parse or names another blob. All skipped:
/// 502 if any lied, else 503. A `?wait_ms=` ([`MetainfoWait`], capped) goes on to the owner,
/// which holds its 202 that long unless its fetch ends first; such requests for one blob share
/// one lookup (see [`TrackerState`]), each answering 202 when its own wait passes first. A
/// `?known=` goes on to the owner too, and only requests with the same one share a lookup.
async fn metainfo(
    State(state): State<Arc<TrackerState>>,
    Path((ns, digest)): Path<(String, String)>,
    Query(wait): Query<MetainfoWait>,
) -> Result<Response, ApiError> {
    check_namespace(&ns, "namespace").map_err(ApiError::bad_request)?;
    let digest = parse_digest(&digest, "digest").map_err(ApiError::bad_request)?;
    if state.origins.is_none() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this tracker has no origins configured (origin.hosts)",
        ));
    }
    let known = wait.known;
    let wait = wait.duration();
    if wait.is_zero() {
        return lookup(&state, &ns, &digest, Duration::ZERO, known)
            .await
            .respond();
    }
    let mut shared = join_lookup(&state, (ns, digest, known));
    let _counted = Counted::new(&state.waiting);
    match tokio::time::timeout(wait, shared.wait_for(Option::is_some)).await {
        Ok(Ok(answer)) => answer.clone().expect("waited for Some").respond(),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the metainfo lookup ended without an answer",
        )),
        Err(_) => Answer::Pending("the origin is still fetching it".to_owned()).respond(),
    }
}

/// The running shared lookup of the blob, or a new one: it asks the owners with the longest
/// wait, in a task of its own (a requester that leaves does not end it), and is forgotten once
/// it answered.
fn join_lookup(state: &Arc<TrackerState>, key: LookupKey) -> SharedLookup {
    let mut shared = state.shared.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(rx) = shared.get(&key) {
        return rx.clone();
    }
    let (tx, rx) = watch::channel(None);
    shared.insert(key.clone(), rx.clone());
    let state = state.clone();
    tokio::spawn(async move {
        let (ns, digest, known) = &key;
        let answer = lookup(&state, ns, digest, MAX_METAINFO_WAIT, *known).await;
        let mut shared = state.shared.lock().unwrap_or_else(|e| e.into_inner());
        if shared
            .get(&key)
            .is_some_and(|rx| rx.same_channel(&tx.subscribe()))
        {
            shared.remove(&key);
        }
        drop(shared);
        tx.send_replace(Some(answer));
    });
    rx
}

/// A shared lookup's answer, `None` until it has one.
type SharedLookup = watch::Receiver<Option<Answer>>;

/// What requests sharing a lookup agree on: the blob, and the hashes known (`?known=`).
type LookupKey = (String, Digest, Option<u32>);

/// What the tracker answers a metainfo request with.
#[derive(Clone, Debug)]
enum Answer {
    /// Checked canonical metainfo bytes.
    Ready(Vec<u8>),
    /// An owner is still fetching the blob (why).
    Pending(String),
    NotFound(String),
    /// No owner gave a usable answer: the status and why.
    Failed(StatusCode, String),
}

impl Answer {
    fn respond(self) -> Result<Response, ApiError> {
        match self {
            Answer::Ready(bytes) => Ok((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/octet-stream")],
                bytes,
            )
                .into_response()),
            Answer::Pending(why) => {
                Ok((StatusCode::ACCEPTED, axum::Json(ErrorBody::message(why))).into_response())
            }
            Answer::NotFound(why) => Err(ApiError::new(StatusCode::NOT_FOUND, why)),
            Answer::Failed(status, why) => Err(ApiError::new(status, why)),
        }
    }
}

/// Asks the blob's owners in score order (see [`metainfo`]), passing `wait` and `known` on.
async fn lookup(
    state: &TrackerState,
    ns: &str,
    digest: &Digest,
    wait: Duration,
    known: Option<u32>,
) -> Answer {
    let Some(ring) = &state.origins else {
        return Answer::Failed(
            StatusCode::SERVICE_UNAVAILABLE,
            "this tracker has no origins configured (origin.hosts)".to_owned(),
        );
    };
    let mut lied = None;
    let mut unreachable = None;
    let healthy = |h: &HostPort| (state.origin_health)(h);
    for origin in ring.owners(digest, state.origin_replicas, healthy) {
        match fetch_metainfo(&state.http, origin, ns, digest, wait, known).await {
            Ok(Fetched::Ready(bytes)) => return Answer::Ready(bytes),
            Ok(Fetched::Pending) => {
                return Answer::Pending(format!("origin {origin} is still fetching {digest}"));
            }
            Ok(Fetched::NotFound) => {
                return Answer::NotFound(format!("blob {digest} is unknown in namespace {ns}"));
            }
            Err(OriginFailure::Lied(reason)) => {
                tracing::warn!(%origin, %digest, %reason, "origin sent unusable metainfo");
                lied = Some(format!("origin {origin}: {reason}"));
            }
            Err(OriginFailure::Unreachable(reason)) => {
                tracing::debug!(%origin, %digest, %reason, "origin unreachable, trying the next");
                unreachable = Some(format!("origin {origin}: {reason}"));
            }
        }
    }
    match (lied, unreachable) {
        (Some(reason), _) => Answer::Failed(StatusCode::BAD_GATEWAY, reason),
        (None, reason) => Answer::Failed(
            StatusCode::SERVICE_UNAVAILABLE,
            reason.unwrap_or_else(|| "no origin answered".to_owned()),
        ),
    }
}

/// An origin's usable answer.
enum Fetched {
    /// Checked canonical metainfo bytes.
    Ready(Vec<u8>),
    Pending,
    NotFound,
}

/// Why an origin's answer is not used.
enum OriginFailure {
    /// Connection error, timeout, 5xx or an unexpected status: try the next owner.
    Unreachable(String),
    /// It answered 200 with bytes that are not metainfo for the blob asked for.
    Lied(String),
}

async fn fetch_metainfo(
    http: &ClusterHttp,
    origin: &HostPort,
    ns: &str,
    digest: &Digest,
    wait: Duration,
    known: Option<u32>,
) -> Result<Fetched, OriginFailure> {
    let url =
        metainfo_url(http, origin, ns, digest, wait, known).map_err(OriginFailure::Unreachable)?;
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| OriginFailure::Unreachable(e.to_string()))?;
    match response.status() {
        StatusCode::OK => {}
        StatusCode::ACCEPTED => return Ok(Fetched::Pending),
        StatusCode::NOT_FOUND => return Ok(Fetched::NotFound),
        other => return Err(OriginFailure::Unreachable(format!("answered {other}"))),
    }
    let bytes = read_capped(response, MAX_METAINFO_BYTES)
        .await
        .map_err(OriginFailure::Unreachable)?;
    let metainfo = Metainfo::decode(&bytes).map_err(|e| OriginFailure::Lied(e.to_string()))?;
    if metainfo.digest() != digest {
        return Err(OriginFailure::Lied(format!(
            "metainfo is for {}, asked for {digest}",
            metainfo.digest()
        )));
    }
    Ok(Fetched::Ready(metainfo.encode()))
}
