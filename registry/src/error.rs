//! The OCI distribution error codes as one table, and the one place they become a response.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error code from the distribution spec, with the HTTP status it is sent with. Every
/// error response carries its code as a response extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// Blob unknown to registry.
    BlobUnknown,
    /// Blob upload invalid (bad chunk, bad state).
    BlobUploadInvalid,
    /// Blob upload unknown to registry.
    BlobUploadUnknown,
    /// Provided digest did not match uploaded content, or is malformed.
    DigestInvalid,
    /// A manifest references a blob the repository does not have.
    ManifestBlobUnknown,
    /// Manifest invalid.
    ManifestInvalid,
    /// Manifest unknown.
    ManifestUnknown,
    /// Invalid repository name.
    NameInvalid,
    /// Repository name not known to registry.
    NameUnknown,
    /// Provided length did not match content length.
    SizeInvalid,
    /// Authentication required.
    Unauthorized,
    /// Requested access to the resource is denied.
    Denied,
    /// The operation is unsupported.
    Unsupported,
    /// Too many requests.
    TooManyRequests,
    /// A bad `n` or `last` on a paginated list.
    PaginationInvalid,
    /// Range not satisfiable (blob reads and out-of-order chunks).
    RangeInvalid,
    /// Something went wrong inside shoal or a backend.
    Unknown,
    /// A backend or upstream is unavailable.
    Unavailable,
    /// The disk (or a backend) has no room for the write.
    StorageFull,
}

impl ErrorCode {
    /// The code as the envelope spells it (`BLOB_UNKNOWN`).
    pub fn as_str(self) -> &'static str {
        self.describe().0
    }

    /// The code string and HTTP status, the single table for the whole API.
    pub fn describe(self) -> (&'static str, StatusCode) {
        use ErrorCode::*;
        match self {
            BlobUnknown => ("BLOB_UNKNOWN", StatusCode::NOT_FOUND),
            BlobUploadInvalid => ("BLOB_UPLOAD_INVALID", StatusCode::BAD_REQUEST),
            BlobUploadUnknown => ("BLOB_UPLOAD_UNKNOWN", StatusCode::NOT_FOUND),
            DigestInvalid => ("DIGEST_INVALID", StatusCode::BAD_REQUEST),
            ManifestBlobUnknown => ("MANIFEST_BLOB_UNKNOWN", StatusCode::BAD_REQUEST),
            ManifestInvalid => ("MANIFEST_INVALID", StatusCode::BAD_REQUEST),
            ManifestUnknown => ("MANIFEST_UNKNOWN", StatusCode::NOT_FOUND),
            NameInvalid => ("NAME_INVALID", StatusCode::BAD_REQUEST),
            NameUnknown => ("NAME_UNKNOWN", StatusCode::NOT_FOUND),
            SizeInvalid => ("SIZE_INVALID", StatusCode::BAD_REQUEST),
            Unauthorized => ("UNAUTHORIZED", StatusCode::UNAUTHORIZED),
            Denied => ("DENIED", StatusCode::FORBIDDEN),
            Unsupported => ("UNSUPPORTED", StatusCode::METHOD_NOT_ALLOWED),
            TooManyRequests => ("TOOMANYREQUESTS", StatusCode::TOO_MANY_REQUESTS),
            PaginationInvalid => ("PAGINATION_NUMBER_INVALID", StatusCode::BAD_REQUEST),
            RangeInvalid => ("BLOB_UPLOAD_INVALID", StatusCode::RANGE_NOT_SATISFIABLE),
            Unknown => ("UNKNOWN", StatusCode::INTERNAL_SERVER_ERROR),
            Unavailable => ("UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
            // The spec has no code for a full disk. 507 (RFC 4918: the server cannot store
            // what the request needs) is a 5xx, so clients treat it as the registry's fault
            // and may retry later, not as a bad request to give up on; docker, containerd
            // and skopeo print the message of any 5xx envelope, and `UNKNOWN` is the code
            // they all accept for a failure outside the table (distribution sends it for
            // storage driver errors). BLOB_UPLOAD_INVALID would blame the client's bytes.
            StorageFull => ("UNKNOWN", StatusCode::INSUFFICIENT_STORAGE),
        }
    }
}

/// An API error: a code, a human message, and optional detail; renders as the spec's JSON body.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RegistryError {
    /// The spec code.
    pub code: ErrorCode,
    /// What went wrong, for a person.
    pub message: String,
    /// Extra machine-readable detail.
    pub detail: Option<serde_json::Value>,
    /// Extra response headers (e.g. `Content-Range` on a 416).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl RegistryError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        RegistryError {
            code,
            message: message.into(),
            detail: None,
            headers: Vec::new(),
        }
    }

    /// Attaches detail.
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Attaches a response header.
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// An internal failure; logs the cause and hides nothing a client could act on.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(%err, "{context}");
        RegistryError::new(ErrorCode::Unknown, format!("{context}: {err}"))
    }
}

impl RegistryError {
    /// The disk has no room: `context` says for what.
    pub fn storage_full(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(%err, "{context}: the disk is full");
        RegistryError::new(
            ErrorCode::StorageFull,
            format!("the registry's disk is full ({context}: {err}); free space and retry"),
        )
    }
}

impl From<std::io::Error> for RegistryError {
    fn from(e: std::io::Error) -> Self {
        // ENOSPC, and EDQUOT (a quota is a full disk to the writer).
        if matches!(
            e.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        ) {
            RegistryError::storage_full("writing to the local store", e)
        } else {
            RegistryError::internal("storage I/O failed", e)
        }
    }
}

impl IntoResponse for RegistryError {
    fn into_response(self) -> Response {
        let (code, status) = self.code.describe();
        let mut entry = json!({ "code": code, "message": self.message });
        if let Some(detail) = self.detail {
            entry["detail"] = detail;
        }
        let body = serde_json::to_vec(&json!({ "errors": [entry] })).unwrap_or_default();
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in self.headers {
            h.insert(name, value);
        }
        // For whatever logs the response (the listener's request log): the code without
        // parsing the body back.
        resp.extensions_mut().insert(self.code);
        resp
    }
}

/// Result type for API handlers.
pub type ApiResult<T> = Result<T, RegistryError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_response_carries_its_code() {
        let resp = RegistryError::new(ErrorCode::ManifestUnknown, "no").into_response();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let code = resp.extensions().get::<ErrorCode>().copied();
        assert_eq!(code.map(ErrorCode::as_str), Some("MANIFEST_UNKNOWN"));
    }
}
