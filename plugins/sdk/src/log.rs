//! Log lines that land in the host's tracing, tagged with the plugin's name.

pub use crate::bindings::shoal::backend::log::Level;

use crate::bindings::shoal::backend::log as host;

/// Logs `message` at `level`.
pub fn log(level: Level, message: &str) {
    host::log(level, message);
}

/// Logs at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Logs at info level.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Logs at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}
