//! `shoal dev`: the registry (push and pull) over the storage backends, in one process on one
//! port, with the embedded local store.
//!
//! The registry API serves from the local store, which caches the `backends:` list: pushes are
//! written through to the backend the namespace routes to, and misses are fetched from it.
//! Without a config the one backend is the embedded `fs` plugin over `<data_dir>/backend`.
//! With `access.htpasswd` in the config, pushing and pulling need credentials (Basic, or a
//! bearer token from `/token`), except pulls from the `access.anonymous_pull` namespaces.
//! The P2P roles are separate processes (`shoal agent`, `origin`, `tracker`, `build-index`).
//! Every `gc.interval` a garbage collection frees what no tag reaches any more (`crate::gc`),
//! and upload sessions idle for `uploads.max_age` are purged (`crate::uploads`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use shoal_config::{AccessConfig, AuthConfig, BackendEntry, DevConfig, PluginsConfig};
use shoal_host::plugin::{self, PluginEngine};
use shoal_host::storage::load_router;
use shoal_registry::{Access, LocalStore, Registry};
use shoal_roles::metrics::{Cache, Metrics};
use shoal_roles::ready::Readiness;
use shoal_roles::serve::ServeOptions;
use shoal_storage::{NamespaceRouter, StorageBacking};

use crate::cli::DevArgs;

/// The settings `shoal dev` runs with after flags and config file are combined.
#[derive(Debug)]
struct DevSettings {
    listen: SocketAddr,
    data_dir: PathBuf,
    log: shoal_config::LogConfig,
    backends: Vec<BackendEntry>,
    auth: AuthConfig,
    access: AccessConfig,
    plugins: PluginsConfig,
    gc: shoal_config::GcConfig,
    server: shoal_config::ServerConfig,
    allowed_cidrs: Option<Vec<shoal_config::Cidr>>,
    uploads: shoal_config::UploadsConfig,
    tag_ttl: std::time::Duration,
    metrics_listen: Option<SocketAddr>,
}

fn settings(args: DevArgs) -> anyhow::Result<DevSettings> {
    let mut cfg = match &args.config {
        Some(path) => shoal_config::load::<DevConfig>(path, &shoal_config::process_env)
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        None => DevConfig::default(),
    };
    // The default backend lives under the data directory, wherever the flag puts it.
    let defaulted = cfg.backends.is_empty() || cfg.backends == [cfg.default_backend()];
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(d) = args.data_dir {
        cfg.data_dir = d;
    }
    if defaulted {
        cfg.backends = vec![cfg.default_backend()];
    }
    // The checks `config check dev` makes, on the flags' result: nothing is created before.
    let file = args.config.as_deref().unwrap_or(Path::new("(flags)"));
    if let Err(problems) = crate::preflight::run(&cfg, file) {
        anyhow::bail!("{}", crate::preflight::message(&problems));
    }
    Ok(DevSettings {
        listen: cfg.listen,
        log: cfg.log,
        data_dir: cfg.data_dir,
        backends: cfg.backends,
        auth: cfg.auth,
        access: cfg.access,
        plugins: cfg.plugins,
        gc: cfg.gc,
        server: cfg.server,
        allowed_cidrs: cfg.allowed_cidrs,
        uploads: cfg.uploads,
        tag_ttl: cfg.tag_ttl.get(),
        metrics_listen: cfg.metrics.listen,
    })
}

/// Runs `shoal dev` until SIGINT or SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let s = settings(args)?;
    crate::logging::init(&s.log);
    // Sockets first: a port in use fails the start before the data directory is made.
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("binding listen {}", s.listen))?;
    let metrics_listener = match s.metrics_listen {
        Some(at) => Some(
            tokio::net::TcpListener::bind(at)
                .await
                .with_context(|| format!("binding metrics.listen {at}"))?,
        ),
        None => None,
    };
    let (registry, backends, _lock) = open_registry(&s, true).await?;
    let collector = crate::gc::Collector::start(registry.clone(), &s.gc);
    let options = ServeOptions::from_config(&s.server)?.allowing(s.allowed_cidrs.clone());
    let purger = crate::uploads::UploadPurger::start(registry.clone(), &s.uploads);
    let metrics = Metrics::new(options.metrics.clone())
        .with(Arc::new(Cache(registry.clone())))
        .with(backends);
    let mut app = shoal_registry::router(registry.clone());
    if let Some(mut access) = Access::load(&s.access)? {
        if options.tls.is_some() {
            access = access.over_tls();
        }
        let anonymous: Vec<&str> = access.anonymous_pull().iter().map(|p| p.as_str()).collect();
        tracing::info!(
            users = access.user_count(),
            anonymous_pull = ?anonymous,
            "credentials required (access.htpasswd); tokens at /token"
        );
        app = shoal_registry::protect(app, Arc::new(access));
    }
    // Ready while the store takes writes (a full or read-only disk is not); open like /health,
    // as /metrics is.
    let app = app.merge(metrics.router()).merge(
        Readiness::new()
            .check("store", move || {
                let registry = registry.clone();
                async move {
                    let store = &registry.store;
                    store
                        .check_writable()
                        .await
                        .map_err(|e| format!("{} is not writable: {e}", store.root().display()))
                }
            })
            .router(),
    );
    let addr = listener.local_addr()?;
    let tasks = shoal_p2p::Tasks::new();
    metrics.serve_on(metrics_listener, &options, &tasks);
    tracing::info!(
        data_dir = %s.data_dir.display(),
        "shoal dev listening on {}://{addr}",
        options.scheme()
    );
    shoal_roles::serve::serve(listener, app, &options, crate::serve::signal()).await?;
    tasks.shutdown().await;
    collector.stop().await;
    purger.stop().await;
    tracing::info!("shoal dev stopped");
    Ok(())
}

/// Locks the data directory and opens the registry over its store and the `backends:` list
/// (each backend logged when `log_backends`); the list is returned too, for its metrics.
async fn open_registry(
    s: &DevSettings,
    log_backends: bool,
) -> anyhow::Result<(Arc<Registry>, Arc<NamespaceRouter>, crate::gc::DataDirLock)> {
    let lock = crate::gc::DataDirLock::acquire(&s.data_dir)?;
    let store = LocalStore::open(s.data_dir.join("cache"))
        .await
        .with_context(|| format!("opening the data directory {}", s.data_dir.display()))?;
    let engine = PluginEngine::from_config(&s.plugins, Some(plugin::cache_dir(&s.data_dir)))
        .context("starting the plugin engine")?;
    let router =
        load_router(&engine, &s.backends, &s.auth).context("loading the storage backends")?;
    if log_backends {
        for route in router.routes() {
            tracing::info!(
                namespace = route.pattern.as_str(),
                backend = route.backend.name(),
                "storage backend"
            );
        }
    }
    let router = Arc::new(router);
    let backing = Arc::new(StorageBacking::new(router.clone()));
    // Pull-through tags are revalidated at the upstream; pushed tags stay this registry's own.
    let registry = Registry::with_backing(store, backing).upstream_tags_from_backing(s.tag_ttl);
    Ok((Arc::new(registry), router, lock))
}

/// What `shoal gc` needs from the dev settings: the registry over the same store and
/// backends, the `gc:` and `uploads:` blocks and the data directory, with the directory
/// locked.
pub(crate) struct ForGc {
    pub registry: Arc<Registry>,
    pub gc: shoal_config::GcConfig,
    pub uploads: shoal_config::UploadsConfig,
    pub data_dir: PathBuf,
    pub _lock: crate::gc::DataDirLock,
}

/// Opens the data directory of `args` for `shoal gc`.
pub(crate) async fn open_for_gc(args: DevArgs) -> anyhow::Result<ForGc> {
    let s = settings(args)?;
    crate::logging::init(&s.log);
    let (registry, _, lock) = open_registry(&s, false).await?;
    Ok(ForGc {
        registry,
        gc: s.gc,
        uploads: s.uploads,
        data_dir: s.data_dir,
        _lock: lock,
    })
}
