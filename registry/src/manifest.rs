//! Manifest parsing: enough of the OCI image spec and Docker schema 2 to validate a pushed
//! manifest, find the blobs and child manifests it references, and index its `subject`.
//!
//! The stored bytes are never re-serialized: what a client pushes is what it pulls.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError};

/// OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Every manifest media type shoal stores.
pub const MANIFEST_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
/// Largest manifest accepted (the spec asks registries to take at least 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// A content descriptor as it appears in manifests and in the referrers response.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    /// Media type of the referenced content.
    pub media_type: String,
    /// Digest of the referenced content.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
    /// Where foreign layers live; such layers need not be in the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub urls: Option<Vec<String>>,
    /// Artifact type, for referrers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    /// Annotations, for referrers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
    /// The platform an index's entry runs on (boxed: most descriptors have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Box<Platform>>,
}

/// The platform of an image in an index (`os`, `architecture`, `variant`), and the filter a
/// user writes as `os/architecture[/variant]` (`linux/amd64`, `linux/arm64/v8`).
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct Platform {
    /// The CPU architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// The operating system (`linux`, `windows`).
    pub os: String,
    /// The CPU variant (`v8` of `arm64`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Whether an image of this platform is what `wanted` asks for: the same OS and
    /// architecture, and the same variant when `wanted` names one.
    pub fn matches(&self, wanted: &Platform) -> bool {
        self.os == wanted.os
            && self.architecture == wanted.architecture
            && (wanted.variant.is_none() || self.variant == wanted.variant)
    }
}

/// A platform filter that is not `os/architecture[/variant]`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "platform {0:?} is not os/architecture[/variant], like linux/amd64 or linux/arm64/v8 \
     (lowercase letters, digits, '_', '.' and '-')"
)]
pub struct PlatformError(String);

impl std::str::FromStr for Platform {
    type Err = PlatformError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let part = |p: &str| {
            !p.is_empty()
                && p.len() <= 64
                && p.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
                })
        };
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if parts.iter().all(|p| part(p)) => Ok(Platform {
                os: (*os).to_owned(),
                architecture: (*arch).to_owned(),
                variant: parts.get(2).map(|v| (*v).to_owned()),
            }),
            _ => Err(PlatformError(s.chars().take(160).collect())),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawManifest {
    schema_version: Option<i64>,
    media_type: Option<String>,
    artifact_type: Option<String>,
    config: Option<Descriptor>,
    layers: Option<Vec<Descriptor>>,
    manifests: Option<Vec<Descriptor>>,
    subject: Option<Descriptor>,
    annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What a manifest is: an image (config + layers) or an index of other manifests.
#[derive(Clone, Debug, PartialEq)]
pub enum ManifestKind {
    /// Image manifest: blobs it needs.
    Image {
        /// The config descriptor.
        config: Descriptor,
        /// Layer descriptors.
        layers: Vec<Descriptor>,
    },
    /// Index / manifest list: child manifests.
    Index {
        /// Child manifest descriptors.
        manifests: Vec<Descriptor>,
    },
}

/// A validated manifest.
#[derive(Clone, Debug, PartialEq)]
pub struct Manifest {
    /// Media type it is stored and served with.
    pub media_type: String,
    /// Image or index.
    pub kind: ManifestKind,
    /// The manifest this one refers to, for the referrers API.
    pub subject: Option<Descriptor>,
    /// Artifact type as the referrers API reports it.
    pub artifact_type: Option<String>,
    /// Top-level annotations.
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

fn invalid(msg: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestInvalid, msg)
}

impl Manifest {
    /// Parses and validates manifest bytes pushed with `content_type`.
    pub fn parse(bytes: &[u8], content_type: Option<&str>) -> Result<Manifest, RegistryError> {
        let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| {
            invalid(format!(
                "manifest is not valid JSON of the expected shape: {e}"
            ))
        })?;
        if raw.schema_version != Some(2) {
            return Err(invalid(format!(
                "schemaVersion is {:?}: expected 2",
                raw.schema_version
            )));
        }
        let content_type = content_type
            .map(|c| c.split(';').next().unwrap_or("").trim())
            .filter(|c| !c.is_empty() && MANIFEST_TYPES.contains(c));
        let media_type = match (raw.media_type.as_deref(), content_type) {
            (Some(body), Some(header)) if body != header => {
                return Err(invalid(format!(
                    "mediaType {body:?} in the body does not match Content-Type {header:?}"
                )));
            }
            (Some(body), _) => body.to_owned(),
            (None, Some(header)) => header.to_owned(),
            (None, None) if raw.manifests.is_some() => OCI_INDEX.to_owned(),
            (None, None) => OCI_MANIFEST.to_owned(),
        };
        let kind = match media_type.as_str() {
            OCI_MANIFEST | DOCKER_MANIFEST => {
                if raw.manifests.is_some() {
                    return Err(invalid("an image manifest must not have `manifests`"));
                }
                let config = raw
                    .config
                    .ok_or_else(|| invalid("image manifest has no `config`"))?;
                ManifestKind::Image {
                    config,
                    layers: raw.layers.unwrap_or_default(),
                }
            }
            OCI_INDEX | DOCKER_LIST => {
                if raw.config.is_some() || raw.layers.is_some() {
                    return Err(invalid("an index must not have `config` or `layers`"));
                }
                let manifests = raw
                    .manifests
                    .ok_or_else(|| invalid("index has no `manifests`"))?;
                ManifestKind::Index { manifests }
            }
            other => {
                return Err(invalid(format!(
                    "media type {other:?} is not supported: expected one of {}",
                    MANIFEST_TYPES.join(", ")
                )));
            }
        };
        let artifact_type = raw.artifact_type.or_else(|| match &kind {
            ManifestKind::Image { config, .. } => Some(config.media_type.clone()),
            ManifestKind::Index { .. } => None,
        });
        Ok(Manifest {
            media_type,
            kind,
            subject: raw.subject,
            artifact_type,
            annotations: raw.annotations,
        })
    }

    /// Blobs this manifest needs in the same repository (foreign layers with `urls` excepted).
    pub fn required_blobs(&self) -> Vec<&Digest> {
        match &self.kind {
            ManifestKind::Image { config, layers } => std::iter::once(config)
                .chain(
                    layers
                        .iter()
                        .filter(|l| l.urls.as_ref().is_none_or(|u| u.is_empty())),
                )
                .map(|d| &d.digest)
                .collect(),
            ManifestKind::Index { .. } => Vec::new(),
        }
    }

    /// Everything this manifest points at in its repository but its `subject`: config and
    /// every layer (foreign ones too, which the repository may hold), or the child manifests.
    /// What the garbage collector keeps while the manifest lives.
    pub fn references(&self) -> impl Iterator<Item = &Digest> + Clone {
        let (config, items) = match &self.kind {
            ManifestKind::Image { config, layers } => (Some(config), layers),
            ManifestKind::Index { manifests } => (None, manifests),
        };
        config.into_iter().chain(items).map(|d| &d.digest)
    }

    /// Child manifests an index needs in the same repository.
    pub fn required_manifests(&self) -> Vec<&Digest> {
        match &self.kind {
            ManifestKind::Index { manifests } => manifests.iter().map(|d| &d.digest).collect(),
            ManifestKind::Image { .. } => Vec::new(),
        }
    }
}

/// Whether a client's `Accept` header values allow `media_type`. No header, an empty one, or a
/// wildcard accepts everything, as real clients expect.
pub fn accepts(accept: &[&str], media_type: &str) -> bool {
    let mut any = false;
    for value in accept {
        for item in value.split(',') {
            let t = item.split(';').next().unwrap_or("").trim();
            if t.is_empty() {
                continue;
            }
            any = true;
            if t == media_type || t == "*/*" || t == "application/*" {
                return true;
            }
        }
    }
    !any
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn image(media: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{media}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{D1}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{D2}","size":3}}]}}"#
        )
    }

    #[test]
    fn parses_image_manifests_of_both_families() {
        for media in [OCI_MANIFEST, DOCKER_MANIFEST] {
            let m = Manifest::parse(image(media).as_bytes(), Some(media)).unwrap();
            assert_eq!(m.media_type, media);
            assert_eq!(m.required_blobs().len(), 2);
            assert_eq!(
                m.artifact_type.as_deref(),
                Some("application/vnd.oci.image.config.v1+json")
            );
        }
    }

    #[test]
    fn media_type_comes_from_header_when_body_has_none() {
        let body = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":5}}]}}"#
        );
        let m = Manifest::parse(body.as_bytes(), Some(DOCKER_LIST)).unwrap();
        assert_eq!(m.media_type, DOCKER_LIST);
        assert_eq!(m.required_manifests().len(), 1);
        let m = Manifest::parse(body.as_bytes(), None).unwrap();
        assert_eq!(m.media_type, OCI_INDEX);
    }

    #[test]
    fn rejects_malformed() {
        let cases = [
            "not json".to_owned(),
            "{}".to_owned(),
            r#"{"schemaVersion":1}"#.to_owned(),
            r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}"#
                .to_owned(),
            image(OCI_MANIFEST).replace(D1, "sha256:abc"),
            image("application/x-unknown"),
        ];
        for c in cases {
            let e = Manifest::parse(c.as_bytes(), None).unwrap_err();
            assert_eq!(e.code, ErrorCode::ManifestInvalid, "{c}");
        }
        let e = Manifest::parse(image(OCI_MANIFEST).as_bytes(), Some(DOCKER_MANIFEST)).unwrap_err();
        assert_eq!(e.code, ErrorCode::ManifestInvalid);
    }

    #[test]
    fn platforms_parse_print_and_match() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(p.to_string(), "linux/arm64/v8");
        let any_arm: Platform = "linux/arm64".parse().unwrap();
        assert!(p.matches(&any_arm));
        assert!(!any_arm.matches(&p));
        assert!(!p.matches(&"linux/amd64".parse().unwrap()));
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "Linux/amd64",
            "a/b/c/d",
            "linux/amd 64",
        ] {
            assert!(bad.parse::<Platform>().is_err(), "{bad:?} accepted");
        }
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{D1}","size":5,"platform":{{"architecture":"arm64","os":"linux","variant":"v8","os.features":["x"]}}}}]}}"#
        );
        let m = Manifest::parse(index.as_bytes(), None).unwrap();
        let ManifestKind::Index { manifests } = m.kind else {
            panic!("not an index")
        };
        assert_eq!(manifests[0].platform.as_deref(), Some(&p));
    }

    proptest::proptest! {
        #[test]
        fn the_platform_parser_never_panics(s in ".{0,100}") {
            let _ = s.parse::<Platform>();
        }
    }

    #[test]
    fn accept_header_matching() {
        assert!(accepts(&[], OCI_MANIFEST));
        assert!(accepts(&["*/*"], OCI_MANIFEST));
        assert!(accepts(
            &[&format!("{DOCKER_MANIFEST}, {OCI_MANIFEST};q=0.5")],
            OCI_MANIFEST
        ));
        assert!(!accepts(&[DOCKER_MANIFEST], OCI_MANIFEST));
    }
}
