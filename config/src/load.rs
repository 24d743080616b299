//! Loading a role's config: layering, environment substitution, typing, then validation, each
//! stage reporting problems by file and key path.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::decode::{decode, scalar_text};
use crate::env::{EnvLookup, substitute};
use crate::error::{ConfigError, Problem};
use crate::keypath::KeyPath;
use crate::layering::{Layered, Source, strip_nulls};
use crate::role::Role;
use crate::roles::{
    AgentConfig, BuildIndexConfig, DevConfig, OriginConfig, ProxyConfig, TrackerConfig,
};
use crate::validate::Problems;

pub(crate) mod sealed {
    use crate::validate::Problems;

    /// The per-role steps of loading, kept out of the public API.
    pub trait Role {
        /// Fills defaults that depend on other keys (e.g. the dev backend under `data_dir`).
        fn finish(&mut self) {}
        /// Semantic checks across the whole file.
        fn check(&self, problems: &mut Problems);
    }
}

/// A role's whole config file; implemented by the six role structs and nothing else.
pub trait RoleConfig: sealed::Role + DeserializeOwned + Serialize {
    /// The role this file configures.
    const ROLE: Role;
}

impl RoleConfig for AgentConfig {
    const ROLE: Role = Role::Agent;
}
impl RoleConfig for OriginConfig {
    const ROLE: Role = Role::Origin;
}
impl RoleConfig for TrackerConfig {
    const ROLE: Role = Role::Tracker;
}
impl RoleConfig for BuildIndexConfig {
    const ROLE: Role = Role::BuildIndex;
}
impl RoleConfig for ProxyConfig {
    const ROLE: Role = Role::Proxy;
}
impl RoleConfig for DevConfig {
    const ROLE: Role = Role::Dev;
}

/// Loads a role's config from a file, following `extends` relative to each file's folder.
pub fn load<T: RoleConfig>(path: impl AsRef<Path>, env: EnvLookup<'_>) -> Result<T, ConfigError> {
    resolve(Layered::load(Source::File(path.as_ref()))?, env)
}

/// Loads a role's config from YAML text; an `extends` in it is relative to the working directory.
pub fn load_str<T: RoleConfig>(yaml: &str, env: EnvLookup<'_>) -> Result<T, ConfigError> {
    let base_dir = std::env::current_dir().unwrap_or_default();
    resolve(
        Layered::load(Source::Inline {
            yaml,
            base_dir: &base_dir,
        })?,
        env,
    )
}

/// The effective config as YAML: every default filled in, secrets redacted. It loads back
/// into the same config (apart from the secrets).
pub fn render<T: RoleConfig>(config: &T) -> Result<String, ConfigError> {
    serde_yaml_ng::to_string(config).map_err(|e| ConfigError::Render {
        message: e.to_string(),
    })
}

/// `shoal config check ROLE FILE` in one call: loads and validates the file for `role` and
/// returns its effective config.
pub fn check(
    role: Role,
    path: impl AsRef<Path>,
    env: EnvLookup<'_>,
) -> Result<String, ConfigError> {
    let path = path.as_ref();
    match role {
        Role::Agent => render(&load::<AgentConfig>(path, env)?),
        Role::Origin => render(&load::<OriginConfig>(path, env)?),
        Role::Tracker => render(&load::<TrackerConfig>(path, env)?),
        Role::BuildIndex => render(&load::<BuildIndexConfig>(path, env)?),
        Role::Proxy => render(&load::<ProxyConfig>(path, env)?),
        Role::Dev => render(&load::<DevConfig>(path, env)?),
    }
}

/// Substitutes, types and validates a merged document.
fn resolve<T: RoleConfig>(layered: Layered, env: EnvLookup<'_>) -> Result<T, ConfigError> {
    let mut doc = layered.merged.clone();
    let mut failures = Vec::new();
    substitute(&mut doc, env, &KeyPath::root(), &mut failures);
    if !failures.is_empty() {
        let problems = failures
            .into_iter()
            .map(|(path, e)| Problem {
                file: layered.blame(&path).to_owned(),
                path: path.to_string(),
                message: e.message(),
                expected: Some(e.expected().to_owned()),
                value: None,
                hint: None,
            })
            .collect();
        return Err(ConfigError::Invalid { problems });
    }
    strip_nulls(&mut doc);
    crate::paths::resolve_relative(&mut doc, &layered);
    let mut config: T = decode(&layered, doc.clone())?;
    config.finish();
    let mut problems = Problems::default();
    config.check(&mut problems);
    if problems.items.is_empty() {
        return Ok(config);
    }
    let problems = problems
        .items
        .into_iter()
        .map(|found| Problem {
            file: layered.blame(&found.path).to_owned(),
            path: found.path.to_string(),
            value: scalar_text(&doc, &found.path),
            message: found.message,
            expected: found.expected,
            hint: found.hint,
        })
        .collect();
    Err(ConfigError::Invalid { problems })
}
