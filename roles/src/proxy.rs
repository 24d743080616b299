//! `shoal proxy`: the registry CI pushes to, in front of the origins and the build-index.
//!
//! The proxy serves the whole registry API over a local staging store. A pushed blob (manifests
//! are blobs too) is verified against its digest as it is committed, then streamed to the origin
//! that owns the digest on the hash ring (rendezvous hashing over `origin.hosts`, the same ranking
//! the origins and the tracker use), falling over to the next-ranked healthy origin when one does
//! not answer; the origin verifies it again, queues the write-back to its storage backend and the
//! copies to its replica set. A tag goes to the build-index. The push is acknowledged to the
//! client only after the origin and the build-index took it, so a push that returned 201 is in
//! the cluster.
//!
//! The staging store is not a second copy of the cluster: content older than `staging.ttl` is
//! dropped from it every `staging.interval` ([`evict_staged`]).
//!
//! Pulls are served too, for convenience (nodes pull through their agents): a blob the staging
//! store lacks is fetched from its origin (which fetches it from its backend first when it must),
//! and a tag is resolved at the build-index on every request.

use shoal_p2p::with_causes;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use shoal_config::{ClusterConfig, HashRingConfig, HostPort, ProxyConfig};
use shoal_p2p::tls::{ClusterHttp, ClusterTls};
use shoal_p2p::{HealthFilter, StopOnDrop, Tasks};
use shoal_registry::{
    ApiResult, Backing, BodyStream, Digest, ErrorCode, LocalStore, Registry, RegistryError,
    RepoName, Tag, TagKey,
};

use crate::RoleError;
use crate::hosts::hosts_of;
use crate::http::segment;
use crate::ready::Readiness;
use crate::ring::Ring;
use crate::tags::TagClient;

/// How long a pull through the proxy waits for an origin to fetch a blob from its backend.
const FETCH_DEADLINE: Duration = Duration::from_secs(600);

/// What a proxy needs besides its config and listener.
pub struct ProxyDeps {
    /// The active health policy the origins are judged by (`origin.hosts` are pinged like an
    /// origin pings its ring).
    pub origin_health: Arc<dyn HealthFilter>,
    /// Wraps the registry router before it is served: credentials (`access:`), added by the
    /// caller, which owns that policy. `None` serves the router as it is.
    pub protect: Option<Box<dyn FnOnce(axum::Router) -> axum::Router + Send>>,
}

/// Serves a proxy on `listener` until `shutdown`; its staging store is under
/// `<data_dir>/proxy`. When the future is dropped or returns, every task it started stops.
pub async fn serve(
    config: &ProxyConfig,
    data_dir: &Path,
    listeners: impl Into<crate::serve::Listeners>,
    deps: ProxyDeps,
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
    let root = data_dir.join("proxy");
    let local = LocalStore::open(&root)
        .await
        .map_err(|source| RoleError::RegistryStore {
            path: root.clone(),
            source,
        })?;
    let listen = listener.local_addr()?;
    let origins = match &config.origin.hosts {
        Some(h) => {
            let members = hosts_of(h).await?;
            let cluster = ClusterConfig {
                hosts: Some(h.clone()),
                ..ClusterConfig::default()
            };
            // Every member ranked, not just a replica set: a push falls over to the next one.
            let hashring = HashRingConfig {
                max_replica: members.len().max(1) as u32,
                ..HashRingConfig::default()
            };
            Some(
                Ring::start(
                    &cluster,
                    &hashring,
                    listen,
                    None,
                    deps.origin_health,
                    &tls,
                    &tasks,
                )
                .await?,
            )
        }
        None => None,
    };
    let build_index = match &config.build_index.hosts {
        Some(h) => hosts_of(h).await?,
        None => Vec::new(),
    };
    let readiness = proxy_readiness(origins.clone(), build_index.clone(), &tls)?;
    let mut metrics = crate::metrics::Metrics::new(options.metrics.clone());
    if let Some(ring) = origins.clone() {
        metrics = metrics.with_fn(move |out| crate::metrics::ring_health(&ring, out));
    }
    let backing = Arc::new(ClusterBacking {
        origins,
        tags: TagClient::new(build_index, &tls)?,
        // Blob transfers are as long as blobs are: only the connect timeout.
        http: tls.http(None)?,
    });
    // Tags are the build-index's: every read by tag asks it (a tag pushed through another
    // proxy is seen at once).
    let registry = Arc::new(
        Registry::with_backing(local, backing)
            .tags_from_backing(Duration::ZERO)
            .referrers_in_backing(),
    );
    let every = config.staging.interval.get();
    if !every.is_zero() {
        let (staged, ttl) = (registry.clone(), config.staging.ttl.get());
        tasks.spawn(async move { evict_staged_every(&staged, ttl, every).await });
    }
    let metrics = metrics.with(Arc::new(crate::metrics::Cache(registry.clone())));
    metrics.serve_on(metrics_listener, &options, &tasks);
    let staging = registry.clone();
    let readiness = readiness.check("staging store", move || {
        let staging = staging.clone();
        async move {
            staging
                .store
                .check_writable()
                .await
                .map_err(|e| format!("{}: {e}", staging.store.root().display()))
        }
    });
    let mut app = shoal_registry::router(registry);
    if let Some(protect) = deps.protect {
        app = protect(app);
    }
    // Open like /health: a probe carries no credentials.
    let app = app.merge(readiness.router()).merge(metrics.router());
    tracing::info!(%listen, "shoal proxy listening");
    let served = crate::serve::serve(listener, app, &options, shutdown).await;
    tasks.shutdown().await;
    Ok(served?)
}

/// A proxy is ready while an origin is healthy (its active check) and a build-index answers:
/// a push needs both.
fn proxy_readiness(
    origins: Option<Arc<Ring>>,
    build_index: Vec<HostPort>,
    tls: &ClusterTls,
) -> Result<Readiness, RoleError> {
    let readiness = Readiness::new().check("origins", move || {
        let health = origins.as_ref().map(|ring| ring.health());
        async move {
            match health {
                None => Err("origin.hosts is not set: pushes have nowhere to go".to_owned()),
                Some(h) if h.iter().any(|(_, ok)| *ok) => Ok(()),
                Some(h) => Err(format!("none of the {} origins is healthy", h.len())),
            }
        }
    });
    Ok(readiness.any_answers("build-index", "build_index.hosts", build_index, tls)?)
}

/// Drops staged content older than `ttl` every `every`.
async fn evict_staged_every(registry: &Registry, ttl: Duration, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        match evict_staged(registry, ttl).await {
            Ok(r) if r.blobs_deleted > 0 => tracing::info!(
                blobs = r.blobs_deleted,
                bytes = r.bytes_freed,
                "dropped staged content older than staging.ttl"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "dropping staged content failed"),
        }
    }
}

/// Drops what the proxy's store holds longer than `ttl`: everything in it was acknowledged
/// only once the cluster had it. Its tags are only a copy (every read by tag asks the
/// build-index), so they all go; the collector then frees what is older than `ttl`, and never
/// touches the cluster (`delete_from_backing: false`). Content of a push in flight is younger
/// than `ttl`, which the collector keeps, with all it references.
pub async fn evict_staged(
    registry: &Registry,
    ttl: Duration,
) -> std::io::Result<shoal_registry::GcReport> {
    let store = &registry.store;
    for name in store.catalog().await? {
        let Ok(repo) = name.parse::<RepoName>() else {
            continue;
        };
        let tags = store.all_tags(&repo).await.map_err(std::io::Error::other)?;
        for tag in tags {
            if let Ok(tag) = tag.parse::<Tag>() {
                store.untag(&repo, &tag).await?;
            }
        }
    }
    store
        .collect_garbage(&shoal_registry::GcPolicy {
            grace: ttl,
            delete_from_backing: false,
        })
        .await
}

/// The proxy's backing: blobs at the origins, tags at the build-index.
struct ClusterBacking {
    origins: Option<Arc<Ring>>,
    tags: TagClient,
    http: ClusterHttp,
}

fn unavailable(message: String) -> RegistryError {
    RegistryError::new(ErrorCode::Unavailable, message)
}

impl ClusterBacking {
    /// The origins for `d`, best first; an error when the proxy has none configured.
    fn owners(&self, d: &Digest) -> ApiResult<Vec<HostPort>> {
        match &self.origins {
            Some(ring) => Ok(ring.owners(d)),
            None => Err(unavailable(
                "this proxy has no origins to keep blobs (origin.hosts)".to_owned(),
            )),
        }
    }

    fn blob_url(&self, host: &HostPort, repo: &RepoName, d: &Digest) -> String {
        let path = format!("/namespace/{}/blobs/{d}", segment(repo.as_str()));
        self.http.url(host, &path)
    }

    /// Streams the verified file at `path` to `host`.
    async fn upload(
        &self,
        host: &HostPort,
        repo: &RepoName,
        d: &Digest,
        path: &Path,
        size: u64,
    ) -> Result<(), String> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| format!("opening the staged {d}: {e}"))?;
        let body =
            reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(file, 1 << 20));
        let resp = self
            .http
            .put(self.blob_url(host, repo, d))
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(body)
            .send()
            .await
            .map_err(|e| format!("origin {host}: {}", with_causes(&e)))?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(format!("origin {host} answered {status}: {}", text.trim()))
    }

    /// Asks `host` for `d` until it holds it: `Ok(Some(body))`, `Ok(None)` when its backend
    /// does not have it, `Err` when the origin fails or does not answer.
    async fn fetch(
        &self,
        host: &HostPort,
        repo: &RepoName,
        d: &Digest,
    ) -> Result<Option<BodyStream>, String> {
        let url = self.blob_url(host, repo, d);
        let metainfo = format!("{url}/metainfo");
        let started = Instant::now();
        let mut wait = Duration::from_millis(20);
        loop {
            let resp = self
                .http
                .get(&metainfo)
                .send()
                .await
                .map_err(|e| format!("origin {host}: {}", with_causes(&e)))?;
            match resp.status() {
                reqwest::StatusCode::OK => break,
                reqwest::StatusCode::ACCEPTED if started.elapsed() < FETCH_DEADLINE => {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(1));
                }
                reqwest::StatusCode::NOT_FOUND => return Ok(None),
                status => return Err(format!("origin {host} answered {status} for {d}")),
            }
        }
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("origin {host}: {}", with_causes(&e)))?;
        match resp.status() {
            reqwest::StatusCode::OK => Ok(Some(Box::pin(
                resp.bytes_stream().map_err(std::io::Error::other),
            ))),
            // Evicted between the two requests: as good as absent; the client retries.
            reqwest::StatusCode::NOT_FOUND => Ok(None),
            status => Err(format!("origin {host} answered {status} for {d}")),
        }
    }
}

#[async_trait::async_trait]
impl Backing for ClusterBacking {
    async fn put_blob(&self, repo: &RepoName, d: &Digest, path: &Path, size: u64) -> ApiResult<()> {
        let mut failures = Vec::new();
        for host in self.owners(d)? {
            match self.upload(&host, repo, d, path, size).await {
                Ok(()) => {
                    tracing::debug!(%d, %repo, origin = %host, "pushed to the origin");
                    return Ok(());
                }
                Err(why) => {
                    tracing::warn!(%d, %repo, origin = %host, %why, "push to an origin failed");
                    failures.push(why);
                }
            }
        }
        Err(unavailable(format!(
            "no origin took {d} of {repo}: {}",
            failures.join("; ")
        )))
    }

    async fn get_blob(&self, repo: &RepoName, d: &Digest) -> ApiResult<Option<BodyStream>> {
        let mut failures = Vec::new();
        for host in self.owners(d)? {
            match self.fetch(&host, repo, d).await {
                Ok(found) => return Ok(found),
                Err(why) => failures.push(why),
            }
        }
        Err(unavailable(format!(
            "no origin answered for {d} of {repo}: {}",
            failures.join("; ")
        )))
    }

    async fn put_tag(&self, repo: &RepoName, tag: &Tag, d: &Digest) -> ApiResult<()> {
        self.tags
            .put(&TagKey::new(repo.clone(), tag.clone()), d)
            .await
    }

    async fn get_tag(&self, repo: &RepoName, tag: &Tag) -> ApiResult<Option<Digest>> {
        self.tags.get(&TagKey::new(repo.clone(), tag.clone())).await
    }

    /// The build-index's list: the cluster's tags, not the ones this node happened to see
    /// (those when no build-index answers).
    async fn list_tags(&self, repo: &RepoName) -> ApiResult<Option<Vec<String>>> {
        self.tags.list_or_local(repo).await
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> ApiResult<()> {
        self.tags
            .delete(&TagKey::new(repo.clone(), tag.clone()))
            .await
    }
}
