//! The library half of `shoal-host`: the WebAssembly plugin host and what turns its plugins
//! into the storage backends and health filters the roles (`shoal-roles`) take. The roles'
//! wiring and the command line live in the binary.

pub mod plugin;
pub mod storage;
