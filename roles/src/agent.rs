//! `shoal agent`: the node-local, read-only registry. Blobs (manifests are blobs too) come from
//! peers through the scheduler, verified piece by piece and as a whole, and stay seeded for the
//! other agents; tags are resolved by the build-index on every request by tag (at most once
//! per `registry.tag_ttl`), and the last digest known is served, logged as stale, only when no
//! build-index answers. containerd's `?ns=` picks the repository (`registry.mirrors`). Writes
//! are refused: pushes go to the proxy. `POST /preload` fetches an image's blobs ahead of a
//! rollout ([`preload`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use shoal_config::AgentConfig;
use shoal_p2p::{HealthFilter, Scheduler, StopOnDrop, Tasks};
use shoal_registry::mirror::{self, Mirrors};
use shoal_registry::{
    ApiResult, Backing, BlobStat, BodyStream, Digest, ErrorCode, Landing, LocalStore, Registry,
    RegistryError, RepoName, Tag, TagKey,
};
use tokio::net::TcpListener;

pub mod preload;

use crate::RoleError;
use crate::hosts::hosts_of;
use crate::metrics::{Cache, Metrics, P2p};
use crate::peer::{PeerSettings, PeerSide};
use crate::ready::Readiness;
use crate::tags::TagClient;

/// Why writes are refused.
const READ_ONLY: &str = "this agent is read-only: push through the proxy";

/// The sockets an agent serves.
#[derive(Debug)]
pub struct AgentListeners {
    /// `registry.listen`: the OCI registry API (read-only), `/metrics` and `/ready`.
    pub registry: TcpListener,
    /// `peer.listen`: pieces to and from other peers.
    pub peer: TcpListener,
    /// `metrics.listen`: `/metrics` alone.
    pub metrics: Option<TcpListener>,
}

/// What an agent needs besides its config.
pub struct AgentDeps {
    /// The passive health policy its trackers are judged by (`tracker.cluster.healthcheck`).
    pub tracker_health: Arc<dyn HealthFilter>,
}

/// Serves an agent on `listeners` until `shutdown`; its stores are under `store.root`, or
/// `<data_dir>/store`. When the future is dropped or returns, every task it started stops.
pub async fn serve(
    config: &AgentConfig,
    data_dir: &Path,
    listeners: AgentListeners,
    deps: AgentDeps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RoleError> {
    let tasks = Tasks::new();
    let _stop = StopOnDrop(tasks.clone());
    let options = crate::serve::ServeOptions::from_config(&config.server)?
        .allowing(config.allowed_cidrs.clone());
    let tls = crate::serve::load_cluster_tls(config.client_tls.as_ref())?;
    let root = config
        .store
        .root
        .clone()
        .unwrap_or_else(|| data_dir.join("store"));

    let peer = PeerSide::start(
        PeerSettings {
            store_root: &root.join("p2p"),
            store: &config.store,
            scheduler: &config.scheduler,
            tracker: &config.tracker,
            tracker_health: deps.tracker_health,
            ip: config.peer.ip,
            origin: false,
            cluster_tls: &tls,
            peer_tls: config.peer.tls.as_ref(),
        },
        listeners.peer,
        &tasks,
    )
    .await?;
    let (scheduler, advertise) = (peer.scheduler.clone(), peer.advertise);
    // Opened after the P2P side, whose start checks the config: a failed start creates nothing.
    let registry_root: PathBuf = root.join("registry");
    let local =
        LocalStore::open(&registry_root)
            .await
            .map_err(|source| RoleError::RegistryStore {
                path: registry_root.clone(),
                source,
            })?;

    let build_index = match &config.build_index.hosts {
        Some(h) => hosts_of(h).await?,
        None => Vec::new(),
    };
    let trackers = match &config.tracker.hosts {
        Some(h) => hosts_of(h).await?,
        None => Vec::new(),
    };
    // Ready while a tracker and a build-index answer: without them nothing new can be pulled.
    let readiness = Readiness::new()
        .any_answers("tracker", "tracker.hosts", trackers, &tls)?
        .any_answers(
            "build-index",
            "build_index.hosts",
            build_index.clone(),
            &tls,
        )?;
    let backing = Arc::new(P2pBacking {
        scheduler: scheduler.clone(),
        tags: TagClient::new(build_index, &tls)?,
    });
    let registry = Arc::new(
        Registry::with_backing(local, backing)
            .tags_from_backing(config.registry.tag_ttl.get())
            .referrers_in_backing()
            .read_only(READ_ONLY),
    );
    let mirrors = match &config.registry.mirrors {
        None => Mirrors::all(),
        Some(map) => Mirrors::only(map.iter().map(|(h, p)| (h.as_str(), p.as_str())))?,
    };
    let preloader = preload::Preloader::new(
        registry.clone(),
        scheduler.store().clone(),
        mirrors.clone(),
        tasks.clone(),
    );
    let metrics = Metrics::new(options.metrics.clone())
        .with(Arc::new(P2p(scheduler.clone())))
        .with(Arc::new(Cache(registry.clone())))
        .with_fn({
            let registry = registry.clone();
            move |out| {
                out.counter(
                    "shoal_agent_stale_tags_served_total",
                    "Requests by tag answered with the last known digest because no build-index answered.",
                    registry.stale_tags_served(),
                )
            }
        })
        .with_fn({
            let preloader = preloader.clone();
            move |out| preloader.collect(out)
        });
    metrics.serve_on(listeners.metrics, &options, &tasks);
    let app = mirror::apply(shoal_registry::router(registry), mirrors)
        .merge(preloader.router())
        .merge(metrics.router())
        .merge(readiness.router());
    tracing::info!(
        registry = %listeners.registry.local_addr()?,
        peer = %advertise,
        "shoal agent listening"
    );
    let served = crate::serve::serve(listeners.registry, app, &options, shutdown).await;
    scheduler.shutdown().await;
    tasks.shutdown().await;
    Ok(served?)
}

/// The agent's registry backing: blobs over P2P, tags from the build-index.
struct P2pBacking {
    scheduler: Scheduler,
    tags: TagClient,
}

impl P2pBacking {
    async fn download(&self, repo: &RepoName, d: &Digest) -> ApiResult<shoal_p2p::CompleteBlob> {
        self.scheduler
            .download(repo.as_str(), d)
            .await
            .map_err(|e| from_peers(repo, d, e))
    }
}

/// A failed P2P download as the registry's error: `BLOB_UNKNOWN` (404) when the origins do not
/// hold the blob in `repo`, `UNAVAILABLE` (503) for everything else.
fn from_peers(repo: &RepoName, d: &Digest, e: shoal_p2p::SchedulerError) -> RegistryError {
    let code = match e {
        shoal_p2p::SchedulerError::UnknownBlob(_) => ErrorCode::BlobUnknown,
        _ => ErrorCode::Unavailable,
    };
    RegistryError::new(code, format!("getting {d} of {repo} from peers: {e}"))
}

fn read_only() -> RegistryError {
    RegistryError::new(ErrorCode::Unsupported, READ_ONLY)
}

#[async_trait::async_trait]
impl Backing for P2pBacking {
    async fn put_blob(&self, _: &RepoName, _: &Digest, _: &Path, _: u64) -> ApiResult<()> {
        Err(read_only())
    }

    /// `None` when the origins do not hold it: what a manifest's fetch needs to answer
    /// `MANIFEST_UNKNOWN`.
    async fn get_blob(&self, repo: &RepoName, d: &Digest) -> ApiResult<Option<BodyStream>> {
        let blob = match self.download(repo, d).await {
            Err(e) if e.code == ErrorCode::BlobUnknown => return Ok(None),
            other => other?,
        };
        let file = tokio::fs::File::open(blob.path()).await?;
        Ok(Some(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            file,
            1 << 20,
        ))))
    }

    /// A GET follows the P2P download as it lands: the client is sent the verified front of
    /// the piece store's file while the rest arrives (the torrent picks the front first while
    /// only complete peers are connected), and the finished file is hard-linked into the
    /// registry store.
    async fn get_blob_landing(&self, repo: &RepoName, d: &Digest) -> ApiResult<Option<Landing>> {
        let landing = self
            .scheduler
            .landing(repo.as_str(), d)
            .await
            .map_err(|e| from_peers(repo, d, e))?;
        let (repo, d) = (repo.clone(), d.clone());
        Ok(Some(Landing {
            length: landing.length(),
            path: landing.path().to_owned(),
            landed: landing.landed(),
            // The piece store writes downloads around the page cache where it can.
            direct: true,
            done: Box::pin(async move {
                let blob = landing
                    .finished()
                    .await
                    .map_err(|e| from_peers(&repo, &d, e))?;
                Ok(blob.path().to_owned())
            }),
        }))
    }

    /// The piece store's verified file, which the registry store hard-links: the agent keeps
    /// one copy of each blob, not two.
    async fn get_blob_file(&self, repo: &RepoName, d: &Digest) -> ApiResult<Option<PathBuf>> {
        let blob = self.download(repo, d).await?;
        Ok(Some(blob.path().to_owned()))
    }

    /// For a blob this agent holds (for another repository): whether `repo` holds it too,
    /// as its origins say. Otherwise it cannot tell without fetching.
    async fn stat_blob(&self, repo: &RepoName, d: &Digest) -> ApiResult<BlobStat> {
        let Some(blob) = self.scheduler.store().complete(d).await.ok().flatten() else {
            return Ok(BlobStat::Unknown);
        };
        match self.scheduler.confirm(repo.as_str(), d).await {
            Ok(true) => Ok(BlobStat::Present(blob.len())),
            Ok(false) => Ok(BlobStat::Absent),
            Err(e) => Err(RegistryError::new(
                ErrorCode::Unavailable,
                format!("asking the origins whether {repo} holds {d}: {e}"),
            )),
        }
    }

    async fn put_tag(&self, _: &RepoName, _: &Tag, _: &Digest) -> ApiResult<()> {
        Err(read_only())
    }

    async fn get_tag(&self, repo: &RepoName, tag: &Tag) -> ApiResult<Option<Digest>> {
        self.tags.get(&TagKey::new(repo.clone(), tag.clone())).await
    }

    /// The build-index's list: the cluster's tags, not the ones this node happened to see
    /// (those when no build-index answers).
    async fn list_tags(&self, repo: &RepoName) -> ApiResult<Option<Vec<String>>> {
        self.tags.list_or_local(repo).await
    }

    async fn delete_tag(&self, _: &RepoName, _: &Tag) -> ApiResult<()> {
        Err(read_only())
    }
}
