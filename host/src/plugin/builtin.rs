//! The plugins compiled with the workspace (host/build.rs) and embedded in the binary, and
//! how a `backends:` entry becomes a running [`WasmBackend`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use shoal_config::{AuthConfig, Backend as BackendConfig};

use super::allow::AllowedHosts;
use super::backend::WasmBackend;
use super::bindings::backend::BackendPre;
use super::bindings::health::PolicyPre;
use super::engine::{LoadError, PluginEngine};
use super::health::WasmPolicy;
use super::state::Grants;

/// The `fs` backend component.
pub(crate) const FS: &[u8] = include_bytes!(env!("SHOAL_PLUGIN_FS"));
/// The `http` backend component.
pub(crate) const HTTP: &[u8] = include_bytes!(env!("SHOAL_PLUGIN_HTTP"));
/// The `s3` backend component.
pub(crate) const S3: &[u8] = include_bytes!(env!("SHOAL_PLUGIN_S3"));

/// Default per-request timeout of outbound HTTP when the backend's config sets none.
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(60);

impl PluginEngine {
    /// The running plugin for one `backends:` item's `backend:`, with `secrets` from its
    /// `auth:` entry. Built-in kinds run the embedded component; `plugin:` loads its file.
    pub fn backend(
        &self,
        config: &BackendConfig,
        secrets: BTreeMap<String, String>,
    ) -> Result<WasmBackend, LoadError> {
        let kind = config.kind();
        let (name, wasm): (String, Cow<'static, [u8]>) = match config {
            BackendConfig::Fs(_) => (kind.to_owned(), Cow::Borrowed(FS)),
            BackendConfig::Http(_) => (kind.to_owned(), Cow::Borrowed(HTTP)),
            BackendConfig::S3(_) => (kind.to_owned(), Cow::Borrowed(S3)),
            BackendConfig::Plugin(p) => {
                let name = plugin_name(&p.plugin);
                let bytes = std::fs::read(&p.plugin).map_err(|source| LoadError::Read {
                    plugin: name.clone(),
                    path: p.plugin.clone(),
                    source,
                })?;
                (name, Cow::Owned(bytes))
            }
            _ => {
                return Err(LoadError::Config {
                    plugin: kind.to_owned(),
                    message: format!("no built-in plugin for the `{kind}` backend yet"),
                });
            }
        };
        let config_err = |message: String| LoadError::Config {
            plugin: name.clone(),
            message,
        };
        let block = match config {
            BackendConfig::Plugin(p) => p.config.clone(),
            other => other.plugin_config(),
        };
        let config_json = serde_json::to_string(&block)
            .map_err(|e| config_err(format!("config cannot be passed as JSON: {e}")))?;
        let hosts = AllowedHosts::for_backend(config).map_err(|e| config_err(e.to_string()))?;
        let preopen = match config {
            BackendConfig::Fs(fs) => {
                std::fs::create_dir_all(&fs.root).map_err(|e| {
                    config_err(format!("cannot create root {}: {e}", fs.root.display()))
                })?;
                Some(fs.root.canonicalize().map_err(|e| {
                    config_err(format!("cannot open root {}: {e}", fs.root.display()))
                })?)
            }
            _ => None,
        };
        let http_timeout = match config {
            BackendConfig::Http(c) => c.timeout.into(),
            BackendConfig::RegistryBlob(c) | BackendConfig::RegistryTag(c) => c.timeout.into(),
            _ => DEFAULT_HTTP_TIMEOUT,
        };
        let grants = Grants {
            name: name.as_str().into(),
            config_json,
            secrets,
            hosts,
            preopen,
            http_timeout,
        };
        let component = self.component(&name, &wasm)?;
        let link_err = |e: wasmtime::Error| LoadError::Link {
            plugin: name.clone(),
            message: format!("{e:#}"),
        };
        let pre = self
            .inner
            .backend_linker
            .instantiate_pre(&component)
            .map_err(link_err)?;
        let pre = BackendPre::new(pre).map_err(link_err)?;
        Ok(WasmBackend::new(self.inner.clone(), pre, grants))
    }

    /// A health policy from component bytes, configured with `config` (handed to the
    /// plugin as JSON). Policies get no network and no files.
    pub fn policy(
        &self,
        name: &str,
        wasm: &[u8],
        config: &serde_json::Value,
    ) -> Result<WasmPolicy, LoadError> {
        let grants = Grants {
            name: name.into(),
            config_json: config.to_string(),
            secrets: BTreeMap::new(),
            hosts: AllowedHosts::default(),
            preopen: None,
            http_timeout: DEFAULT_HTTP_TIMEOUT,
        };
        let component = self.component(name, wasm)?;
        let link_err = |e: wasmtime::Error| LoadError::Link {
            plugin: name.to_owned(),
            message: format!("{e:#}"),
        };
        let pre = self
            .inner
            .policy_linker
            .instantiate_pre(&component)
            .map_err(link_err)?;
        let pre = PolicyPre::new(pre).map_err(link_err)?;
        Ok(WasmPolicy::new(self.inner.clone(), pre, grants))
    }
}

/// The secrets a backend gets from `auth:`: for `s3`, the `auth.s3.<username>.s3` keys
/// under the names the s3 plugin asks for (`aws_access_key_id`, `aws_secret_access_key`,
/// `aws_session_token`); for `gcs`, `access_blob`. Other kinds get none. Kept here, beside
/// the embedded plugins, so the key names the host grants and the plugins read stay one list.
pub fn secrets_for(config: &BackendConfig, auth: &AuthConfig) -> BTreeMap<String, String> {
    let mut secrets = BTreeMap::new();
    match config {
        BackendConfig::S3(c) => {
            if let Some(user) = auth.s3.get(&c.username) {
                let keys = &user.s3;
                secrets.insert(
                    "aws_access_key_id".to_owned(),
                    keys.aws_access_key_id.clone(),
                );
                secrets.insert(
                    "aws_secret_access_key".to_owned(),
                    keys.aws_secret_access_key.expose().to_owned(),
                );
                if let Some(token) = &keys.aws_session_token {
                    secrets.insert("aws_session_token".to_owned(), token.expose().to_owned());
                }
            }
        }
        BackendConfig::Gcs(c) => {
            if let Some(user) = auth.gcs.get(&c.username) {
                secrets.insert(
                    "access_blob".to_owned(),
                    user.gcs.access_blob.expose().to_owned(),
                );
            }
        }
        _ => {}
    }
    secrets
}

/// A custom plugin's name: its file name without `.wasm`.
fn plugin_name(path: &Path) -> String {
    path.file_stem().map_or_else(
        || path.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_secrets_come_from_the_auth_entry_of_its_username() {
        let auth: AuthConfig = serde_yaml_ng::from_str(
            "s3:\n  kraken-user:\n    s3:\n      aws: kraken-user\n      aws_access_key_id: AKID\n      \
             aws_secret_access_key: SECRET\n  other:\n    s3:\n      aws_access_key_id: NOPE\n      \
             aws_secret_access_key: NOPE\n",
        )
        .unwrap();
        let s3: BackendConfig = serde_yaml_ng::from_str(
            "s3:\n  region: us-west-1\n  bucket: b\n  username: kraken-user\n",
        )
        .unwrap();
        let secrets = secrets_for(&s3, &auth);
        assert_eq!(
            secrets,
            BTreeMap::from([
                ("aws_access_key_id".to_owned(), "AKID".to_owned()),
                ("aws_secret_access_key".to_owned(), "SECRET".to_owned()),
            ])
        );
        let fs: BackendConfig = serde_yaml_ng::from_str("fs:\n  root: /tmp/x\n").unwrap();
        assert!(secrets_for(&fs, &auth).is_empty());
    }
}
