//! Turning the failures a plugin meets into the WIT `error` variant.

use crate::bindings::shoal::backend::types::Error;
use crate::bindings::wasi::http::types::ErrorCode;

impl Error {
    /// The error for an HTTP status the storage answered with; `None` for success codes.
    pub fn from_status(status: u16, what: &str) -> Option<Error> {
        Some(match status {
            200..=299 => return None,
            404 | 410 => Error::NotFound,
            401 | 403 => Error::Unauthorized(format!("{what}: HTTP {status}")),
            429 => Error::Throttled(format!("{what}: HTTP {status}")),
            416 => Error::Invalid(format!("{what}: HTTP {status}, range not satisfiable")),
            500..=599 => Error::Unavailable(format!("{what}: HTTP {status}")),
            _ => Error::Other(format!("{what}: HTTP {status}")),
        })
    }

    /// The error for a failure to reach the storage over `wasi:http`.
    pub fn from_http(code: &ErrorCode, what: &str) -> Error {
        match code {
            ErrorCode::HttpRequestDenied => Error::Unauthorized(format!(
                "{what}: the host denied the request (the host is not in this backend's config or allowed_hosts)"
            )),
            _ => Error::Unavailable(format!("{what}: {code:?}")),
        }
    }

    /// The error for a local I/O failure, `NotFound` kept apart.
    pub fn from_io(e: &std::io::Error, what: &str) -> Error {
        match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound,
            std::io::ErrorKind::PermissionDenied => Error::Unauthorized(format!("{what}: {e}")),
            // The WIT has no case for it (adding one changes the world every plugin links
            // against); the message is what the operator needs.
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                Error::Other(format!("{what}: the disk is full ({e})"))
            }
            _ => Error::Other(format!("{what}: {e}")),
        }
    }

    /// True for failures worth retrying: the storage was unreachable or answered 5xx.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Throttled(_))
    }
}

/// Attempts [`retry`] makes of a request that keeps failing transiently.
pub const TRIES: u32 = 4;

/// The wait after the first failed try; each later wait is three times the one before.
pub const FIRST_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs `attempt` up to [`TRIES`] times while it fails with a transient error (unreachable,
/// 5xx, throttled), waiting 0.1 s, 0.3 s, 0.9 s in between; the final error says how many
/// tries it took. Only for requests without a blob body: an upload stream cannot be read
/// twice.
pub fn retry<T>(what: &str, mut attempt: impl FnMut() -> Result<T, Error>) -> Result<T, Error> {
    let mut wait = FIRST_WAIT;
    let mut tries = 1;
    loop {
        match attempt() {
            Err(e) if e.is_transient() && tries < TRIES => {
                crate::log::info(&format!(
                    "{what}: try {tries} failed ({e:?}); retrying in {wait:?}"
                ));
                std::thread::sleep(wait);
                wait *= 3;
                tries += 1;
            }
            Err(Error::Unavailable(m)) if tries > 1 => {
                return Err(Error::Unavailable(format!(
                    "{m} (gave up after {tries} tries)"
                )));
            }
            Err(Error::Throttled(m)) if tries > 1 => {
                return Err(Error::Throttled(format!(
                    "{m} (gave up after {tries} tries)"
                )));
            }
            result => return result,
        }
    }
}
