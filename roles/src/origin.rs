//! `shoal origin`: the dedicated seeder in front of the storage backends.
//!
//! The tracker asks an origin for a blob's metainfo (`GET
//! /namespace/{ns}/blobs/{digest}/metainfo`). An origin that holds the blob answers 200 with
//! the metainfo and seeds it; one that does not starts one fetch from the backend the
//! namespace routes to and answers 202 until the blob is in its piece store. After a fetch the
//! origin copies the blob to the other members of its replica set (`hashring.max_replica`,
//! rendezvous hashing over `cluster.hosts`), so a second origin can seed it when the first
//! dies. `PUT /namespace/{ns}/blobs/{digest}` takes a push, and `...?replica=true` such a
//! copy: the body is verified against the digest before it is kept. A push is acknowledged
//! (201) once the blob is in the piece store and its write-back and copies are jobs on disk
//! (see [`jobs`] and [`crate::queue`]); a copy is only stored. `GET
//! /namespace/{ns}/blobs/{digest}` of a blob the origin lacks joins that same fetch and streams
//! it as it lands (the last byte once it verified; a blob that fails its digest cuts the
//! connection), where the metainfo waits for the whole blob.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::TryStreamExt;
use shoal_config::OriginConfig;
use shoal_p2p::store::{CompleteBlob, ImportProgress, complete_body, follow};
use shoal_p2p::tracker::MetainfoWait;
use shoal_p2p::{Counted, HealthFilter, Scheduler, StopOnDrop, Tasks};
use shoal_registry::{Backing, BlobStat, Digest, RepoName};
use shoal_storage::{Content, NamespaceRouter, StorageBacking};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::Instrument;

use crate::RoleError;
use crate::http::{BlobPath, HttpError, HttpResult, ReplicaQuery};
use crate::metrics::{Metrics, P2p, ring_health};
use crate::peer::{PeerSettings, PeerSide};
use crate::queue::{Policy, Queue};
use crate::ready::Readiness;
use crate::ring::Ring;

mod jobs;

use jobs::{OriginJob, Worker, jobs_for};

/// How long a failed fetch is remembered (answered as its error) before it is tried again.
const FAILURE_MEMORY: Duration = Duration::from_secs(5);

/// Metainfo requests an origin holds at once while fetches run (`?wait_ms=`); past it they are
/// answered 202 at once and their agents poll. Each held request keeps a tracker connection
/// open, so a cold blob asked for by thousands of agents cannot take the origin's
/// `server.max_connections` (and starve its health checks and copies).
pub const MAX_HELD_METAINFO: usize = 64;

/// Blobs an origin tracks that it does not hold (running fetches, remembered misses and
/// failures); past it, remembered outcomes are forgotten first, then new fetches get 503, so a
/// client asking for endless unknown digests cannot grow the map without bound.
pub const MAX_FETCHES: usize = 10_000;

/// The sockets an origin serves: its HTTP API (blob server) and its peer port.
#[derive(Debug)]
pub struct OriginListeners {
    /// `listen`: metainfo, blobs, health, readiness, metrics.
    pub http: TcpListener,
    /// `peer.listen`: pieces to agents.
    pub peer: TcpListener,
    /// `metrics.listen`: `/metrics` alone.
    pub metrics: Option<TcpListener>,
}

/// What an origin needs besides its config.
pub struct OriginDeps {
    /// The `backends:` list, running.
    pub backends: Arc<NamespaceRouter>,
    /// The active health policy its ring members are judged by (`cluster.healthcheck`).
    pub ring_health: Arc<dyn HealthFilter>,
    /// The passive health policy its trackers are judged by (`tracker.cluster.healthcheck`).
    pub tracker_health: Arc<dyn HealthFilter>,
}

/// What the origin knows of a blob it does not hold.
#[derive(Clone, Debug)]
enum Fetch {
    /// Being fetched: where the import stands, for GETs that stream it meanwhile.
    Running(watch::Receiver<ImportProgress>),
    Missing(Instant),
    Failed(String, Instant),
}

/// The origin's state, shared by its HTTP handlers.
struct Origin {
    backing: StorageBacking,
    routes: Arc<NamespaceRouter>,
    scheduler: Scheduler,
    ring: Arc<Ring>,
    pieces: shoal_config::MetainfoGenConfig,
    fetches: Mutex<HashMap<Digest, Fetch>>,
    /// Metainfo requests held while their blob's fetch runs (`?wait_ms=`).
    metainfo_waiting: Arc<AtomicUsize>,
    /// Write-backs and copies still to do, on disk.
    queue: Queue<OriginJob>,
    tasks: Tasks,
}

/// Serves an origin on `listeners` until `shutdown`; its piece store is `store.root`, or
/// `<data_dir>/store`, and its job queue `queue/` in that folder. When the future is dropped
/// or returns, every task it started stops; queued jobs run again at the next start.
pub async fn serve(
    config: &OriginConfig,
    data_dir: &Path,
    listeners: OriginListeners,
    deps: OriginDeps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RoleError> {
    let tasks = Tasks::new();
    let _stop = StopOnDrop(tasks.clone());
    let options = crate::serve::ServeOptions::from_config(&config.server)?;
    let tls = crate::serve::load_cluster_tls(config.client_tls.as_ref())?;
    let store_root = config
        .store
        .root
        .clone()
        .unwrap_or_else(|| data_dir.join("store"));
    let peer = PeerSide::start(
        PeerSettings {
            store_root: &store_root,
            store: &config.store,
            scheduler: &config.scheduler,
            tracker: &config.tracker,
            tracker_health: deps.tracker_health,
            ip: config.peer.ip,
            origin: true,
            cluster_tls: &tls,
            peer_tls: config.peer.tls.as_ref(),
        },
        listeners.peer,
        &tasks,
    )
    .await?;
    let (scheduler, advertise) = (peer.scheduler.clone(), peer.advertise);

    let listen = listeners.http.local_addr()?;
    let ring = Ring::start(
        &config.cluster,
        &config.hashring,
        listen,
        config.peer.ip,
        deps.ring_health,
        &tls,
        &tasks,
    )
    .await?;
    let queue_dir = store_root.join("queue");
    let queue: Queue<OriginJob> =
        Queue::open(&queue_dir, Policy::from_config(&config.writeback), &tasks).map_err(
            |source| RoleError::Queue {
                path: queue_dir.clone(),
                source,
            },
        )?;
    let pins = queue.clone();
    scheduler.store().pin_with(move |d| pins.pins(d));
    queue.start(
        Arc::new(Worker {
            backing: StorageBacking::new(deps.backends.clone()),
            store: scheduler.store().clone(),
            ring: ring.clone(),
            // Copies are as long as blobs are: each sets its own timeout by size.
            http: tls.http(None)?,
        }),
        &tasks,
    );
    let origin = Arc::new(Origin {
        backing: StorageBacking::new(deps.backends.clone()),
        routes: deps.backends,
        scheduler: scheduler.clone(),
        ring,
        pieces: config.metainfogen.clone(),
        fetches: Mutex::new(HashMap::new()),
        metainfo_waiting: Arc::default(),
        queue,
        tasks: tasks.clone(),
    });
    let metrics = origin_metrics(&origin, &options);
    metrics.serve_on(listeners.metrics, &options, &tasks);
    tracing::info!(%listen, peer = %advertise, "shoal origin listening");
    let app = router_of(origin).merge(metrics.router());
    let served = crate::serve::serve(listeners.http, app, &options, shutdown).await;
    scheduler.shutdown().await;
    tasks.shutdown().await;
    Ok(served?)
}

/// What an origin shows on `/metrics`: its scheduler, backends, queue and ring.
fn origin_metrics(origin: &Arc<Origin>, options: &crate::serve::ServeOptions) -> Metrics {
    let (ring, queue) = (origin.ring.clone(), origin.queue.clone());
    let waiting = origin.metainfo_waiting.clone();
    Metrics::new(options.metrics.clone())
        .with(Arc::new(P2p(origin.scheduler.clone())))
        .with(origin.routes.clone())
        .with_fn(move |out| {
            out.gauge(
                "shoal_origin_metainfo_waiting",
                "Metainfo requests held until the fetch of their blob from the backend ends (?wait_ms=).",
                waiting.load(Ordering::Relaxed) as f64,
            );
            queue.depth().write(
                out,
                "shoal_origin_queue_jobs",
                "Jobs in the origin's queue on disk: write-backs to the backend and copies to the replica set, pending or parked as failed.",
            );
            ring_health(&ring, out);
        })
}

fn router_of(origin: Arc<Origin>) -> Router {
    let ring = origin.ring.clone();
    let readiness = Readiness::new()
        .backends(origin.routes.clone())
        .check("ring", move || {
            let healthy = ring.health().iter().any(|(_, ok)| *ok);
            async move {
                match healthy {
                    true => Ok(()),
                    false => Err("no member of the ring is healthy".to_owned()),
                }
            }
        });
    Router::new()
        .route("/health", get(|| async { "OK" }))
        .route("/namespace/{ns}/blobs/{digest}/metainfo", get(metainfo))
        .route(
            "/namespace/{ns}/blobs/{digest}",
            get(download).head(stat).put(upload),
        )
        .with_state(origin)
        .merge(readiness.router())
}

impl Origin {
    /// The blob, when this origin's piece store holds it whole.
    async fn complete(&self, d: &Digest) -> HttpResult<Option<CompleteBlob>> {
        self.scheduler
            .store()
            .complete(d)
            .await
            .map_err(HttpError::internal)
    }

    /// What to answer for a blob this origin lacks: starts a fetch unless one is running or
    /// a recent outcome is remembered.
    fn fetch_state(self: &Arc<Self>, repo: &RepoName, d: &Digest) -> HttpResult<Fetch> {
        let mut fetches = self.fetches.lock().unwrap_or_else(|e| e.into_inner());
        let expired = |f: &Fetch| match f {
            Fetch::Missing(at) | Fetch::Failed(_, at) => at.elapsed() >= FAILURE_MEMORY,
            Fetch::Running(_) => false,
        };
        match fetches.get(d) {
            Some(f) if !expired(f) => return Ok(f.clone()),
            _ => {}
        }
        if fetches.len() >= MAX_FETCHES {
            fetches.retain(|_, f| matches!(f, Fetch::Running(_)));
            if fetches.len() >= MAX_FETCHES {
                return Err(HttpError::unavailable(format!(
                    "{MAX_FETCHES} fetches are running on this origin: try again later"
                )));
            }
        }
        let (progress, watching) = watch::channel(ImportProgress::default());
        fetches.insert(d.clone(), Fetch::Running(watching.clone()));
        let origin = self.clone();
        let (repo, d) = (repo.clone(), d.clone());
        // In the asking request's span: the fetch's lines carry its request id.
        self.tasks
            .spawn(async move { origin.fetch(repo, d, progress).await }.in_current_span());
        Ok(Fetch::Running(watching))
    }

    /// Fetches `d` from the backend into the piece store, telling `progress` where it stands,
    /// seeds it, and queues its copies to the rest of its replica set. `progress` is dropped
    /// only after the outcome is in `fetches`.
    async fn fetch(
        self: Arc<Self>,
        repo: RepoName,
        d: Digest,
        progress: watch::Sender<ImportProgress>,
    ) {
        let outcome = match self.backing.download_blob(&repo, &d).await {
            Ok(Some((length, body))) => {
                let body = body.map_err(std::io::Error::other);
                let piece_length = self.pieces.piece_length(length);
                progress.send_modify(|p| p.length = length);
                // Peers get the pieces written so far while the rest is fetched.
                self.scheduler
                    .seed_while_importing(repo.as_str(), progress.subscribe());
                match self
                    .scheduler
                    .store()
                    .import_followed(&d, piece_length, Box::pin(body), Some(&progress))
                    .await
                {
                    Ok(blob) => {
                        tracing::info!(%d, namespace = %repo, "fetched from the storage backend");
                        self.scheduler.seed(repo.as_str(), blob);
                        // Nobody waits on these: a failure to queue them costs copies, not data
                        // (the backend holds the blob).
                        let copies = jobs_for(&self.ring, &repo, &d, false);
                        if let Err(e) = self.queue.push_all(copies).await {
                            tracing::error!(%d, error = %e, "queueing the copies to the replica set failed");
                        }
                        None
                    }
                    Err(e) => Some(Fetch::Failed(
                        format!("storing {d} from the backend of {repo}: {e}"),
                        Instant::now(),
                    )),
                }
            }
            Ok(None) => Some(Fetch::Missing(Instant::now())),
            Err(e) => Some(Fetch::Failed(e.to_string(), Instant::now())),
        };
        let mut fetches = self.fetches.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Some(f) => {
                fetches.insert(d, f);
            }
            None => {
                fetches.remove(&d);
            }
        }
    }
}

/// The blob's metainfo, once this origin holds the blob (and seeds it). While it fetches the
/// blob: the hashes of the pieces written so far (a prefix, see `shoal_p2p::metainfo`; this
/// origin seeds those pieces), or 202 until a first piece is whole, held up to `?wait_ms=`
/// ([`MetainfoWait`]) for that or for the fetch to end, unless [`MAX_HELD_METAINFO`] requests
/// are held already.
async fn metainfo(
    State(o): State<Arc<Origin>>,
    p: BlobPath,
    Query(wait): Query<MetainfoWait>,
) -> HttpResult<Response> {
    let deadline = tokio::time::Instant::now() + wait.duration();
    loop {
        if let Some(blob) = o.complete(&p.digest).await? {
            let answer = metainfo_answer(blob.metainfo());
            o.scheduler.seed(p.repo.as_str(), blob);
            return Ok(answer);
        }
        match o.fetch_state(&p.repo, &p.digest)? {
            Fetch::Running(progress) => {
                // Hashes beyond what the asker knows (`?known=`), if any.
                let beyond = |p: &ImportProgress| {
                    p.hashes
                        .clone()
                        .filter(|h| wait.known.is_none_or(|k| h.known() > k))
                };
                if let Some(prefix) = beyond(&progress.borrow()) {
                    return Ok(metainfo_answer(&prefix));
                }
                if tokio::time::Instant::now() >= deadline {
                    return Ok(fetching());
                }
                let Some(_held) = Counted::below(&o.metainfo_waiting, MAX_HELD_METAINFO) else {
                    return Ok(fetching());
                };
                // The fetch drops its progress sender once its outcome is recorded; until then
                // a first whole piece ends the wait too.
                let ended = async move {
                    let mut progress = progress;
                    let _ = progress.wait_for(|p| beyond(p).is_some()).await;
                };
                if tokio::time::timeout_at(deadline, ended).await.is_err() {
                    return Ok(fetching());
                }
                // Ended, or hashes to hand out: the next round answers.
            }
            Fetch::Missing(_) => {
                return Err(HttpError::not_found(format!(
                    "{} is not in the storage backend of namespace {}",
                    p.digest, p.repo
                )));
            }
            Fetch::Failed(why, _) => return Err(HttpError::bad_gateway(why)),
        }
    }
}

/// 200 with a metainfo's canonical bytes (whole, or the hashes known so far).
fn metainfo_answer(m: &shoal_p2p::Metainfo) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/octet-stream")],
        m.encode(),
    )
        .into_response()
}

/// The answer while the blob's fetch runs.
fn fetching() -> Response {
    (StatusCode::ACCEPTED, "fetching from the storage backend").into_response()
}

/// `?local=true` on a blob `HEAD`: only what this origin's piece store holds counts (what a
/// member asks another before copying a blob to it), as on Kraken's origin.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
struct LocalQuery {
    #[serde(default)]
    local: bool,
}

/// Whether the blob exists, and its length: from the piece store, or else from the
/// namespace's backend (its `stat`, without downloading anything) unless `?local=true`.
async fn stat(
    State(o): State<Arc<Origin>>,
    p: BlobPath,
    Query(q): Query<LocalQuery>,
) -> HttpResult<Response> {
    let found = |length: u64| {
        (
            StatusCode::OK,
            [(header::CONTENT_LENGTH, length.to_string())],
        )
            .into_response()
    };
    if let Some(blob) = o.complete(&p.digest).await? {
        return Ok(found(blob.len()));
    }
    if q.local {
        return Ok(StatusCode::NOT_FOUND.into_response());
    }
    match o.backing.stat_blob(&p.repo, &p.digest).await {
        Ok(BlobStat::Present(length)) => Ok(found(length)),
        Ok(BlobStat::Absent | BlobStat::Unknown) => Ok(StatusCode::NOT_FOUND.into_response()),
        Err(e) => Err(HttpError::bad_gateway(format!(
            "asking the storage backend of {} for {}: {}",
            p.repo, p.digest, e.message
        ))),
    }
}

/// A blob's bytes. One this origin lacks is fetched from the backend (one fetch, shared with
/// the metainfo requests and every other GET) and streamed as it lands, its last byte once it
/// verified: a blob that fails its digest cuts the connection instead.
async fn download(State(o): State<Arc<Origin>>, p: BlobPath) -> HttpResult<Response> {
    let octets = (header::CONTENT_TYPE, "application/octet-stream".to_owned());
    loop {
        if let Some(blob) = o.complete(&p.digest).await? {
            let file = tokio::fs::File::open(blob.path())
                .await
                .map_err(HttpError::internal)?
                .into_std()
                .await;
            return Ok((
                [(header::CONTENT_LENGTH, blob.len().to_string()), octets],
                Body::from_stream(complete_body(file, blob.len())),
            )
                .into_response());
        }
        match o.fetch_state(&p.repo, &p.digest)? {
            Fetch::Running(progress) => {
                if let Some((file, length)) = open_import(progress.clone()).await? {
                    let body = Body::from_stream(follow(file, progress));
                    return Ok(match length {
                        Some(n) => ([(header::CONTENT_LENGTH, n.to_string()), octets], body)
                            .into_response(),
                        None => ([octets], body).into_response(),
                    });
                }
                // The fetch ended before its file could be opened: the next round says how.
            }
            Fetch::Missing(_) => {
                return Err(HttpError::not_found(format!(
                    "{} is not in the storage backend of namespace {}",
                    p.digest, p.repo
                )));
            }
            Fetch::Failed(why, _) => return Err(HttpError::bad_gateway(why)),
        }
    }
}

/// The file of a running import, opened, with the blob's length when known; `None` when the
/// import ended first (its file renamed into the cache, or removed).
async fn open_import(
    mut progress: watch::Receiver<ImportProgress>,
) -> HttpResult<Option<(std::fs::File, Option<u64>)>> {
    loop {
        let (file, length) = {
            let p = progress.borrow_and_update();
            (p.file.clone(), p.length)
        };
        if let Some(path) = file {
            return match tokio::fs::File::open(&path).await {
                Ok(f) => Ok(Some((f.into_std().await, length))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(HttpError::internal(e)),
            };
        }
        if progress.changed().await.is_err() {
            return Ok(None);
        }
    }
}

/// Takes a blob (a push, or a replica's copy): verified against its digest while stored. A push
/// is acknowledged once its write-back and its copies are queued on disk; a copy is only
/// stored, so copies never travel further.
async fn upload(
    State(o): State<Arc<Origin>>,
    p: BlobPath,
    Query(q): Query<ReplicaQuery>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> HttpResult<StatusCode> {
    if !q.replica && o.routes.route(p.repo.as_str(), Content::Blobs).is_none() {
        // Refused before the body is read: a write-back with nowhere to go would never end.
        return Err(HttpError::new(
            StatusCode::FORBIDDEN,
            format!(
                "namespace {} matches no `backends:` entry that holds blobs, so nothing can be \
                 stored there",
                p.repo
            ),
        ));
    }
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let blob = o
        .scheduler
        .store()
        .import(&p.digest, o.pieces.piece_length(length), Box::pin(stream))
        .await
        .map_err(|e| HttpError::bad_request(format!("{}: {e}", p.digest)))?;
    if !q.replica {
        // The blob is on disk; once its jobs are too, the push is safe to acknowledge.
        let jobs = jobs_for(&o.ring, &p.repo, &p.digest, true);
        o.queue.push_all(jobs).await.map_err(|e| {
            tracing::error!(digest = %p.digest, error = %e, "queueing a push's write-back failed");
            HttpError::unavailable(format!("queueing the write-back of {}: {e}", p.digest))
        })?;
    }
    o.scheduler.seed(p.repo.as_str(), blob);
    Ok(StatusCode::CREATED)
}
