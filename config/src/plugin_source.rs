//! Where a plugin component comes from: a `.wasm` file, or an OCI artifact in a registry named
//! `oci://HOST[:PORT]/REPOSITORY@sha256:<hex>` (`shoal plugin push` makes one).
//!
//! A digest pins the exact bytes: the host verifies what the registry serves against it, so a
//! config names one component for good. A tag (`oci://HOST/REPOSITORY:TAG`) can move under a
//! running fleet, so it is refused unless `plugins.allow_tags: true` says the operator wants
//! that ([`check_pins`]).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::keypath::KeyPath;
use crate::validate::Problems;

/// The scheme that marks a registry source rather than a file path.
pub const OCI_SCHEME: &str = "oci://";

/// The form of a pinned registry source, quoted in errors.
pub const OCI_FORM: &str = "oci://HOST[:PORT]/REPOSITORY@sha256:<64 hex digits>";

/// A plugin component: a file, or an artifact in an OCI registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PluginSource {
    /// A `.wasm` file; relative paths are resolved against the config file's folder.
    File(PathBuf),
    /// `oci://...`: fetched from a registry at start and cached by digest.
    Oci(OciPlugin),
}

impl PluginSource {
    /// The file, for a file source.
    pub fn file(&self) -> Option<&Path> {
        match self {
            PluginSource::File(p) => Some(p),
            PluginSource::Oci(_) => None,
        }
    }
}

/// A plugin artifact in a registry: `HOST[:PORT]/REPOSITORY` and a digest or a tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OciPlugin {
    /// The registry.
    pub registry: RegistryHost,
    /// The repository within it, like `plugins/azure-blob`.
    pub repository: String,
    /// Which manifest of the repository.
    pub pin: OciPin,
    /// The tag written beside a digest (`REPOSITORY:TAG@sha256:...`, as Docker takes it): the
    /// digest pins, the tag only tells a wrong digest from a moved tag in the error.
    pub tag: Option<String>,
}

impl OciPlugin {
    /// The last component of the repository: a plugin's name in logs and errors.
    pub fn name(&self) -> &str {
        self.repository
            .rsplit('/')
            .next()
            .unwrap_or(&self.repository)
    }

    /// The same artifact pinned to `digest`, keeping its tag beside it.
    pub fn pinned(&self, digest: Sha256Digest) -> OciPlugin {
        let tag = match &self.pin {
            OciPin::Tag(tag) => Some(tag.clone()),
            OciPin::Digest(_) => self.tag.clone(),
        };
        OciPlugin {
            pin: OciPin::Digest(digest),
            tag,
            ..self.clone()
        }
    }
}

/// A manifest reference: the digest of the manifest (immutable) or a tag (mutable).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OciPin {
    /// `@sha256:<hex>`.
    Digest(Sha256Digest),
    /// `:TAG`, allowed only with `plugins.allow_tags: true`.
    Tag(String),
}

/// A `sha256:<64 lowercase hex digits>` digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest {
    hex: String,
}

impl Sha256Digest {
    /// The digest whose hex part is `hex`, when that is 64 lowercase hex digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then(
            || Sha256Digest {
                hex: hex.to_owned(),
            },
        )
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl FromStr for Sha256Digest {
    type Err = PluginSourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix("sha256:")
            .and_then(Sha256Digest::from_hex)
            .ok_or_else(|| PluginSourceError::Digest(clip(s)))
    }
}

/// A registry: a DNS name or IP address (IPv6 in brackets), and a port when not the scheme's.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RegistryHost {
    host: String,
    port: Option<u16>,
}

impl RegistryHost {
    /// The host name or IP address, without brackets, lowercase.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, when one was written.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// A loopback registry (`localhost`, 127.0.0.0/8, `::1`): spoken to over plain HTTP, as
    /// Docker does, since no traffic leaves the machine.
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost" || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }
}

impl fmt::Display for RegistryHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

impl FromStr for RegistryHost {
    type Err = PluginSourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PluginSourceError::Host(clip(s));
        let (host, port) = match s.strip_prefix('[') {
            Some(rest) => {
                let (ip, after) = rest.split_once(']').ok_or_else(bad)?;
                ip.parse::<Ipv6Addr>().map_err(|_| bad())?;
                let port = match after {
                    "" => None,
                    p => Some(p.strip_prefix(':').ok_or_else(bad)?),
                };
                (ip, port)
            }
            None => match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            },
        };
        let label = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if !s.starts_with('[') && (host.len() > 253 || !host.split('.').all(label)) {
            return Err(bad());
        }
        let port = match port {
            None => None,
            Some(p) => Some(
                Some(p)
                    .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|p| p.parse::<u16>().ok())
                    .filter(|p| *p != 0)
                    .ok_or_else(bad)?,
            ),
        };
        Ok(RegistryHost {
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Why a string is not a plugin source; each names the part and the form expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PluginSourceError {
    /// `oci://` with no `/REPOSITORY` after the host.
    #[error("{0:?} names no repository: expected {OCI_FORM}")]
    NoRepository(String),
    /// The registry part is not `host[:port]`.
    #[error("registry {0:?} is not host[:port], like ghcr.io or 127.0.0.1:5000")]
    Host(String),
    /// The repository breaks the distribution spec's grammar.
    #[error(
        "repository {0:?} is not a repository name: expected lowercase components like \
         plugins/my-store"
    )]
    Repository(String),
    /// The text after `@` is not a sha256 digest.
    #[error("digest {0:?} is not sha256:<64 lowercase hex digits>")]
    Digest(String),
    /// The text after `:` is not a tag.
    #[error("tag {0:?} is invalid: expected [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    Tag(String),
    /// Neither a digest nor a tag.
    #[error("{0:?} names no digest: expected {OCI_FORM}")]
    NoPin(String),
}

/// At most 200 characters of `s`, for errors that quote input.
fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

static REPOSITORY: LazyLock<Regex> = LazyLock::new(|| {
    let component = "[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*";
    Regex::new(&format!("^{component}(?:/{component})*$")).expect("a valid pattern")
});

static TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$").expect("a valid pattern"));

/// `HOST[:PORT]/REPOSITORY@sha256:<hex>` or `HOST[:PORT]/REPOSITORY:TAG`, without the scheme
/// (the form `shoal plugin push` and `pull` take).
impl FromStr for OciPlugin {
    type Err = PluginSourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (registry, rest) = s
            .split_once('/')
            .filter(|(_, rest)| !rest.is_empty())
            .ok_or_else(|| PluginSourceError::NoRepository(clip(s)))?;
        let registry: RegistryHost = registry.parse()?;
        // `REPOSITORY:TAG`, or `REPOSITORY` and no tag.
        let split_tag = |name: &'_ str| -> Result<(String, Option<String>), PluginSourceError> {
            match name.rsplit_once(':') {
                Some((repository, tag)) if !tag.contains('/') => {
                    if !TAG.is_match(tag) {
                        return Err(PluginSourceError::Tag(clip(tag)));
                    }
                    Ok((repository.to_owned(), Some(tag.to_owned())))
                }
                _ => Ok((name.to_owned(), None)),
            }
        };
        let (repository, pin, tag) = match rest.split_once('@') {
            Some((name, digest)) => {
                let (repository, tag) = split_tag(name)?;
                (repository, OciPin::Digest(digest.parse()?), tag)
            }
            None => match split_tag(rest)? {
                (repository, Some(tag)) => (repository, OciPin::Tag(tag), None),
                (_, None) => return Err(PluginSourceError::NoPin(clip(s))),
            },
        };
        let repository = repository.as_str();
        if repository.len() > 255 || !REPOSITORY.is_match(repository) {
            return Err(PluginSourceError::Repository(clip(repository)));
        }
        Ok(OciPlugin {
            registry,
            repository: repository.to_owned(),
            pin,
            tag,
        })
    }
}

/// Written without the scheme, as it is parsed.
impl fmt::Display for OciPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        match &self.pin {
            OciPin::Digest(d) => write!(f, "@{d}"),
            OciPin::Tag(t) => write!(f, ":{t}"),
        }
    }
}

impl FromStr for PluginSource {
    type Err = PluginSourceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix(OCI_SCHEME) {
            Some(reference) => Ok(PluginSource::Oci(reference.parse()?)),
            None => Ok(PluginSource::File(PathBuf::from(s))),
        }
    }
}

impl fmt::Display for PluginSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PluginSource::File(p) => write!(f, "{}", p.display()),
            PluginSource::Oci(o) => write!(f, "{OCI_SCHEME}{o}"),
        }
    }
}

impl<'de> Deserialize<'de> for PluginSource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for PluginSource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RegistryHost {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for RegistryHost {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Refuses a tag-pinned source at its key unless `allow_tags`: a tag can move, so two starts
/// of the same config could run different code.
pub(crate) fn check_pins<'a>(
    sources: impl IntoIterator<Item = (KeyPath, &'a PluginSource)>,
    allow_tags: bool,
    problems: &mut Problems,
) {
    for (at, source) in sources {
        if let PluginSource::Oci(oci) = source
            && let OciPin::Tag(tag) = &oci.pin
            && !allow_tags
        {
            problems.at(
                &at,
                format!(
                    "{source} names the tag {tag:?}, which can move: pin the digest \
                     `shoal plugin push` printed, or set plugins.allow_tags: true"
                ),
                OCI_FORM,
            );
        }
    }
}

/// The `plugin:` source of every `plugin` backend, at its key.
pub(crate) fn backend_sources(
    backends: &[crate::backend::BackendEntry],
) -> impl Iterator<Item = (KeyPath, &PluginSource)> {
    backends
        .iter()
        .enumerate()
        .filter_map(|(i, entry)| match &entry.backend {
            crate::backend::Backend::Plugin(p) => Some((
                KeyPath::root()
                    .key("backends")
                    .index(i)
                    .key("backend")
                    .key("plugin")
                    .key("plugin"),
                &p.plugin,
            )),
            _ => None,
        })
}

/// A health check's `policy:` source at `at` (`cluster.healthcheck.policy`, ...), if set.
pub(crate) fn policy_source<'a>(
    policy: Option<&'a PluginSource>,
    at: &[&str],
) -> Option<(KeyPath, &'a PluginSource)> {
    let key = at.iter().fold(KeyPath::root(), |k, part| k.key(part));
    policy.map(|p| (key, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn oci(s: &str) -> Result<OciPlugin, PluginSourceError> {
        match s.parse::<PluginSource>()? {
            PluginSource::Oci(o) => Ok(o),
            PluginSource::File(p) => panic!("{s} parsed as the file {}", p.display()),
        }
    }

    #[test]
    fn a_pinned_reference_parses_into_its_parts_and_prints_back() {
        let s = format!("oci://127.0.0.1:5000/plugins/my-store@sha256:{HEX}");
        let o = oci(&s).unwrap();
        assert_eq!(o.registry.host(), "127.0.0.1");
        assert_eq!(o.registry.port(), Some(5000));
        assert!(o.registry.is_loopback());
        assert_eq!(o.repository, "plugins/my-store");
        assert_eq!(o.name(), "my-store");
        assert_eq!(o.pin, OciPin::Digest(Sha256Digest::from_hex(HEX).unwrap()));
        assert_eq!(PluginSource::Oci(o).to_string(), s);
    }

    #[test]
    fn ipv6_hosts_tags_and_default_ports_parse() {
        let o = oci(&format!("oci://[::1]:5000/a@sha256:{HEX}")).unwrap();
        assert_eq!(o.registry.host(), "::1");
        assert!(o.registry.is_loopback());
        assert_eq!(o.registry.to_string(), "[::1]:5000");
        let t = oci("oci://GHCR.io/org/plugin:v1.2").unwrap();
        assert_eq!(t.registry.to_string(), "ghcr.io");
        assert!(!t.registry.is_loopback());
        assert_eq!(t.pin, OciPin::Tag("v1.2".into()));
        // A tag beside a digest: the digest pins, the tag is kept for errors and printing.
        let both = oci(&format!("oci://h:5000/org/p:v1@sha256:{HEX}")).unwrap();
        assert_eq!(both.repository, "org/p");
        assert_eq!(both.tag.as_deref(), Some("v1"));
        assert!(matches!(both.pin, OciPin::Digest(_)));
        assert_eq!(both.to_string(), format!("h:5000/org/p:v1@sha256:{HEX}"));
        assert!(oci(&format!("oci://h/p:-x@sha256:{HEX}")).is_err());
    }

    #[test]
    fn anything_without_the_scheme_is_a_file() {
        assert_eq!(
            "plugins/x.wasm".parse::<PluginSource>().unwrap(),
            PluginSource::File("plugins/x.wasm".into())
        );
    }

    #[test]
    fn each_malformed_part_is_named_with_the_form_expected() {
        let cases = [
            ("oci://ghcr.io", "names no repository"),
            ("oci://ghcr.io/", "names no repository"),
            ("oci://bad host/x@sha256:00", "registry \"bad host\""),
            ("oci://h:0/x:v1", "registry \"h:0\""),
            ("oci://h/Upper@sha256:00", "digest \"sha256:00\""),
            (
                &format!("oci://h/Upper@sha256:{HEX}"),
                "repository \"Upper\"",
            ),
            ("oci://h/x@md5:abc", "sha256:<64 lowercase hex digits>"),
            ("oci://h/x", "names no digest"),
            ("oci://h:5000/x", "names no digest"),
            ("oci://h/x:-bad", "tag \"-bad\""),
        ];
        for (input, says) in cases {
            let e = input.parse::<PluginSource>().unwrap_err().to_string();
            assert!(e.contains(says), "{input}: {e}");
        }
        let no_pin = "oci://h/x".parse::<PluginSource>().unwrap_err().to_string();
        assert!(no_pin.contains(OCI_FORM), "{no_pin}");
    }

    #[test]
    fn a_tag_is_refused_at_its_key_unless_allowed() {
        let tagged: PluginSource = "oci://ghcr.io/org/p:v1".parse().unwrap();
        let pinned: PluginSource = format!("oci://ghcr.io/org/p@sha256:{HEX}").parse().unwrap();
        let at = KeyPath::root().key("plugin");
        let mut problems = Problems::default();
        check_pins(
            [(at.clone(), &tagged), (at.clone(), &pinned)],
            false,
            &mut problems,
        );
        assert_eq!(problems.items.len(), 1);
        assert!(problems.items[0].message.contains("plugins.allow_tags"));
        let mut allowed = Problems::default();
        check_pins([(at, &tagged)], true, &mut allowed);
        assert!(allowed.items.is_empty());
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics_and_what_parses_prints_back(s in "oci://[a-z0-9:./@\\[\\]_-]{0,90}") {
            if let Ok(source) = s.parse::<PluginSource>() {
                let again: PluginSource = source.to_string().parse().unwrap();
                proptest::prop_assert_eq!(again, source);
            }
        }

        #[test]
        fn every_pinned_reference_round_trips(
            host in "[a-z]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z]{2,5})?",
            port in proptest::option::of(1u16..),
            repo in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,2}",
            hex in "[0-9a-f]{64}",
        ) {
            let host = match port {
                Some(p) => format!("{host}:{p}"),
                None => host,
            };
            let s = format!("oci://{host}/{repo}@sha256:{hex}");
            let source: PluginSource = s.parse().unwrap();
            proptest::prop_assert_eq!(source.to_string(), s);
        }
    }
}
