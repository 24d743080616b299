//! `plugin`: a user-supplied WebAssembly component implementing the `shoal:backend` world.

use serde::{Deserialize, Serialize};
use serde_yaml_ng::{Mapping, Value};

use crate::keypath::KeyPath;
use crate::plugin_source::PluginSource;
use crate::validate::{Problems, Validate};

/// Which component to run, what it is told, and where it may connect.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginBackend {
    /// The component: a `.wasm` path (relative paths are relative to the config file's
    /// folder) or `oci://HOST[:PORT]/REPOSITORY@sha256:<hex>`. Its world is read from the
    /// component itself (`shoal plugin check`).
    pub plugin: PluginSource,
    /// The `auth.plugin.<username>` entry whose keys the plugin reads with `get-secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Settings passed to the plugin as they are; shoal does not interpret them. Put secrets
    /// in `auth.plugin`, not here: this block is printed as it is.
    #[serde(default = "empty_mapping")]
    pub config: Value,
    /// Hosts the plugin may reach over HTTP; nothing else is allowed.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

fn empty_mapping() -> Value {
    Value::Mapping(Mapping::new())
}

impl Validate for PluginBackend {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        if let Some(file) = self.plugin.file() {
            problems.require(
                file.extension().is_some_and(|e| e == "wasm"),
                &at.key("plugin"),
                "is not a .wasm file",
                "the path of a WebAssembly component, like plugins/my-store.wasm, or \
                 oci://HOST[:PORT]/REPOSITORY@sha256:<hex>",
            );
        }
        problems.require(
            self.config.is_mapping(),
            &at.key("config"),
            "must be a mapping of keys",
            "keys and values for the plugin, like `bucket: blobs`",
        );
    }
}

impl super::BackendKind for PluginBackend {
    fn allowed_hosts(&self) -> &[String] {
        &self.allowed_hosts
    }
}
