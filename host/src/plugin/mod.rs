//! The plugin host: storage backends and health policies as sandboxed WebAssembly
//! components, behind the native [`Backend`] and [`HealthPolicy`] traits.
//!
//! Nothing outside this module sees a wasmtime type. A plugin gets only what the operator's
//! config grants it: its YAML block and `auth:` secrets through the `config` import, outbound
//! HTTP to the hosts its settings name plus `allowed_hosts:` (checked in one hook), and, for
//! the `fs` backend alone, its root folder. Each call runs in its own store (warm, or fresh) with a memory cap
//! and an epoch deadline; a trapped store is dropped, and repeated traps open a breaker.
//!
//! Layout: `bindings` (one `bindgen!` per world), `engine` (wasmtime setup, `.cwasm` cache,
//! epoch ticker), `state` (store data, grants, the outbound hook), `backend` and `health`
//! (the native wrappers), `streams` (bodies across the boundary), `allow`, `breaker`; and for
//! plugins distributed through registries, `artifact` (the OCI artifact format), `oci` (the
//! registry client), `fetch` (sources to bytes, the verified cache) and `publish` (`shoal
//! plugin push` and `pull`); `check` and `call` (`shoal plugin check` and `call`, for
//! authors).

mod allow;
mod artifact;
mod backend;
mod bindings;
mod breaker;
mod builtin;
mod call;
mod check;
mod engine;
mod fetch;
mod health;
mod oci;
mod publish;
mod state;
mod streams;

pub use shoal_storage::Backend;
pub use shoal_storage::{
    BackendError, BlobInfo, ByteRange, ByteStream, Download, HealthPolicy, ListPage,
};

pub use allow::{AllowedHosts, BadHost};
pub use backend::WasmBackend;
pub use call::{CallArgs, Export, run_call};
pub use check::{Inspection, WorldKind, inspect, run_check};
pub use engine::{LoadError, PluginEngine, PluginLimits};
pub use fetch::{PluginFetcher, cache_dir, source_name};
pub use health::WasmPolicy;
pub use oci::{OciError, Pulled, RegistryClient};
pub use publish::{parse_reference, run_pull, run_push};
