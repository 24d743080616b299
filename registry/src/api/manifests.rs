//! `HEAD`/`GET`/`PUT`/`DELETE /v2/<name>/manifests/<reference>`.

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Call, DOCKER_CONTENT_DIGEST, OCI_SUBJECT, Registry, set};
use crate::error::{ApiResult, ErrorCode, RegistryError};
use crate::manifest::{Descriptor, MAX_MANIFEST_BYTES, Manifest, accepts};
use crate::name::{Reference, RepoName};

pub(super) async fn get(
    reg: &Registry,
    repo: &RepoName,
    r: &Reference,
    call: &Call,
) -> ApiResult<Response> {
    let m = reg.read_manifest(repo, r, true).await?;
    let accept: Vec<&str> = call
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !accepts(&accept, &m.media_type) {
        return Err(RegistryError::new(
            ErrorCode::ManifestUnknown,
            format!(
                "manifest {r} is a {}, which the Accept header does not allow",
                m.media_type
            ),
        ));
    }
    let len = m.bytes.len();
    let body = if call.method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(m.bytes)
    };
    let mut resp = (StatusCode::OK, body).into_response();
    set(&mut resp, header::CONTENT_TYPE, &m.media_type);
    set(&mut resp, header::CONTENT_LENGTH, len.to_string());
    set(&mut resp, DOCKER_CONTENT_DIGEST, m.digest.to_string());
    set(&mut resp, header::ETAG, format!("\"{}\"", m.digest));
    Ok(resp)
}

pub(super) async fn put(
    reg: &Registry,
    repo: &RepoName,
    r: &Reference,
    call: &Call,
    body: Body,
) -> ApiResult<Response> {
    let content_type = call.header(header::CONTENT_TYPE).map(str::to_owned);
    let bytes = axum::body::to_bytes(body, MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| {
            RegistryError::new(
                ErrorCode::SizeInvalid,
                format!(
                    "manifest body could not be read or exceeds {MAX_MANIFEST_BYTES} bytes: {e}"
                ),
            )
        })?;
    let manifest = Manifest::parse(&bytes, content_type.as_deref())?;
    let size = bytes.len() as u64;
    let digest = reg.store.put_manifest(repo, r, bytes, &manifest).await?;
    reg.persist_manifest(repo, r, &digest).await?;
    if let Some(subject) = &manifest.subject {
        let entry = Descriptor {
            media_type: manifest.media_type.clone(),
            digest: digest.clone(),
            size,
            urls: None,
            artifact_type: manifest.artifact_type.clone(),
            annotations: manifest.annotations.clone(),
            platform: None,
        };
        reg.add_referrer(repo, &subject.digest, entry).await?;
    }
    let mut resp = StatusCode::CREATED.into_response();
    set(
        &mut resp,
        header::LOCATION,
        format!("/v2/{repo}/manifests/{digest}"),
    );
    set(&mut resp, DOCKER_CONTENT_DIGEST, digest.to_string());
    set(&mut resp, header::CONTENT_LENGTH, "0");
    if let Some(subject) = &manifest.subject {
        set(&mut resp, OCI_SUBJECT, subject.digest.to_string());
    }
    Ok(resp)
}

pub(super) async fn delete(reg: &Registry, repo: &RepoName, r: &Reference) -> ApiResult<Response> {
    // Where the backing owns the tags (the proxy: the build-index), a tag is deleted there even
    // when this store never saw it.
    if let (Reference::Tag(tag), true, Some(backing)) =
        (r, reg.tags_owned_by_backing(repo), &reg.backing)
    {
        backing.delete_tag(repo, tag).await?;
        let _ = reg.store.delete_manifest(repo, r).await;
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    // A referrer leaves its subject's index in the backing too. The proxy reads the manifest
    // through (its staging store may have dropped it), which also lets the delete below find it.
    let subject = match r {
        Reference::Digest(_) if reg.referrers_in_backing => reg
            .read_manifest(repo, r, false)
            .await
            .ok()
            .and_then(|m| Manifest::parse(&m.bytes, Some(&m.media_type)).ok())
            .and_then(|m| m.subject),
        _ => None,
    };
    let removed = reg.store.delete_manifest(repo, r).await?;
    reg.forget_tags(repo, &removed).await?;
    if let (Some(subject), Reference::Digest(d)) = (subject, r) {
        reg.remove_referrer(repo, &subject.digest, d).await?;
    }
    Ok(StatusCode::ACCEPTED.into_response())
}
