//! `${NAME}` substitution in string values, so secrets and per-host addresses can come from the
//! environment instead of the file. `$${` writes a literal `${`.

use serde_yaml_ng::Value;

use crate::keypath::{KeyPath, key_text};

/// Looks up an environment variable; injected so tests need not touch the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The real process environment, for the binary.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Why one string could not be expanded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ExpandError {
    Missing(String),
    Unterminated,
    BadName(String),
}

impl ExpandError {
    pub(crate) fn message(&self) -> String {
        match self {
            ExpandError::Missing(name) => format!("environment variable `{name}` is not set"),
            ExpandError::Unterminated => "`${` without a closing `}`".to_owned(),
            ExpandError::BadName(name) => format!("`${{{name}}}` is not a variable name"),
        }
    }

    pub(crate) fn expected(&self) -> &'static str {
        match self {
            ExpandError::Missing(_) => "the variable set, or `$${` to write a literal `${`",
            _ => "${NAME} with letters, digits and `_`, or `$${` for a literal `${`",
        }
    }
}

/// Replaces `${NAME}` in every string value under `value` (keys are left alone), reporting each
/// failure with the path of the string it was in.
pub(crate) fn substitute(
    value: &mut Value,
    env: EnvLookup<'_>,
    path: &KeyPath,
    failures: &mut Vec<(KeyPath, ExpandError)>,
) {
    match value {
        Value::String(s) => match expand(s, env) {
            Ok(expanded) => *s = expanded,
            Err(e) => failures.push((path.clone(), e)),
        },
        Value::Mapping(map) => {
            for (k, v) in map.iter_mut() {
                let key = key_text(k).unwrap_or_else(|| "?".to_owned());
                substitute(v, env, &path.key(&key), failures);
            }
        }
        Value::Sequence(seq) => {
            for (i, v) in seq.iter_mut().enumerate() {
                substitute(v, env, &path.index(i), failures);
            }
        }
        Value::Tagged(tagged) => substitute(&mut tagged.value, env, path, failures),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Expands one string. A `$` not followed by `{` is kept as written.
pub(crate) fn expand(input: &str, env: EnvLookup<'_>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("${") {
            let end = tail.find('}').ok_or(ExpandError::Unterminated)?;
            let name = &tail[..end];
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(ExpandError::BadName(name.to_owned()));
            }
            out.push_str(&env(name).ok_or_else(|| ExpandError::Missing(name.to_owned()))?);
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("origin1".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_variables_and_escapes() {
        let table = [
            ("${HOST}:15002", "origin1:15002"),
            ("a${EMPTY}b", "ab"),
            ("$${HOST}", "${HOST}"),
            ("cost $5", "cost $5"),
            ("$", "$"),
            ("$$", "$$"),
            ("x$${y}${HOST}", "x${y}origin1"),
        ];
        for (input, want) in table {
            assert_eq!(expand(input, &env).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn reports_what_went_wrong() {
        assert_eq!(
            expand("${NOPE}", &env),
            Err(ExpandError::Missing("NOPE".into()))
        );
        assert_eq!(expand("${HOST", &env), Err(ExpandError::Unterminated));
        assert_eq!(
            expand("${}", &env),
            Err(ExpandError::BadName(String::new()))
        );
        assert_eq!(
            expand("${1A}", &env),
            Err(ExpandError::BadName("1A".into()))
        );
    }
}
