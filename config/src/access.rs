//! `access:` — who may push, pull and delete on a registry listener (`shoal dev`, the proxy).
//! A shoal addition: Kraken leaves credentials to an nginx in front; shoal has no nginx.
//!
//! The `htpasswd` file is read here too, so `shoal config check` names a bad line before the
//! registry starts; [`read_htpasswd`] is the one parser of that format.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::NamespacePattern;
use crate::duration::Duration;
use crate::keypath::KeyPath;
use crate::validate::{Problems, Validate};

/// `access:` of a registry listener; without `htpasswd` anyone may push, pull and delete.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccessConfig {
    /// An Apache htpasswd file of bcrypt hashes (`htpasswd -B`); unset means no credentials
    /// are needed. Read once, at start.
    pub htpasswd: Option<PathBuf>,
    /// Repositories (regexes over the whole name) anyone may pull without credentials [none].
    pub anonymous_pull: Vec<NamespacePattern>,
    /// The bearer tokens the listener's `/token` endpoint issues.
    pub token: TokenConfig,
    /// Failed logins one client address may make per `failed_login_window` before further
    /// logins are refused with 429 until the window ends [10].
    pub max_failed_logins: u32,
    /// The window `max_failed_logins` counts in [1m].
    pub failed_login_window: Duration,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            htpasswd: None,
            anonymous_pull: Vec::new(),
            token: TokenConfig::default(),
            max_failed_logins: 10,
            failed_login_window: Duration::from_mins(1),
        }
    }
}

/// `access.token:` — the signed tokens of Docker's bearer flow.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// The service name in challenges and tokens [shoal-registry].
    pub service: String,
    /// How long a token is valid [5m]; Docker keeps a token at least 60 s, so no less.
    pub expiry: Duration,
    /// A file holding the HMAC-SHA256 signing key (32 bytes or more); unset means a random
    /// key per process, so tokens do not survive a restart or work on another replica.
    pub key_file: Option<PathBuf>,
    /// Where clients fetch tokens; unset means `http://<Host header>/token` on this listener.
    pub realm: Option<String>,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            service: "shoal-registry".to_owned(),
            expiry: Duration::from_mins(5),
            key_file: None,
            realm: None,
        }
    }
}

/// The shortest signing key accepted: HMAC-SHA256 gains nothing past its block, and a
/// shorter one is guessable.
pub const MIN_TOKEN_KEY_BYTES: u64 = 32;

impl Validate for AccessConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        match &self.htpasswd {
            Some(path) => {
                if let Err(e) = read_htpasswd(path) {
                    problems.at(
                        &at.key("htpasswd"),
                        e.to_string(),
                        "an htpasswd file of bcrypt hashes, one `user:$2y$...` line per user (htpasswd -B)",
                    );
                }
            }
            None => {
                problems.require(
                    self.anonymous_pull.is_empty(),
                    &at.key("anonymous_pull"),
                    "has no effect without `access.htpasswd`: without credentials anyone may push and pull",
                    "an `access.htpasswd` file beside it, or no `anonymous_pull`",
                );
            }
        }
        let token = at.key("token");
        problems.require(
            !self.token.service.is_empty() && !self.token.service.contains(['"', '\\']),
            &token.key("service"),
            "must be a non-empty name without quotes or backslashes",
            "a name like shoal-registry",
        );
        problems.require(
            self.token.expiry.get() >= std::time::Duration::from_secs(60),
            &token.key("expiry"),
            "is shorter than 60s, the least Docker keeps a token (it would send expired ones)",
            "a duration of 60s or more, like 5m",
        );
        if let Some(path) = &self.token.key_file {
            let problem = match std::fs::metadata(path) {
                Err(e) => Some(format!("cannot read {}: {e}", path.display())),
                Ok(m) if m.len() < MIN_TOKEN_KEY_BYTES => Some(format!(
                    "{} holds {} bytes, too short a key",
                    path.display(),
                    m.len()
                )),
                Ok(_) => None,
            };
            if let Some(problem) = problem {
                problems.at(
                    &token.key("key_file"),
                    problem,
                    "a file of 32 or more random bytes, e.g. from `head -c 32 /dev/urandom`",
                );
            }
        }
        if let Some(realm) = &self.token.realm {
            problems.require(
                (realm.starts_with("http://") || realm.starts_with("https://"))
                    && !realm.contains(['"', '\\', ' ']),
                &token.key("realm"),
                "is not an http(s) URL",
                "a URL like https://registry.example.com/token",
            );
        }
        problems.at_least_one(self.max_failed_logins.into(), &at.key("max_failed_logins"));
        problems.require(
            !self.failed_login_window.is_zero(),
            &at.key("failed_login_window"),
            "must be longer than 0s",
            "a duration like 1m",
        );
    }
}

/// Users and their bcrypt hashes, as read from an htpasswd file.
pub type HtpasswdUsers = BTreeMap<String, String>;

/// Why an htpasswd file cannot be used; Display names the file and, for a bad line, its number.
#[derive(Debug, thiserror::Error)]
pub enum HtpasswdError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O failure.
        source: std::io::Error,
    },
    /// A line is not `user:bcrypt-hash`.
    #[error("{}: line {line}: {reason}", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// Reads an htpasswd file: `user:hash` lines, blank lines and `#` comments skipped. Only
/// bcrypt hashes are accepted (MD5, SHA-1 and crypt(3) hashes are weak, and refusing them
/// tells the operator at start rather than at the first failed login).
pub fn read_htpasswd(path: &Path) -> Result<HtpasswdUsers, HtpasswdError> {
    let text = std::fs::read_to_string(path).map_err(|source| HtpasswdError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_htpasswd(&text).map_err(|(line, reason)| HtpasswdError::Line {
        path: path.to_owned(),
        line,
        reason,
    })
}

/// Parses htpasswd text; an error is the line number (from 1) and what is wrong with it.
pub fn parse_htpasswd(text: &str) -> Result<HtpasswdUsers, (usize, String)> {
    let mut users = HtpasswdUsers::new();
    let mut first_line = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, hash)) = line.split_once(':') else {
            return Err((line_no, "expected `user:hash`, found no `:`".to_owned()));
        };
        if user.is_empty() {
            return Err((line_no, "the user name is empty".to_owned()));
        }
        if !is_bcrypt(hash) {
            return Err((
                line_no,
                format!(
                    "the hash of user {user:?} is not bcrypt (`$2y$`, `$2b$` or `$2a$`, a cost, \
                     53 characters); write it with `htpasswd -B`"
                ),
            ));
        }
        if let Some(first) = first_line.insert(user.to_owned(), line_no) {
            return Err((line_no, format!("user {user:?} is already on line {first}")));
        }
        users.insert(user.to_owned(), hash.to_owned());
    }
    Ok(users)
}

/// `$2y$10$` + 22 characters of salt + 31 of hash, in bcrypt's base64 alphabet.
fn is_bcrypt(hash: &str) -> bool {
    let b = hash.as_bytes();
    b.len() == 60
        && b.starts_with(b"$2")
        && matches!(b[2], b'a' | b'b' | b'x' | b'y')
        && b[3] == b'$'
        && hash[4..6]
            .parse::<u32>()
            .is_ok_and(|cost| (4..=31).contains(&cost))
        && b[6] == b'$'
        && b[7..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    // `htpasswd -nbB -C 5 alice secret`.
    const ALICE: &str = "alice:$2y$05$Xtrq2y0zEJWOmwy8wzj7eu9g0/NcSZVQ0KlcE9BJSiMs7ZnAQ9f0G";

    #[test]
    fn reads_users_and_skips_comments_and_blank_lines() {
        let text = format!("# team\n\n{ALICE}\nbob:{}\n", &ALICE[6..]);
        let users = parse_htpasswd(&text).unwrap();
        assert_eq!(users.keys().collect::<Vec<_>>(), ["alice", "bob"]);
        assert!(users["alice"].starts_with("$2y$05$"));
    }

    #[test]
    fn names_the_line_that_is_not_bcrypt() {
        let text = format!("{ALICE}\n\ncarol:{{SHA}}qUqP5cyxm6YcTAhz05Hph5gvu9M=\n");
        let (line, reason) = parse_htpasswd(&text).unwrap_err();
        assert_eq!(line, 3);
        assert!(
            reason.contains("carol") && reason.contains("bcrypt"),
            "{reason}"
        );
        assert_eq!(parse_htpasswd("no-colon\n").unwrap_err().0, 1);
        assert_eq!(
            parse_htpasswd(&format!(":{}", &ALICE[6..])).unwrap_err().0,
            1
        );
        let dup = format!("{ALICE}\n{ALICE}\n");
        let (line, reason) = parse_htpasswd(&dup).unwrap_err();
        assert_eq!(line, 2);
        assert!(reason.contains("line 1"), "{reason}");
    }

    #[test]
    fn bcrypt_shape() {
        assert!(is_bcrypt(&ALICE[6..]));
        assert!(!is_bcrypt("$2y$05$short"));
        assert!(!is_bcrypt(&ALICE[6..].replace("$05$", "$99$")));
        assert!(!is_bcrypt(&ALICE[6..].replace("$2y$", "$1$x")));
        assert!(!is_bcrypt("$apr1$abcdefgh$abcdefghijklmnopqrstuv"));
    }
}
