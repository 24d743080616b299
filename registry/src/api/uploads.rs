//! `POST/PATCH/PUT/GET/DELETE /v2/<name>/blobs/uploads/...`: monolithic, chunked and
//! cross-repository-mount uploads.

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Call, DOCKER_CONTENT_DIGEST, DOCKER_UPLOAD_UUID, Registry, set};
use crate::digest::Digest;
use crate::error::{ApiResult, ErrorCode, RegistryError};
use crate::name::RepoName;
use crate::range::parse_content_range;
use crate::store::{ChunkRange, UploadStatus};

fn query_digest(call: &Call, key: &str) -> ApiResult<Option<Digest>> {
    call.query
        .get(key)
        .map(|v| {
            v.parse().map_err(|e: crate::digest::DigestError| {
                RegistryError::new(ErrorCode::DigestInvalid, e.to_string())
            })
        })
        .transpose()
}

fn created(repo: &RepoName, d: &Digest) -> Response {
    let mut resp = StatusCode::CREATED.into_response();
    set(&mut resp, header::LOCATION, format!("/v2/{repo}/blobs/{d}"));
    set(&mut resp, DOCKER_CONTENT_DIGEST, d.to_string());
    set(&mut resp, header::CONTENT_LENGTH, "0");
    resp
}

fn in_progress(repo: &RepoName, status: UploadStatus, code: StatusCode) -> Response {
    let mut resp = code.into_response();
    set(
        &mut resp,
        header::LOCATION,
        format!("/v2/{repo}/blobs/uploads/{}", status.id),
    );
    set(&mut resp, DOCKER_UPLOAD_UUID, status.id.to_string());
    let end = status.offset.saturating_sub(1);
    set(&mut resp, header::RANGE, format!("0-{end}"));
    set(&mut resp, header::CONTENT_LENGTH, "0");
    resp
}

/// The chunk a `Content-Range` header announces, checked against `Content-Length`.
fn chunk_range(call: &Call) -> ApiResult<Option<ChunkRange>> {
    let Some(raw) = call.header(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let (start, end) = parse_content_range(raw).ok_or_else(|| {
        RegistryError::new(
            ErrorCode::BlobUploadInvalid,
            format!("Content-Range {raw:?} is malformed: expected <start>-<end>"),
        )
    })?;
    // `0-18446744073709551615` covers 2^64 bytes, one more than a u64 counts: no upload can
    // hold that, so it is a range the session cannot satisfy, not an overflow.
    let len = (end - start).checked_add(1).ok_or_else(|| {
        RegistryError::new(
            ErrorCode::RangeInvalid,
            format!("Content-Range {raw:?} covers more bytes than an upload can hold"),
        )
    })?;
    if let Some(given) = call
        .header(header::CONTENT_LENGTH)
        .and_then(|v| v.parse::<u64>().ok())
        && given != len
    {
        return Err(RegistryError::new(
            ErrorCode::SizeInvalid,
            format!("Content-Range {raw:?} covers {len} bytes but Content-Length is {given}"),
        ));
    }
    Ok(Some(ChunkRange { start, len }))
}

pub(super) async fn start(
    reg: &Registry,
    repo: &RepoName,
    call: &Call,
    body: Body,
) -> ApiResult<Response> {
    if let Some(d) = query_digest(call, "mount")? {
        let from: Option<RepoName> = call.query.get("from").and_then(|f| f.parse().ok());
        let mounted = match &from {
            Some(from) => reg.store.mount_blob(from, repo, &d).await?,
            None => false,
        };
        if mounted {
            reg.persist_blob(repo, &d).await?;
            return Ok(created(repo, &d));
        }
        // Not mountable: the spec says to fall back to an ordinary upload session.
    } else if let Some(d) = query_digest(call, "digest")? {
        reg.store
            .put_blob(repo, &d, body.into_data_stream())
            .await?;
        reg.persist_blob(repo, &d).await?;
        return Ok(created(repo, &d));
    }
    let status = reg.store.start_upload(repo).await?;
    Ok(in_progress(repo, status, StatusCode::ACCEPTED))
}

pub(super) async fn status(reg: &Registry, repo: &RepoName, id: &str) -> ApiResult<Response> {
    let status = reg.store.upload_status(repo, id).await?;
    Ok(in_progress(repo, status, StatusCode::NO_CONTENT))
}

pub(super) async fn patch(
    reg: &Registry,
    repo: &RepoName,
    id: &str,
    call: &Call,
    body: Body,
) -> ApiResult<Response> {
    let range = chunk_range(call)?;
    let status = reg
        .store
        .append_upload(repo, id, range, body.into_data_stream())
        .await?;
    Ok(in_progress(repo, status, StatusCode::ACCEPTED))
}

pub(super) async fn put(
    reg: &Registry,
    repo: &RepoName,
    id: &str,
    call: &Call,
    body: Body,
) -> ApiResult<Response> {
    let d = query_digest(call, "digest")?.ok_or_else(|| {
        RegistryError::new(
            ErrorCode::DigestInvalid,
            "closing an upload needs ?digest=<algorithm>:<hex>",
        )
    })?;
    let range = chunk_range(call)?;
    reg.store
        .finish_upload(repo, id, &d, range, body.into_data_stream())
        .await?;
    reg.persist_blob(repo, &d).await?;
    Ok(created(repo, &d))
}

pub(super) async fn cancel(reg: &Registry, repo: &RepoName, id: &str) -> ApiResult<Response> {
    reg.store.cancel_upload(repo, id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
