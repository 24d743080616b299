//! The plugin's settings: its YAML block, handed over by the host as JSON.

use serde::de::DeserializeOwned;

use crate::bindings::shoal::backend::config as host;

/// Parses the backend's config block into `T`; the error names what did not fit.
pub fn load<T: DeserializeOwned>() -> Result<T, String> {
    let json = host::get_config();
    serde_json::from_str(&json).map_err(|e| format!("config does not fit this plugin: {e}"))
}

/// A secret granted by the operator's `auth:` block, by key.
pub fn secret(key: &str) -> Option<String> {
    host::get_secret(key)
}
