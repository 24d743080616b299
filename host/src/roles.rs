//! The P2P roles as processes: each loads its config (done by the caller), builds its plugins
//! (backends, health policies) after binding its configured sockets, and hands them to the service in
//! `shoal-roles`. Nothing else happens here.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use shoal_config::{
    AgentConfig, BuildIndexConfig, OriginConfig, PluginsConfig, ProxyConfig, TrackerClientConfig,
    TrackerConfig,
};
use shoal_host::plugin::{self, PluginEngine};
use shoal_host::storage::{filter, load_router};
use shoal_p2p::HealthFilter;
use shoal_roles::serve::Listeners;
use shoal_roles::{agent, build_index, origin, proxy, tracker};
use std::sync::Arc;
use tokio::net::TcpListener;

async fn bind(addr: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {key} {addr}"))
}

/// `metrics.listen`, bound when set.
async fn bind_metrics(
    metrics: &shoal_config::MetricsConfig,
) -> anyhow::Result<Option<TcpListener>> {
    match metrics.listen {
        Some(addr) => Ok(Some(bind(addr, "metrics.listen").await?)),
        None => Ok(None),
    }
}

fn engine(plugins: &PluginsConfig, data_dir: &Path) -> anyhow::Result<PluginEngine> {
    PluginEngine::from_config(plugins, Some(plugin::cache_dir(data_dir)))
        .context("starting the plugin engine")
}

/// The passive policy an agent's or origin's trackers are judged by.
fn tracker_health(
    engine: &PluginEngine,
    tracker: &TrackerClientConfig,
) -> anyhow::Result<Arc<dyn HealthFilter>> {
    let policy = engine
        .passive_health(&tracker.cluster.healthcheck)
        .context("loading the tracker health policy (tracker.cluster.healthcheck)")?;
    Ok(filter(policy))
}

/// Runs `shoal origin` until `shutdown`.
pub async fn origin(
    config: OriginConfig,
    data_dir: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Sockets first: a port in use fails the start before anything is created.
    let listeners = origin::OriginListeners {
        http: bind(config.listen, "listen").await?,
        peer: bind(config.peer.listen, "peer.listen").await?,
        metrics: bind_metrics(&config.metrics).await?,
    };
    let engine = engine(&config.plugins, &data_dir)?;
    let backends = load_router(&engine, &config.backends, &config.auth)
        .context("loading the storage backends")?;
    let deps = origin::OriginDeps {
        backends: Arc::new(backends),
        ring_health: filter(
            engine
                .active_health(&config.cluster.healthcheck)
                .context("loading the ring's health policy (cluster.healthcheck)")?,
        ),
        tracker_health: tracker_health(&engine, &config.tracker)?,
    };
    origin::serve(&config, &data_dir, listeners, deps, shutdown).await?;
    Ok(())
}

/// Runs `shoal agent` until `shutdown`.
pub async fn agent(
    config: AgentConfig,
    data_dir: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Sockets first: a port in use fails the start before anything is created.
    let listeners = agent::AgentListeners {
        registry: bind(config.registry.listen, "registry.listen").await?,
        peer: bind(config.peer.listen, "peer.listen").await?,
        metrics: bind_metrics(&config.metrics).await?,
    };
    let engine = engine(&PluginsConfig::default(), &data_dir)?;
    let deps = agent::AgentDeps {
        tracker_health: tracker_health(&engine, &config.tracker)?,
    };
    agent::serve(&config, &data_dir, listeners, deps, shutdown).await?;
    Ok(())
}

/// Runs `shoal tracker` until `shutdown`.
pub async fn tracker(
    config: TrackerConfig,
    data_dir: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Sockets first: a port in use fails the start before anything is created.
    let listeners = Listeners {
        http: bind(config.listen, "listen").await?,
        metrics: bind_metrics(&config.metrics).await?,
    };
    let engine = engine(&PluginsConfig::default(), &data_dir)?;
    let deps = tracker::TrackerDeps {
        origin_health: filter(
            engine
                .active_health(&config.cluster.healthcheck)
                .context("loading the origins' health policy (cluster.healthcheck)")?,
        ),
    };
    tracker::serve(config, listeners, deps, shutdown).await?;
    Ok(())
}

/// Runs `shoal build-index` until `shutdown`.
pub async fn build_index(
    config: BuildIndexConfig,
    data_dir: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Sockets first: a port in use fails the start before anything is created.
    let listeners = Listeners {
        http: bind(config.listen, "listen").await?,
        metrics: bind_metrics(&config.metrics).await?,
    };
    let engine = engine(&config.plugins, &data_dir)?;
    let backends = load_router(&engine, &config.backends, &config.auth)
        .context("loading the storage backends")?;
    let deps = build_index::BuildIndexDeps {
        backends: Arc::new(backends),
    };
    build_index::serve(&config, &data_dir, listeners, deps, shutdown).await?;
    Ok(())
}

/// Runs `shoal proxy` until `shutdown`.
pub async fn proxy(
    config: ProxyConfig,
    data_dir: PathBuf,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Sockets first: a port in use fails the start before anything is created.
    let listeners = Listeners {
        http: bind(config.registry.listen, "registry.listen").await?,
        metrics: bind_metrics(&config.metrics).await?,
    };
    let engine = engine(&PluginsConfig::default(), &data_dir)?;
    let access = shoal_registry::Access::load(&config.access).context("loading access:")?;
    let protect = access.map(|access| {
        let access = if config.server.tls.is_some() {
            access.over_tls()
        } else {
            access
        };
        let users = access.user_count();
        tracing::info!(
            users,
            "credentials required (access.htpasswd); tokens at /token"
        );
        let access = Arc::new(access);
        Box::new(move |app| shoal_registry::protect(app, access))
            as Box<dyn FnOnce(axum::Router) -> axum::Router + Send>
    });
    let deps = proxy::ProxyDeps {
        origin_health: filter(
            engine
                .active_health(&Default::default())
                .context("loading the origins' health policy")?,
        ),
        protect,
    };
    proxy::serve(&config, &data_dir, listeners, deps, shutdown).await?;
    Ok(())
}
