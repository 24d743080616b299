//! Typing the merged YAML into a role's struct, and turning serde's errors into [`Problem`]s that
//! name the file, the key path, the value and a likely fix.

use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use crate::error::{ConfigError, Problem};
use crate::keypath::KeyPath;
use crate::layering::Layered;
use crate::secret::SECRET_KEYS;

/// Deserializes the merged document, reporting the first type error with its location.
pub(crate) fn decode<T: DeserializeOwned>(
    layered: &Layered,
    value: Value,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value.clone()).map_err(|err| {
        let path = KeyPath::from_serde(err.path());
        let raw = err.inner().to_string();
        ConfigError::Invalid {
            problems: vec![describe(layered, &value, &path, &raw)],
        }
    })
}

/// Builds the problem for serde message `raw` at `path`.
fn describe(layered: &Layered, doc: &Value, path: &KeyPath, raw: &str) -> Problem {
    let (message, expected) = match raw.split_once(", expected ") {
        Some((what, expected)) => (what.to_owned(), Some(expected.to_owned())),
        None => (raw.to_owned(), None),
    };
    let unknown = unknown_name(&message);
    let hint = unknown.and_then(|name| {
        let candidates = expected.as_deref().map(backticked).unwrap_or_default();
        closest(name, &candidates).map(|best| format!("did you mean `{best}`?"))
    });
    let message = message
        .replace("unknown field", "unknown key")
        .replace("missing field", "missing required key");
    let expected = expected.map(|e| {
        if e == "there are no fields" {
            "no keys here".to_owned()
        } else {
            e
        }
    });
    Problem {
        file: layered.blame(path).to_owned(),
        path: path.to_string(),
        message,
        expected,
        value: if unknown.is_some() {
            None
        } else {
            scalar_text(doc, path)
        },
        hint,
    }
}

/// The name in "unknown field `x`" or "unknown variant `x`", if that is the message.
fn unknown_name(message: &str) -> Option<&str> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    rest.split('`').next()
}

/// Every `quoted` word in serde's "expected one of `a`, `b`" list.
fn backticked(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The candidate most like `name`, if any is close enough to be a plausible typo: similar by
/// Jaro-Winkler, or one edit away (which catches short names such as `s4` for `s3`).
pub(crate) fn closest<'c>(name: &str, candidates: &[&'c str]) -> Option<&'c str> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(name, c), *c))
        .filter(|(score, c)| *score >= 0.8 || strsim::osa_distance(name, c) <= 1)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// The value at `path` as written, when it is a scalar that is safe to print.
pub(crate) fn scalar_text(doc: &Value, path: &KeyPath) -> Option<String> {
    if path.last_key().is_some_and(|k| SECRET_KEYS.contains(&k)) {
        return None;
    }
    let text = match path.lookup(doc)? {
        Value::String(s) => format!("{s:?}"),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => return None,
    };
    Some(text.chars().take(200).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let fields = ["region", "bucket", "root_directory", "username"];
        assert_eq!(closest("regon", &fields), Some("region"));
        assert_eq!(closest("user_name", &fields), Some("username"));
        assert_eq!(closest("zzz", &fields), None);
        assert_eq!(closest("s4", &["registry_blob", "s3", "fs"]), Some("s3"));
    }

    #[test]
    fn reads_serde_lists() {
        assert_eq!(
            backticked("one of `region`, `bucket`, `name_path`"),
            ["region", "bucket", "name_path"]
        );
        assert_eq!(backticked("`a` or `b`"), ["a", "b"]);
        assert_eq!(unknown_name("unknown field `regon`"), Some("regon"));
    }
}
