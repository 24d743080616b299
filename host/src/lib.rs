//! The library half of `shoal-host`: the WebAssembly plugin host and the storage layer built
//! on it, shared by the `shoal` binary and the integration tests. Roles and the command line
//! live in the binary.

pub mod plugin;
pub mod storage;
