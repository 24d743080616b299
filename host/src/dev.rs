//! `shoal dev`: every role in one process on one port, with the embedded local store.
//!
//! Today this is the registry API over the content-addressed local store. The agent, origin,
//! tracker, build-index and proxy roles plug in behind the same router as they land (see
//! docs/architecture.md); the flags and the data directory layout stay as they are.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use shoal_registry::{LocalStore, Registry};

use crate::cli::DevArgs;

const DEFAULT_LISTEN: &str = "127.0.0.1:5000";
const DEFAULT_DATA_DIR: &str = "./shoal-data";

/// The settings `shoal dev` runs with after flags and config file are combined.
#[derive(Debug)]
struct DevSettings {
    listen: SocketAddr,
    data_dir: PathBuf,
    log_level: String,
}

fn settings(args: DevArgs) -> anyhow::Result<DevSettings> {
    let mut listen: SocketAddr = DEFAULT_LISTEN.parse().expect("constant address");
    let mut data_dir = PathBuf::from(DEFAULT_DATA_DIR);
    let mut log_level = "info".to_owned();
    if let Some(path) = &args.config {
        let cfg: shoal_config::DevConfig = shoal_config::load(path, &shoal_config::process_env)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        // Refuse what this build cannot honour rather than ignore it silently.
        if cfg.backends != [cfg.default_backend()] {
            anyhow::bail!(
                "{}: backends: other backends need the WASM plugin host, which this build does not \
                 have yet; shoal dev stores everything in its data directory",
                path.display()
            );
        }
        if cfg.metrics.listen.is_some() {
            anyhow::bail!(
                "{}: metrics.listen: metrics are not served by this build yet",
                path.display()
            );
        }
        listen = cfg.listen;
        data_dir = cfg.data_dir.clone();
        log_level = cfg.log.level.as_str().to_owned();
    }
    if let Some(l) = args.listen {
        listen = l;
    }
    if let Some(d) = args.data_dir {
        data_dir = d;
    }
    Ok(DevSettings {
        listen,
        data_dir,
        log_level,
    })
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs `shoal dev` until SIGINT or SIGTERM.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let s = settings(args)?;
    init_logging(&s.log_level);
    let store = LocalStore::open(&s.data_dir)
        .await
        .with_context(|| format!("opening the data directory {}", s.data_dir.display()))?;
    let router = shoal_registry::router(Arc::new(Registry { store }));
    let listener = tokio::net::TcpListener::bind(s.listen)
        .await
        .with_context(|| format!("binding {}", s.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(data_dir = %s.data_dir.display(), "shoal dev listening on http://{addr}");
    crate::serve::serve(listener, router, crate::serve::signal()).await?;
    tracing::info!("shoal dev stopped");
    Ok(())
}
