//! The guest side of shoal plugins: WIT bindings for the `shoal:backend` and `shoal:health`
//! worlds, plus the helpers every storage plugin needs (object naming, config, logging,
//! outbound HTTP over `wasi:http`).
//!
//! A storage backend implements [`backend::Guest`] and exports it with
//! [`export_backend!`](crate::export_backend); a health policy implements `health::Guest`
//! (feature `health`) and keeps its per-host state in a bounded [`host_table::HostTable`];
//! see `plugins/README.md`.

// A component implements one world, and cargo unifies features across the packages of one
// build: build backend plugins and health policies in separate `cargo build` runs.
#[cfg(all(feature = "backend", feature = "health"))]
compile_error!("a component implements one world: enable either `backend` or `health`");

pub mod duration;
pub mod host_table;
pub mod name_path;
#[cfg(feature = "sigv4")]
pub mod sigv4;
pub mod url;

#[cfg(any(feature = "backend", feature = "health"))]
pub mod config;
#[cfg(feature = "backend")]
pub mod errors;
#[cfg(feature = "backend")]
pub mod http;
#[cfg(any(feature = "backend", feature = "health"))]
pub mod log;
#[cfg(any(feature = "backend", feature = "health"))]
pub mod panic;

/// Generated bindings of the `shoal:backend/backend` world, `wasi:http` and `wasi:io`
/// included, so the handles a plugin gets from `wasi:http` are the ones it returns to the host.
#[cfg(feature = "backend")]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: [
            "wit/deps/io.wit",
            "wit/deps/clocks.wit",
            "wit/deps/random.wit",
            "wit/deps/filesystem.wit",
            "wit/deps/sockets.wit",
            "wit/deps/cli.wit",
            "wit/deps/http.wit",
            "wit/backend",
        ],
        world: "shoal:backend/backend",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_backend",
        default_bindings_module: "shoal_plugin_sdk::bindings",
    });
}

/// Generated bindings of the `shoal:health/policy` world.
#[cfg(all(feature = "health", not(feature = "backend")))]
#[allow(missing_docs, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: [
            "wit/deps/io.wit",
            "wit/deps/clocks.wit",
            "wit/deps/random.wit",
            "wit/deps/filesystem.wit",
            "wit/deps/sockets.wit",
            "wit/deps/cli.wit",
            "wit/deps/http.wit",
            "wit/backend",
            "wit/health",
        ],
        world: "shoal:health/policy",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_policy",
        default_bindings_module: "shoal_plugin_sdk::bindings",
    });
}

/// What a storage backend implements, under short names.
#[cfg(feature = "backend")]
pub mod backend {
    pub use crate::bindings::exports::shoal::backend::storage::{
        BlobStream, Body, Guest, GuestReader, Reader,
    };
    pub use crate::bindings::shoal::backend::types::{BlobInfo, ByteRange, Error, ListPage};
    pub use crate::bindings::wasi::io::streams::{InputStream, StreamError};
}

#[cfg(all(feature = "health", not(feature = "backend")))]
pub mod health;
