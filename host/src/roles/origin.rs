//! `shoal origin`: the dedicated seeder in front of the storage backends.
//!
//! The tracker asks an origin for a blob's metainfo (`GET
//! /namespace/{ns}/blobs/{digest}/metainfo`). An origin that holds the blob answers 200 with
//! the metainfo and seeds it; one that does not starts one fetch from the backend the
//! namespace routes to and answers 202 until the blob is in its piece store. After a fetch the
//! origin copies the blob to the other members of its replica set (`hashring.max_replica`,
//! rendezvous hashing over `cluster.hosts`), so a second origin can seed it when the first
//! dies. `PUT /namespace/{ns}/blobs/{digest}` takes such a copy (or a push): the body is
//! verified against the digest before it is kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::TryStreamExt;
use shoal_config::OriginConfig;
use shoal_host::plugin::{PluginEngine, PluginLimits};
use shoal_host::storage::{NamespaceRouter, PluginBacking};
use shoal_p2p::store::{CompleteBlob, PieceStore};
use shoal_p2p::{Identity, PeerId, Scheduler};
use shoal_registry::{Backing, Digest, RepoName};

use super::BadRequest;
use super::ring::Ring;
use super::{peer_addr, tracker_client};

/// How long a failed fetch is remembered (answered as its error) before it is tried again.
const FAILURE_MEMORY: Duration = Duration::from_secs(5);

/// What the origin knows of a blob it does not hold.
#[derive(Clone, Debug)]
enum Fetch {
    Running,
    Missing(Instant),
    Failed(String, Instant),
}

/// The origin's state, shared by its HTTP handlers.
pub struct Origin {
    backing: PluginBacking,
    scheduler: Scheduler,
    ring: Arc<Ring>,
    pieces: shoal_config::MetainfoGenConfig,
    fetches: Mutex<HashMap<Digest, Fetch>>,
    http: reqwest::Client,
}

/// Runs `shoal origin` until `shutdown`.
pub async fn run(
    config: OriginConfig,
    data_dir: std::path::PathBuf,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store_root = config
        .store
        .root
        .clone()
        .unwrap_or_else(|| data_dir.join("store"));
    let store = PieceStore::open(&store_root, &config.store)
        .with_context(|| format!("opening the piece store {}", store_root.display()))?;
    store.spawn_cleanup();
    let engine = PluginEngine::new(
        PluginLimits::from_config(&config.plugins),
        Some(data_dir.join("plugin-cache")),
    )
    .context("starting the plugin engine")?;
    let router = NamespaceRouter::load(&engine, &config.backends, &config.auth)
        .context("loading the storage backends")?;
    let backing = PluginBacking::new(Arc::new(router));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding listen {}", config.listen))?;
    let peer_listener = tokio::net::TcpListener::bind(config.peer.listen)
        .await
        .with_context(|| format!("binding peer.listen {}", config.peer.listen))?;
    let advertise = peer_addr(&peer_listener, config.peer.ip)?;
    let tracker = tracker_client(&config.tracker, &engine).await?;
    let identity = Identity {
        peer_id: PeerId::random(),
        advertise,
        origin: true,
    };
    let scheduler = Scheduler::new(identity, config.scheduler.clone(), store, tracker)?;
    let serving = scheduler.clone();
    tokio::spawn(async move { serving.serve(peer_listener).await });

    let listen = listener.local_addr()?;
    let ring = Ring::start(
        &config.cluster,
        &config.hashring,
        listen,
        config.peer.ip,
        &engine,
    )
    .await?;
    let origin = Arc::new(Origin {
        backing,
        scheduler,
        ring,
        pieces: config.metainfogen.clone(),
        fetches: Mutex::new(HashMap::new()),
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()?,
    });
    tracing::info!(%listen, peer = %advertise, "shoal origin listening");
    crate::serve::serve(listener, router_of(origin), shutdown).await?;
    Ok(())
}

fn router_of(origin: Arc<Origin>) -> Router {
    let ring = origin.ring.clone();
    let metrics = super::metrics(origin.scheduler.clone(), move || {
        let mut out = String::from(
            "# HELP shoal_ring_member_healthy Whether the active check counts a ring member healthy.\n\
             # TYPE shoal_ring_member_healthy gauge\n",
        );
        for (host, ok) in ring.health() {
            out.push_str(&format!(
                "shoal_ring_member_healthy{{member=\"{host}\"}} {}\n",
                u8::from(ok)
            ));
        }
        out
    });
    Router::new()
        .route("/health", get(|| async { "OK" }))
        .route("/namespace/{ns}/blobs/{digest}/metainfo", get(metainfo))
        .route(
            "/namespace/{ns}/blobs/{digest}",
            get(download).head(stat).put(upload),
        )
        .with_state(origin)
        .merge(metrics)
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, msg.into()).into_response()
}

fn parse(ns: &str, digest: &str) -> Result<(RepoName, Digest), BadRequest> {
    let repo = ns
        .parse::<RepoName>()
        .map_err(|e| BadRequest(format!("namespace {ns:?}: {e}")))?;
    let d = digest
        .parse::<Digest>()
        .map_err(|e| BadRequest(format!("digest {digest:?}: {e}")))?;
    Ok((repo, d))
}

async fn metainfo(
    State(o): State<Arc<Origin>>,
    Path((ns, digest)): Path<(String, String)>,
) -> Response {
    let (repo, d) = match parse(&ns, &digest) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    match o.scheduler.store().complete(&d).await {
        Ok(Some(blob)) => {
            let body = blob.metainfo().encode();
            o.scheduler.seed(repo.as_str(), blob);
            return (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/octet-stream")],
                body,
            )
                .into_response();
        }
        Ok(None) => {}
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
    let state = {
        let mut fetches = o.fetches.lock().unwrap_or_else(|e| e.into_inner());
        let stale = match fetches.get(&d) {
            Some(Fetch::Missing(at) | Fetch::Failed(_, at)) => at.elapsed() >= FAILURE_MEMORY,
            Some(Fetch::Running) => false,
            None => true,
        };
        if stale {
            fetches.insert(d.clone(), Fetch::Running);
            let origin = o.clone();
            let (repo, d) = (repo.clone(), d.clone());
            tokio::spawn(async move { origin.fetch(repo, d).await });
            Fetch::Running
        } else {
            fetches.get(&d).cloned().unwrap_or(Fetch::Running)
        }
    };
    match state {
        Fetch::Running => text(StatusCode::ACCEPTED, "fetching from the storage backend"),
        Fetch::Missing(_) => text(
            StatusCode::NOT_FOUND,
            format!("{d} is not in the storage backend of namespace {repo}"),
        ),
        Fetch::Failed(why, _) => text(StatusCode::BAD_GATEWAY, why),
    }
}

impl Origin {
    /// Fetches `d` from the backend into the piece store, seeds it, and copies it to the rest
    /// of its replica set.
    async fn fetch(self: Arc<Self>, repo: RepoName, d: Digest) {
        let outcome = match self.backing.download_blob(&repo, &d).await {
            Ok(Some((length, body))) => {
                let body = body.map_err(std::io::Error::other);
                let piece_length = self.pieces.piece_length(length);
                match self
                    .scheduler
                    .store()
                    .import(&d, piece_length, Box::pin(body))
                    .await
                {
                    Ok(blob) => {
                        tracing::info!(%d, namespace = %repo, "fetched from the storage backend");
                        self.scheduler.seed(repo.as_str(), blob.clone());
                        let this = self.clone();
                        let repo = repo.clone();
                        tokio::spawn(async move { this.replicate(&repo, &blob).await });
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

    /// Sends a copy of `blob` to the other members of its replica set.
    async fn replicate(&self, repo: &RepoName, blob: &CompleteBlob) {
        let d = blob.metainfo().digest();
        for host in self.ring.owners(d) {
            if Some(&host) == self.ring.me() {
                continue;
            }
            let url = format!(
                "http://{host}/namespace/{}/blobs/{d}?replica=true",
                urlencode(repo.as_str())
            );
            let result = async {
                let file = tokio::fs::File::open(blob.path()).await?;
                let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
                let resp = self.http.put(&url).body(body).send().await?;
                anyhow::ensure!(resp.status().is_success(), "{}", resp.status());
                anyhow::Ok(())
            }
            .await;
            match result {
                Ok(()) => tracing::info!(%d, %host, "replicated"),
                Err(e) => tracing::warn!(%d, %host, %e, "replication failed"),
            }
        }
    }
}

fn urlencode(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

async fn stat(
    State(o): State<Arc<Origin>>,
    Path((ns, digest)): Path<(String, String)>,
) -> Response {
    let (_, d) = match parse(&ns, &digest) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    match o.scheduler.store().complete(&d).await {
        Ok(Some(blob)) => (
            StatusCode::OK,
            [(header::CONTENT_LENGTH, blob.len().to_string())],
        )
            .into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn download(
    State(o): State<Arc<Origin>>,
    Path((ns, digest)): Path<(String, String)>,
) -> Response {
    let (_, d) = match parse(&ns, &digest) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let blob = match o.scheduler.store().complete(&d).await {
        Ok(Some(blob)) => blob,
        Ok(None) => return text(StatusCode::NOT_FOUND, format!("{d} is not on this origin")),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    match tokio::fs::File::open(blob.path()).await {
        Ok(file) => (
            [
                (header::CONTENT_LENGTH, blob.len().to_string()),
                (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            ],
            Body::from_stream(tokio_util::io::ReaderStream::new(file)),
        )
            .into_response(),
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(serde::Deserialize)]
struct UploadQuery {
    #[serde(default)]
    replica: bool,
}

/// Takes a blob (a replica's copy, or a push): verified against its digest while stored.
async fn upload(
    State(o): State<Arc<Origin>>,
    Path((ns, digest)): Path<(String, String)>,
    Query(q): Query<UploadQuery>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Response {
    let (repo, d) = match parse(&ns, &digest) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let blob = match o
        .scheduler
        .store()
        .import(&d, o.pieces.piece_length(length), Box::pin(stream))
        .await
    {
        Ok(blob) => blob,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{d}: {e}")),
    };
    if !q.replica {
        // A push: the backend is the durable copy; then the replica set gets theirs.
        let path = blob.path().to_owned();
        if let Err(e) = o.backing.put_blob(&repo, &d, &path, blob.len()).await {
            return text(StatusCode::BAD_GATEWAY, e.to_string());
        }
        let this = o.clone();
        let copy = blob.clone();
        tokio::spawn(async move { this.replicate(&repo, &copy).await });
    }
    o.scheduler.seed(ns.as_str(), blob);
    StatusCode::CREATED.into_response()
}
