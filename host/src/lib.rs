//! The library half of `shoal-host`: the WebAssembly plugin host, shared by the `shoal` binary
//! and the integration tests. Roles and the command line live in the binary.

pub mod plugin;
