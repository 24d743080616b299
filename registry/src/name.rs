//! Repository names, tags and manifest references, checked against the distribution spec's grammar.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;

/// Longest repository name accepted (the reference grammar caps a full name at 255 characters).
pub const NAME_MAX: usize = 255;

/// A repository name such as `library/alpine`: slash-separated components, each matching
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

/// Why a name or tag was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NameError {
    /// The repository name breaks the grammar.
    #[error(
        "repository name {0:?} is invalid: expected lowercase components like `library/alpine`, each [a-z0-9] separated by '.', '_', '__' or '-'"
    )]
    Repo(String),
    /// The tag breaks the grammar.
    #[error("tag {0:?} is invalid: expected [a-zA-Z0-9_][a-zA-Z0-9._-]{{0,127}}")]
    Tag(String),
    /// A tag key without the `:` between repository and tag.
    #[error("{0:?} is not a tag key: expected <repository>:<tag>")]
    TagKey(String),
}

fn is_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        let sep = b[i];
        while i < b.len() && b[i] == sep {
            i += 1;
        }
        let run = i - start;
        let ok = match sep {
            b'.' => run == 1,
            b'_' => run <= 2,
            b'-' => true,
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

impl FromStr for RepoName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || s.len() > NAME_MAX || !s.split('/').all(is_component) {
            return Err(NameError::Repo(s.to_owned()));
        }
        Ok(RepoName(s.to_owned()))
    }
}

impl RepoName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Tag {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let first = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
        let rest = |x: u8| first(x) || x == b'.' || x == b'-';
        if b.is_empty() || b.len() > 128 || !first(b[0]) || !b[1..].iter().all(|&x| rest(x)) {
            return Err(NameError::Tag(s.to_owned()));
        }
        Ok(Tag(s.to_owned()))
    }
}

impl Tag {
    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A tag within its repository, `<repository>:<tag>` as Kraken's build-index and tag objects
/// name it. The one place that joins and splits the two: the tag is after the last `:`
/// (a repository name holds none).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagKey {
    /// The repository.
    pub repo: RepoName,
    /// The tag.
    pub tag: Tag,
}

impl TagKey {
    /// `tag` of `repo`.
    pub fn new(repo: RepoName, tag: Tag) -> Self {
        TagKey { repo, tag }
    }
}

impl fmt::Display for TagKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repo.as_str(), self.tag.as_str())
    }
}

impl fmt::Debug for TagKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TagKey({self})")
    }
}

impl FromStr for TagKey {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (repo, tag) = s
            .rsplit_once(':')
            .ok_or_else(|| NameError::TagKey(s.to_owned()))?;
        Ok(TagKey {
            repo: repo.parse()?,
            tag: tag.parse()?,
        })
    }
}

/// What follows `/manifests/`: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Reference {
    /// A mutable tag.
    Tag(Tag),
    /// An immutable digest.
    Digest(Digest),
}

impl FromStr for Reference {
    type Err = ReferenceError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.contains(':') {
            Ok(Reference::Digest(
                s.parse().map_err(ReferenceError::Digest)?,
            ))
        } else {
            Ok(Reference::Tag(s.parse().map_err(ReferenceError::Tag)?))
        }
    }
}

/// Why a manifest reference was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// Looked like a digest but was not a valid one.
    #[error(transparent)]
    Digest(crate::digest::DigestError),
    /// Looked like a tag but was not a valid one.
    #[error(transparent)]
    Tag(NameError),
}

macro_rules! display_as_str {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&self.0, f)
            }
        }
    )*};
}
display_as_str!(RepoName, Tag);

// As text, parsed (and so checked) when read back: a job file or a config names a repository,
// a tag or a tag key the way a URL would.
macro_rules! serde_as_str {
    ($($t:ty),*) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
serde_as_str!(RepoName, Tag, TagKey);

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_tag_key_splits_at_the_last_colon_and_joins_back() {
        let k: TagKey = "library/alpine:3.19".parse().unwrap();
        assert_eq!(k.repo.as_str(), "library/alpine");
        assert_eq!(k.tag.as_str(), "3.19");
        assert_eq!(k.to_string(), "library/alpine:3.19");
        assert_eq!(
            "alpine".parse::<TagKey>(),
            Err(NameError::TagKey("alpine".into()))
        );
        assert!(matches!(
            "Alpine:1".parse::<TagKey>(),
            Err(NameError::Repo(_))
        ));
        assert!(matches!("a:b:c".parse::<TagKey>(), Err(NameError::Repo(_))));
        assert!(matches!("a:".parse::<TagKey>(), Err(NameError::Tag(_))));
    }

    #[test]
    fn names_travel_as_text_and_are_checked_when_read_back() {
        let k: TagKey = "library/alpine:3.19".parse().unwrap();
        let json = serde_json::to_string(&k).unwrap();
        assert_eq!(json, r#""library/alpine:3.19""#);
        assert_eq!(serde_json::from_str::<TagKey>(&json).unwrap(), k);
        let repo: RepoName = serde_json::from_str(r#""team/app""#).unwrap();
        assert_eq!(repo.as_str(), "team/app");
        assert!(serde_json::from_str::<RepoName>(r#""Team/App""#).is_err());
        assert!(serde_json::from_str::<Tag>(r#""-x""#).is_err());
    }

    #[test]
    fn accepts_valid_names() {
        for ok in [
            "a",
            "library/alpine",
            "a/b/c",
            "my-org/my_app",
            "a__b",
            "a---b",
            "a.b/c.d",
            "0/1",
            "ghcr.io/org/app",
        ] {
            assert!(ok.parse::<RepoName>().is_ok(), "{ok} refused");
        }
    }

    #[test]
    fn refuses_invalid_names() {
        for bad in [
            "",
            "a/../b",
            "..",
            "a/./b",
            "A",
            "a//b",
            "/a",
            "a/",
            "a___b",
            "a..b",
            "-a",
            "a-",
            "a_",
            "a b",
            "a/_b",
            "a%2fb",
            &"a".repeat(256),
        ] {
            assert!(bad.parse::<RepoName>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v1.2.3", "_x", "A-b_c.d", &"a".repeat(128)] {
            assert!(ok.parse::<Tag>().is_ok(), "{ok} refused");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(bad.parse::<Tag>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn references() {
        assert!(matches!(
            "latest".parse::<Reference>(),
            Ok(Reference::Tag(_))
        ));
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(matches!(d.parse::<Reference>(), Ok(Reference::Digest(_))));
        assert!(matches!(
            "sha256:abc".parse::<Reference>(),
            Err(ReferenceError::Digest(_))
        ));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in ".{0,300}") {
            let _ = s.parse::<RepoName>();
            let _ = s.parse::<Tag>();
            let _ = s.parse::<Reference>();
        }

        #[test]
        fn generated_valid_names_parse(
            comps in proptest::collection::vec("[a-z0-9]{1,5}([._-][a-z0-9]{1,5}){0,2}", 1..4)
        ) {
            let name = comps.join("/");
            prop_assert!(name.parse::<RepoName>().is_ok(), "{} refused", name);
        }

        #[test]
        fn accepted_names_have_no_dot_segments(s in "[a-z0-9./_-]{1,40}") {
            if let Ok(n) = s.parse::<RepoName>() {
                prop_assert!(n.as_str().split('/').all(|c| c != "." && c != ".." && !c.is_empty()));
            }
        }
    }
}
