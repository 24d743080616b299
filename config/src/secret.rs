//! Secrets: values that must reach the code that uses them but never a log, a Debug dump or
//! the output of `shoal config check`.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// What a secret prints and serializes as.
pub const REDACTED: &str = "<redacted>";

/// Key names whose values are secrets, so error messages never echo them.
pub(crate) const SECRET_KEYS: &[&str] = &[
    "password",
    "aws_secret_access_key",
    "aws_session_token",
    "access_blob",
];

thread_local! {
    /// Set only inside [`with_secrets_exposed`], on the thread doing the serializing.
    static EXPOSE: Cell<bool> = const { Cell::new(false) };
}

/// A secret string from the config (a password, a key); redacted everywhere except `expose`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value, for tests and for secrets built in code.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value, for the one place that hands it to a client library or a plugin.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the config left it empty, e.g. anonymous registry access.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Runs `f` with secrets serializing as their real values on this thread; this is how a backend's
/// YAML block is handed to its plugin, and nowhere else should need it.
pub fn with_secrets_exposed<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            EXPOSE.with(|e| e.set(self.0));
        }
    }
    let _reset = Reset(EXPOSE.with(|e| e.replace(true)));
    f()
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if EXPOSE.with(Cell::get) {
            serializer.serialize_str(&self.0)
        } else {
            serializer.serialize_str(REDACTED)
        }
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretVisitor;

        /// Serde's default messages quote the offending value; for a secret that would print it.
        fn hidden<E: de::Error>() -> E {
            E::custom("a secret must be a string (value hidden), expected a quoted string")
        }

        impl Visitor<'_> for SecretVisitor {
            type Value = Secret;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Secret, E> {
                Ok(Secret(s.to_owned()))
            }

            fn visit_string<E: de::Error>(self, s: String) -> Result<Secret, E> {
                Ok(Secret(s))
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(hidden())
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(hidden())
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(hidden())
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(hidden())
            }
        }

        // `any`, so a number reaches the visitor's hiding methods instead of serde's default
        // message, which would quote it.
        deserializer.deserialize_any(SecretVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_value() {
        let s: Secret = serde_yaml_ng::from_str("hunter2").unwrap();
        assert_eq!(s.expose(), "hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
        let yaml = serde_yaml_ng::to_string(&s).unwrap();
        assert!(
            yaml.contains(REDACTED) && !yaml.contains("hunter2"),
            "{yaml}"
        );
    }

    #[test]
    fn exposes_only_inside_the_scope() {
        let s = Secret::new("k");
        assert_eq!(
            with_secrets_exposed(|| serde_yaml_ng::to_string(&s).unwrap()),
            "k\n"
        );
        assert!(serde_yaml_ng::to_string(&s).unwrap().contains(REDACTED));
    }

    #[test]
    fn a_number_is_rejected_without_echoing_it() {
        // The loader types a parsed `Value`, where an unquoted 123456 is a number.
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str("123456").unwrap();
        let err = serde_yaml_ng::from_value::<Secret>(value)
            .unwrap_err()
            .to_string();
        assert!(!err.contains("123456"), "{err}");
    }
}
