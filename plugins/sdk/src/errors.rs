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
            _ => Error::Other(format!("{what}: {e}")),
        }
    }

    /// True for failures worth retrying: the storage was unreachable or answered 5xx.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Throttled(_))
    }
}
