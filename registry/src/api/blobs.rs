//! `HEAD`/`GET`/`DELETE /v2/<name>/blobs/<digest>`.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::{Cached, Call, DOCKER_CONTENT_DIGEST, Registry, set};
use crate::backing::BlobStat;
use crate::digest::Digest;
use crate::error::{ApiResult, ErrorCode, RegistryError};
use crate::follow::Fetched;
use crate::name::RepoName;
use crate::range::{ByteRange, parse_range};

pub(super) async fn get(
    reg: &std::sync::Arc<Registry>,
    repo: &RepoName,
    d: &Digest,
    call: &Call,
) -> ApiResult<Response> {
    let opened = reg.store.open_blob(repo, d).await;
    match &opened {
        Ok(_) => reg.count_read(Cached::Blob, true),
        Err(e) if e.code == ErrorCode::BlobUnknown => reg.count_read(Cached::Blob, false),
        Err(_) => {}
    }
    let blob = match opened {
        // A HEAD of a blob the store lacks asks the backing's `stat`, not the whole blob.
        Err(e) if e.code == ErrorCode::BlobUnknown && call.method == Method::HEAD => {
            match reg.stat_from_backing(repo, d).await? {
                BlobStat::Present(size) => {
                    let mut resp = StatusCode::OK.into_response();
                    blob_headers(&mut resp, d, size);
                    return Ok(resp);
                }
                BlobStat::Absent => return Err(e),
                BlobStat::Unknown if reg.fill_blob(repo, d).await? => {
                    reg.store.open_blob(repo, d).await?
                }
                BlobStat::Unknown => return Err(e),
            }
        }
        // A whole GET follows the fetch as it lands; a ranged one waits for the whole blob.
        Err(e) if e.code == ErrorCode::BlobUnknown && call.header(header::RANGE).is_none() => {
            match reg.fetch_followed(repo, d).await? {
                Fetched::Local => reg.store.open_blob(repo, d).await?,
                Fetched::Missing => return Err(e),
                Fetched::Follow { length, body } => {
                    let mut resp = (StatusCode::OK, Body::from_stream(body)).into_response();
                    blob_headers(&mut resp, d, length);
                    return Ok(resp);
                }
            }
        }
        // A ranged one reads just that range from the backing when it can.
        Err(e) if e.code == ErrorCode::BlobUnknown => {
            if let Some(resp) = ranged_from_backing(reg, repo, d, call).await? {
                return Ok(resp);
            }
            if !reg.fill_blob(repo, d).await? {
                return Err(e);
            }
            reg.store.open_blob(repo, d).await?
        }
        other => other?,
    };
    let len = blob.len();
    let range = parse_range(call.header(header::RANGE), len);
    let (status, start, count) = match range {
        ByteRange::Full => (StatusCode::OK, 0, len),
        ByteRange::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
        ByteRange::Unsatisfiable => return Err(unsatisfiable(d, len, call)),
    };
    let body = if call.method == Method::HEAD {
        // A push checks a blob with HEAD before it skips uploading it: renew it for GC.
        reg.store.touch_blob(repo, d).await?;
        Body::empty()
    } else {
        blob.into_body(start, count)?
    };
    let mut resp = (status, body).into_response();
    blob_headers(&mut resp, d, count);
    if status == StatusCode::PARTIAL_CONTENT {
        set(
            &mut resp,
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", start + count - 1),
        );
    }
    Ok(resp)
}

/// The answer to a range outside a blob of `len` bytes.
fn unsatisfiable(d: &Digest, len: u64, call: &Call) -> RegistryError {
    RegistryError::new(
        ErrorCode::RangeInvalid,
        format!(
            "range {:?} lies outside blob {d} of {len} bytes",
            call.header(header::RANGE).unwrap_or("")
        ),
    )
    .with_header(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes */{len}")).expect("digits"),
    )
}

/// A `Range` GET of a blob the local store lacks, answered from the backing's ranged read
/// (its `stat` gives the length the range is resolved against); `None` when the backing
/// cannot, or the range is the whole blob, and the blob is fetched whole instead.
async fn ranged_from_backing(
    reg: &Registry,
    repo: &RepoName,
    d: &Digest,
    call: &Call,
) -> ApiResult<Option<Response>> {
    let Some(header_value) = call.header(header::RANGE) else {
        return Ok(None);
    };
    let BlobStat::Present(len) = reg.stat_from_backing(repo, d).await? else {
        return Ok(None);
    };
    let (start, end) = match parse_range(Some(header_value), len) {
        ByteRange::Partial { start, end } => (start, end),
        ByteRange::Full => return Ok(None),
        ByteRange::Unsatisfiable => return Err(unsatisfiable(d, len, call)),
    };
    let count = end - start + 1;
    let Some(body) = reg.range_from_backing(repo, d, start, count).await? else {
        return Ok(None);
    };
    let mut resp = (StatusCode::PARTIAL_CONTENT, Body::from_stream(body)).into_response();
    blob_headers(&mut resp, d, count);
    set(
        &mut resp,
        header::CONTENT_RANGE,
        format!("bytes {start}-{end}/{len}"),
    );
    Ok(Some(resp))
}

/// The headers of a blob answer of `len` bytes.
fn blob_headers(resp: &mut Response, d: &Digest, len: u64) {
    set(resp, header::CONTENT_LENGTH, len.to_string());
    set(resp, header::CONTENT_TYPE, "application/octet-stream");
    set(resp, DOCKER_CONTENT_DIGEST, d.to_string());
    set(resp, header::ACCEPT_RANGES, "bytes");
    set(resp, header::ETAG, format!("\"{d}\""));
}

pub(super) async fn delete(reg: &Registry, repo: &RepoName, d: &Digest) -> ApiResult<Response> {
    reg.store.delete_blob(repo, d).await?;
    let mut resp = StatusCode::ACCEPTED.into_response();
    set(&mut resp, DOCKER_CONTENT_DIGEST, d.to_string());
    Ok(resp)
}
