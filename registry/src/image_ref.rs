//! An image reference as people type it: `[HOST/]REPOSITORY[:TAG][@DIGEST]`, the form
//! `docker pull` and `ctr images pull` take, parsed into a [`Reference`] within a
//! [`RepoName`], and the registry host when one leads.
//!
//! The first path component is a host when it holds a `.` or a `:` or is `localhost`, as
//! Docker decides (`ghcr.io/org/app`, `registry.local:5000/app`); otherwise the whole name is
//! the repository (`library/alpine`). A digest wins over a tag given beside it (the tag is then
//! only a label, as in Docker); with neither, the tag is `latest`.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};
use crate::mirror::host_key;
use crate::name::{NameError, Reference, RepoName, Tag};

/// Longest reference accepted: a 255-character name, a host, a tag and a sha512 digest fit.
pub const IMAGE_REF_MAX: usize = 1024;

/// A parsed image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageRef {
    /// The registry host that leads the reference (lowercase `host[:port]`), if any.
    pub host: Option<String>,
    /// The repository, without the host.
    pub repo: RepoName,
    /// The tag or the digest.
    pub reference: Reference,
}

/// Why a string is not an image reference; each says which part and what was expected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ImageRefError {
    /// Nothing was given.
    #[error("the image reference is empty: expected REPOSITORY:TAG or REPOSITORY@sha256:<hex>")]
    Empty,
    /// Longer than [`IMAGE_REF_MAX`].
    #[error("the image reference is {0} bytes long: at most {IMAGE_REF_MAX} are accepted")]
    TooLong(usize),
    /// The leading host is not `host[:port]`.
    #[error(
        "registry host {0:?} is not host[:port], like ghcr.io or registry.local:5000 (a first \
         component with a '.' or ':' is read as a host)"
    )]
    Host(String),
    /// The repository name breaks the grammar.
    #[error("{0}")]
    Repo(NameError),
    /// The tag breaks the grammar.
    #[error("{0}")]
    Tag(NameError),
    /// The digest after `@` is not one.
    #[error("{0}")]
    Digest(DigestError),
}

impl FromStr for ImageRef {
    type Err = ImageRefError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(ImageRefError::Empty);
        }
        if s.len() > IMAGE_REF_MAX {
            return Err(ImageRefError::TooLong(s.len()));
        }
        let (named, digest) = match s.split_once('@') {
            Some((named, d)) => (
                named,
                Some(d.parse::<Digest>().map_err(ImageRefError::Digest)?),
            ),
            None => (s, None),
        };
        let (host, path) = match named.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                let host = host_key(first).ok_or_else(|| ImageRefError::Host(first.to_owned()))?;
                (Some(host), rest)
            }
            _ => (None, named),
        };
        // With the host gone, a `:` can only start the tag: a repository name holds none.
        let (name, tag) = match path.rsplit_once(':') {
            Some((name, tag)) => (name, Some(tag)),
            None => (path, None),
        };
        let repo: RepoName = name.parse().map_err(ImageRefError::Repo)?;
        let tag: Option<Tag> = tag
            .map(|t| t.parse().map_err(ImageRefError::Tag))
            .transpose()?;
        let reference = match (digest, tag) {
            (Some(d), _) => Reference::Digest(d),
            (None, Some(t)) => Reference::Tag(t),
            (None, None) => Reference::Tag("latest".parse().expect("a valid tag")),
        };
        Ok(ImageRef {
            host,
            repo,
            reference,
        })
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(host) = &self.host {
            write!(f, "{host}/")?;
        }
        match &self.reference {
            Reference::Tag(t) => write!(f, "{}:{}", self.repo, t),
            Reference::Digest(d) => write!(f, "{}@{}", self.repo, d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn parsed(s: &str) -> (Option<String>, String, String) {
        let r: ImageRef = s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"));
        (r.host, r.repo.to_string(), r.reference.to_string())
    }

    #[test]
    fn names_tags_digests_and_hosts() {
        let none = None::<String>;
        assert_eq!(
            parsed("team/app:v1"),
            (none.clone(), "team/app".into(), "v1".into())
        );
        assert_eq!(
            parsed("alpine"),
            (none.clone(), "alpine".into(), "latest".into())
        );
        assert_eq!(
            parsed(&format!("team/app@{D}")),
            (none.clone(), "team/app".into(), D.into())
        );
        assert_eq!(
            parsed(&format!("team/app:v1@{D}")),
            (none.clone(), "team/app".into(), D.into())
        );
        assert_eq!(
            parsed("ghcr.io/org/app:1.0"),
            (Some("ghcr.io".into()), "org/app".into(), "1.0".into())
        );
        assert_eq!(
            parsed("Registry.Local:05000/app"),
            (
                Some("registry.local:5000".into()),
                "app".into(),
                "latest".into()
            )
        );
        assert_eq!(
            parsed("localhost/app:x"),
            (Some("localhost".into()), "app".into(), "x".into())
        );
        assert_eq!(
            parsed("[::1]:5000/app:x"),
            (Some("[::1]:5000".into()), "app".into(), "x".into())
        );
    }

    #[test]
    fn each_bad_part_is_named() {
        assert_eq!("".parse::<ImageRef>(), Err(ImageRefError::Empty));
        let long = "a".repeat(IMAGE_REF_MAX + 1);
        assert_eq!(
            long.parse::<ImageRef>(),
            Err(ImageRefError::TooLong(IMAGE_REF_MAX + 1))
        );
        assert!(matches!(
            "Team/App:v1".parse::<ImageRef>(),
            Err(ImageRefError::Repo(_))
        ));
        assert!(matches!(
            "team/app:-v1".parse::<ImageRef>(),
            Err(ImageRefError::Tag(_))
        ));
        assert!(matches!(
            "team/app@sha256:abc".parse::<ImageRef>(),
            Err(ImageRefError::Digest(_))
        ));
        assert!(matches!(
            "host:port/app".parse::<ImageRef>(),
            Err(ImageRefError::Host(_))
        ));
        assert!(matches!(
            "ghcr.io/".parse::<ImageRef>(),
            Err(ImageRefError::Repo(_))
        ));
        let e = "team/app:".parse::<ImageRef>().unwrap_err();
        assert!(e.to_string().contains("tag"), "{e}");
    }

    #[test]
    fn display_is_the_canonical_form() {
        let r: ImageRef = "GHCR.io/org/app".parse().unwrap();
        assert_eq!(r.to_string(), "ghcr.io/org/app:latest");
        let r: ImageRef = format!("app:v1@{D}").parse().unwrap();
        assert_eq!(r.to_string(), format!("app@{D}"));
    }

    proptest! {
        #[test]
        fn the_parser_never_panics(s in ".{0,300}") {
            let _ = s.parse::<ImageRef>();
        }

        #[test]
        fn generated_references_parse_and_print_back(
            host in proptest::option::of("[a-z]{1,8}\\.[a-z]{2,3}(:[1-9][0-9]{0,3})?"),
            // Without a host, a first component with a '.' would be read as one.
            first in "[a-z0-9]{1,5}([_-][a-z0-9]{1,5}){0,2}",
            comps in proptest::collection::vec("[a-z0-9]{1,5}([._-][a-z0-9]{1,5}){0,2}", 0..3),
            tag in "[a-zA-Z0-9_][a-zA-Z0-9._-]{0,20}",
        ) {
            let name = std::iter::once(first).chain(comps).collect::<Vec<_>>().join("/");
            let text = match &host {
                Some(h) => format!("{h}/{name}:{tag}"),
                None => format!("{name}:{tag}"),
            };
            let r: ImageRef = text.parse().map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
            prop_assert_eq!(r.to_string(), text.clone());
            prop_assert_eq!(r.host, host);
            prop_assert_eq!(r.repo.as_str(), name.as_str());
        }
    }
}
