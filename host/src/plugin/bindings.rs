//! The one place WIT becomes Rust on the host side: one `bindgen!` per world. `wasi:io`,
//! `wasi:clocks` and `wasi:http` map onto wasmtime-wasi's own types, so a `wasi:http` body a
//! plugin returns is the `HostIncomingBody` the host's HTTP client made.

/// The `shoal:backend/backend` world: storage backends.
pub(crate) mod backend {
    wasmtime::component::bindgen!({
        path: [
            "../wit/deps/io.wit",
            "../wit/deps/clocks.wit",
            "../wit/deps/random.wit",
            "../wit/deps/filesystem.wit",
            "../wit/deps/sockets.wit",
            "../wit/deps/cli.wit",
            "../wit/deps/http.wit",
            "../wit/backend",
        ],
        world: "shoal:backend/backend",
        exports: { default: async },
        with: {
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        },
        require_store_data_send: true,
    });
}

/// The `shoal:health/policy` world: health-check policies.
pub(crate) mod health {
    wasmtime::component::bindgen!({
        path: [
            "../wit/deps/io.wit",
            "../wit/deps/clocks.wit",
            "../wit/deps/random.wit",
            "../wit/deps/filesystem.wit",
            "../wit/deps/sockets.wit",
            "../wit/deps/cli.wit",
            "../wit/deps/http.wit",
            "../wit/backend",
            "../wit/health",
        ],
        world: "shoal:health/policy",
        exports: { default: async },
        with: {
            "shoal:backend/config": super::backend::shoal::backend::config,
            "shoal:backend/log": super::backend::shoal::backend::log,
        },
        require_store_data_send: true,
    });
}
