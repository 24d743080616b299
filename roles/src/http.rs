//! What every role's HTTP surface shares: one error type that is the response
//! ([`HttpError`]), extractors that parse paths into types at the edge ([`BlobPath`],
//! [`TagPath`], [`TagDigestPath`], [`RepoPath`]), the one percent-encoder for path segments
//! ([`segment`]), and the one way to build an outbound client ([`client`]). Serving is
//! [`crate::serve`].

use std::time::Duration;

use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use shoal_registry::{Digest, RepoName, TagKey};

/// Connect timeout of every outbound client.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A failed request: a status and a text saying why. The one place a role's handler error
/// becomes a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The status.
    pub status: StatusCode,
    /// The reason, sent as the body.
    pub message: String,
}

impl HttpError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }

    /// 400: the request cannot be parsed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404: nothing by that name.
    pub fn not_found(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::NOT_FOUND, message)
    }

    /// 500: this host failed.
    pub fn internal(message: impl std::fmt::Display) -> Self {
        HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, message.to_string())
    }

    /// 502: the storage behind this host failed.
    pub fn bad_gateway(message: impl std::fmt::Display) -> Self {
        HttpError::new(StatusCode::BAD_GATEWAY, message.to_string())
    }

    /// 503: try again later.
    pub fn unavailable(message: impl Into<String>) -> Self {
        HttpError::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.status, self.message).into_response()
    }
}

/// A handler's result.
pub type HttpResult<T> = Result<T, HttpError>;

/// `/namespace/{ns}/blobs/{digest}`: the repository (URL-escaped in the path) and the digest,
/// parsed.
#[derive(Debug, Clone)]
pub struct BlobPath {
    /// The namespace.
    pub repo: RepoName,
    /// The blob.
    pub digest: Digest,
}

impl<S: Send + Sync> FromRequestParts<S> for BlobPath {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (ns, digest): (String, String) = path_params(parts, state).await?;
        Ok(BlobPath {
            repo: parse_repo(&ns)?,
            digest: parse_digest(&digest)?,
        })
    }
}

/// `?replica=true`: the request is a copy from a peer of the same kind (an origin of the ring,
/// a build-index of another cluster), stored without being passed on, so copies never loop.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub struct ReplicaQuery {
    /// Whether the request is such a copy.
    #[serde(default)]
    pub replica: bool,
}

/// `/repositories/{repo}/tags`: the repository (URL-escaped in the path), parsed.
#[derive(Debug, Clone)]
pub struct RepoPath(pub RepoName);

impl<S: Send + Sync> FromRequestParts<S> for RepoPath {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let repo: String = path_params(parts, state).await?;
        Ok(RepoPath(parse_repo(&repo)?))
    }
}

/// `/tags/{repo:tag}`: the tag key, parsed.
#[derive(Debug, Clone)]
pub struct TagPath(pub TagKey);

impl<S: Send + Sync> FromRequestParts<S> for TagPath {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let key: String = path_params(parts, state).await?;
        Ok(TagPath(parse_tag_key(&key)?))
    }
}

/// `/tags/{repo:tag}/digest/{digest}`: the tag key and the digest it should point at.
#[derive(Debug, Clone)]
pub struct TagDigestPath(pub TagKey, pub Digest);

impl<S: Send + Sync> FromRequestParts<S> for TagDigestPath {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let (key, digest): (String, String) = path_params(parts, state).await?;
        Ok(TagDigestPath(parse_tag_key(&key)?, parse_digest(&digest)?))
    }
}

/// The path's parameters as `T` (a `String`, or a tuple of them); 400 when they do not fit.
async fn path_params<T, S>(parts: &mut Parts, state: &S) -> HttpResult<T>
where
    T: serde::de::DeserializeOwned + Send,
    S: Send + Sync,
{
    Path::<T>::from_request_parts(parts, state)
        .await
        .map(|Path(t)| t)
        .map_err(|e| HttpError::bad_request(e.body_text()))
}

fn parse_repo(ns: &str) -> HttpResult<RepoName> {
    ns.parse()
        .map_err(|e| HttpError::bad_request(format!("namespace {ns:?}: {e}")))
}

fn parse_digest(d: &str) -> HttpResult<Digest> {
    d.parse()
        .map_err(|e| HttpError::bad_request(format!("digest {d:?}: {e}")))
}

fn parse_tag_key(key: &str) -> HttpResult<TagKey> {
    key.parse()
        .map_err(|e| HttpError::bad_request(format!("{e}")))
}

/// `s` as one URL path segment: every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`)
/// percent-encoded, so a repository's `/` stays inside its segment.
pub fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_segment_keeps_slashes_and_colons_inside() {
        assert_eq!(segment("library/alpine:3.19"), "library%2Falpine%3A3.19");
        assert_eq!(segment("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(segment("100%"), "100%25");
    }
}
