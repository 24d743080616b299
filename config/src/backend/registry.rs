//! `registry_blob` / `registry_tag`: a Docker registry as a read-only backend, which is how
//! shoal mirrors docker.io, ghcr.io or ECR.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::duration::Duration;
use crate::keypath::KeyPath;
use crate::secret::Secret;
use crate::validate::{Problems, Validate};

/// Where the upstream registry is and how to authenticate to it.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryBackend {
    /// Registry host, e.g. `index.docker.io` or `host.docker.internal:5000`.
    pub address: String,
    /// Per-request timeout [60s].
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Credentials and TLS.
    #[serde(default)]
    pub security: RegistrySecurity,
    /// Extra hosts the backend may reach, e.g. the CDN a registry redirects blob reads to.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

/// `security:` of a registry backend.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySecurity {
    /// Username and password; empty strings mean anonymous pulls.
    pub basic: Option<BasicAuth>,
    /// TLS to the registry.
    pub tls: TlsConfig,
    /// A Docker credential helper, e.g. `ecr-login` (Docker's own camelCase key).
    #[serde(rename = "credsStore")]
    pub creds_store: Option<String>,
    /// Where `credsStore: ecr-login` asks ECR for a login, when the address does not say.
    #[serde(skip_serializing_if = "EcrConfig::is_default")]
    pub ecr: EcrConfig,
}

/// `security.ecr` (shoal's own key): the ECR API endpoint and region for `ecr-login`. Both
/// default from an ECR address (`<account>.dkr.ecr.<region>.amazonaws.com`); set them for a
/// registry reached by another name, a VPC endpoint, or a test's fake ECR.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct EcrConfig {
    /// ECR API URL, e.g. `https://api.ecr.us-west-2.amazonaws.com` [from the region].
    pub endpoint: Option<String>,
    /// AWS region to sign for [from the address].
    pub region: Option<String>,
}

impl EcrConfig {
    fn is_default(&self) -> bool {
        *self == EcrConfig::default()
    }
}

/// `security.basic`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: Secret,
}

/// `security.tls`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Client-side settings.
    pub client: TlsClientConfig,
}

/// `security.tls.client`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsClientConfig {
    /// Talk plain HTTP, for a local insecure registry [false].
    pub disabled: bool,
    /// Refused by `config check` and at start: the plugin sandbox's client presents no
    /// certificate (kept so the refusal names the key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Refused, as `cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// Refused, as `cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

impl Validate for RegistryBackend {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.require(
            !self.address.trim().is_empty(),
            &at.key("address"),
            "is empty",
            "a registry host such as index.docker.io",
        );
        // The plugin's HTTP client (the host's wasi:http) trusts the web PKI roots and presents
        // no client certificate: a setting that would be ignored is refused, at its key.
        let client = &self.security.tls.client;
        let tls_at = at.key("security").key("tls").key("client");
        for (key, set) in [
            ("cert", client.cert.is_some()),
            ("key", client.key.is_some()),
            ("ca", client.ca.is_some()),
        ] {
            problems.require(
                !set,
                &tls_at.key(key),
                "is not supported: the registry backends reach upstreams through the plugin \
                 sandbox's HTTPS client, which presents no client certificate and trusts the \
                 system's web PKI roots only",
                "no `cert`, `key` or `ca` (`disabled: true` for a plain-HTTP registry)",
            );
        }
        if let Some(store) = &self.security.creds_store {
            problems.require(
                store.is_empty() || store == "ecr-login",
                &at.key("security").key("credsStore"),
                "is not a supported credential store",
                "ecr-login (no credential helper program runs inside the plugin sandbox)",
            );
        }
    }
}

impl super::BackendKind for RegistryBackend {
    fn allowed_hosts(&self) -> &[String] {
        &self.allowed_hosts
    }

    fn http_timeout(&self) -> Option<std::time::Duration> {
        Some(self.timeout.into())
    }
}
