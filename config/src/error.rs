//! The crate's one error type: every way a config can fail to load, each worded for the person
//! who has to fix the file.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// One thing wrong with a config, located by file and key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The file that set the offending key (after `extends` layering), or `<inline>`.
    pub file: String,
    /// The key path, e.g. `backends[0].backend.s3.region`; `(top level)` for the document.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What would have been accepted, when known.
    pub expected: Option<String>,
    /// The offending value as written, when it is a scalar and not a secret.
    pub value: Option<String>,
    /// A likely fix, such as `did you mean `region`?`.
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: at `{}`: ", self.file, self.path)?;
        let mut lines = self.message.lines();
        f.write_str(lines.next().unwrap_or_default())?;
        for line in lines {
            write!(f, "\n    {line}")?;
        }
        // Serde's messages often quote the value already; say it once.
        if let Some(value) = self
            .value
            .as_ref()
            .filter(|v| !self.message.contains(v.as_str()))
        {
            write!(f, "\n    found: {value}")?;
        }
        if let Some(expected) = &self.expected {
            write!(f, "\n    expected: {expected}")?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n    {hint}")?;
        }
        Ok(())
    }
}

/// Why a configuration could not be loaded; Display is the message shown to the operator.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file itself could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file as named by the caller.
        path: PathBuf,
        /// The I/O failure.
        source: io::Error,
    },

    /// A file's `extends:` names a base that cannot be read.
    #[error("{}: `extends: {}`: cannot read the base file: {source}", file.display(), base.display())]
    MissingBase {
        /// The file with the `extends` key.
        file: PathBuf,
        /// The base it names, resolved against the file's folder.
        base: PathBuf,
        /// The I/O failure.
        source: io::Error,
    },

    /// `extends` leads back to a file already in the chain.
    #[error("`extends` forms a cycle: {}", chain_text(chain))]
    Cycle {
        /// Every file in the chain, ending with the one seen twice.
        chain: Vec<PathBuf>,
    },

    /// A file is not well-formed YAML.
    #[error("{file}: not valid YAML: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message, with line and column.
        message: String,
    },

    /// The YAML is well-formed but wrong: unknown keys, bad values, failed checks.
    #[error("invalid configuration ({}):\n{}", count_text(problems.len()), problems_text(problems))]
    Invalid {
        /// Every problem found, in document order where practical.
        problems: Vec<Problem>,
    },

    /// A role name on the command line that shoal does not have.
    #[error(
        "unknown role `{given}`, expected one of agent, origin, tracker, build-index, proxy, dev{}",
        hint_text(hint)
    )]
    UnknownRole {
        /// What was typed.
        given: String,
        /// The closest role name, if any is close.
        hint: Option<String>,
    },

    /// The effective config could not be written back out as YAML (a bug, not a user error).
    #[error("cannot render the effective configuration: {message}")]
    Render {
        /// The serializer's message.
        message: String,
    },
}

impl ConfigError {
    /// The problems behind an `Invalid` error, empty for the other kinds; handy in tests and UIs.
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems } => problems,
            _ => &[],
        }
    }
}

fn chain_text(chain: &[PathBuf]) -> String {
    chain
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" -> ")
}

fn count_text(n: usize) -> String {
    if n == 1 {
        "1 problem".to_owned()
    } else {
        format!("{n} problems")
    }
}

fn problems_text(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn hint_text(hint: &Option<String>) -> String {
    match hint {
        Some(h) => format!("; did you mean `{h}`?"),
        None => String::new(),
    }
}
