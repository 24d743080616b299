//! `log:`, which every role accepts: which lines are written (`level`, a level or a filter)
//! and how (`format`, text for people or JSON for machines).

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// What every `log.level` error tells the reader to write instead.
pub const LOG_LEVEL_FORM: &str = "a level (trace, debug, info, warn, error, off) or a filter \
     of comma-separated level and target=level items, like info,shoal=debug";

/// `log:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Which lines are written [info]: a level for shoal's own crates, or a filter that also
    /// names targets (`info,shoal_p2p=debug,wasmtime=info`).
    pub level: LogLevel,
    /// How lines are written [text].
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    #[default]
    Text,
    /// One JSON object per line, the event's fields at the top level, for log pipelines.
    Json,
}

/// A severity, from least to most verbose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Nothing.
    Off,
    /// Something failed.
    Error,
    /// Something recoverable went wrong.
    Warn,
    /// Normal operation: one line per request, starts and stops.
    Info,
    /// Diagnostics for developers.
    Debug,
    /// Everything, including per-piece events.
    Trace,
}

impl Level {
    /// The name `tracing`'s filters accept.
    pub const fn as_str(self) -> &'static str {
        match self {
            Level::Off => "off",
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }

    fn parse(text: &str) -> Option<Level> {
        Some(match text.to_ascii_lowercase().as_str() {
            "off" => Level::Off,
            "error" => Level::Error,
            "warn" => Level::Warn,
            "info" => Level::Info,
            "debug" => Level::Debug,
            "trace" => Level::Trace,
            _ => return None,
        })
    }
}

/// `log.level`: a level for shoal's own crates, and levels for targets it names. Libraries
/// not named stay at `warn` (or quieter, when the level is), so a debug level shows shoal's
/// lines, not the compiler passes of wasmtime's cranelift.
///
/// Only levels and `target=level` items are accepted, not the span and field filters of
/// `RUST_LOG`: a misspelt level (`debgu`) would otherwise be read as a target name and
/// silently show nothing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LogLevel {
    /// The level of shoal's crates; `None` when the filter names targets only (then `info`).
    base: Option<Level>,
    /// `target=level` items, in the order written.
    targets: Vec<(String, Level)>,
}

impl LogLevel {
    /// `info`, the default.
    pub const INFO: LogLevel = LogLevel::plain(Level::Info);

    /// A plain level.
    pub const fn plain(level: Level) -> LogLevel {
        LogLevel {
            base: Some(level),
            targets: Vec::new(),
        }
    }

    /// The level of shoal's own crates.
    pub fn base(&self) -> Level {
        self.base.unwrap_or(Level::Info)
    }

    /// The `target=level` items, in the order written.
    pub fn targets(&self) -> &[(String, Level)] {
        &self.targets
    }

    /// The `tracing` filter directives this level means: libraries at `warn` (or at the base
    /// level when it is quieter), shoal's crates (every target under `shoal`) at the base
    /// level, then each named target, which wins over both for what it names.
    pub fn directives(&self) -> String {
        let base = self.base();
        let mut out = vec![base.min(Level::Warn).as_str().to_owned()];
        if !self.targets.iter().any(|(t, _)| t == "shoal") {
            out.push(format!("shoal={}", base.as_str()));
        }
        out.extend(
            self.targets
                .iter()
                .map(|(target, level)| format!("{target}={}", level.as_str())),
        );
        out.join(",")
    }
}

impl Default for LogLevel {
    fn default() -> Self {
        LogLevel::INFO
    }
}

/// Why a `log.level` is not a level or a filter; the message ends with the expected form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid log level {input:?}: {reason}, expected {LOG_LEVEL_FORM}")]
pub struct LogLevelError {
    input: String,
    reason: String,
}

impl FromStr for LogLevel {
    type Err = LogLevelError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| LogLevelError {
            input: text.chars().take(100).collect(),
            reason,
        };
        let mut level = LogLevel {
            base: None,
            targets: Vec::new(),
        };
        for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item.split_once('=') {
                None => {
                    let Some(l) = Level::parse(item) else {
                        return Err(fail(format!("`{item}` is not a level")));
                    };
                    if level.base.is_some() {
                        return Err(fail(format!("`{item}` is a second plain level")));
                    }
                    level.base = Some(l);
                }
                Some((target, value)) => {
                    let (target, value) = (target.trim(), value.trim());
                    if !is_target(target) {
                        return Err(fail(format!(
                            "`{target}` is not a target (a crate or module path such as \
                             shoal_p2p or shoal_p2p::wire)"
                        )));
                    }
                    let Some(l) = Level::parse(value) else {
                        return Err(fail(format!("`{value}` (for {target}) is not a level")));
                    };
                    level.targets.push((target.to_owned(), l));
                }
            }
        }
        if level.base.is_none() && level.targets.is_empty() {
            return Err(fail("it is empty".to_owned()));
        }
        Ok(level)
    }
}

/// A crate or module path: identifiers joined by `::`.
fn is_target(text: &str) -> bool {
    !text.is_empty()
        && text.split("::").all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut items: Vec<String> = self.base.iter().map(|l| l.as_str().to_owned()).collect();
        items.extend(
            self.targets
                .iter()
                .map(|(t, l)| format!("{t}={}", l.as_str())),
        );
        f.write_str(&items.join(","))
    }
}

impl Serialize for LogLevel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct LevelVisitor;

        impl Visitor<'_> for LevelVisitor {
            type Value = LogLevel;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(LOG_LEVEL_FORM)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<LogLevel, E> {
                v.parse().map_err(E::custom)
            }
        }

        d.deserialize_str(LevelVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> LogLevel {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn a_plain_level_is_shoals_and_libraries_stay_at_warn() {
        assert_eq!(parse("debug").directives(), "warn,shoal=debug");
        assert_eq!(parse("INFO").directives(), "warn,shoal=info");
        assert_eq!(parse("error").directives(), "error,shoal=error");
        assert_eq!(parse("off").directives(), "off,shoal=off");
        assert_eq!(LogLevel::default().directives(), "warn,shoal=info");
    }

    #[test]
    fn a_filter_names_targets_that_win_over_the_base() {
        let l = parse("info, shoal_p2p=debug ,wasmtime=info");
        assert_eq!(l.base(), Level::Info);
        assert_eq!(
            l.directives(),
            "warn,shoal=info,shoal_p2p=debug,wasmtime=info"
        );
        assert_eq!(l.to_string(), "info,shoal_p2p=debug,wasmtime=info");
        // Naming shoal itself replaces the base for shoal's crates.
        assert_eq!(parse("info,shoal=debug").directives(), "warn,shoal=debug");
        // Targets alone: shoal at info.
        assert_eq!(
            parse("shoal_registry::api=trace").directives(),
            "warn,shoal=info,shoal_registry::api=trace"
        );
    }

    #[test]
    fn misspellings_are_refused_with_the_expected_form() {
        for bad in [
            "debgu",
            "",
            " , ",
            "info,debug",
            "shoal=loud",
            "sho al=debug",
            "=debug",
            "a::=info",
            "shoal[span]=debug",
        ] {
            let e = bad.parse::<LogLevel>().unwrap_err().to_string();
            assert!(e.ends_with(LOG_LEVEL_FORM), "{bad:?}: {e}");
        }
    }

    proptest! {
        #[test]
        fn what_displays_parses_back(
            base in proptest::option::of(0..6usize),
            targets in proptest::collection::vec(("[a-z_][a-z0-9_]{0,8}(::[a-z_]{1,5})?", 0..6usize), 0..4),
        ) {
            const LEVELS: [Level; 6] =
                [Level::Off, Level::Error, Level::Warn, Level::Info, Level::Debug, Level::Trace];
            let level = LogLevel {
                base: base.map(|b| LEVELS[b]),
                targets: targets.into_iter().map(|(t, l)| (t, LEVELS[l])).collect(),
            };
            prop_assume!(level.base.is_some() || !level.targets.is_empty());
            prop_assert_eq!(level.to_string().parse::<LogLevel>().unwrap(), level);
        }

        #[test]
        fn parsing_never_panics(text in "\\PC{0,40}") {
            let _ = text.parse::<LogLevel>();
        }
    }
}
