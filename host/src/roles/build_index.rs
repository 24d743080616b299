//! `shoal build-index`: tag → digest, over the `backends:` list (the same tag objects `shoal
//! dev` and Kraken write: `<repo>:<tag>` holding the digest), with an in-memory cache
//! (`tag_cache.tti`, `tag_cache.capacity`). Kraken's API: `GET /tags/{repo}:{tag}` answers the
//! digest as text (404 when unknown), `PUT /tags/{repo}:{tag}/digest/{digest}` sets it. The
//! repository is URL-escaped in the path (`library%2Fubuntu:22.04`).
//!
//! Not built yet: replication to the remote build-indexes of `cluster:`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use shoal_config::BuildIndexConfig;
use shoal_host::plugin::{PluginEngine, PluginLimits};
use shoal_host::storage::{NamespaceRouter, PluginBacking};
use shoal_registry::{Backing, Digest, RepoName, Tag};

use super::BadRequest;

/// Entries kept when `tag_cache.capacity` is not set.
const DEFAULT_CAPACITY: usize = 100_000;

struct BuildIndex {
    backing: PluginBacking,
    cache: Mutex<HashMap<String, (Digest, Instant)>>,
    tti: Duration,
    capacity: usize,
}

/// Runs `shoal build-index` until `shutdown`.
pub async fn run(
    config: BuildIndexConfig,
    data_dir: std::path::PathBuf,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let engine = PluginEngine::new(
        PluginLimits::from_config(&config.plugins),
        Some(data_dir.join("plugin-cache")),
    )
    .context("starting the plugin engine")?;
    let router = NamespaceRouter::load(&engine, &config.backends, &config.auth)
        .context("loading the storage backends")?;
    let index = Arc::new(BuildIndex {
        backing: PluginBacking::new(Arc::new(router)),
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
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding listen {}", config.listen))?;
    tracing::info!(listen = %listener.local_addr()?, "shoal build-index listening");
    crate::serve::serve(listener, app, shutdown).await?;
    Ok(())
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, msg.into()).into_response()
}

/// `repo:tag` as the path carries it; the tag is after the last `:`.
fn parse(name: &str) -> Result<(RepoName, Tag), BadRequest> {
    let bad = BadRequest;
    let (repo, tag) = name
        .rsplit_once(':')
        .ok_or_else(|| bad(format!("{name:?}: expected <repository>:<tag>")))?;
    let repo = repo
        .parse::<RepoName>()
        .map_err(|e| bad(format!("repository {repo:?}: {e}")))?;
    let tag = tag
        .parse::<Tag>()
        .map_err(|e| bad(format!("tag {tag:?}: {e}")))?;
    Ok((repo, tag))
}

async fn get_tag(State(b): State<Arc<BuildIndex>>, Path(name): Path<String>) -> Response {
    let (repo, tag) = match parse(&name) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let key = format!("{}:{}", repo.as_str(), tag.as_str());
    {
        let mut cache = b.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, at)) = cache.get_mut(&key) {
            if at.elapsed() < b.tti {
                *at = Instant::now();
                return text(StatusCode::OK, d.to_string());
            }
            cache.remove(&key);
        }
    }
    match b.backing.get_tag(&repo, &tag).await {
        Ok(Some(d)) => {
            b.remember(key, d.clone());
            text(StatusCode::OK, d.to_string())
        }
        Ok(None) => text(StatusCode::NOT_FOUND, format!("{key} is not tagged")),
        Err(e) => text(StatusCode::BAD_GATEWAY, e.message),
    }
}

async fn put_tag(
    State(b): State<Arc<BuildIndex>>,
    Path((name, digest)): Path<(String, String)>,
) -> Response {
    let (repo, tag) = match parse(&name) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let d = match digest.parse::<Digest>() {
        Ok(d) => d,
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("digest {digest:?}: {e}")),
    };
    match b.backing.put_tag(&repo, &tag, &d).await {
        Ok(()) => {
            b.remember(format!("{}:{}", repo.as_str(), tag.as_str()), d);
            StatusCode::OK.into_response()
        }
        Err(e) => text(StatusCode::BAD_GATEWAY, e.message),
    }
}

impl BuildIndex {
    fn remember(&self, key: String, d: Digest) {
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
