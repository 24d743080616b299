//! The plugins compiled with the workspace (host/build.rs) and embedded in the binary, how a
//! `backends:` entry becomes a running [`WasmBackend`], and how a `healthcheck:` block becomes
//! a running [`HealthPolicy`].

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use shoal_config::{ActiveHealthCheck, Backend as BackendConfig, PassiveHealthCheck, PluginSource};

use super::HealthPolicy;
use super::allow::AllowedHosts;
use super::backend::WasmBackend;
use super::bindings::backend::BackendPre;
use super::bindings::health::PolicyPre;
use super::engine::{LoadError, PluginEngine};
use super::fetch::source_name;
use super::health::WasmPolicy;
use super::state::Grants;

// BUILTIN_BACKENDS and BUILTIN_POLICIES: every `plugins/<name>` component, embedded by name.
include!(concat!(env!("OUT_DIR"), "/builtins.rs"));

/// The embedded component `name` of `table`, or a load error naming what this build lacks.
fn embedded(table: &[(&str, &'static [u8])], name: &str) -> Result<&'static [u8], LoadError> {
    table
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, wasm)| *wasm)
        .ok_or_else(|| LoadError::Config {
            plugin: name.to_owned(),
            message: format!("this build has no built-in component `{name}`"),
        })
}

/// The secrets an `ecr-login` registry backend signs ECR calls with, and the environment
/// variables the host reads them from when the `auth:` entry does not grant them (the AWS
/// SDKs' convention; the plugin cannot read the host's environment itself).
const ECR_SECRETS: [(&str, &str); 3] = [
    ("aws_access_key_id", "AWS_ACCESS_KEY_ID"),
    ("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    ("aws_session_token", "AWS_SESSION_TOKEN"),
];
/// Default per-request timeout of outbound HTTP when the backend's config sets none.
const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(60);

impl PluginEngine {
    /// The running plugin for one `backends:` item's `backend:`, with `secrets` from its
    /// `auth:` entry. Built-in kinds run the embedded component; `plugin:` loads its file, or
    /// fetches its `oci://` artifact.
    pub fn backend(
        &self,
        config: &BackendConfig,
        secrets: BTreeMap<String, String>,
    ) -> Result<WasmBackend, LoadError> {
        let kind = config.kind();
        let (name, wasm): (String, Cow<'static, [u8]>) = match config {
            BackendConfig::Plugin(p) => {
                let (name, bytes) = self.inner.fetcher.component(&p.plugin)?;
                (name, Cow::Owned(bytes))
            }
            builtin => (
                kind.to_owned(),
                Cow::Borrowed(embedded(BUILTIN_BACKENDS, builtin.plugin())?),
            ),
        };
        let config_err = |message: String| LoadError::Config {
            plugin: name.clone(),
            message,
        };
        let mut block = match config {
            BackendConfig::Plugin(p) => p.config.clone(),
            other => other.plugin_config(),
        };
        let mut secrets = secrets;
        if let BackendConfig::RegistryBlob(c) | BackendConfig::RegistryTag(c) = config {
            // One component serves both kinds: tell it which one this is.
            if let serde_yaml_ng::Value::Mapping(map) = &mut block {
                map.insert("kind".into(), kind.into());
            }
            if c.security.creds_store.as_deref() == Some("ecr-login") {
                fill_ecr_secrets(&mut secrets, |var| std::env::var(var).ok());
            }
        }
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
        let http_timeout = config
            .settings()
            .http_timeout()
            .unwrap_or(DEFAULT_HTTP_TIMEOUT);
        let grants = Grants {
            name: name.as_str().into(),
            config_json,
            secrets,
            hosts,
            preopen,
            http_timeout,
        };
        self.backend_with_grants(&wasm, grants)
    }

    /// A storage backend from component bytes, running with exactly `grants`.
    pub(crate) fn backend_with_grants(
        &self,
        wasm: &[u8],
        grants: Grants,
    ) -> Result<WasmBackend, LoadError> {
        let name = grants.name.to_string();
        let component = self.component(&name, wasm)?;
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

    /// The policy of an active health check (`cluster.healthcheck`): the built-in
    /// `health-active`, or the component its `policy:` names, given
    /// `{"fails": <filter.fails>, "passes": <filter.passes>}` as its config.
    ///
    /// Thresholds the policy cannot work with (a 0) are refused here, naming the key, before
    /// any component runs.
    pub fn active_health(
        &self,
        check: &ActiveHealthCheck,
    ) -> Result<Arc<dyn HealthPolicy>, LoadError> {
        let name = check
            .policy
            .as_ref()
            .map_or_else(|| "health-active".to_owned(), source_name);
        let filter = &check.filter;
        for (key, value) in [("fails", filter.fails), ("passes", filter.passes)] {
            if value == 0 {
                return Err(LoadError::Config {
                    plugin: name,
                    message: format!("cluster.healthcheck.filter.{key} must be at least 1, got 0"),
                });
            }
        }
        let config = with_settings(
            check.config.as_ref(),
            serde_json::json!({"fails": filter.fails, "passes": filter.passes}),
        )
        .map_err(|message| LoadError::Config {
            plugin: name.clone(),
            message,
        })?;
        let policy = match &check.policy {
            Some(source) => self.health_policy_from_source(source, &config)?,
            None => self.policy(&name, embedded(BUILTIN_POLICIES, "health-active")?, &config)?,
        };
        Ok(Arc::new(policy))
    }

    /// The policy of a passive health check (`tracker.cluster.healthcheck`): the built-in
    /// `health-passive`, or the component its `policy:` names, given
    /// `{"fails": <fails>, "fail_timeout": "<duration>"}` as its config, the duration written
    /// as shoal-config prints it (`5m`, `30s`, `1s500ms`).
    ///
    /// Settings the policy cannot work with (`fails` of 0 or over
    /// [`PassiveHealthCheck::MAX_FAILS`], `fail_timeout` under 1ms, the policy's resolution)
    /// are refused here, naming the key, before any component runs.
    pub fn passive_health(
        &self,
        check: &PassiveHealthCheck,
    ) -> Result<Arc<dyn HealthPolicy>, LoadError> {
        let name = check
            .policy
            .as_ref()
            .map_or_else(|| "health-passive".to_owned(), source_name);
        let refuse = |message: String| LoadError::Config {
            plugin: name.clone(),
            message,
        };
        if !(1..=PassiveHealthCheck::MAX_FAILS).contains(&check.fails) {
            return Err(refuse(format!(
                "tracker.cluster.healthcheck.fails must be from 1 to {}, got {}",
                PassiveHealthCheck::MAX_FAILS,
                check.fails
            )));
        }
        if check.fail_timeout.get() < Duration::from_millis(1) {
            return Err(refuse(format!(
                "tracker.cluster.healthcheck.fail_timeout must be at least 1ms, got {}",
                check.fail_timeout
            )));
        }
        let config = with_settings(
            check.config.as_ref(),
            serde_json::json!({"fails": check.fails, "fail_timeout": check.fail_timeout}),
        )
        .map_err(refuse)?;
        let policy = match &check.policy {
            Some(source) => self.health_policy_from_source(source, &config)?,
            None => self.policy(
                &name,
                embedded(BUILTIN_POLICIES, "health-passive")?,
                &config,
            )?,
        };
        Ok(Arc::new(policy))
    }

    /// A custom health policy: the `shoal:health/policy` component at `path`, named after its
    /// file, configured with `config`.
    pub fn health_policy_from_file(
        &self,
        path: &Path,
        config: &serde_json::Value,
    ) -> Result<WasmPolicy, LoadError> {
        self.health_policy_from_source(&PluginSource::File(path.to_owned()), config)
    }

    /// A custom health policy from its file or its `oci://` artifact, configured with `config`.
    pub fn health_policy_from_source(
        &self,
        source: &PluginSource,
        config: &serde_json::Value,
    ) -> Result<WasmPolicy, LoadError> {
        let (name, wasm) = self.inner.fetcher.component(source)?;
        self.policy(&name, &wasm, config)
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

/// Adds the AWS credentials of `env` to `secrets` when the `auth:` entry grants none of them;
/// never mixes the two (a key from one identity with a session token from another).
fn fill_ecr_secrets(secrets: &mut BTreeMap<String, String>, env: impl Fn(&str) -> Option<String>) {
    if ECR_SECRETS
        .iter()
        .any(|(key, _)| secrets.contains_key(*key))
    {
        return;
    }
    for (key, var) in ECR_SECRETS {
        if let Some(value) = env(var).filter(|v| !v.is_empty()) {
            secrets.insert(key.to_owned(), value);
        }
    }
}

/// A custom policy's `config:` with the check's thresholds added (`thresholds`, an object).
fn with_settings(
    settings: Option<&shoal_config::PolicySettings>,
    thresholds: serde_json::Value,
) -> Result<serde_json::Value, String> {
    let Some(settings) = settings else {
        return Ok(thresholds);
    };
    let mut merged = match serde_json::to_value(&settings.0) {
        Ok(serde_json::Value::Object(map)) => map,
        Ok(_) => return Err("the policy's config: is not a mapping".to_owned()),
        Err(e) => {
            return Err(format!(
                "the policy's config: cannot be passed as JSON: {e}"
            ));
        }
    };
    if let serde_json::Value::Object(thresholds) = thresholds {
        merged.extend(thresholds);
    }
    Ok(serde_json::Value::Object(merged))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(var: &str) -> Option<String> {
        match var {
            "AWS_ACCESS_KEY_ID" => Some("AKIDENV".into()),
            "AWS_SECRET_ACCESS_KEY" => Some("env-secret".into()),
            "AWS_SESSION_TOKEN" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn ecr_credentials_come_from_the_environment_only_when_auth_grants_none() {
        let mut none = BTreeMap::new();
        fill_ecr_secrets(&mut none, env);
        assert_eq!(
            none,
            BTreeMap::from([
                ("aws_access_key_id".to_owned(), "AKIDENV".to_owned()),
                ("aws_secret_access_key".to_owned(), "env-secret".to_owned()),
            ])
        );
        let granted = BTreeMap::from([
            ("aws_access_key_id".to_owned(), "AKIDAUTH".to_owned()),
            ("aws_secret_access_key".to_owned(), "auth-secret".to_owned()),
        ]);
        let mut kept = granted.clone();
        fill_ecr_secrets(&mut kept, |_| Some("from-env".into()));
        assert_eq!(
            kept, granted,
            "auth: wins, and is not mixed with the environment"
        );
    }
}
