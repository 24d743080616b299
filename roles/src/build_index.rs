//! `shoal build-index`: tag → digest, over the `backends:` list (the same tag objects `shoal
//! dev` and Kraken write: `<repo>:<tag>` holding the digest), with an in-memory cache
//! (`tag_cache.tti`, `tag_cache.capacity`). Kraken's API: `GET /tags/{repo}:{tag}` answers the
//! digest as text (404 when unknown), `PUT /tags/{repo}:{tag}/digest/{digest}` sets it. The
//! repository is URL-escaped in the path (`library%2Fubuntu:22.04`).
//!
//! Not built yet: replication to the remote build-indexes of `cluster:`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, put};
use shoal_config::BuildIndexConfig;
use shoal_registry::{Backing, Digest, TagKey};
use shoal_storage::{NamespaceRouter, StorageBacking};
use tokio::net::TcpListener;

use crate::RoleError;
use crate::http::{HttpError, HttpResult, TagDigestPath, TagPath};

/// Entries kept when `tag_cache.capacity` is not set.
const DEFAULT_CAPACITY: usize = 100_000;

/// What a build-index needs besides its config and listener.
pub struct BuildIndexDeps {
    /// The `backends:` list (tags), running.
    pub backends: Arc<NamespaceRouter>,
}

struct BuildIndex {
    backing: StorageBacking,
    cache: Mutex<HashMap<TagKey, (Digest, Instant)>>,
    tti: Duration,
    capacity: usize,
}

/// Serves a build-index on `listener` until `shutdown`.
pub async fn serve(
    config: &BuildIndexConfig,
    listener: TcpListener,
    deps: BuildIndexDeps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RoleError> {
    let index = Arc::new(BuildIndex {
        backing: StorageBacking::new(deps.backends),
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
        .with_state(index);
    tracing::info!(listen = %listener.local_addr()?, "shoal build-index listening");
    crate::http::serve(
        listener,
        app,
        crate::http::DEFAULT_MAX_CONNECTIONS,
        shutdown,
    )
    .await?;
    Ok(())
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

async fn put_tag(
    State(b): State<Arc<BuildIndex>>,
    TagDigestPath(key, d): TagDigestPath,
) -> HttpResult<StatusCode> {
    b.backing
        .put_tag(&key.repo, &key.tag, &d)
        .await
        .map_err(|e| HttpError::bad_gateway(e.message))?;
    b.remember(key, d);
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
