//! `shoal build-index`: tag → digest, over the `backends:` list (the same tag objects `shoal
//! dev` and Kraken write: `<repo>:<tag>` holding the digest), with an in-memory cache
//! (`tag_cache.tti`, `tag_cache.capacity`). Kraken's API: `GET /tags/{repo}:{tag}` answers the
//! digest as text (404 when unknown), `PUT /tags/{repo}:{tag}/digest/{digest}` sets it. The
//! repository is URL-escaped in the path (`library%2Fubuntu:22.04`).
//!
//! A PUT is copied to the remote build-indexes of `cluster:` through a queue on disk
//! ([`replication`]): it is acknowledged once the tag is in the backend and the copies are
//! queued. A copy arrives as `PUT ...?replica=true` and is stored without being copied again.
//! `GET /metrics` shows the queue's depth.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use shoal_config::{BuildIndexConfig, HostPort};
use shoal_p2p::{StopOnDrop, Tasks};
use shoal_registry::{Backing, Digest, TagKey};
use shoal_storage::{NamespaceRouter, StorageBacking};
use tokio::net::TcpListener;

use crate::RoleError;
use crate::http::{HttpError, HttpResult, ReplicaQuery, TagDigestPath, TagPath};
use crate::queue::{Policy, Queue};

mod replication;

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
    cache: Mutex<HashMap<TagKey, (Digest, Instant)>>,
    tti: Duration,
    capacity: usize,
}

/// Serves a build-index on `listener` until `shutdown`; its replication queue is
/// `<data_dir>/queue`. When the future is dropped or returns, every task it started stops;
/// queued copies are sent after the next start.
pub async fn serve(
    config: &BuildIndexConfig,
    data_dir: &Path,
    listener: TcpListener,
    deps: BuildIndexDeps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RoleError> {
    let tasks = Tasks::new();
    let _stop = StopOnDrop(tasks.clone());
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
            http: crate::http::client(Some(replication::COPY_TIMEOUT))?,
        }),
        &tasks,
    );
    let depth = queue.clone();
    let index = Arc::new(BuildIndex {
        backing: StorageBacking::new(deps.backends),
        remotes: replication::remotes(&config.cluster.hosts),
        queue,
        cache: Mutex::new(HashMap::new()),
        tti: config.tag_cache.tti.get(),
        capacity: config
            .tag_cache
            .capacity
            .map_or(DEFAULT_CAPACITY, |c| c as usize),
    });
    let app = Router::new()
        .route("/health", get(|| async { "OK" }))
        .route("/tags/{tag}", get(get_tag).head(get_tag))
        .route("/tags/{tag}/digest/{digest}", put(put_tag))
        .route(
            "/metrics",
            get(move || async move {
                depth.depth().render(
                    "shoal_build_index_queue_jobs",
                    "Tag copies to remote build-indexes queued on disk, pending or parked as failed.",
                )
            }),
        )
        .with_state(index);
    tracing::info!(listen = %listener.local_addr()?, "shoal build-index listening");
    let served = crate::http::serve(
        listener,
        app,
        crate::http::DEFAULT_MAX_CONNECTIONS,
        shutdown,
    )
    .await;
    tasks.shutdown().await;
    Ok(served?)
}

async fn get_tag(State(b): State<Arc<BuildIndex>>, TagPath(key): TagPath) -> HttpResult<String> {
    if let Some(d) = b.cached(&key) {
        return Ok(d.to_string());
    }
    match b.backing.get_tag(&key.repo, &key.tag).await {
        Ok(Some(d)) => {
            b.remember(key, d.clone());
            Ok(d.to_string())
        }
        Ok(None) => Err(HttpError::not_found(format!("{key} is not tagged"))),
        Err(e) => Err(HttpError::bad_gateway(e.message)),
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
    /// The cached digest of `key`, when it was used within the TTI (which it then renews).
    fn cached(&self, key: &TagKey) -> Option<Digest> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let (d, at) = cache.get_mut(key)?;
        if at.elapsed() < self.tti {
            *at = Instant::now();
            return Some(d.clone());
        }
        cache.remove(key);
        None
    }

    fn remember(&self, key: TagKey, d: Digest) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= self.capacity && !cache.contains_key(&key) {
            // Full: drop the entries idle past the TTI, then the least recently used one.
            let tti = self.tti;
            cache.retain(|_, (_, at)| at.elapsed() < tti);
            if cache.len() >= self.capacity
                && let Some(oldest) = cache
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| k.clone())
            {
                cache.remove(&oldest);
            }
        }
        cache.insert(key, (d, Instant::now()));
    }
}
