//! Tag lists, the catalog and the referrers API, with `n`/`last` pagination.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{Call, OCI_FILTERS_APPLIED, Registry, set};
use crate::digest::Digest;
use crate::error::{ApiResult, ErrorCode, RegistryError};
use crate::manifest::OCI_INDEX;
use crate::name::RepoName;

/// `n` and `last` of a paginated list request, checked before any lookup.
struct Page<'a> {
    n: Option<usize>,
    last: Option<&'a str>,
}

impl<'a> Page<'a> {
    fn from_call(call: &'a Call) -> ApiResult<Self> {
        let n = match call.query.get("n") {
            None => None,
            Some(v) => Some(v.parse::<usize>().map_err(|_| {
                RegistryError::new(
                    ErrorCode::PaginationInvalid,
                    format!("n={v:?} is not a non-negative integer"),
                )
            })?),
        };
        Ok(Page {
            n,
            last: call.query.get("last").map(String::as_str),
        })
    }

    /// Applies the page to a sorted list; returns the items and whether more follow.
    fn apply(&self, all: Vec<String>) -> (Vec<String>, bool) {
        let mut items: Vec<String> = match self.last {
            Some(last) => all.into_iter().filter(|t| t.as_str() > last).collect(),
            None => all,
        };
        let more = self.n.is_some_and(|n| items.len() > n);
        if let Some(n) = self.n {
            items.truncate(n);
        }
        (items, more)
    }
}

fn json_response(value: serde_json::Value, content_type: &str) -> Response {
    let mut resp = (
        StatusCode::OK,
        serde_json::to_vec(&value).unwrap_or_default(),
    )
        .into_response();
    set(&mut resp, header::CONTENT_TYPE, content_type);
    resp
}

fn link_next(resp: &mut Response, path: &str, n: Option<usize>, page: &[String], more: bool) {
    if let (true, Some(n), Some(last)) = (more, n, page.last()) {
        set(
            resp,
            header::LINK,
            format!("<{path}?n={n}&last={last}>; rel=\"next\""),
        );
    }
}

pub(super) async fn tags(reg: &Registry, repo: &RepoName, call: &Call) -> ApiResult<Response> {
    let request = Page::from_call(call)?;
    let (page, more) = request.apply(reg.tags_with_backing(repo).await?);
    let mut resp = json_response(
        json!({ "name": repo.as_str(), "tags": page }),
        "application/json",
    );
    link_next(
        &mut resp,
        &format!("/v2/{repo}/tags/list"),
        request.n,
        &page,
        more,
    );
    Ok(resp)
}

pub(super) async fn catalog(reg: &Registry, call: &Call) -> ApiResult<Response> {
    let request = Page::from_call(call)?;
    let (page, more) = request.apply(reg.store.catalog().await?);
    let mut resp = json_response(json!({ "repositories": page }), "application/json");
    link_next(&mut resp, "/v2/_catalog", request.n, &page, more);
    Ok(resp)
}

pub(super) async fn referrers(
    reg: &Registry,
    repo: &RepoName,
    subject: &Digest,
    call: &Call,
) -> ApiResult<Response> {
    let mut found = reg.referrers(repo, subject).await?;
    let filter = call.query.get("artifactType");
    if let Some(t) = filter {
        found.retain(|d| d.artifact_type.as_deref() == Some(t.as_str()));
    }
    let mut resp = json_response(
        json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found }),
        OCI_INDEX,
    );
    if filter.is_some() {
        set(&mut resp, OCI_FILTERS_APPLIED, "artifactType");
    }
    Ok(resp)
}
