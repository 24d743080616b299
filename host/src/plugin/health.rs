//! [`WasmPolicy`]: a health-check policy component behind the native [`HealthPolicy`] trait.
//!
//! Unlike a backend, a policy keeps state between calls (consecutive fails, last pass), so
//! one instance lives as long as it behaves. A trap discards it; the next call starts a new
//! one with empty state, which a policy must treat as "nothing observed yet".

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Mutex;
use wasmtime::Store;

use super::bindings::health::{Policy as World, PolicyPre};
use super::breaker::Breaker;
use super::engine::EngineInner;
use super::state::{Grants, PluginState};
use super::{BackendError, HealthPolicy};

/// A health policy implemented by a WebAssembly component.
pub struct WasmPolicy {
    engine: Arc<EngineInner>,
    pre: PolicyPre<PluginState>,
    grants: Arc<Grants>,
    live: Mutex<Live>,
}

struct Live {
    instance: Option<(Store<PluginState>, World)>,
    breaker: Breaker,
}

impl std::fmt::Debug for WasmPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WasmPolicy")
            .field("plugin", &self.grants.name)
            .finish_non_exhaustive()
    }
}

enum Call<'a> {
    Observe(&'a str, bool, u64),
    Healthy(&'a str, u64),
}

impl WasmPolicy {
    pub(crate) fn new(
        engine: Arc<EngineInner>,
        pre: PolicyPre<PluginState>,
        grants: Grants,
    ) -> Self {
        let breaker = Breaker::new(
            engine.limits.breaker_threshold,
            engine.limits.breaker_cool_down,
        );
        WasmPolicy {
            engine,
            pre,
            grants: Arc::new(grants),
            live: Mutex::new(Live {
                instance: None,
                breaker,
            }),
        }
    }

    fn trapped(&self, live: &mut Live, e: &wasmtime::Error) -> BackendError {
        let last_words = live
            .instance
            .take()
            .and_then(|(store, _)| store.data().last_words().map(str::to_owned));
        live.breaker.trapped(Instant::now());
        let mut message = super::backend::describe_trap(e, &self.engine.limits);
        if let Some(words) = last_words {
            message = format!("{message}: {words}");
        }
        tracing::warn!(plugin = %self.grants.name, "policy trapped, its state is discarded: {message}");
        BackendError::Trapped {
            plugin: self.grants.name.to_string(),
            message,
        }
    }

    async fn call(&self, call: Call<'_>) -> Result<bool, BackendError> {
        let mut live = self.live.lock().await;
        if let Err(retry_in) = live.breaker.admit(Instant::now()) {
            return Err(BackendError::BreakerOpen {
                plugin: self.grants.name.to_string(),
                retry_in,
            });
        }
        if live.instance.is_none() {
            let made = async {
                let state = PluginState::new(self.grants.clone(), self.engine.limits.memory_bytes)?;
                let mut store = self.engine.store(state, self.engine.limits.call_timeout);
                let world = self.pre.instantiate_async(&mut store).await?;
                wasmtime::Result::Ok((store, world))
            }
            .await;
            match made {
                Ok(instance) => live.instance = Some(instance),
                Err(e) => return Err(self.trapped(&mut live, &e)),
            }
        }
        let Some((store, world)) = live.instance.as_mut() else {
            unreachable!("the instance was made just above");
        };
        store.set_epoch_deadline(self.engine.ticks(self.engine.limits.call_timeout));
        let result = match call {
            Call::Observe(host, ok, now) => world
                .call_observe(&mut *store, host, ok, now)
                .await
                .map(|()| true),
            Call::Healthy(host, now) => world.call_healthy(&mut *store, host, now).await,
        };
        match result {
            Ok(v) => {
                live.breaker.succeeded();
                Ok(v)
            }
            Err(e) => Err(self.trapped(&mut live, &e)),
        }
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[async_trait::async_trait]
impl HealthPolicy for WasmPolicy {
    async fn observe(&self, host: &str, ok: bool, now: SystemTime) -> Result<(), BackendError> {
        self.call(Call::Observe(host, ok, millis(now)))
            .await
            .map(drop)
    }

    async fn healthy(&self, host: &str, now: SystemTime) -> Result<bool, BackendError> {
        self.call(Call::Healthy(host, millis(now))).await
    }
}
