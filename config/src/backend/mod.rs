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

/// What a kind's settings tell the rest of shoal, so that code outside this module asks the
/// settings instead of matching on the kind. Every default is "nothing": a new kind implements
/// only what it has.
pub trait BackendKind {
    /// Hosts the backend may reach beyond the ones its own settings name (`allowed_hosts:`).
    fn allowed_hosts(&self) -> &[String] {
        &[]
    }

    /// How digests and tags become object names, for kinds with a `name_path`.
    fn name_path(&self) -> Option<NamePath> {
        None
    }

    /// The per-request timeout of its outbound HTTP, when its settings set one.
    fn http_timeout(&self) -> Option<std::time::Duration> {
        None
    }
}

/// The table of backend kinds: one row per kind, `Variant(Settings) = yaml_key => "plugin"`,
/// where `plugin` names the built-in component that runs it (`plugins/<plugin>`, embedded by
/// `host/build.rs`; `plugin` for a user's component named by path). Adding a built-in backend
/// is one row here, its settings type, and its plugin folder.
macro_rules! backend_kinds {
    ($( $(#[$doc:meta])* $variant:ident($settings:ty) = $key:ident => $plugin:literal, )*) => {
        /// A storage backend: exactly one key under `backend:` names its kind.
        #[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
        #[serde(try_from = "RawBackend", into = "RawBackend")]
        pub enum Backend {
            $( $(#[$doc])* $variant($settings), )*
        }

        /// Every kind, in the order errors list them.
        const KINDS: &[&str] = &[$( stringify!($key) ),*];

        impl Backend {
            /// The YAML key of this kind.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( Backend::$variant(_) => stringify!($key), )*
                }
            }

            /// The built-in component that runs this kind (`plugin` for a user's component).
            pub fn plugin(&self) -> &'static str {
                match self {
                    $( Backend::$variant(_) => $plugin, )*
                }
            }

            /// The kind's settings, as what they tell the rest of shoal.
            pub fn settings(&self) -> &dyn BackendKind {
                match self {
                    $( Backend::$variant(c) => c, )*
                }
            }

            /// The kind's settings, as what validates them.
            fn validated(&self) -> &dyn Validate {
                match self {
                    $( Backend::$variant(c) => c, )*
                }
            }
        }

        /// The YAML shape; converting it checks that exactly one kind is set.
        #[derive(Default, Deserialize, Serialize)]
        #[serde(deny_unknown_fields)]
        struct RawBackend {
            $(
                #[serde(default, skip_serializing_if = "Option::is_none")]
                $key: Option<$settings>,
            )*
        }

        impl TryFrom<RawBackend> for Backend {
            type Error = String;

            fn try_from(raw: RawBackend) -> Result<Self, Self::Error> {
                let candidates = [$( raw.$key.map(Backend::$variant), )*];
                one_kind(candidates.into_iter().flatten().collect())
            }
        }

        impl From<Backend> for RawBackend {
            fn from(backend: Backend) -> Self {
                let mut raw = RawBackend::default();
                match backend {
                    $( Backend::$variant(c) => raw.$key = Some(c), )*
                }
                raw
            }
        }
    };
}

backend_kinds! {
    /// Blobs from a Docker registry, read-only (`registry_blob`).
    RegistryBlob(RegistryBackend) = registry_blob => "registry",
    /// Tags from a Docker registry, read-only (`registry_tag`).
    RegistryTag(RegistryBackend) = registry_tag => "registry",
    /// Blobs from an HTTP server by URL template, read-only (`http`).
    Http(HttpBackend) = http => "http",
    /// Amazon S3 or an S3-compatible store (`s3`).
    S3(S3Backend) = s3 => "s3",
    /// Google Cloud Storage (`gcs`).
    Gcs(GcsBackend) = gcs => "gcs",
    /// HDFS over WebHDFS (`hdfs`).
    Hdfs(HdfsBackend) = hdfs => "hdfs",
    /// A local folder (`fs`).
    Fs(FsBackend) = fs => "fs",
    /// A user-supplied WebAssembly component (`plugin`).
    Plugin(PluginBackend) = plugin => "plugin",
}

impl Backend {
    /// Hosts the backend may reach beyond the ones its own settings name; the host grants
    /// outbound HTTP only to these (deny by default).
    pub fn allowed_hosts(&self) -> &[String] {
        self.settings().allowed_hosts()
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

/// The one backend of a `backend:` block, or why there is not exactly one.
fn one_kind(mut found: Vec<Backend>) -> Result<Backend, String> {
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(format!(
            "no backend kind given, expected one key: {}",
            quoted(KINDS)
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
        self.validated().validate(&at, problems);
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
    // Kraken's `aws:` label names the account the keys belong to: it must be the entry's own.
    for (user, entry) in &auth.s3 {
        if let Some(label) = &entry.s3.aws {
            problems.require(
                label == user,
                &KeyPath::root()
                    .key("auth")
                    .key("s3")
                    .key(user)
                    .key("s3")
                    .key("aws"),
                &format!("is `{label}`, but these keys are under `auth.s3.{user}`"),
                &format!("`aws: {user}` (the user name the keys sit under), or no `aws:`"),
            );
        }
    }
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
            Backend::Plugin(c) => match &c.username {
                Some(user) => (
                    "plugin",
                    user,
                    auth.plugin.keys().map(String::as_str).collect(),
                ),
                None => continue,
            },
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
