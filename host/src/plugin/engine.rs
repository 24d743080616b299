//! The wasmtime engine every plugin runs on: pooling allocator, epoch interruption driven by
//! a ticker thread, one linker per world, and a disk cache of precompiled `.cwasm` files.

use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use super::bindings::backend::shoal::backend::{config, log};
use super::fetch::PluginFetcher;
use super::state::PluginState;

/// Limits every plugin call runs under.
#[derive(Clone, Debug)]
pub struct PluginLimits {
    /// Linear memory one instance may use [64 MiB].
    pub memory_bytes: usize,
    /// Wall-clock budget of one call, outbound HTTP waits included [60s]. Uploads get one
    /// more second per 8 MiB announced.
    pub call_timeout: Duration,
    /// Epoch tick: the granularity of `call_timeout` [10ms].
    pub tick: Duration,
    /// Consecutive traps that open a plugin's breaker [5].
    pub breaker_threshold: u32,
    /// How long an open breaker refuses calls [30s].
    pub breaker_cool_down: Duration,
    /// Instances alive at once across all plugins (pool slots) [128].
    pub max_instances: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        PluginLimits {
            memory_bytes: 64 << 20,
            call_timeout: Duration::from_secs(60),
            tick: Duration::from_millis(10),
            breaker_threshold: 5,
            breaker_cool_down: Duration::from_secs(30),
            max_instances: 128,
        }
    }
}

impl PluginLimits {
    /// The limits a role's `plugins:` block sets; the epoch tick stays at its default.
    pub fn from_config(c: &shoal_config::PluginsConfig) -> Self {
        PluginLimits {
            memory_bytes: usize::try_from(c.memory_bytes).unwrap_or(usize::MAX),
            call_timeout: c.call_timeout.get(),
            breaker_threshold: c.breaker_threshold,
            breaker_cool_down: c.breaker_cool_down.get(),
            max_instances: c.max_instances,
            ..PluginLimits::default()
        }
    }
}

/// Why a plugin could not be loaded or prepared.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The wasmtime engine could not be built.
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(String),
    /// The file is not a component this host can compile.
    #[error("plugin {plugin}: not a loadable WebAssembly component: {message}")]
    Compile { plugin: String, message: String },
    /// The component needs imports this host does not provide, or lacks the world's exports.
    #[error("plugin {plugin}: cannot be linked: {message}")]
    Link { plugin: String, message: String },
    /// The backend's config cannot be turned into grants.
    #[error("plugin {plugin}: {message}")]
    Config { plugin: String, message: String },
    /// Reading the plugin file failed.
    #[error("plugin {plugin}: cannot read {path}: {source}")]
    Read {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Fetching an `oci://` plugin failed, or what the registry served did not verify.
    #[error("plugin {plugin}: {source}")]
    Fetch {
        plugin: String,
        source: Box<super::oci::OciError>,
    },
}

/// Shared by the engine handle, every plugin made from it, and their streams.
pub(crate) struct EngineInner {
    pub(crate) engine: Engine,
    pub(crate) backend_linker: Linker<PluginState>,
    pub(crate) policy_linker: Linker<PluginState>,
    pub(crate) limits: PluginLimits,
    pub(crate) fetcher: PluginFetcher,
    cache_dir: Option<PathBuf>,
    ticker: Ticker,
}

impl EngineInner {
    /// Ticks of `timeout` at this engine's epoch rate, at least one.
    pub(crate) fn ticks(&self, timeout: Duration) -> u64 {
        let tick = self.limits.tick.as_nanos().max(1);
        u64::try_from(timeout.as_nanos() / tick)
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// A fresh store for one call, with its memory cap and deadline set.
    pub(crate) fn store(&self, state: PluginState, timeout: Duration) -> Store<PluginState> {
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.ticks(timeout));
        store.epoch_deadline_trap();
        store
    }
}

impl Drop for EngineInner {
    fn drop(&mut self) {
        self.ticker.stop.store(true, Ordering::Relaxed);
    }
}

/// Stops the epoch thread when the engine goes away.
struct Ticker {
    stop: Arc<AtomicBool>,
}

/// Loads plugins and runs them; cheap to clone.
#[derive(Clone)]
pub struct PluginEngine {
    pub(crate) inner: Arc<EngineInner>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine")
            .field("limits", &self.inner.limits)
            .field("cache_dir", &self.inner.cache_dir)
            .finish_non_exhaustive()
    }
}

impl PluginEngine {
    /// The engine of a role's `plugins:` block: its limits, and its registries for `oci://`
    /// sources; compiled plugins and fetched components are cached in `cache_dir` when given
    /// ([`super::cache_dir`] of the data directory).
    pub fn from_config(
        plugins: &shoal_config::PluginsConfig,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self, LoadError> {
        let fetcher = PluginFetcher::new(plugins, cache_dir.as_deref());
        Self::build(PluginLimits::from_config(plugins), fetcher, cache_dir)
    }

    /// An engine with `limits`, caching precompiled plugins in `cache_dir` when given;
    /// `oci://` sources are fetched with the default `plugins:` settings.
    pub fn new(limits: PluginLimits, cache_dir: Option<PathBuf>) -> Result<Self, LoadError> {
        let fetcher = PluginFetcher::new(&Default::default(), cache_dir.as_deref());
        Self::build(limits, fetcher, cache_dir)
    }

    fn build(
        limits: PluginLimits,
        fetcher: PluginFetcher,
        cache_dir: Option<PathBuf>,
    ) -> Result<Self, LoadError> {
        let engine_err = |e: wasmtime::Error| LoadError::Engine(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(limits.max_instances)
            .total_core_instances(limits.max_instances * 4)
            .total_memories(limits.max_instances * 2)
            .total_tables(limits.max_instances * 4)
            .max_memory_size(limits.memory_bytes);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            // Concurrency support made calls ~3.5x slower (DESIGN.md); no feature needs it.
            .concurrency_support(false)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(engine_err)?;

        let mut backend_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut backend_linker).map_err(engine_err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut backend_linker)
            .map_err(engine_err)?;
        config::add_to_linker::<_, HasSelf<_>>(&mut backend_linker, |s| s).map_err(engine_err)?;
        log::add_to_linker::<_, HasSelf<_>>(&mut backend_linker, |s| s).map_err(engine_err)?;

        // Policies get WASI (std needs clocks, random, stdio) but no HTTP.
        let mut policy_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut policy_linker).map_err(engine_err)?;
        config::add_to_linker::<_, HasSelf<_>>(&mut policy_linker, |s| s).map_err(engine_err)?;
        log::add_to_linker::<_, HasSelf<_>>(&mut policy_linker, |s| s).map_err(engine_err)?;

        let stop = Arc::new(AtomicBool::new(false));
        // Without the ticker no deadline fires and every call would run unbounded.
        spawn_ticker(&engine, limits.tick, stop.clone())
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch thread: {e}")))?;
        if let Some(dir) = &cache_dir
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            tracing::warn!(dir = %dir.display(), "plugin cache disabled: {e}");
        }
        Ok(PluginEngine {
            inner: Arc::new(EngineInner {
                engine,
                backend_linker,
                policy_linker,
                limits,
                fetcher,
                cache_dir,
                ticker: Ticker { stop },
            }),
        })
    }

    /// The limits calls run under.
    pub fn limits(&self) -> &PluginLimits {
        &self.inner.limits
    }

    /// Compiles `wasm`, or loads its precompiled form from the cache. The cache key is the
    /// sha256 of the wasm and of the engine's compatibility hash, so a wasmtime upgrade or a
    /// config change never loads a stale `.cwasm`.
    pub(crate) fn component(&self, plugin: &str, wasm: &[u8]) -> Result<Component, LoadError> {
        let engine = &self.inner.engine;
        let compile_err = |e: wasmtime::Error| LoadError::Compile {
            plugin: plugin.to_owned(),
            message: format!("{e:#}"),
        };
        let Some(dir) = &self.inner.cache_dir else {
            return Component::new(engine, wasm).map_err(compile_err);
        };
        let path = dir.join(format!("{}.cwasm", self.cache_key(wasm)));
        if path.is_file() {
            match deserialize_cached(engine, &path) {
                Ok(component) => return Ok(component),
                Err(e) => tracing::warn!(plugin, path = %path.display(), "recompiling: {e:#}"),
            }
        }
        let component = Component::new(engine, wasm).map_err(compile_err)?;
        match component.serialize() {
            Ok(bytes) => {
                if let Err(e) = write_atomically(&path, &bytes) {
                    tracing::warn!(plugin, path = %path.display(), "cannot cache plugin: {e}");
                }
            }
            Err(e) => tracing::warn!(plugin, "cannot serialize plugin: {e:#}"),
        }
        Ok(component)
    }

    fn cache_key(&self, wasm: &[u8]) -> String {
        let mut hasher = Sha256Hasher(Sha256::new());
        hasher.0.update(wasm);
        std::hash::Hash::hash(
            &self.inner.engine.precompile_compatibility_hash(),
            &mut hasher,
        );
        hex::encode(hasher.0.finalize())
    }
}

/// Loads a `.cwasm` this process (or an earlier one with the same engine hash) wrote.
///
/// The file is read into memory rather than mapped: a mapped file that someone truncates
/// under a live component would crash the process with SIGBUS.
#[allow(unsafe_code)]
fn deserialize_cached(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    let bytes = std::fs::read(path)?;
    if Engine::detect_precompiled(&bytes) != Some(wasmtime::Precompiled::Component) {
        wasmtime::bail!("not a precompiled wasmtime component");
    }
    // SAFETY: wasmtime requires the bytes to be trusted output of `serialize` for a
    // compatible engine. They come from our own cache directory, under a name derived from
    // the wasm's sha256 and this engine's compatibility hash, written by rename from a
    // complete temporary file; wasmtime re-checks the engine compatibility header itself.
    unsafe { Component::deserialize(engine, &bytes) }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("cwasm.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Feeds `Hash` output into sha256 (the compatibility hash only offers `Hash`).
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn finish(&self) -> u64 {
        // Only `write` is used; the digest is read from the inner sha256.
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Advances the engine's epoch every `tick` until the engine is dropped.
fn spawn_ticker(engine: &Engine, tick: Duration, stop: Arc<AtomicBool>) -> std::io::Result<()> {
    let weak = engine.weak();
    thread::Builder::new()
        .name("shoal-plugin-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(tick);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            }
        })
        .map(drop)
}
