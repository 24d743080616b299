//! Where a value sits in the YAML tree (`backends[0].backend.s3.region`), shared by every stage
//! that reports a problem so they all name keys the same way.

use std::fmt;

use serde_yaml_ng::Value;

/// One step down the tree: a mapping key or a sequence index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Segment {
    Key(String),
    Index(usize),
}

/// A path from the top of a config file to one value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyPath(Vec<Segment>);

impl KeyPath {
    /// The top of the document.
    pub(crate) fn root() -> Self {
        KeyPath(Vec::new())
    }

    /// This path extended by a mapping key.
    pub(crate) fn key(&self, key: &str) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Key(key.to_owned()));
        next
    }

    /// This path extended by a sequence index.
    pub(crate) fn index(&self, index: usize) -> Self {
        let mut next = self.clone();
        next.0.push(Segment::Index(index));
        next
    }

    pub(crate) fn segments(&self) -> &[Segment] {
        &self.0
    }

    /// The last mapping key, used to recognise secret-bearing keys.
    pub(crate) fn last_key(&self) -> Option<&str> {
        match self.0.last() {
            Some(Segment::Key(k)) => Some(k),
            _ => None,
        }
    }

    /// The value at this path in `root`, if there is one.
    pub(crate) fn lookup<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        self.0.iter().try_fold(root, step)
    }

    /// Converts serde_path_to_error's path; enum variants are keys in our YAML shape.
    pub(crate) fn from_serde(path: &serde_path_to_error::Path) -> Self {
        use serde_path_to_error::Segment as S;
        KeyPath(
            path.iter()
                .map(|segment| match segment {
                    S::Seq { index } => Segment::Index(*index),
                    S::Map { key } => Segment::Key(key.clone()),
                    S::Enum { variant } => Segment::Key(variant.clone()),
                    S::Unknown => Segment::Key("?".to_owned()),
                })
                .collect(),
        )
    }
}

/// One step from `value` along `segment`, if the tree has it.
pub(crate) fn step<'v>(value: &'v Value, segment: &Segment) -> Option<&'v Value> {
    let value = match value {
        Value::Tagged(tagged) => &tagged.value,
        other => other,
    };
    match (value, segment) {
        (Value::Mapping(map), Segment::Key(key)) => map
            .iter()
            .find(|(k, _)| key_text(k).as_deref() == Some(key.as_str()))
            .map(|(_, v)| v),
        (Value::Sequence(seq), Segment::Index(i)) => seq.get(*i),
        _ => None,
    }
}

/// How a mapping key is spelled in a path; YAML allows non-string keys, serde sees their text.
pub(crate) fn key_text(key: &Value) -> Option<String> {
    match key {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_like_the_reference_names_keys() {
        let path = KeyPath::root().key("backends").index(2).key("namespace");
        assert_eq!(path.to_string(), "backends[2].namespace");
        assert_eq!(KeyPath::root().to_string(), "(top level)");
    }

    #[test]
    fn looks_up_values() {
        let doc: Value = serde_yaml_ng::from_str("a:\n  - b: 1\n").unwrap();
        let path = KeyPath::root().key("a").index(0).key("b");
        assert_eq!(path.lookup(&doc), Some(&Value::from(1)));
        assert_eq!(KeyPath::root().key("zz").lookup(&doc), None);
    }
}
