//! `shoal agent`: the node-local, read-only registry. Blobs (manifests are blobs too) come from
//! peers through the scheduler, verified piece by piece and as a whole, and stay seeded for the
//! other agents; tags are resolved by the build-index. Writes are refused: pushes go to the
//! proxy.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use shoal_config::AgentConfig;
use shoal_p2p::{Identity, PeerId, Scheduler};
use shoal_registry::{
    ApiResult, Backing, BodyStream, Digest, ErrorCode, LocalStore, Registry, RegistryError,
    RepoName, Tag,
};

use super::{hosts_of, peer_addr, tracker_client};

/// Runs `shoal agent` until `shutdown`.
pub async fn run(
    config: AgentConfig,
    data_dir: std::path::PathBuf,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let root = config
        .store
        .root
        .clone()
        .unwrap_or_else(|| data_dir.join("store"));
    let pieces = shoal_p2p::store::PieceStore::open(&root.join("p2p"), &config.store)
        .with_context(|| format!("opening the piece store under {}", root.display()))?;
    pieces.spawn_cleanup();
    let local = LocalStore::open(root.join("registry"))
        .await
        .with_context(|| format!("opening the registry store under {}", root.display()))?;

    let listener = tokio::net::TcpListener::bind(config.registry.listen)
        .await
        .with_context(|| format!("binding registry.listen {}", config.registry.listen))?;
    let peer_listener = tokio::net::TcpListener::bind(config.peer.listen)
        .await
        .with_context(|| format!("binding peer.listen {}", config.peer.listen))?;
    let advertise = peer_addr(&peer_listener, config.peer.ip)?;
    let engine = super::policy_engine(&data_dir)?;
    let tracker = tracker_client(&config.tracker, &engine).await?;
    let identity = Identity {
        peer_id: PeerId::random(),
        advertise,
        origin: false,
    };
    let scheduler = Scheduler::new(identity, config.scheduler.clone(), pieces, tracker)?;
    let serving = scheduler.clone();
    tokio::spawn(async move { serving.serve(peer_listener).await });

    let build_index = match &config.build_index.hosts {
        Some(h) => hosts_of(h).await?,
        None => Vec::new(),
    };
    let metrics = super::metrics(scheduler.clone(), String::new);
    let backing = Arc::new(P2pBacking {
        scheduler,
        build_index,
        http: reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()?,
    });
    let registry = Registry::with_backing(local, backing)
        .read_only("this agent is read-only: push through the proxy");
    let app = shoal_registry::router(Arc::new(registry)).merge(metrics);
    tracing::info!(
        registry = %listener.local_addr()?,
        peer = %advertise,
        "shoal agent listening"
    );
    crate::serve::serve(listener, app, shutdown).await?;
    Ok(())
}

/// The agent's registry backing: blobs over P2P, tags from the build-index.
struct P2pBacking {
    scheduler: Scheduler,
    build_index: Vec<shoal_config::HostPort>,
    http: reqwest::Client,
}

impl P2pBacking {
    async fn download(&self, repo: &RepoName, d: &Digest) -> ApiResult<shoal_p2p::CompleteBlob> {
        self.scheduler
            .download(repo.as_str(), d)
            .await
            .map_err(|e| {
                RegistryError::new(
                    ErrorCode::Unavailable,
                    format!("getting {d} of {repo} from peers: {e}"),
                )
            })
    }
}

fn read_only() -> RegistryError {
    RegistryError::new(
        ErrorCode::Unsupported,
        "this agent is read-only: push through the proxy",
    )
}

#[async_trait::async_trait]
impl Backing for P2pBacking {
    async fn put_blob(&self, _: &RepoName, _: &Digest, _: &FsPath, _: u64) -> ApiResult<()> {
        Err(read_only())
    }

    async fn get_blob(&self, repo: &RepoName, d: &Digest) -> ApiResult<Option<BodyStream>> {
        let blob = self.download(repo, d).await?;
        let file = tokio::fs::File::open(blob.path()).await?;
        Ok(Some(Box::pin(tokio_util::io::ReaderStream::with_capacity(
            file,
            1 << 20,
        ))))
    }

    /// The piece store's verified file, which the registry store hard-links: the agent keeps
    /// one copy of each blob, not two.
    async fn get_blob_file(
        &self,
        repo: &RepoName,
        d: &Digest,
    ) -> ApiResult<Option<std::path::PathBuf>> {
        let blob = self.download(repo, d).await?;
        Ok(Some(blob.path().to_owned()))
    }

    async fn put_tag(&self, _: &RepoName, _: &Tag, _: &Digest) -> ApiResult<()> {
        Err(read_only())
    }

    async fn get_tag(&self, repo: &RepoName, tag: &Tag) -> ApiResult<Option<Digest>> {
        let mut last = None;
        for host in &self.build_index {
            let url = format!(
                "http://{host}/tags/{}",
                format!("{}:{}", repo.as_str(), tag.as_str()).replace('/', "%2F")
            );
            match self.http.get(&url).send().await {
                Ok(r) if r.status() == reqwest::StatusCode::NOT_FOUND => return Ok(None),
                Ok(r) if r.status().is_success() => {
                    let text = r.text().await.unwrap_or_default();
                    return text.trim().parse().map(Some).map_err(|e| {
                        RegistryError::new(
                            ErrorCode::Unavailable,
                            format!("build-index {host} sent a bad digest for {repo}:{tag}: {e}"),
                        )
                    });
                }
                Ok(r) => last = Some(format!("build-index {host}: {}", r.status())),
                Err(e) => last = Some(format!("build-index {host}: {e}")),
            }
        }
        match last {
            Some(why) => Err(RegistryError::new(ErrorCode::Unavailable, why)),
            None => Ok(None),
        }
    }

    async fn delete_tag(&self, _: &RepoName, _: &Tag) -> ApiResult<()> {
        Err(read_only())
    }
}
