//! `extends:` layering: a file names a base, the base is loaded first, and the file's own keys
//! are deep-merged over it (mappings merge, everything else is replaced by the later file).

use std::path::{Path, PathBuf};

use serde_yaml_ng::{Mapping, Value};

use crate::error::{ConfigError, Problem};
use crate::keypath::{KeyPath, Segment, step};

/// The key that names a base file; removed before the document is typed.
const EXTENDS: &str = "extends";

/// One file's own document, before merging.
pub(crate) struct Layer {
    /// How the file is named in messages.
    pub(crate) name: String,
    /// The folder its relative paths resolve against; `None` for text that is no file,
    /// whose paths stay as written (relative to the working directory).
    pub(crate) dir: Option<PathBuf>,
    pub(crate) value: Value,
}

/// Every file in an `extends` chain, base first, and their merged document.
pub(crate) struct Layered {
    pub(crate) layers: Vec<Layer>,
    pub(crate) merged: Value,
}

/// Where a document's text comes from: a file, or a string whose `extends` resolves against
/// `base_dir`.
pub(crate) enum Source<'a> {
    File(&'a Path),
    Inline { yaml: &'a str, base_dir: &'a Path },
}

impl Layered {
    /// Reads the document and every base it extends, then merges them.
    pub(crate) fn load(source: Source<'_>) -> Result<Self, ConfigError> {
        let mut seen: Vec<PathBuf> = Vec::new();
        let (mut name, mut map, mut dir, mut is_file) = match source {
            Source::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                seen.push(canonical(path));
                let name = path.display().to_string();
                (name.clone(), parse(&text, &name)?, parent(path), true)
            }
            Source::Inline { yaml, base_dir } => {
                let name = "<inline>".to_owned();
                (
                    name.clone(),
                    parse(yaml, &name)?,
                    base_dir.to_owned(),
                    false,
                )
            }
        };
        let mut top_down = Vec::new();
        loop {
            let base = take_extends(&mut map, &name)?;
            top_down.push(Layer {
                name: name.clone(),
                dir: is_file.then(|| dir.clone()),
                value: Value::Mapping(map),
            });
            let Some(base) = base else { break };
            let path = dir.join(&base);
            let key = canonical(&path);
            if seen.contains(&key) {
                let mut chain: Vec<PathBuf> = seen;
                chain.push(key);
                return Err(ConfigError::Cycle { chain });
            }
            let text =
                std::fs::read_to_string(&path).map_err(|source| ConfigError::MissingBase {
                    file: PathBuf::from(&name),
                    base: path.clone(),
                    source,
                })?;
            seen.push(key);
            name = path.display().to_string();
            map = parse(&text, &name)?;
            dir = parent(&path);
            is_file = true;
        }
        top_down.reverse();
        let merged = top_down
            .iter()
            .fold(Value::Mapping(Mapping::new()), |acc, layer| {
                merge(acc, layer.value.clone())
            });
        Ok(Layered {
            layers: top_down,
            merged,
        })
    }

    /// The file that set the value at `path` in the merged document: the last file that
    /// defines it, unless a later file replaced the whole subtree with a scalar or a list.
    pub(crate) fn blame(&self, path: &KeyPath) -> &str {
        self.layer_of(path)
            .map_or("<inline>", |layer| layer.name.as_str())
    }

    /// The folder of the file that set the value at `path`; `None` when no file set it (a
    /// default).
    pub(crate) fn dir_of(&self, path: &KeyPath) -> Option<&Path> {
        let layer = self.layer_of(path)?;
        path.lookup(&layer.value)?;
        layer.dir.as_deref()
    }

    /// The layer that set the value at `path` (see [`Layered::blame`]).
    fn layer_of(&self, path: &KeyPath) -> Option<&Layer> {
        let mut current: Vec<(usize, &Value)> = self
            .layers
            .iter()
            .enumerate()
            .map(|(i, layer)| (i, &layer.value))
            .collect();
        for segment in path.segments() {
            let mut next: Vec<(usize, &Value)> = current
                .iter()
                .filter_map(|(i, v)| step(v, segment).map(|child| (*i, child)))
                .collect();
            if next.is_empty() {
                break;
            }
            // Sequence items always come from the one file that set the whole sequence.
            if matches!(segment, Segment::Index(_)) {
                next.drain(..next.len() - 1);
            } else if let Some(pos) = next.iter().rposition(|(_, v)| !v.is_mapping()) {
                // A non-mapping replaces what came before it; mappings after it replace it.
                let keep_from = if pos + 1 == next.len() { pos } else { pos + 1 };
                next.drain(..keep_from);
            }
            current = next;
        }
        current.last().and_then(|(i, _)| self.layers.get(*i))
    }
}

/// Parses one file into a mapping; an empty file is an empty mapping.
fn parse(text: &str, name: &str) -> Result<Mapping, ConfigError> {
    let mut value: Value = serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Syntax {
        file: name.to_owned(),
        message: e.to_string(),
    })?;
    // Resolve YAML `<<:` merge keys so anchors work as readers expect.
    value.apply_merge().map_err(|e| ConfigError::Syntax {
        file: name.to_owned(),
        message: e.to_string(),
    })?;
    match value {
        Value::Null => Ok(Mapping::new()),
        Value::Mapping(map) => Ok(map),
        _ => Err(invalid(
            name,
            "the document is not a mapping of keys",
            "keys such as `scheduler:` or `backends:` at the top level",
        )),
    }
}

/// Removes and returns the `extends` key.
fn take_extends(map: &mut Mapping, name: &str) -> Result<Option<String>, ConfigError> {
    match map.remove(EXTENDS) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(base)) if !base.is_empty() => Ok(Some(base)),
        Some(_) => Err(ConfigError::Invalid {
            problems: vec![Problem {
                file: name.to_owned(),
                path: EXTENDS.to_owned(),
                message: "`extends` must name a file".to_owned(),
                expected: Some("a path relative to this file, like base.yaml".to_owned()),
                value: None,
                hint: None,
            }],
        }),
    }
}

fn invalid(name: &str, message: &str, expected: &str) -> ConfigError {
    ConfigError::Invalid {
        problems: vec![Problem {
            file: name.to_owned(),
            path: KeyPath::root().to_string(),
            message: message.to_owned(),
            expected: Some(expected.to_owned()),
            value: None,
            hint: None,
        }],
    }
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_owned).unwrap_or_default()
}

/// Identity of a file for cycle detection; falls back to the path as written.
fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
}

/// Deep-merges `over` onto `base`: mappings merge key by key, anything else in `over` wins.
pub(crate) fn merge(base: Value, over: Value) -> Value {
    match (base, over) {
        (Value::Mapping(mut base), Value::Mapping(over)) => {
            for (key, value) in over {
                let merged = match base.remove(&key) {
                    Some(old) => merge(old, value),
                    None => value,
                };
                base.insert(key, merged);
            }
            Value::Mapping(base)
        }
        (_, over) => over,
    }
}

/// Drops keys whose value is null, so `key:` with nothing after it means "unset" (and a later
/// file can unset a base file's key) instead of failing to type as a struct.
pub(crate) fn strip_nulls(value: &mut Value) {
    match value {
        Value::Mapping(map) => {
            map.retain(|_, v| !v.is_null());
            for (_, v) in map.iter_mut() {
                strip_nulls(v);
            }
        }
        Value::Sequence(seq) => seq.iter_mut().for_each(strip_nulls),
        Value::Tagged(tagged) => strip_nulls(&mut tagged.value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn merges_maps_and_replaces_the_rest() {
        let base = yaml("a: {x: 1, y: [1, 2]}\nb: 1\n");
        let over = yaml("a: {y: [3], z: 2}\nc: 3\n");
        assert_eq!(
            merge(base, over),
            yaml("a: {x: 1, y: [3], z: 2}\nb: 1\nc: 3\n")
        );
    }

    #[test]
    fn strips_null_values() {
        let mut v = yaml("a: ~\nb: {c: ~, d: 1}\n");
        strip_nulls(&mut v);
        assert_eq!(v, yaml("b: {d: 1}\n"));
    }
}
