//! Turning a request path into a typed route. Repository names contain slashes, so routes are
//! recognised from the end of the path, the way distribution's router does.

use crate::digest::Digest;
use crate::error::{ErrorCode, RegistryError};
use crate::name::{Reference, ReferenceError, RepoName};

/// One endpoint of the distribution API, with its parsed path parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/v2/`
    Base,
    /// `/v2/_catalog`
    Catalog,
    /// `/v2/<name>/blobs/<digest>`
    Blob(RepoName, Digest),
    /// `/v2/<name>/blobs/uploads/`
    UploadStart(RepoName),
    /// `/v2/<name>/blobs/uploads/<id>`
    Upload(RepoName, String),
    /// `/v2/<name>/manifests/<reference>`
    Manifest(RepoName, Reference),
    /// `/v2/<name>/tags/list`
    Tags(RepoName),
    /// `/v2/<name>/referrers/<digest>`
    Referrers(RepoName, Digest),
}

impl Route {
    /// The endpoint with its parameters as placeholders (`/v2/{name}/blobs/{digest}`), the
    /// same for every request to it: what logs group requests by.
    pub fn template(&self) -> &'static str {
        match self {
            Route::Base => "/v2/",
            Route::Catalog => "/v2/_catalog",
            Route::Blob(..) => "/v2/{name}/blobs/{digest}",
            Route::UploadStart(_) => "/v2/{name}/blobs/uploads/",
            Route::Upload(..) => "/v2/{name}/blobs/uploads/{uuid}",
            Route::Manifest(..) => "/v2/{name}/manifests/{reference}",
            Route::Tags(_) => "/v2/{name}/tags/list",
            Route::Referrers(..) => "/v2/{name}/referrers/{digest}",
        }
    }

    /// The repository the request is about, when it names one.
    pub fn repository(&self) -> Option<&RepoName> {
        match self {
            Route::Base | Route::Catalog => None,
            Route::Blob(r, _)
            | Route::UploadStart(r)
            | Route::Upload(r, _)
            | Route::Manifest(r, _)
            | Route::Tags(r)
            | Route::Referrers(r, _) => Some(r),
        }
    }
}

/// A path that is not an API endpoint at all.
#[derive(Debug, PartialEq, Eq)]
pub struct NotFound;

fn name(segments: &[&str]) -> Result<RepoName, RegistryError> {
    let joined = segments.join("/");
    joined.parse().map_err(|e: crate::name::NameError| {
        RegistryError::new(ErrorCode::NameInvalid, e.to_string())
    })
}

fn digest(s: &str) -> Result<Digest, RegistryError> {
    s.parse().map_err(|e: crate::digest::DigestError| {
        RegistryError::new(ErrorCode::DigestInvalid, e.to_string())
    })
}

/// Parses a request path. `Ok(Err(NotFound))` for paths outside the API; `Err` for API paths
/// whose parameters are malformed (bad name, bad digest, bad tag).
pub fn parse(path: &str) -> Result<Result<Route, NotFound>, RegistryError> {
    parse_with(path, false)
}

/// [`parse`] for a request with `method`. A GET or HEAD of a manifest by a reference that is
/// neither a tag nor a digest asks for something no registry can hold: that is
/// `MANIFEST_UNKNOWN` (404), as distribution answers, so a client probing names sees "not
/// there" rather than a complaint about its request; a PUT keeps `MANIFEST_INVALID` /
/// `DIGEST_INVALID`, since the client is trying to create it under that name.
pub fn parse_for(
    method: &http::Method,
    path: &str,
) -> Result<Result<Route, NotFound>, RegistryError> {
    parse_with(
        path,
        matches!(*method, http::Method::GET | http::Method::HEAD),
    )
}

fn parse_with(path: &str, reads: bool) -> Result<Result<Route, NotFound>, RegistryError> {
    let Some(rest) = path.strip_prefix("/v2") else {
        return Ok(Err(NotFound));
    };
    if rest.is_empty() || rest == "/" {
        return Ok(Ok(Route::Base));
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Ok(Err(NotFound));
    };
    if rest == "_catalog" {
        return Ok(Ok(Route::Catalog));
    }
    let segs: Vec<&str> = rest.split('/').collect();
    let n = segs.len();
    if n >= 3 && segs[n - 2] == "tags" && segs[n - 1] == "list" {
        return Ok(Ok(Route::Tags(name(&segs[..n - 2])?)));
    }
    if n >= 4 && segs[n - 3] == "blobs" && segs[n - 2] == "uploads" {
        let repo = name(&segs[..n - 3])?;
        return Ok(Ok(if segs[n - 1].is_empty() {
            Route::UploadStart(repo)
        } else {
            Route::Upload(repo, segs[n - 1].to_owned())
        }));
    }
    if n >= 3 && segs[n - 2] == "blobs" && segs[n - 1] == "uploads" {
        return Ok(Ok(Route::UploadStart(name(&segs[..n - 2])?)));
    }
    if n >= 3 {
        let (kind, last, repo_segs) = (segs[n - 2], segs[n - 1], &segs[..n - 2]);
        match kind {
            "blobs" => return Ok(Ok(Route::Blob(name(repo_segs)?, digest(last)?))),
            "referrers" => return Ok(Ok(Route::Referrers(name(repo_segs)?, digest(last)?))),
            "manifests" => {
                let repo = name(repo_segs)?;
                let reference = last.parse().map_err(|e| match e {
                    _ if reads => RegistryError::new(
                        ErrorCode::ManifestUnknown,
                        format!(
                            "manifest {:?} is unknown: {e}",
                            last.chars().take(160).collect::<String>()
                        ),
                    ),
                    ReferenceError::Digest(d) => {
                        RegistryError::new(ErrorCode::DigestInvalid, d.to_string())
                    }
                    ReferenceError::Tag(t) => {
                        RegistryError::new(ErrorCode::ManifestInvalid, t.to_string())
                    }
                })?;
                return Ok(Ok(Route::Manifest(repo, reference)));
            }
            _ => {}
        }
    }
    Ok(Err(NotFound))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn ok(p: &str) -> Route {
        parse(p).unwrap().unwrap()
    }

    fn code(p: &str) -> ErrorCode {
        parse(p).unwrap_err().code
    }

    #[test]
    fn recognises_every_endpoint() {
        assert_eq!(ok("/v2/"), Route::Base);
        assert_eq!(ok("/v2"), Route::Base);
        assert_eq!(ok("/v2/_catalog"), Route::Catalog);
        assert!(
            matches!(ok(&format!("/v2/a/b/blobs/{D}")), Route::Blob(n, _) if n.as_str() == "a/b")
        );
        assert!(matches!(ok("/v2/a/blobs/uploads/"), Route::UploadStart(n) if n.as_str() == "a"));
        assert!(matches!(ok("/v2/a/blobs/uploads"), Route::UploadStart(_)));
        assert!(matches!(ok("/v2/a/blobs/uploads/xyz"), Route::Upload(_, id) if id == "xyz"));
        assert!(matches!(
            ok("/v2/a/manifests/latest"),
            Route::Manifest(_, Reference::Tag(_))
        ));
        assert!(matches!(
            ok(&format!("/v2/a/manifests/{D}")),
            Route::Manifest(_, Reference::Digest(_))
        ));
        assert!(matches!(ok("/v2/x/tags/list"), Route::Tags(n) if n.as_str() == "x"));
        assert!(matches!(
            ok(&format!("/v2/x/referrers/{D}")),
            Route::Referrers(..)
        ));
    }

    #[test]
    fn names_that_contain_route_words() {
        assert!(
            matches!(ok("/v2/blobs/manifests/latest"), Route::Manifest(n, _) if n.as_str() == "blobs")
        );
        assert!(
            matches!(ok("/v2/a/tags/list/tags/list"), Route::Tags(n) if n.as_str() == "a/tags/list")
        );
        assert!(
            matches!(ok("/v2/manifests/blobs/uploads/"), Route::UploadStart(n) if n.as_str() == "manifests")
        );
    }

    #[test]
    fn bad_parameters_get_their_codes() {
        assert_eq!(code("/v2/a/../b/manifests/latest"), ErrorCode::NameInvalid);
        assert_eq!(code("/v2/A/blobs/uploads/"), ErrorCode::NameInvalid);
        assert_eq!(code("/v2/a/blobs/sha256:nothex"), ErrorCode::DigestInvalid);
        assert_eq!(code("/v2/a/manifests/sha256:abc"), ErrorCode::DigestInvalid);
        assert_eq!(code("/v2/a/manifests/.bad"), ErrorCode::ManifestInvalid);
    }

    #[test]
    fn other_paths_are_not_found() {
        for p in [
            "/",
            "/v1/",
            "/v2x",
            "/v2/a",
            "/v2/a/b",
            "/v2/a/unknown/x",
            "/health",
        ] {
            assert_eq!(parse(p).unwrap(), Err(NotFound), "{p}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(p in "(/v2)?(/[a-z0-9:._-]{0,8}){0,6}/?") {
            let _ = parse(&p);
        }
    }
}
