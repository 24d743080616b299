//! Storage backends for origins and build-indexes (`backends:`): a list of namespace patterns,
//! the first match wins, each naming exactly one backend kind.

mod fs;
mod gcs;
mod hdfs;
mod http;
mod plugin;
mod registry;
mod s3;

use std::fmt;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_yaml_ng::Value;

pub use fs::FsBackend;
pub use gcs::GcsBackend;
pub use hdfs::HdfsBackend;
pub use http::{BackoffConfig, HttpBackend};
pub use plugin::PluginBackend;
pub use registry::{
    BasicAuth, EcrConfig, RegistryBackend, RegistrySecurity, TlsClientConfig, TlsConfig,
};
pub use s3::S3Backend;

use crate::auth::AuthConfig;
use crate::bandwidth::BandwidthConfig;
use crate::decode::closest;
use crate::keypath::KeyPath;
use crate::validate::{Problems, Validate};

/// One `backends:` item: which namespaces it serves, from where, at what rate.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackendEntry {
    /// Which repositories this entry serves, e.g. `library/.*`.
    pub namespace: NamespacePattern,
    /// Where their blobs or tags are stored.
    pub backend: Backend,
    /// Limits on traffic to and from the backend; off by default.
    #[serde(default)]
    pub bandwidth: BandwidthConfig,
}

/// A namespace regular expression, compiled when the config loads so a typo fails at startup.
///
/// It must match the whole namespace: `library/.*` does not match `evil/library/x`. (Kraken's
/// matching is unanchored; every pattern in its docs ends in `.*`, where the two agree.)
#[derive(Clone)]
pub struct NamespacePattern {
    source: String,
    regex: Regex,
}

impl NamespacePattern {
    /// Compiles `source`, anchored at both ends.
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        // Compile the pattern as written first, so an error points into the user's text rather
        // than into the anchoring wrapper.
        Regex::new(source)?;
        let regex = Regex::new(&format!("^(?:{source})$"))?;
        Ok(NamespacePattern {
            source: source.to_owned(),
            regex,
        })
    }

    /// `.*`: every namespace, for default backends.
    pub fn any() -> Self {
        // A constant pattern, not input: it compiles or the test below fails.
        NamespacePattern::new(".*").expect("`.*` is a valid regex")
    }

    /// True when this entry serves `namespace`.
    pub fn matches(&self, namespace: &str) -> bool {
        self.regex.is_match(namespace)
    }

    /// The pattern as written in the config.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for NamespacePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NamespacePattern({:?})", self.source)
    }
}

impl PartialEq for NamespacePattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for NamespacePattern {}

impl Serialize for NamespacePattern {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for NamespacePattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        NamespacePattern::new(&source).map_err(|e| {
            // The regex crate explains the error over several lines; keep them.
            serde::de::Error::custom(format!(
                "invalid regular expression {source:?}: {e}, expected a regular expression like library/.*"
            ))
        })
    }
}

/// How a blob digest or tag becomes an object path in the backend, as Kraken's `name_path`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NamePath {
    /// The name as given.
    #[default]
    Identity,
    /// `<repo>/_manifests/tags/<tag>/current/link`, Docker registry layout for tags.
    DockerTag,
    /// `docker/registry/v2/blobs/sha256/<2 hex>/<digest>/data`, Docker registry layout for blobs.
    ShardedDockerBlob,
}

/// A storage backend: exactly one key under `backend:` names its kind.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "RawBackend", into = "RawBackend")]
pub enum Backend {
    /// Blobs from a Docker registry, read-only (`registry_blob`).
    RegistryBlob(RegistryBackend),
    /// Tags from a Docker registry, read-only (`registry_tag`).
    RegistryTag(RegistryBackend),
    /// Blobs from an HTTP server by URL template, read-only (`http`).
    Http(HttpBackend),
    /// Amazon S3 or an S3-compatible store (`s3`).
    S3(S3Backend),
    /// Google Cloud Storage (`gcs`).
    Gcs(GcsBackend),
    /// HDFS over WebHDFS (`hdfs`).
    Hdfs(HdfsBackend),
    /// A local folder (`fs`).
    Fs(FsBackend),
    /// A user-supplied WebAssembly component (`plugin`).
    Plugin(PluginBackend),
}

/// Every kind, in the order errors list them.
const KINDS: [&str; 8] = [
    "registry_blob",
    "registry_tag",
    "http",
    "s3",
    "gcs",
    "hdfs",
    "fs",
    "plugin",
];

impl Backend {
    /// The YAML key of this kind, which is also the name of the built-in plugin that runs it.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::RegistryBlob(_) => "registry_blob",
            Backend::RegistryTag(_) => "registry_tag",
            Backend::Http(_) => "http",
            Backend::S3(_) => "s3",
            Backend::Gcs(_) => "gcs",
            Backend::Hdfs(_) => "hdfs",
            Backend::Fs(_) => "fs",
            Backend::Plugin(_) => "plugin",
        }
    }

    /// Hosts the backend may reach beyond the ones its own settings name; the host grants
    /// outbound HTTP only to these (deny by default).
    pub fn allowed_hosts(&self) -> &[String] {
        match self {
            Backend::RegistryBlob(c) | Backend::RegistryTag(c) => &c.allowed_hosts,
            Backend::Http(c) => &c.allowed_hosts,
            Backend::S3(c) => &c.allowed_hosts,
            Backend::Gcs(c) => &c.allowed_hosts,
            Backend::Hdfs(c) => &c.allowed_hosts,
            Backend::Fs(_) => &[],
            Backend::Plugin(c) => &c.allowed_hosts,
        }
    }

    /// The block under the kind's key with secrets in clear, as the host hands it to the
    /// plugin at instantiation (the plugin never reads files itself).
    pub fn plugin_config(&self) -> Value {
        let value = crate::secret::with_secrets_exposed(|| serde_yaml_ng::to_value(self));
        match value {
            Ok(Value::Mapping(mut map)) => map.remove(self.kind()).unwrap_or(Value::Null),
            _ => Value::Null,
        }
    }
}

/// The YAML shape; converting it checks that exactly one kind is set.
#[derive(Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registry_blob: Option<RegistryBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    registry_tag: Option<RegistryBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    http: Option<HttpBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    s3: Option<S3Backend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    gcs: Option<GcsBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hdfs: Option<HdfsBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fs: Option<FsBackend>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plugin: Option<PluginBackend>,
}

impl TryFrom<RawBackend> for Backend {
    type Error = String;

    fn try_from(raw: RawBackend) -> Result<Self, Self::Error> {
        let candidates = [
            raw.registry_blob.map(Backend::RegistryBlob),
            raw.registry_tag.map(Backend::RegistryTag),
            raw.http.map(Backend::Http),
            raw.s3.map(Backend::S3),
            raw.gcs.map(Backend::Gcs),
            raw.hdfs.map(Backend::Hdfs),
            raw.fs.map(Backend::Fs),
            raw.plugin.map(Backend::Plugin),
        ];
        let mut found: Vec<Backend> = candidates.into_iter().flatten().collect();
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(format!(
                "no backend kind given, expected one key: {}",
                quoted(&KINDS)
            )),
            _ => {
                let kinds: Vec<&str> = found.iter().map(Backend::kind).collect();
                Err(format!(
                    "{} backend kinds given ({}), expected exactly one; use one `backends:` item per kind",
                    kinds.len(),
                    quoted(&kinds)
                ))
            }
        }
    }
}

impl From<Backend> for RawBackend {
    fn from(backend: Backend) -> Self {
        let mut raw = RawBackend::default();
        match backend {
            Backend::RegistryBlob(c) => raw.registry_blob = Some(c),
            Backend::RegistryTag(c) => raw.registry_tag = Some(c),
            Backend::Http(c) => raw.http = Some(c),
            Backend::S3(c) => raw.s3 = Some(c),
            Backend::Gcs(c) => raw.gcs = Some(c),
            Backend::Hdfs(c) => raw.hdfs = Some(c),
            Backend::Fs(c) => raw.fs = Some(c),
            Backend::Plugin(c) => raw.plugin = Some(c),
        }
        raw
    }
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Validate for Backend {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        let at = at.key(self.kind());
        match self {
            Backend::RegistryBlob(c) | Backend::RegistryTag(c) => c.validate(&at, problems),
            Backend::Http(c) => c.validate(&at, problems),
            Backend::S3(c) => c.validate(&at, problems),
            Backend::Gcs(c) => c.validate(&at, problems),
            Backend::Hdfs(c) => c.validate(&at, problems),
            Backend::Fs(c) => c.validate(&at, problems),
            Backend::Plugin(c) => c.validate(&at, problems),
        }
        for (i, host) in self.allowed_hosts().iter().enumerate() {
            problems.require(
                !host.is_empty() && !host.contains(char::is_whitespace),
                &at.key("allowed_hosts").index(i),
                "not a host name",
                "a host or host:port, like s3.us-west-1.amazonaws.com",
            );
        }
    }
}

/// Checks every `backends:` item, including that each `username` has an `auth:` entry of the
/// backend's kind.
pub(crate) fn validate_backends(
    backends: &[BackendEntry],
    auth: &AuthConfig,
    problems: &mut Problems,
) {
    let list = KeyPath::root().key("backends");
    for (i, entry) in backends.iter().enumerate() {
        let at = list.index(i);
        entry.bandwidth.validate(&at.key("bandwidth"), problems);
        entry.backend.validate(&at.key("backend"), problems);
        let (kind, user, known): (&str, &str, Vec<&str>) = match &entry.backend {
            Backend::S3(c) => (
                "s3",
                &c.username,
                auth.s3.keys().map(String::as_str).collect(),
            ),
            Backend::Gcs(c) => (
                "gcs",
                &c.username,
                auth.gcs.keys().map(String::as_str).collect(),
            ),
            _ => continue,
        };
        if !known.contains(&user) {
            let path = at.key("backend").key(kind).key("username");
            let expected = if known.is_empty() {
                format!("an `auth.{kind}.{user}` entry holding its credentials")
            } else {
                format!("one of the users under `auth.{kind}`: {}", quoted(&known))
            };
            let found = problems.at(
                &path,
                format!("no credentials for user `{user}` under `auth.{kind}`"),
                &expected,
            );
            found.hint = closest(user, &known).map(|u| format!("did you mean `{u}`?"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_patterns_match_whole_names() {
        let p = NamespacePattern::new("library/.*").unwrap();
        assert!(p.matches("library/ubuntu"));
        assert!(!p.matches("evil/library/x"));
        assert!(NamespacePattern::new(".*").unwrap().matches(""));
        assert!(NamespacePattern::new("(").is_err());
    }
}
