//! `POST /preload` on an agent: fetch an image's blobs ahead of a rollout, as Kraken's agent
//! preload and Dragonfly's preheat do, so the pull that follows is served from the agent's own
//! store and sends nothing to peers or origins.
//!
//! The body is `{"image": "REPOSITORY:TAG"}` (or `REPOSITORY@sha256:...`, an optional leading
//! registry host, and an optional `"platform": "os/arch[/variant]"`; [`PreloadRequest`]). The
//! agent resolves the image the way a pull does ([`Registry::pull_manifest`]: the tag at the
//! build-index, the manifest over P2P), follows an index to its images (every entry, or the
//! ones of `platform`), and brings every config and layer into its registry store the way a
//! pull's `GET` does ([`Registry::pull_blob`]), [`BLOBS_AT_ONCE`] at a time. A malformed
//! request is a 400 and an unknown image a 404, in the registry's error envelope; once the
//! image resolved, the answer is 200 and a stream of JSON lines ([`PreloadEvent`]), the last
//! of them `done` or `error`. The fetch runs in a task of the agent's own: a client that goes
//! away does not stop it, the agent's shutdown does.

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use shoal_metrics::{Counter, Exposition, Kind};
use shoal_p2p::Tasks;
use shoal_p2p::store::PieceStore;
use shoal_registry::manifest::{Manifest, ManifestKind, Platform};
use shoal_registry::mirror::Mirrors;
use shoal_registry::{
    ApiResult, BlobPull, Digest, ErrorCode, ImageRef, Reference, Registry, RegistryError, RepoName,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The route.
pub const PATH: &str = "/preload";
/// The content type of the progress stream: one JSON object a line.
pub const CONTENT_TYPE: &str = "application/x-ndjson";
/// Blobs one preload fetches at once: enough to keep the pipe full, few enough that a rollout's
/// first layers land first and a preload leaves room for the pulls beside it.
pub const BLOBS_AT_ONCE: usize = 3;
/// Preloads an agent runs at once; one more is refused with `TOOMANYREQUESTS` (429).
pub const MAX_RUNNING: usize = 4;
/// Manifests one preload follows (an index and its images); a larger index is refused.
pub const MAX_MANIFESTS: usize = 64;
/// Largest request body: a reference is at most 1 KiB.
const MAX_BODY: usize = 8 * 1024;
/// How often the bytes of the blobs in flight are looked at.
const TICK: Duration = Duration::from_millis(500);
/// Longest silence on the stream: a `progress` line goes out at least this often, so a client
/// can tell a long layer from a dead agent.
pub const KEEPALIVE: Duration = Duration::from_secs(10);
/// Indexes inside indexes followed this deep (the top manifest is depth 0).
const MAX_DEPTH: usize = 2;

/// The body of `POST /preload`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PreloadRequest {
    /// `[HOST/]REPOSITORY[:TAG][@DIGEST]` ([`ImageRef`]). A leading host maps to a repository
    /// of the agent as containerd's `?ns=` does (`registry.mirrors`).
    pub image: String,
    /// `os/arch[/variant]`: only the index entries of that platform. Unset: every entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// One line of the progress stream. `blobs` counts the configs and layers of every image the
/// preload covers (each digest once), `done` those in the agent's store now, `bytes` and
/// `total` their bytes (`bytes` includes what has arrived of the blobs in flight).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum PreloadEvent {
    /// The first line: the image resolved, and what the preload covers.
    Resolved {
        /// The agent's repository the image is in.
        repository: RepoName,
        /// The digest of the manifest the reference names.
        digest: Digest,
        /// Manifests resolved (an index and its images, or one image manifest).
        manifests: u32,
        /// Blobs to have.
        blobs: u32,
        /// Their bytes.
        total: u64,
    },
    /// Bytes so far, while blobs are in flight (at least every [`KEEPALIVE`]).
    Progress {
        /// Bytes in the store, and of the blobs in flight.
        bytes: u64,
        /// Bytes of every blob.
        total: u64,
        /// Blobs in the store.
        done: u32,
        /// Blobs to have.
        blobs: u32,
    },
    /// One blob is in the agent's store.
    Blob {
        /// Its digest.
        digest: Digest,
        /// Its size.
        size: u64,
        /// Whether it was fetched now (`false`: the store held it already).
        fetched: bool,
        /// Bytes in the store, and of the blobs in flight.
        bytes: u64,
        /// Bytes of every blob.
        total: u64,
        /// Blobs in the store.
        done: u32,
        /// Blobs to have.
        blobs: u32,
    },
    /// The last line of a preload that succeeded: every blob is in the agent's store.
    Done {
        /// Bytes of every blob.
        total: u64,
        /// Blobs in the store.
        blobs: u32,
        /// How many of them were fetched now.
        fetched: u32,
    },
    /// The last line of a preload that failed.
    Error {
        /// Why, naming the blob.
        error: String,
        /// Blobs in the store when it failed.
        done: u32,
        /// Blobs to have.
        blobs: u32,
    },
}

/// Preloads since start, for `/metrics`.
#[derive(Debug, Default)]
struct Counts {
    done: Counter,
    failed: Counter,
    refused: Counter,
    fetched_bytes: Counter,
}

/// What the route serves from; cheap to clone.
#[derive(Clone)]
pub struct Preloader {
    registry: Arc<Registry>,
    pieces: PieceStore,
    mirrors: Arc<Mirrors>,
    running: Arc<Semaphore>,
    tasks: Tasks,
    counts: Arc<Counts>,
}

impl std::fmt::Debug for Preloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Preloader")
            .field("running", &(MAX_RUNNING - self.running.available_permits()))
            .finish_non_exhaustive()
    }
}

impl Preloader {
    /// Preloads into `registry` (whose backing is the agent's P2P side, `pieces` its piece
    /// store, looked at for progress), mapping a reference's host with `mirrors`, each run in
    /// `tasks`.
    pub fn new(
        registry: Arc<Registry>,
        pieces: PieceStore,
        mirrors: Mirrors,
        tasks: Tasks,
    ) -> Preloader {
        Preloader {
            registry,
            pieces,
            mirrors: Arc::new(mirrors),
            running: Arc::new(Semaphore::new(MAX_RUNNING)),
            tasks,
            counts: Arc::default(),
        }
    }

    /// `POST /preload`.
    pub fn router(&self) -> Router {
        Router::new()
            .route(PATH, axum::routing::post(preload))
            .with_state(self.clone())
    }

    /// The preload series of `/metrics`.
    pub fn collect(&self, out: &mut Exposition) {
        let c = &self.counts;
        out.family(
            "shoal_agent_preloads_total",
            "Preloads (POST /preload) by result: done, failed (after the image resolved), or refused (a bad request, an unknown image, too many running).",
            Kind::Counter,
        )
        .add(&[("result", "done")], c.done.get() as f64)
        .add(&[("result", "failed")], c.failed.get() as f64)
        .add(&[("result", "refused")], c.refused.get() as f64);
        out.gauge(
            "shoal_agent_preloads_running",
            "Preloads running now.",
            (MAX_RUNNING - self.running.available_permits()) as f64,
        );
        out.counter(
            "shoal_agent_preload_fetched_bytes_total",
            "Bytes of the blobs preloads fetched (blobs the store held already not counted).",
            c.fetched_bytes.get(),
        );
    }

    /// Checks the request, resolves the image and starts the fetch; the streamed answer.
    async fn start(&self, body: Body) -> ApiResult<Response> {
        let request = read_request(body).await?;
        let image: ImageRef = request.image.parse().map_err(|e| {
            let code = match e {
                shoal_registry::ImageRefError::Digest(_) => ErrorCode::DigestInvalid,
                shoal_registry::ImageRefError::Tag(_) => ErrorCode::ManifestInvalid,
                _ => ErrorCode::NameInvalid,
            };
            RegistryError::new(code, format!("image {:?}: {e}", clip(&request.image)))
        })?;
        let platform = request
            .platform
            .as_deref()
            .map(str::parse::<Platform>)
            .transpose()
            .map_err(|e| RegistryError::new(ErrorCode::ManifestInvalid, e.to_string()))?;
        let repo = match &image.host {
            Some(host) => self.mirrors.repository(host, &image.repo)?,
            None => image.repo.clone(),
        };
        let permit = self.running.clone().try_acquire_owned().map_err(|_| {
            RegistryError::new(
                ErrorCode::TooManyRequests,
                format!("{MAX_RUNNING} preloads are running on this agent: retry when one ends"),
            )
        })?;
        let plan =
            Plan::resolve(&self.registry, &repo, &image.reference, platform.as_ref()).await?;
        tracing::info!(
            image = %image,
            repository = %repo,
            digest = %plan.digest,
            manifests = plan.manifests,
            blobs = plan.blobs.len(),
            bytes = plan.total,
            "preload started"
        );
        let first = PreloadEvent::Resolved {
            repository: repo,
            digest: plan.digest.clone(),
            manifests: plan.manifests,
            blobs: plan.count(),
            total: plan.total,
        };
        // Room for a burst of blob lines; progress lines are dropped rather than waited for.
        let (tx, rx) = mpsc::channel(BLOBS_AT_ONCE * 4);
        self.tasks.spawn(self.clone().run(plan, image, tx, permit));
        let lines = futures_util::stream::once(async move { first })
            .chain(futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|e| (e, rx))
            }))
            .map(|event| Ok::<_, Infallible>(line(&event)));
        let mut resp = (StatusCode::OK, Body::from_stream(lines)).into_response();
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(resp)
    }

    /// Fetches the plan's blobs and reports; the task a preload runs in, holding its `permit`.
    async fn run(
        self,
        plan: Plan,
        image: ImageRef,
        tx: mpsc::Sender<PreloadEvent>,
        _permit: OwnedSemaphorePermit,
    ) {
        let last = match self.fetch(&plan, &tx).await {
            Ok(fetched) => {
                self.counts.done.inc();
                tracing::info!(%image, digest = %plan.digest, fetched, "preload done");
                PreloadEvent::Done {
                    total: plan.total,
                    blobs: plan.count(),
                    fetched,
                }
            }
            Err((error, done)) => {
                self.counts.failed.inc();
                tracing::warn!(%image, digest = %plan.digest, %error, "preload failed");
                PreloadEvent::Error {
                    error,
                    done,
                    blobs: plan.count(),
                }
            }
        };
        // The client may be gone; the preload's work is done either way.
        let _ = tx.send(last).await;
    }

    /// Brings every blob of `plan` into the store, [`BLOBS_AT_ONCE`] at a time; how many were
    /// fetched, or why one failed and how many were in the store then.
    ///
    /// Each fetch is a task of its own, not a future this loop polls: a fetch holds locks
    /// (the piece store's index while it opens a download) across its awaits, and this loop
    /// waits for the same lock to read progress, and for the client to take a line. Polled
    /// from here, a fetch suspended with the lock would never be resumed while the loop
    /// waited for it.
    async fn fetch(
        &self,
        plan: &Plan,
        tx: &mpsc::Sender<PreloadEvent>,
    ) -> Result<u32, (String, u32)> {
        let mut queued = plan.blobs.iter();
        // Dropped (the preload stopped): every fetch still running is aborted.
        let mut in_flight: JoinSet<(Blob, ApiResult<BlobPull>)> = JoinSet::new();
        let mut arriving: Vec<Blob> = Vec::new();
        let (mut done, mut fetched, mut stored) = (0u32, 0u32, 0u64);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let (mut last_bytes, mut last_sent) = (0u64, Instant::now());
        loop {
            while in_flight.len() < BLOBS_AT_ONCE
                && let Some(blob) = queued.next()
            {
                arriving.push(blob.clone());
                let (registry, repo, blob) =
                    (self.registry.clone(), plan.repo.clone(), blob.clone());
                in_flight.spawn(async move {
                    let pulled = registry.pull_blob(&repo, &blob.digest).await;
                    (blob, pulled)
                });
            }
            tokio::select! {
                next = in_flight.join_next() => {
                    let Some(joined) = next else { break };
                    let (blob, pulled) = joined
                        .map_err(|e| (format!("a blob's fetch failed: {e}"), done))?;
                    arriving.retain(|b| b.digest != blob.digest);
                    let pulled = pulled
                        .map_err(|e| (format!("blob {}: {}", blob.digest, e.message), done))?;
                    done += 1;
                    stored += blob.size;
                    if pulled == BlobPull::Fetched {
                        fetched += 1;
                        self.counts.fetched_bytes.add(blob.size);
                    }
                    last_bytes = last_bytes.max(stored + self.arriving(&arriving).await);
                    last_sent = Instant::now();
                    let _ = tx
                        .send(PreloadEvent::Blob {
                            digest: blob.digest.clone(),
                            size: blob.size,
                            fetched: pulled == BlobPull::Fetched,
                            bytes: last_bytes,
                            total: plan.total,
                            done,
                            blobs: plan.count(),
                        })
                        .await;
                }
                _ = tick.tick() => {
                    // Never back: a finished download leaves the piece store's list a
                    // moment before its blob is counted as stored.
                    let bytes = last_bytes.max(stored + self.arriving(&arriving).await);
                    if bytes != last_bytes || last_sent.elapsed() >= KEEPALIVE {
                        (last_bytes, last_sent) = (bytes, Instant::now());
                        let _ = tx.try_send(PreloadEvent::Progress {
                            bytes,
                            total: plan.total,
                            done,
                            blobs: plan.count(),
                        });
                    }
                }
            }
        }
        Ok(fetched)
    }

    /// Bytes that have arrived of the blobs in flight.
    async fn arriving(&self, blobs: &[Blob]) -> u64 {
        let mut sum = 0;
        for b in blobs {
            let got = self.pieces.bytes_downloading(&b.digest).await.unwrap_or(0);
            sum += got.min(b.size);
        }
        sum
    }
}

async fn preload(State(p): State<Preloader>, body: Body) -> Response {
    match p.start(body).await {
        Ok(resp) => resp,
        Err(e) => {
            p.counts.refused.inc();
            e.into_response()
        }
    }
}

/// The request body, at most [`MAX_BODY`] bytes of JSON.
async fn read_request(body: Body) -> ApiResult<PreloadRequest> {
    let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| {
        RegistryError::new(
            ErrorCode::SizeInvalid,
            format!("the request body could not be read or exceeds {MAX_BODY} bytes: {e}"),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        RegistryError::new(
            ErrorCode::NameInvalid,
            format!(
                "the request body is not {{\"image\": \"REPOSITORY:TAG\"}} (with an optional \
                 \"platform\": \"os/arch\"): {e}"
            ),
        )
    })
}

/// A value from a request, cut for a message.
fn clip(s: &str) -> String {
    s.chars().take(160).collect()
}

/// `event` as one line of the stream.
fn line(event: &PreloadEvent) -> Bytes {
    let mut out = serde_json::to_vec(event).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

/// A blob to have.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Blob {
    digest: Digest,
    size: u64,
}

/// What a preload covers, resolved before it answers 200.
#[derive(Debug)]
struct Plan {
    repo: RepoName,
    /// The manifest the reference names.
    digest: Digest,
    /// Manifests resolved.
    manifests: u32,
    /// Every config and layer, each digest once, in manifest order.
    blobs: Vec<Blob>,
    /// Their bytes.
    total: u64,
}

impl Plan {
    /// Resolves `reference` of `repo` as a pull does, and every manifest an index names (only
    /// those of `platform` when given), into the blobs to fetch. The manifests are in the
    /// store when this returns.
    async fn resolve(
        registry: &Registry,
        repo: &RepoName,
        reference: &Reference,
        platform: Option<&Platform>,
    ) -> ApiResult<Plan> {
        let top = registry.pull_manifest(repo, reference).await?;
        let mut plan = Plan {
            repo: repo.clone(),
            digest: top.digest.clone(),
            manifests: 0,
            blobs: Vec::new(),
            total: 0,
        };
        let mut seen = HashSet::new();
        let mut work = vec![(top, 0usize)];
        while let Some((stored, depth)) = work.pop() {
            plan.manifests += 1;
            let manifest = Manifest::parse(&stored.bytes, Some(&stored.media_type))?;
            match manifest.kind {
                ManifestKind::Image { config, layers } => {
                    // Foreign layers (with `urls`) live elsewhere; a pull does not ask for them.
                    let wanted = std::iter::once(config).chain(
                        layers
                            .into_iter()
                            .filter(|l| l.urls.as_ref().is_none_or(|u| u.is_empty())),
                    );
                    for d in wanted {
                        if seen.insert(d.digest.clone()) {
                            plan.total += d.size;
                            plan.blobs.push(Blob {
                                digest: d.digest,
                                size: d.size,
                            });
                        }
                    }
                }
                ManifestKind::Index { manifests } => {
                    let chosen = entries_for(&stored.digest, &manifests, platform)?;
                    if depth >= MAX_DEPTH {
                        return Err(RegistryError::new(
                            ErrorCode::ManifestInvalid,
                            format!(
                                "index {} is nested more than {MAX_DEPTH} deep in {}",
                                stored.digest, plan.digest
                            ),
                        ));
                    }
                    if plan.manifests as usize + work.len() + chosen.len() > MAX_MANIFESTS {
                        return Err(RegistryError::new(
                            ErrorCode::ManifestInvalid,
                            format!(
                                "{} names more than {MAX_MANIFESTS} manifests: too many to preload",
                                plan.digest
                            ),
                        ));
                    }
                    // In reverse, so the work list pops them in index order.
                    for d in chosen.into_iter().rev() {
                        let child = registry
                            .pull_manifest(repo, &Reference::Digest(d.clone()))
                            .await?;
                        work.push((child, depth + 1));
                    }
                }
            }
        }
        Ok(plan)
    }

    fn count(&self) -> u32 {
        u32::try_from(self.blobs.len()).unwrap_or(u32::MAX)
    }
}

/// The entries of index `index` a preload follows: all, or those of `platform`, which must
/// match at least one.
fn entries_for(
    index: &Digest,
    entries: &[shoal_registry::manifest::Descriptor],
    platform: Option<&Platform>,
) -> ApiResult<Vec<Digest>> {
    let Some(wanted) = platform else {
        return Ok(entries.iter().map(|e| e.digest.clone()).collect());
    };
    let chosen: Vec<Digest> = entries
        .iter()
        .filter(|e| e.platform.as_ref().is_some_and(|p| p.matches(wanted)))
        .map(|e| e.digest.clone())
        .collect();
    if chosen.is_empty() {
        let has: Vec<String> = entries
            .iter()
            .filter_map(|e| e.platform.as_ref().map(|p| p.to_string()))
            .collect();
        return Err(RegistryError::new(
            ErrorCode::ManifestUnknown,
            format!(
                "index {index} has no image for platform {wanted} (it has: {})",
                if has.is_empty() {
                    "none named".to_owned()
                } else {
                    has.join(", ")
                }
            ),
        ));
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests;
