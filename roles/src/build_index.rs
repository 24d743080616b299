//! `shoal build-index`: tag → digest, over the `backends:` list (the same tag objects `shoal
//! dev` and Kraken write: `<repo>:<tag>` holding the digest), with an in-memory cache
//! (`tag_cache.tti`, `tag_cache.capacity`; see `tag_cache.rs`). The repository is URL-escaped
//! in the path (`library%2Fubuntu:22.04`). Kraken's API, plus delete:
//! - `GET`/`HEAD /tags/{repo}:{tag}`: the digest as text; 404 when the backend has no such
//!   tag; 502 when the backend failed and nothing is cached. A cached entry older than
//!   `tag_cache.tti` is revalidated first; if the backend does not answer, the cached digest is
//!   served and the staleness logged.
//! - `PUT /tags/{repo}:{tag}/digest/{digest}`: sets it in the backend, then in the cache; 200.
//! - `DELETE /tags/{repo}:{tag}`: removes it from the backend and the cache; 204, 404 when the
//!   backend has no such tag, 403 when no `backends:` entry may write the namespace's tags
//!   (or the backend refuses writes, as `registry_tag` does), 502 when the backend failed.
//! - `GET /repositories/{repo}/tags`: every tag of the repository the backend holds, sorted,
//!   as `{"tags": [...]}` (what agents and the proxy answer `/v2/{repo}/tags/list` with); 501
//!   when the namespace's backend cannot list, 502 when it failed. Requests arriving while a
//!   repository is listed share the next listing ([`listings`]).
//!
//! A PUT is copied to the remote build-indexes of `cluster:` through a queue on disk
//! ([`replication`]): it is acknowledged once the tag is in the backend and the copies are
//! queued. A copy arrives as `PUT ...?replica=true` and is stored without being copied again.
//! `GET /metrics` shows the backend calls, the tag reads by result and the queue's depth;
//! `GET /ready` is 200 while every backend answers.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use shoal_config::{BuildIndexConfig, HostPort};
use shoal_metrics::{Collect, Counter, Exposition, Kind};
use shoal_p2p::{StopOnDrop, Tasks};
use shoal_registry::{Backing, Digest, ErrorCode, TagKey};
use shoal_storage::{NamespaceRouter, StorageBacking};

use crate::RoleError;
use crate::http::{HttpError, HttpResult, ReplicaQuery, RepoPath, TagDigestPath, TagPath};
use crate::metrics::Metrics;
use crate::queue::{Policy, Queue};
use crate::ready::Readiness;
use crate::tag_cache::{Cached, TagCache};
use crate::tags::TagList;

mod listings;
mod replication;

use listings::Listings;
use replication::TagCopy;

/// Entries kept when `tag_cache.capacity` is not set.
const DEFAULT_CAPACITY: usize = 100_000;

/// What a build-index needs besides its config and listener.
pub struct BuildIndexDeps {
    /// The `backends:` list (tags), running.
    pub backends: Arc<NamespaceRouter>,
}

struct BuildIndex {
    backing: StorageBacking,
    /// The remote build-indexes tags are copied to.
    remotes: Vec<HostPort>,
    /// Copies still to send, on disk.
    queue: Queue<TagCopy>,
    lookups: Arc<TagLookups>,
    cache: Mutex<TagCache>,
    /// Tag listings, shared by the requests that overlap them.
    listings: Listings,
}

/// Tag reads by how they were answered, for `/metrics`.
#[derive(Debug, Default)]
struct TagLookups {
    /// Answered from the cache without asking the backend.
    cached: Counter,
    /// Found in the backend.
    found: Counter,
    /// The backend has no such tag.
    not_found: Counter,
    /// The backend failed and a cached digest past `tag_cache.tti` was served.
    stale: Counter,
    /// The backend failed and nothing was cached.
    error: Counter,
}

impl Collect for TagLookups {
    fn collect(&self, out: &mut Exposition) {
        out.family(
            "shoal_build_index_tag_lookups_total",
            "Tag reads (GET, HEAD) by result: cached (from the cache, fresh), found (in the backend), not_found, stale (the backend failed; a cached digest was served), error (the backend failed; nothing cached).",
            Kind::Counter,
        )
        .add(&[("result", "cached")], self.cached.get() as f64)
        .add(&[("result", "found")], self.found.get() as f64)
        .add(&[("result", "not_found")], self.not_found.get() as f64)
        .add(&[("result", "stale")], self.stale.get() as f64)
        .add(&[("result", "error")], self.error.get() as f64);
    }
}

/// Serves a build-index on `listener` until `shutdown`; its replication queue is
/// `<data_dir>/queue`. When the future is dropped or returns, every task it started stops;
/// queued copies are sent after the next start.
pub async fn serve(
    config: &BuildIndexConfig,
    data_dir: &Path,
    listeners: impl Into<crate::serve::Listeners>,
    deps: BuildIndexDeps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RoleError> {
    let tasks = Tasks::new();
    let _stop = StopOnDrop(tasks.clone());
    let crate::serve::Listeners {
        http: listener,
        metrics: metrics_listener,
    } = listeners.into();
    let options = crate::serve::ServeOptions::from_config(&config.server)?;
    let tls = crate::serve::load_cluster_tls(config.client_tls.as_ref())?;
    let queue_dir = data_dir.join("queue");
    let queue: Queue<TagCopy> =
        Queue::open(&queue_dir, Policy::from_config(&config.replication), &tasks).map_err(
            |source| RoleError::Queue {
                path: queue_dir.clone(),
                source,
            },
        )?;
    queue.start(
        Arc::new(replication::Sender {
            http: tls.http(Some(replication::COPY_TIMEOUT))?,
        }),
        &tasks,
    );
    let depth = queue.clone();
    let lookups = Arc::new(TagLookups::default());
    let metrics = Metrics::new(options.metrics.clone())
        .with(deps.backends.clone())
        .with(lookups.clone())
        .with_fn(move |out| {
            depth.depth().write(
                out,
                "shoal_build_index_queue_jobs",
                "Tag copies to remote build-indexes queued on disk, pending or parked as failed.",
            )
        });
    metrics.serve_on(metrics_listener, &options, &tasks);
    let readiness = Readiness::new().backends(deps.backends.clone());
    let index = Arc::new(BuildIndex {
        backing: StorageBacking::new(deps.backends),
        remotes: replication::remotes(&config.cluster.hosts),
        queue,
        lookups,
        cache: Mutex::new(TagCache::new(
            config.tag_cache.tti.get(),
            config
                .tag_cache
                .capacity
                .map_or(DEFAULT_CAPACITY, |c| c as usize),
        )),
        listings: Listings::default(),
    });
    let app = Router::new()
        .route("/health", get(|| async { "OK" }))
        .route("/tags/{tag}", get(get_tag).head(get_tag).delete(delete_tag))
        .route("/tags/{tag}/digest/{digest}", put(put_tag))
        .route("/repositories/{repo}/tags", get(list_tags))
        .with_state(index)
        .merge(metrics.router())
        .merge(readiness.router());
    tracing::info!(listen = %listener.local_addr()?, "shoal build-index listening");
    let served = crate::serve::serve(listener, app, &options, shutdown).await;
    tasks.shutdown().await;
    Ok(served?)
}

async fn get_tag(State(b): State<Arc<BuildIndex>>, TagPath(key): TagPath) -> HttpResult<String> {
    let cached = b.cache().get(&key, Instant::now());
    if let Cached::Fresh(d) = cached {
        b.lookups.cached.inc();
        return Ok(d.to_string());
    }
    let started = Instant::now();
    match b.backing.get_tag(&key.repo, &key.tag).await {
        Ok(Some(d)) => {
            b.lookups.found.inc();
            b.cache().confirm(key, d.clone(), started);
            Ok(d.to_string())
        }
        Ok(None) => {
            b.lookups.not_found.inc();
            b.cache().forget(&key);
            Err(HttpError::not_found(format!("{key} is not tagged")))
        }
        Err(e) => match cached {
            Cached::Stale(d) => {
                b.lookups.stale.inc();
                tracing::warn!(
                    tag = %key,
                    digest = %d,
                    error = %e.message,
                    "serving a stale tag: the backend did not answer its revalidation"
                );
                Ok(d.to_string())
            }
            _ => {
                b.lookups.error.inc();
                Err(HttpError::bad_gateway(e.message))
            }
        },
    }
}

/// The tags of a repository, as the backend lists them; see the module doc for the statuses.
async fn list_tags(
    State(b): State<Arc<BuildIndex>>,
    RepoPath(repo): RepoPath,
) -> HttpResult<Json<TagList>> {
    let listed = b.listings.list(&repo, || b.backing.list_tags(&repo)).await;
    match listed {
        Ok(Some(mut tags)) => {
            tags.sort();
            tags.dedup();
            Ok(Json(TagList { tags }))
        }
        Ok(None) => Err(HttpError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("the backend of namespace {repo} cannot list tags"),
        )),
        Err(e) => Err(HttpError::bad_gateway(e.message)),
    }
}

/// Removes a tag from the backend, then from the cache; see the module doc for the statuses.
async fn delete_tag(
    State(b): State<Arc<BuildIndex>>,
    TagPath(key): TagPath,
) -> HttpResult<StatusCode> {
    let refused = |e: shoal_registry::RegistryError| match e.code {
        ErrorCode::Denied | ErrorCode::Unsupported => {
            HttpError::new(StatusCode::FORBIDDEN, e.message)
        }
        _ => HttpError::bad_gateway(e.message),
    };
    let known = b
        .backing
        .get_tag(&key.repo, &key.tag)
        .await
        .map_err(refused)?;
    if known.is_some() {
        b.backing
            .delete_tag(&key.repo, &key.tag)
            .await
            .map_err(refused)?;
    }
    b.cache().forget(&key);
    match known {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(HttpError::not_found(format!("{key} is not tagged"))),
    }
}

/// Sets a tag in the backend; unless it is a copy from another cluster, queues its copies to
/// the remotes before answering.
async fn put_tag(
    State(b): State<Arc<BuildIndex>>,
    TagDigestPath(key, d): TagDigestPath,
    Query(q): Query<ReplicaQuery>,
) -> HttpResult<StatusCode> {
    b.backing
        .put_tag(&key.repo, &key.tag, &d)
        .await
        .map_err(|e| HttpError::bad_gateway(e.message))?;
    b.remember(key.clone(), d.clone());
    if !q.replica && !b.remotes.is_empty() {
        let copies = b
            .remotes
            .iter()
            .map(|to| TagCopy {
                tag: key.clone(),
                digest: d.clone(),
                to: to.clone(),
            })
            .collect();
        b.queue.push_all(copies).await.map_err(|e| {
            tracing::error!(tag = %key, error = %e, "queueing a tag's copies failed");
            HttpError::unavailable(format!("queueing the copies of {key}: {e}"))
        })?;
    }
    Ok(StatusCode::OK)
}

impl BuildIndex {
    fn cache(&self) -> MutexGuard<'_, TagCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Caches what a write through this build-index just set.
    fn remember(&self, key: TagKey, d: Digest) {
        self.cache().confirm(key, d, Instant::now());
    }
}
