//! [`WasmBackend`]: a storage-backend component behind the native [`Backend`] trait.
//!
//! Every call runs on an instance of its own under the engine's deadline and memory cap: a
//! warm one whose previous call returned normally, or a fresh one from the pre-instantiated
//! component (about 30 µs). A trapped (or cancelled) instance is dropped, never reused, so a
//! trap never leaves a broken instance behind. Downloads that return a `reader` keep their
//! store while the host pulls chunks; passthrough downloads give it back at once.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream;
use wasmtime::Store;
use wasmtime::component::{Resource, ResourceAny};
use wasmtime_wasi::p2::DynInputStream;

use super::bindings::backend::exports::shoal::backend::storage::Body;
use super::bindings::backend::shoal::backend::types as wit_types;
use super::bindings::backend::{Backend as World, BackendPre};
use super::breaker::Breaker;
use super::engine::EngineInner;
use super::state::{Grants, PluginState};
use super::streams::{UploadStream, passthrough};
use super::{Backend, BackendError, BlobInfo, ByteRange, ByteStream, Download, ListPage};

/// How much one `reader.read` asks for; bounded by guest memory, not by the blob.
const READ_CHUNK: u64 = 1 << 20;
/// Warm instances kept per plugin. Reusing one skips instantiation (about 30 us of a call,
/// bench/RESULTS.md); a plugin's globals live on between its calls, as in any server.
const IDLE_INSTANCES: usize = 4;
/// Uploads get `call_timeout` plus one second per this many bytes.
const UPLOAD_BYTES_PER_SEC: u64 = 8 << 20;

/// A storage backend implemented by a WebAssembly component.
pub struct WasmBackend {
    shared: Arc<Shared>,
}

/// What the backend and its in-flight download streams share.
struct Shared {
    engine: Arc<EngineInner>,
    pre: BackendPre<PluginState>,
    grants: Arc<Grants>,
    breaker: Mutex<Breaker>,
    /// Instances whose last call returned normally, ready for the next one.
    idle: Mutex<Vec<(Store<PluginState>, World)>>,
}

impl std::fmt::Debug for WasmBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmBackend")
            .field("plugin", &self.shared.grants.name)
            .field("hosts", &self.shared.grants.hosts.to_string())
            .finish_non_exhaustive()
    }
}

impl WasmBackend {
    pub(crate) fn new(
        engine: Arc<EngineInner>,
        pre: BackendPre<PluginState>,
        grants: Grants,
    ) -> Self {
        let breaker = Breaker::new(
            engine.limits.breaker_threshold,
            engine.limits.breaker_cool_down,
        );
        WasmBackend {
            shared: Arc::new(Shared {
                engine,
                pre,
                grants: Arc::new(grants),
                breaker: Mutex::new(breaker),
                idle: Mutex::new(Vec::new()),
            }),
        }
    }
}

impl Shared {
    fn plugin(&self) -> String {
        self.grants.name.to_string()
    }

    fn breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // The breaker holds plain counters: a panic elsewhere cannot leave them inconsistent.
        self.breaker.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An instance for one call, unless the breaker is open: a warm one whose last call
    /// returned normally, or a fresh one. Its deadline starts now.
    async fn instance(
        &self,
        timeout: Duration,
    ) -> Result<(Store<PluginState>, World), BackendError> {
        if let Err(retry_in) = self.breaker().admit(Instant::now()) {
            return Err(BackendError::BreakerOpen {
                plugin: self.plugin(),
                retry_in,
            });
        }
        let warm = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        if let Some((mut store, world)) = warm {
            store.set_epoch_deadline(self.engine.ticks(timeout));
            return Ok((store, world));
        }
        let state = PluginState::new(self.grants.clone(), self.engine.limits.memory_bytes)
            .map_err(|e| self.trapped(e))?;
        let mut store = self.engine.store(state, timeout);
        let world = match self.pre.instantiate_async(&mut store).await {
            Ok(world) => world,
            // Every slot of `plugins.max_instances` is taken: the call is refused, and it is
            // not the plugin's fault, so the breaker does not count it.
            Err(e)
                if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
                    .is_some() =>
            {
                return Err(BackendError::Unavailable {
                    plugin: self.plugin(),
                    message: format!(
                        "every plugin instance allowed by plugins.max_instances ({}) is in use \
                         (each backend also keeps a few warm between calls): {e}",
                        self.engine.limits.max_instances
                    ),
                });
            }
            Err(e) => return Err(self.trapped(e)),
        };
        Ok((store, world))
    }

    /// Keeps an instance whose call returned (a value or a WIT error) for the next call.
    /// Trapped instances never get here: `settle` fails first and the caller drops them.
    fn recycle(&self, mut store: Store<PluginState>, world: World) {
        store.data_mut().reuse();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < IDLE_INSTANCES {
            idle.push((store, world));
        }
    }

    /// Books the outcome of a call with the breaker: a returned value (even a WIT error)
    /// closes it, a trap counts towards opening it.
    fn settle<T>(
        &self,
        store: &Store<PluginState>,
        result: wasmtime::Result<T>,
    ) -> Result<T, BackendError> {
        match result {
            Ok(v) => {
                self.breaker().succeeded();
                Ok(v)
            }
            Err(e) => Err(self.trapped_saying(e, store.data().last_words())),
        }
    }

    fn trapped(&self, e: wasmtime::Error) -> BackendError {
        self.trapped_saying(e, None)
    }

    /// A trap, with what the plugin said as it panicked when it did.
    fn trapped_saying(&self, e: wasmtime::Error, last_words: Option<&str>) -> BackendError {
        let mut message = describe_trap(&e, &self.engine.limits);
        if let Some(words) = last_words {
            message = format!("{message}: {words}");
        }
        let opened = self.breaker().trapped(Instant::now());
        tracing::warn!(plugin = %self.grants.name, breaker_opened = opened, "plugin trapped: {message}");
        BackendError::Trapped {
            plugin: self.plugin(),
            message,
        }
    }

    /// A WIT error from a call made in `store`; a refused outbound request outranks
    /// whatever the plugin made of it.
    fn call_error(
        &self,
        store: &Store<PluginState>,
        e: wit_types::Error,
        name: &str,
    ) -> BackendError {
        match store.data().denied() {
            Some(url) => BackendError::HostDenied {
                plugin: self.plugin(),
                url: url.to_owned(),
            },
            None => self.guest_error(e, name),
        }
    }

    fn guest_error(&self, e: wit_types::Error, name: &str) -> BackendError {
        let plugin = self.plugin();
        match e {
            wit_types::Error::NotFound => BackendError::NotFound {
                plugin,
                name: name.to_owned(),
            },
            wit_types::Error::Unauthorized(message) => {
                BackendError::Unauthorized { plugin, message }
            }
            wit_types::Error::Throttled(message) => BackendError::Throttled { plugin, message },
            wit_types::Error::Unavailable(message) => BackendError::Unavailable { plugin, message },
            wit_types::Error::Invalid(message) => BackendError::Invalid { plugin, message },
            wit_types::Error::Other(message) => BackendError::Other { plugin, message },
        }
    }
}

/// A short reason for a trap: which limit stopped the plugin, when one did, named as the
/// operator sets it.
pub(crate) fn describe_trap(e: &wasmtime::Error, limits: &super::PluginLimits) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => format!(
            "ran past its {:?} deadline (plugins.call_timeout)",
            limits.call_timeout
        ),
        Some(wasmtime::Trap::UnreachableCodeReached) => {
            "hit unreachable code (a panic or an abort in the plugin)".to_owned()
        }
        Some(trap) => trap.to_string(),
        None => {
            // The outer layers are "error while executing at wasm backtrace: ..."; the root
            // cause says what happened (the memory cap, a host-side failure).
            let text = e.root_cause().to_string();
            if text.contains("growing memory") {
                let cap = limits.memory_bytes;
                return format!(
                    "ran out of memory: it asked for more than its cap of {cap} bytes ({} MiB, \
                     plugins.memory_bytes) ({})",
                    cap >> 20,
                    text.lines().next().unwrap_or_default()
                );
            }
            text.lines().next().unwrap_or("unknown failure").to_owned()
        }
    }
}

#[async_trait::async_trait]
impl Backend for WasmBackend {
    fn name(&self) -> &str {
        &self.shared.grants.name
    }

    fn plugin_health(&self) -> Option<shoal_storage::PluginHealth> {
        Some(self.shared.breaker().health(Instant::now()))
    }

    async fn stat(&self, namespace: &str, name: &str) -> Result<BlobInfo, BackendError> {
        let s = &self.shared;
        let (mut store, world) = s.instance(s.engine.limits.call_timeout).await?;
        let result = world
            .shoal_backend_storage()
            .call_stat(&mut store, namespace, name)
            .await;
        let info = s
            .settle(&store, result)?
            .map_err(|e| s.call_error(&store, e, name));
        s.recycle(store, world);
        Ok(BlobInfo { size: info?.size })
    }

    async fn download(
        &self,
        namespace: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<Download, BackendError> {
        let s = &self.shared;
        let (mut store, world) = s.instance(s.engine.limits.call_timeout).await?;
        let range = range.map(|r| wit_types::ByteRange {
            offset: r.offset,
            length: r.length,
        });
        let result = world
            .shoal_backend_storage()
            .call_download(&mut store, namespace, name, range)
            .await;
        let blob = match s.settle(&store, result)? {
            Ok(blob) => blob,
            Err(e) => {
                let e = s.call_error(&store, e, name);
                s.recycle(store, world);
                return Err(e);
            }
        };
        let body = match blob.body {
            Body::Incoming(resource) => {
                let body = store
                    .data_mut()
                    .table
                    .delete(resource)
                    .map_err(|e| s.trapped(e.into()))?;
                // The body does not depend on the store, which can serve the next call.
                s.recycle(store, world);
                passthrough(body).map_err(|e| BackendError::Other {
                    plugin: s.plugin(),
                    message: e.to_string(),
                })?
            }
            Body::Reader(reader) => reader_stream(self.shared.clone(), store, world, reader),
        };
        Ok(Download {
            length: blob.length,
            body,
        })
    }

    async fn upload(
        &self,
        namespace: &str,
        name: &str,
        size: u64,
        body: ByteStream,
    ) -> Result<(), BackendError> {
        let s = &self.shared;
        let timeout =
            s.engine.limits.call_timeout + Duration::from_secs(size / UPLOAD_BYTES_PER_SEC);
        let (mut store, world) = s.instance(timeout).await?;
        let stream: DynInputStream = Box::new(UploadStream::new(body));
        let stream: Resource<DynInputStream> = store
            .data_mut()
            .table
            .push(stream)
            .map_err(|e| s.trapped(e.into()))?;
        let result = world
            .shoal_backend_storage()
            .call_upload(&mut store, namespace, name, size, stream)
            .await;
        let done = s
            .settle(&store, result)?
            .map_err(|e| s.call_error(&store, e, name));
        s.recycle(store, world);
        done
    }

    async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        continuation: Option<String>,
        limit: u32,
    ) -> Result<ListPage, BackendError> {
        let s = &self.shared;
        let (mut store, world) = s.instance(s.engine.limits.call_timeout).await?;
        let result = world
            .shoal_backend_storage()
            .call_list(
                &mut store,
                namespace,
                prefix,
                continuation.as_deref(),
                limit,
            )
            .await;
        let page = s
            .settle(&store, result)?
            .map_err(|e| s.call_error(&store, e, prefix));
        s.recycle(store, world);
        let page = page?;
        Ok(ListPage {
            names: page.names,
            continuation: page.continuation,
        })
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<(), BackendError> {
        let s = &self.shared;
        let (mut store, world) = s.instance(s.engine.limits.call_timeout).await?;
        let result = world
            .shoal_backend_storage()
            .call_delete(&mut store, namespace, name)
            .await;
        let done = s
            .settle(&store, result)?
            .map_err(|e| s.call_error(&store, e, name));
        s.recycle(store, world);
        done
    }
}

/// Pulls a plugin's `reader` chunk by chunk; each read gets a fresh deadline, and the
/// store lives exactly as long as the stream.
fn reader_stream(
    shared: Arc<Shared>,
    store: Store<PluginState>,
    world: World,
    reader: ResourceAny,
) -> ByteStream {
    struct Pull {
        shared: Arc<Shared>,
        store: Store<PluginState>,
        world: World,
        reader: ResourceAny,
    }
    let pull = Pull {
        shared,
        store,
        world,
        reader,
    };
    Box::pin(stream::unfold(Some(pull), |pull| async move {
        let mut p = pull?;
        let deadline = p.shared.engine.ticks(p.shared.engine.limits.call_timeout);
        p.store.set_epoch_deadline(deadline);
        let result = p
            .world
            .shoal_backend_storage()
            .reader()
            .call_read(&mut p.store, p.reader, READ_CHUNK)
            .await;
        match p.shared.settle(&p.store, result) {
            Ok(Ok(Some(chunk))) => Some((Ok(chunk.into()), Some(p))),
            Ok(Ok(None)) => {
                // Dropping the store frees the reader with everything else.
                None
            }
            Ok(Err(e)) => {
                let e = p.shared.guest_error(e, "download");
                Some((Err(io::Error::other(e)), None))
            }
            Err(e) => Some((Err(io::Error::other(e)), None)),
        }
    }))
}
