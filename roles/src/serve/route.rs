//! What a request is about, for its log line: the endpoint (`route`, the same for every request
//! to it) and the repository, digest and tag it names, each a field of its own.
//!
//! Registry API paths (`/v2/...`) are read with the registry's own pure router, since their
//! repository names hold slashes no axum route can capture; every other route is axum's
//! matched route and its parameters, recorded by [`record_matched`], one layer over the whole
//! router, so no handler does anything for its log line.

use std::borrow::Cow;

use axum::extract::{FromRequestParts, MatchedPath, Path, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use shoal_registry::api::route::{self, Route};
use shoal_registry::{Reference, TagKey};

/// Longest value of a field taken from a request path; longer ones are cut (a repository name
/// is at most 255 characters, a digest 71 for sha256).
const MAX_FIELD: usize = 256;

/// A request's route and what it names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct RouteFields {
    /// The endpoint, with placeholders: `/v2/{name}/blobs/{digest}`, `/tags/{tag}`.
    pub route: Option<Cow<'static, str>>,
    /// The repository (a namespace, in the P2P roles' paths).
    pub repository: Option<String>,
    /// The digest the path names.
    pub digest: Option<String>,
    /// The tag the path names.
    pub tag: Option<String>,
    /// The path itself, only when no route matched (a 404 worth reading).
    pub path: Option<String>,
}

impl RouteFields {
    /// The fields of a registry API path; `None` for any other path.
    pub(super) fn of_registry(method: &Method, path: &str) -> Option<RouteFields> {
        if path != "/v2" && !path.starts_with("/v2/") {
            return None;
        }
        let Ok(Ok(parsed)) = route::parse_for(method, path) else {
            return Some(RouteFields::unmatched(path));
        };
        let mut fields = RouteFields {
            route: Some(Cow::Borrowed(parsed.template())),
            repository: parsed.repository().map(|r| r.to_string()),
            ..RouteFields::default()
        };
        match parsed {
            Route::Blob(_, d) | Route::Referrers(_, d) => fields.digest = Some(d.to_string()),
            Route::Manifest(_, Reference::Digest(d)) => fields.digest = Some(d.to_string()),
            Route::Manifest(_, Reference::Tag(t)) => fields.tag = Some(t.to_string()),
            _ => {}
        }
        Some(fields)
    }

    /// A path no route knows.
    pub(super) fn unmatched(path: &str) -> RouteFields {
        RouteFields {
            path: Some(capped(path)),
            ..RouteFields::default()
        }
    }

    /// An axum route and its parameters by name: `ns` is the repository, `digest` the digest,
    /// `tag` a build-index's `repo:tag`.
    fn of_matched(route: &str, params: &[(String, String)]) -> RouteFields {
        let mut fields = RouteFields {
            route: Some(Cow::Owned(capped(route))),
            ..RouteFields::default()
        };
        for (name, value) in params {
            match name.as_str() {
                "ns" => fields.repository = Some(capped(value)),
                "digest" => fields.digest = Some(capped(value)),
                "tag" => match value.parse::<TagKey>() {
                    Ok(key) => {
                        fields.repository = Some(key.repo.to_string());
                        fields.tag = Some(key.tag.to_string());
                    }
                    Err(_) => fields.tag = Some(capped(value)),
                },
                _ => {}
            }
        }
        fields
    }
}

fn capped(text: &str) -> String {
    text.chars().take(MAX_FIELD).collect()
}

/// Middleware over every route of a served router: puts the matched route and its parameters
/// in the response's extensions, for the request log.
pub(super) async fn record_matched(request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let matched = parts
        .extensions
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let fields = match &matched {
        Some(route) => {
            let params = Path::<Vec<(String, String)>>::from_request_parts(&mut parts, &())
                .await
                .map(|Path(p)| p)
                .unwrap_or_default();
            Some(RouteFields::of_matched(route, &params))
        }
        None => None,
    };
    let mut response = next.run(Request::from_parts(parts, body)).await;
    if let Some(fields) = fields {
        response.extensions_mut().insert(fields);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn registry_paths_give_repository_digest_and_tag() {
        let f =
            RouteFields::of_registry(&Method::GET, "/v2/library/alpine/manifests/3.19").unwrap();
        assert_eq!(f.route.as_deref(), Some("/v2/{name}/manifests/{reference}"));
        assert_eq!(f.repository.as_deref(), Some("library/alpine"));
        assert_eq!(
            (f.tag.as_deref(), f.digest.as_deref()),
            (Some("3.19"), None)
        );

        let f = RouteFields::of_registry(&Method::HEAD, &format!("/v2/a/b/c/blobs/{D}")).unwrap();
        assert_eq!(f.route.as_deref(), Some("/v2/{name}/blobs/{digest}"));
        assert_eq!(f.repository.as_deref(), Some("a/b/c"));
        assert_eq!(f.digest.as_deref(), Some(D));

        let f = RouteFields::of_registry(&Method::POST, "/v2/x/blobs/uploads/").unwrap();
        assert_eq!(f.route.as_deref(), Some("/v2/{name}/blobs/uploads/"));
        assert_eq!(f.repository.as_deref(), Some("x"));
        assert_eq!(f.path, None);
    }

    #[test]
    fn other_paths_are_not_the_registrys() {
        assert_eq!(RouteFields::of_registry(&Method::GET, "/health"), None);
        assert_eq!(RouteFields::of_registry(&Method::GET, "/v22"), None);
        let bad = RouteFields::of_registry(&Method::GET, "/v2/UPPER/blobs/x").unwrap();
        assert_eq!(
            (bad.route, bad.path.as_deref()),
            (None, Some("/v2/UPPER/blobs/x"))
        );
    }

    #[test]
    fn matched_routes_name_their_parameters() {
        let params = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let f = RouteFields::of_matched(
            "/namespace/{ns}/blobs/{digest}",
            &params(&[("ns", "library/alpine"), ("digest", D)]),
        );
        assert_eq!(f.repository.as_deref(), Some("library/alpine"));
        assert_eq!(f.digest.as_deref(), Some(D));
        let f = RouteFields::of_matched("/tags/{tag}", &params(&[("tag", "team/app:1.0")]));
        assert_eq!(f.repository.as_deref(), Some("team/app"));
        assert_eq!(f.tag.as_deref(), Some("1.0"));
        let long = "x".repeat(10_000);
        let f = RouteFields::of_matched("/tags/{tag}", &params(&[("tag", &long)]));
        assert_eq!(f.tag.map(|t| t.len()), Some(MAX_FIELD));
    }
}
