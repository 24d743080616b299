//! How a blob digest or tag becomes an object path, as the seed's `name_path` (Kraken's
//! `namepath` package), under an optional `root_directory`.
//!
//! Pure functions: they run and are tested natively, not only inside a component.

use std::fmt;

use serde::Deserialize;

/// The naming scheme of a backend's objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NamePath {
    /// The name as given: `<root>/<name>`.
    #[default]
    Identity,
    /// Docker registry layout for tags: the name is `<repo>:<tag>`, the object is
    /// `<root>/docker/registry/v2/repositories/<repo>/_manifests/tags/<tag>/current/link`.
    DockerTag,
    /// Docker registry layout for blobs: the name is a hex sha256 digest, the object is
    /// `<root>/docker/registry/v2/blobs/sha256/<first 2 hex>/<hex>/data`.
    ShardedDockerBlob,
}

/// A name that the scheme cannot turn into a path; the message says what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadName {
    /// The name as given.
    pub name: String,
    /// What the scheme expected instead.
    pub expected: &'static str,
}

impl fmt::Display for BadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad name {:?}: expected {}", self.name, self.expected)
    }
}

impl std::error::Error for BadName {}

impl NamePath {
    /// The object path of `name` under `root` (which may be empty, or carry leading and
    /// trailing slashes as the seed's `root_directory: /test-bucket/kraken/default/` does).
    ///
    /// The result never starts with `/` and never contains `..` or empty segments, so a
    /// plugin can join it to its own root without escaping it.
    pub fn object_path(self, root: &str, name: &str) -> Result<String, BadName> {
        let mut parts: Vec<&str> = segments(root).collect();
        match self {
            NamePath::Identity => {
                let expected = "a name of non-empty segments without `.` or `..`";
                if !clean(name) {
                    return Err(BadName {
                        name: name.to_owned(),
                        expected,
                    });
                }
                parts.extend(segments(name));
            }
            NamePath::DockerTag => {
                let expected = "<repository>:<tag>";
                let Some((repo, tag)) = name.rsplit_once(':') else {
                    return Err(BadName {
                        name: name.to_owned(),
                        expected,
                    });
                };
                if !clean(repo) || tag.is_empty() || tag.contains('/') || tag.starts_with('.') {
                    return Err(BadName {
                        name: name.to_owned(),
                        expected,
                    });
                }
                parts.extend(["docker", "registry", "v2", "repositories"]);
                parts.extend(segments(repo));
                parts.extend(["_manifests", "tags", tag, "current", "link"]);
            }
            NamePath::ShardedDockerBlob => {
                let hex = name.strip_prefix("sha256:").unwrap_or(name);
                if hex.len() < 2 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(BadName {
                        name: name.to_owned(),
                        expected: "a hex sha256 digest, with or without `sha256:`",
                    });
                }
                parts.extend([
                    "docker",
                    "registry",
                    "v2",
                    "blobs",
                    "sha256",
                    &hex[..2],
                    hex,
                    "data",
                ]);
            }
        }
        Ok(parts.join("/"))
    }

    /// The object-path prefix under `root` that a listing of the names starting with
    /// `prefix` walks: `<root>/<prefix>` for identity names, which are paths under the root;
    /// the scheme's fixed folder (`<root>/docker/registry/v2/repositories/`, `.../blobs/sha256/`)
    /// for the others, which put folders around the name, so the caller filters what
    /// [`NamePath::name_of`] gives back by `prefix`. Empty or `a/b/`-shaped, ready to be a key
    /// prefix of an object store.
    pub fn list_prefix(self, root: &str, prefix: &str) -> String {
        let mut out: String = segments(root).map(|s| format!("{s}/")).collect();
        out.push_str(match self {
            NamePath::Identity => prefix,
            NamePath::DockerTag => "docker/registry/v2/repositories/",
            NamePath::ShardedDockerBlob => "docker/registry/v2/blobs/sha256/",
        });
        out
    }

    /// The name an object path stands for, when `path` is one this scheme produces under
    /// `root`; listing uses it to turn paths back into names.
    pub fn name_of(self, root: &str, path: &str) -> Option<String> {
        let root: Vec<&str> = segments(root).collect();
        let all: Vec<&str> = segments(path).collect();
        let rest = all.strip_prefix(root.as_slice())?;
        match self {
            NamePath::Identity => (!rest.is_empty()).then(|| rest.join("/")),
            NamePath::DockerTag => {
                let rest = rest.strip_prefix(&["docker", "registry", "v2", "repositories"][..])?;
                let rest = rest.strip_suffix(&["current", "link"][..])?;
                let (tag, rest) = rest.split_last()?;
                let repo = rest.strip_suffix(&["_manifests", "tags"][..])?;
                (!repo.is_empty()).then(|| format!("{}:{tag}", repo.join("/")))
            }
            NamePath::ShardedDockerBlob => {
                let rest =
                    rest.strip_prefix(&["docker", "registry", "v2", "blobs", "sha256"][..])?;
                match rest {
                    [shard, hex, "data"] if hex.starts_with(shard) => Some((*hex).to_owned()),
                    _ => None,
                }
            }
        }
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// True when every segment of `name` is a plain file name.
fn clean(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains('\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "ff8f5f3a2cbdbb3e8e3e5b3b1d1a9f0a3a1c1f1e6c2b1a0f9e8d7c6b5a4f3e2d";

    #[test]
    fn listings_walk_the_name_prefix_or_the_scheme_folder() {
        assert_eq!(NamePath::Identity.list_prefix("", "ab"), "ab");
        assert_eq!(
            NamePath::Identity.list_prefix("/test-bucket/kraken/", "ab"),
            "test-bucket/kraken/ab"
        );
        assert_eq!(
            NamePath::DockerTag.list_prefix("r", "library/"),
            "r/docker/registry/v2/repositories/"
        );
        assert_eq!(
            NamePath::ShardedDockerBlob.list_prefix("", "ab"),
            "docker/registry/v2/blobs/sha256/"
        );
    }

    #[test]
    fn identity_joins_the_root_directory() {
        let p = NamePath::Identity;
        assert_eq!(p.object_path("", "a/b").unwrap(), "a/b");
        assert_eq!(
            p.object_path("/test-bucket/kraken/default/", "blob")
                .unwrap(),
            "test-bucket/kraken/default/blob"
        );
    }

    #[test]
    fn identity_rejects_escapes() {
        let p = NamePath::Identity;
        for bad in ["", "../x", "a/../../x", "/abs", "a//b", "./a", "a\\b"] {
            assert!(p.object_path("root", bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn docker_tag_follows_the_registry_layout() {
        let p = NamePath::DockerTag;
        assert_eq!(
            p.object_path("/r/", "library/ubuntu:22.04").unwrap(),
            "r/docker/registry/v2/repositories/library/ubuntu/_manifests/tags/22.04/current/link"
        );
        assert!(p.object_path("", "no-tag").is_err());
        assert!(p.object_path("", "repo:").is_err());
        assert!(p.object_path("", "../x:tag").is_err());
    }

    #[test]
    fn docker_tag_keeps_registry_ports_in_the_repository() {
        let path = NamePath::DockerTag
            .object_path("", "host:5000/repo:v1")
            .unwrap();
        assert_eq!(
            path,
            "docker/registry/v2/repositories/host:5000/repo/_manifests/tags/v1/current/link"
        );
    }

    #[test]
    fn sharded_docker_blob_shards_by_the_first_two_hex_digits() {
        let p = NamePath::ShardedDockerBlob;
        let want = format!("kraken/docker/registry/v2/blobs/sha256/ff/{DIGEST}/data");
        assert_eq!(p.object_path("/kraken/", DIGEST).unwrap(), want);
        assert_eq!(
            p.object_path("/kraken/", &format!("sha256:{DIGEST}"))
                .unwrap(),
            want
        );
        assert!(p.object_path("", "f").is_err());
        assert!(p.object_path("", "not-hex!").is_err());
    }

    #[test]
    fn name_of_inverts_object_path() {
        let cases = [
            (NamePath::Identity, "a/b/c"),
            (NamePath::DockerTag, "library/ubuntu:22.04"),
            (NamePath::ShardedDockerBlob, DIGEST),
        ];
        for (scheme, name) in cases {
            for root in ["", "/some/root/"] {
                let path = scheme.object_path(root, name).unwrap();
                assert_eq!(
                    scheme.name_of(root, &path).as_deref(),
                    Some(name),
                    "{scheme:?}"
                );
            }
        }
        assert_eq!(
            NamePath::ShardedDockerBlob.name_of("", "docker/registry/v2/blobs/sha256/aa/bb/data"),
            None
        );
        assert_eq!(NamePath::Identity.name_of("root", "other/x"), None);
    }

    #[test]
    fn schemes_parse_from_the_seed_spelling() {
        let parsed: Vec<NamePath> =
            serde_json::from_str(r#"["identity","docker_tag","sharded_docker_blob"]"#).unwrap();
        assert_eq!(
            parsed,
            [
                NamePath::Identity,
                NamePath::DockerTag,
                NamePath::ShardedDockerBlob
            ]
        );
    }
}
