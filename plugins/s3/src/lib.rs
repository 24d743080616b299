//! `s3`: blobs and tags as objects in an Amazon S3 bucket or an S3-compatible server (MinIO,
//! Ceph RGW, moto), over `wasi:http`, with every key of the seed's `s3:` block.
//!
//! Requests are signed here with the SDK's SigV4 over `UNSIGNED-PAYLOAD` (see
//! [`shoal_plugin_sdk::sigv4`] for why this is
//! not aws-sdk-s3): a download hands the `GetObject` response body to the host
//! (`body.incoming`), which streams it natively, and an upload splices the host's stream into
//! the `PutObject` (or `UploadPart`) request body. Blob bytes never enter this component's
//! memory; only request heads, XML listings and error documents do.
//!
//! Credentials come from the `auth.s3.<username>.s3` entry the host grants as secrets
//! (`aws_access_key_id`, `aws_secret_access_key`, optional `aws_session_token`).

mod xml;

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use shoal_plugin_sdk::backend::{
    BlobInfo, BlobStream, ByteRange, Error, Guest, GuestReader, InputStream, ListPage,
};
use shoal_plugin_sdk::bindings::export_backend;
use shoal_plugin_sdk::errors::retry;
use shoal_plugin_sdk::http::{self, IncomingResponse, Method, Request};
use shoal_plugin_sdk::name_path::NamePath;
use shoal_plugin_sdk::url::{Scheme, Url};
use shoal_plugin_sdk::{config, log, sigv4};

use sigv4::{Credentials, Scope, UNSIGNED_PAYLOAD};

/// The keys of the `s3:` block this plugin reads (the host passes the whole block; keys
/// that are the host's business, like `allowed_hosts`, are ignored here).
#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    region: String,
    bucket: String,
    #[serde(default)]
    root_directory: String,
    #[serde(default)]
    name_path: NamePath,
    #[serde(default)]
    username: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    disable_ssl: bool,
    #[serde(default)]
    force_path_style: bool,
    #[serde(default = "default_part_size")]
    upload_part_size: u64,
}

/// The URL requests go to: `endpoint` with its own scheme, or with `http` when `disable_ssl`
/// and `https` otherwise; AWS's regional endpoint when none is given.
fn endpoint_url(c: &Config, region: &str) -> String {
    let default_scheme = if c.disable_ssl { "http" } else { "https" };
    match &c.endpoint {
        Some(e) if e.contains("://") => e.clone(),
        Some(e) => format!("{default_scheme}://{e}"),
        None => format!("{default_scheme}://s3.{region}.amazonaws.com"),
    }
}

fn default_part_size() -> u64 {
    64 << 20
}

/// S3 takes at most this many parts in one multipart upload.
const MAX_PARTS: u64 = 10_000;
/// S3's smallest part (all but the last).
const MIN_PART_SIZE: u64 = 5 << 20;
/// The most of an error document or a listing page read into memory.
const SMALL_BODY_LIMIT: usize = 4 << 20;

/// Where requests go and how they are signed: the config, parsed once per call.
struct Bucket {
    scheme: Scheme,
    /// `host[:port]` as sent (and signed as `host`).
    authority: String,
    /// `/bucket` with path-style addressing, empty with virtual hosts.
    path_prefix: String,
    region: String,
    root: String,
    name_path: NamePath,
    part_size: u64,
    credentials: Credentials,
}

impl Bucket {
    fn load() -> Result<Bucket, Error> {
        let c: Config = config::load().map_err(Error::Invalid)?;
        if c.bucket.is_empty() {
            return Err(Error::Invalid("s3.bucket is empty".into()));
        }
        let region = if c.region.is_empty() {
            "us-east-1".to_owned()
        } else {
            c.region.clone()
        };
        let endpoint = endpoint_url(&c, &region);
        let url = Url::parse(&endpoint).map_err(|e| Error::Invalid(format!("s3.endpoint: {e}")))?;
        // Virtual-hosted addressing needs a DNS name to put the bucket in front of; an IP
        // address or `localhost` can only be addressed by path.
        let host = url.host().to_owned();
        let path_style = c.force_path_style
            || host == "localhost"
            || host.parse::<std::net::IpAddr>().is_ok()
            || c.bucket.contains('.');
        let (authority, path_prefix) = if path_style {
            (url.authority.clone(), format!("/{}", c.bucket))
        } else {
            (format!("{}.{}", c.bucket, url.authority), String::new())
        };
        let secret = |key: &str| config::secret(key).filter(|v| !v.is_empty());
        let missing = || {
            Error::Unauthorized(format!(
                "no credentials: grant auth.s3.{}.s3.aws_access_key_id and aws_secret_access_key",
                c.username
            ))
        };
        let credentials = Credentials {
            access_key_id: secret("aws_access_key_id").ok_or_else(missing)?,
            secret_access_key: secret("aws_secret_access_key").ok_or_else(missing)?,
            session_token: secret("aws_session_token"),
        };
        let part_size = c.upload_part_size.max(MIN_PART_SIZE);
        Ok(Bucket {
            scheme: url.scheme,
            authority,
            path_prefix,
            region,
            root: c.root_directory,
            name_path: c.name_path,
            part_size,
            credentials,
        })
    }

    /// The object key of a blob or tag name.
    fn key(&self, name: &str) -> Result<String, Error> {
        self.name_path
            .object_path(&self.root, name)
            .map_err(|e| Error::Invalid(e.to_string()))
    }

    /// Sends one signed request; `key` is `None` for requests to the bucket itself.
    fn send(
        &self,
        method: Method,
        key: Option<&str>,
        query: &[(String, String)],
        extra: &[(&str, String)],
        body: Payload<'_>,
    ) -> Result<IncomingResponse, http::ErrorCode> {
        let method_name = match method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            _ => "GET",
        };
        let path = match key {
            Some(key) => format!("{}/{}", self.path_prefix, sigv4::encode_path(key)),
            None if self.path_prefix.is_empty() => "/".to_owned(),
            None => self.path_prefix.clone(),
        };
        let query: Vec<(&str, &str)> = query
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        // The query goes on the wire exactly as it is signed.
        let query_string = sigv4::canonical_query(&query);
        let path_with_query = if query_string.is_empty() {
            path.clone()
        } else {
            format!("{path}?{query_string}")
        };
        let url = Url {
            scheme: self.scheme,
            authority: self.authority.clone(),
            path_with_query,
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let payload_hash = match body {
            Payload::Bytes(bytes) => sigv4::sha256_hex(bytes),
            Payload::None | Payload::Stream(..) => UNSIGNED_PAYLOAD.to_owned(),
        };
        let content_sha256 = ("x-amz-content-sha256", payload_hash.as_str());
        let signed = sigv4::sign(
            &self.credentials,
            Scope {
                region: &self.region,
                service: "s3",
            },
            &sigv4::amz_date(now),
            &sigv4::Request {
                method: method_name,
                path: &path,
                query: &query,
                headers: &[("host", self.authority.as_str()), content_sha256],
                payload_hash: &payload_hash,
            },
        );
        // `host` is the authority the host sends by itself; wasi:http forbids setting it.
        let mut request = Request::new(method, &url).header(content_sha256.0, content_sha256.1);
        for (name, value) in &signed {
            request = request.header(name, value.as_bytes());
        }
        for (name, value) in extra {
            request = request.header(name, value.as_bytes());
        }
        match body {
            Payload::None => request.send(),
            Payload::Bytes(bytes) => request.send_with_bytes(bytes),
            Payload::Stream(stream, size) => request.send_with_body(stream, size),
        }
    }

    /// [`Bucket::send`], then the S3 error document turned into the WIT error.
    fn exchange(
        &self,
        what: &str,
        method: Method,
        key: Option<&str>,
        query: &[(String, String)],
        extra: &[(&str, String)],
        body: Payload<'_>,
    ) -> Result<IncomingResponse, Error> {
        let response = self
            .send(method, key, query, extra, body)
            .map_err(|e| Error::from_http(&e, what))?;
        let status = response.status();
        if (200..300).contains(&status) {
            return Ok(response);
        }
        let text = http::read_small_body(response, SMALL_BODY_LIMIT)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Err(s3_error(status, &text, what))
    }
}

/// A request body.
#[derive(Clone, Copy)]
enum Payload<'a> {
    None,
    /// A small body made here, signed with its real hash.
    Bytes(&'a [u8]),
    /// `size` bytes spliced from the host's stream; signed as `UNSIGNED-PAYLOAD`.
    Stream(&'a InputStream, u64),
}

/// The WIT error for an S3 error answer: the `<Code>` of the error document first (S3 says
/// more there than in the status), the status when there is no document (HEAD).
fn s3_error(status: u16, body: &str, what: &str) -> Error {
    let code = xml::first(body, "Code").unwrap_or_default();
    let message = xml::first(body, "Message").unwrap_or_default();
    let detail = if code.is_empty() {
        format!("{what}: HTTP {status}")
    } else {
        format!("{what}: HTTP {status} {code}: {message}")
    };
    match code.as_str() {
        "NoSuchKey" => return Error::NotFound,
        "NoSuchBucket" => {
            return Error::Invalid(format!("{detail} (the configured bucket does not exist)"));
        }
        "InvalidAccessKeyId"
        | "SignatureDoesNotMatch"
        | "AccessDenied"
        | "ExpiredToken"
        | "InvalidToken"
        | "TokenRefreshRequired"
        | "InvalidClientTokenId" => {
            return Error::Unauthorized(detail);
        }
        "SlowDown" | "RequestLimitExceeded" | "Throttling" | "ThrottlingException" => {
            return Error::Throttled(detail);
        }
        "InvalidRange" => return Error::Invalid(detail),
        _ => {}
    }
    match status {
        404 => Error::NotFound,
        401 | 403 => Error::Unauthorized(detail),
        429 | 503 => Error::Throttled(detail),
        416 => Error::Invalid(detail),
        500..=599 => Error::Unavailable(detail),
        400..=499 => Error::Invalid(detail),
        _ => Error::Other(detail),
    }
}

fn pair(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_owned(), v.into())
}

struct S3;

impl Guest for S3 {
    type Reader = NoReader;

    fn stat(_namespace: String, name: String) -> Result<BlobInfo, Error> {
        let bucket = Bucket::load()?;
        let key = bucket.key(&name)?;
        let response = retry("stat", || {
            bucket.exchange("stat", Method::Head, Some(&key), &[], &[], Payload::None)
        })?;
        let size = http::content_length(&response).ok_or_else(|| {
            Error::Other("stat: HeadObject answered without Content-Length".into())
        })?;
        Ok(BlobInfo { size })
    }

    fn download(
        _namespace: String,
        name: String,
        range: Option<ByteRange>,
    ) -> Result<BlobStream, Error> {
        let bucket = Bucket::load()?;
        let key = bucket.key(&name)?;
        let extra: Vec<(&str, String)> = http::range_header(range)?
            .into_iter()
            .map(|value| ("range", value))
            .collect();
        let response = retry("download", || {
            bucket.exchange(
                "download",
                Method::Get,
                Some(&key),
                &[],
                &extra,
                Payload::None,
            )
        })?;
        http::passthrough(response, range)
    }

    fn upload(_namespace: String, name: String, size: u64, body: InputStream) -> Result<(), Error> {
        let bucket = Bucket::load()?;
        let key = bucket.key(&name)?;
        if size <= bucket.part_size {
            // One PutObject; send_with_body sets Content-Length and splices the stream.
            bucket.exchange(
                "upload",
                Method::Put,
                Some(&key),
                &[],
                &[],
                Payload::Stream(&body, size),
            )?;
            return Ok(());
        }
        multipart_upload(&bucket, &key, size, &body)
    }

    fn list(
        _namespace: String,
        prefix: String,
        continuation: Option<String>,
        limit: u32,
    ) -> Result<ListPage, Error> {
        let bucket = Bucket::load()?;
        // A name scheme with fixed folders around the name lists its folder; filter below.
        let key_prefix = bucket.name_path.list_prefix(&bucket.root, &prefix);
        let mut query = vec![
            pair("list-type", "2"),
            pair("prefix", key_prefix),
            pair("max-keys", limit.clamp(1, 1000).to_string()),
        ];
        if let Some(token) = &continuation {
            query.push(pair("continuation-token", token.clone()));
        }
        let response = retry("list", || {
            bucket.exchange("list", Method::Get, None, &query, &[], Payload::None)
        })?;
        let doc = http::read_small_body(response, SMALL_BODY_LIMIT)
            .map_err(|e| Error::from_http(&e, "list"))?;
        let doc = String::from_utf8_lossy(&doc);
        let names = xml::all(&doc, "Key")
            .into_iter()
            .filter_map(|key| bucket.name_path.name_of(&bucket.root, &key))
            .filter(|name| name.starts_with(&prefix))
            .collect();
        let truncated = xml::first(&doc, "IsTruncated").as_deref() == Some("true");
        let continuation = if truncated {
            Some(xml::first(&doc, "NextContinuationToken").ok_or_else(|| {
                Error::Other("list: a truncated page came without NextContinuationToken".into())
            })?)
        } else {
            None
        };
        Ok(ListPage {
            names,
            continuation,
        })
    }

    fn delete(_namespace: String, name: String) -> Result<(), Error> {
        let bucket = Bucket::load()?;
        let key = bucket.key(&name)?;
        // DeleteObject answers 204 whether or not the key existed; the WIT wants not-found,
        // so look first. (A concurrent delete between the two is reported as success.)
        retry("delete", || {
            bucket.exchange("delete", Method::Head, Some(&key), &[], &[], Payload::None)
        })?;
        retry("delete", || {
            bucket.exchange(
                "delete",
                Method::Delete,
                Some(&key),
                &[],
                &[],
                Payload::None,
            )
        })?;
        Ok(())
    }
}

/// CreateMultipartUpload, one UploadPart per `part_size` bytes (each spliced from `body`),
/// CompleteMultipartUpload; AbortMultipartUpload when any step fails, so no parts linger.
fn multipart_upload(
    bucket: &Bucket,
    key: &str,
    size: u64,
    body: &InputStream,
) -> Result<(), Error> {
    // Large enough that the parts fit in S3's 10 000.
    let part_size = bucket.part_size.max(size.div_ceil(MAX_PARTS));
    let created = retry("upload", || {
        let response = bucket.exchange(
            "upload",
            Method::Post,
            Some(key),
            &[pair("uploads", "")],
            &[],
            Payload::None,
        )?;
        http::read_small_body(response, SMALL_BODY_LIMIT)
            .map_err(|e| Error::from_http(&e, "upload"))
    })?;
    let created = String::from_utf8_lossy(&created);
    let upload_id = xml::first(&created, "UploadId").ok_or_else(|| {
        Error::Other("upload: CreateMultipartUpload answered without an UploadId".into())
    })?;
    let result = upload_parts(bucket, key, &upload_id, size, part_size, body);
    if result.is_err() {
        let abort = bucket.exchange(
            "upload",
            Method::Delete,
            Some(key),
            &[pair("uploadId", upload_id.clone())],
            &[],
            Payload::None,
        );
        if let Err(e) = abort {
            log::warn(&format!(
                "upload: aborting multipart upload {upload_id} of {key:?} failed: {e:?}"
            ));
        }
    }
    result
}

fn upload_parts(
    bucket: &Bucket,
    key: &str,
    upload_id: &str,
    size: u64,
    part_size: u64,
    body: &InputStream,
) -> Result<(), Error> {
    let mut etags = Vec::new();
    let mut left = size;
    let mut number = 1u64;
    while left > 0 {
        let len = left.min(part_size);
        let response = bucket.exchange(
            "upload",
            Method::Put,
            Some(key),
            &[
                pair("partNumber", number.to_string()),
                pair("uploadId", upload_id),
            ],
            &[],
            Payload::Stream(body, len),
        )?;
        let etag = http::header(&response, "etag").ok_or_else(|| {
            Error::Other(format!("upload: part {number} was stored without an ETag"))
        })?;
        etags.push(etag);
        left -= len;
        number += 1;
    }
    let mut doc = String::from("<CompleteMultipartUpload>");
    for (i, etag) in etags.iter().enumerate() {
        doc.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
            i + 1,
            xml::escape(etag)
        ));
    }
    doc.push_str("</CompleteMultipartUpload>");
    let answer = retry("upload", || {
        let response = bucket.exchange(
            "upload",
            Method::Post,
            Some(key),
            &[pair("uploadId", upload_id)],
            &[("content-type", "application/xml".to_owned())],
            Payload::Bytes(doc.as_bytes()),
        )?;
        http::read_small_body(response, SMALL_BODY_LIMIT)
            .map_err(|e| Error::from_http(&e, "upload"))
    })?;
    // CompleteMultipartUpload may answer 200 and still fail, with an error document.
    let answer = String::from_utf8_lossy(&answer);
    if answer.contains("<Error>") {
        return Err(s3_error(500, &answer, "upload: CompleteMultipartUpload"));
    }
    Ok(())
}

/// Downloads always pass the response body through, so no reader is ever made.
struct NoReader;

impl GuestReader for NoReader {
    fn read(&self, _max: u64) -> Result<Option<Vec<u8>>, Error> {
        Err(Error::Other("the s3 backend has no reader".into()))
    }
}

export_backend!(S3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disable_ssl_picks_http_for_an_endpoint_without_a_scheme() {
        let config = |yaml: &str| -> Config { serde_json::from_str(yaml).unwrap() };
        let plain = config(r#"{"bucket": "b", "endpoint": "127.0.0.1:9000", "disable_ssl": true}"#);
        assert_eq!(endpoint_url(&plain, "us-east-1"), "http://127.0.0.1:9000");
        let tls = config(r#"{"bucket": "b", "endpoint": "127.0.0.1:9000"}"#);
        assert_eq!(endpoint_url(&tls, "us-east-1"), "https://127.0.0.1:9000");
        let aws = config(r#"{"bucket": "b", "disable_ssl": true}"#);
        assert_eq!(
            endpoint_url(&aws, "eu-west-1"),
            "http://s3.eu-west-1.amazonaws.com"
        );
        let scheme_wins =
            config(r#"{"bucket": "b", "endpoint": "https://minio:9000", "disable_ssl": true}"#);
        assert_eq!(
            endpoint_url(&scheme_wins, "us-east-1"),
            "https://minio:9000"
        );
    }

    #[test]
    fn error_documents_map_by_code_first() {
        let doc = |code: &str| format!("<Error><Code>{code}</Code><Message>m</Message></Error>");
        assert!(matches!(
            s3_error(404, &doc("NoSuchKey"), "x"),
            Error::NotFound
        ));
        assert!(matches!(s3_error(404, "", "x"), Error::NotFound));
        for code in [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AccessDenied",
        ] {
            assert!(
                matches!(s3_error(403, &doc(code), "x"), Error::Unauthorized(_)),
                "{code}"
            );
        }
        assert!(matches!(s3_error(403, "", "x"), Error::Unauthorized(_)));
        assert!(matches!(
            s3_error(503, &doc("SlowDown"), "x"),
            Error::Throttled(_)
        ));
        assert!(matches!(s3_error(503, "", "x"), Error::Throttled(_)));
        assert!(matches!(
            s3_error(500, &doc("InternalError"), "x"),
            Error::Unavailable(_)
        ));
        assert!(matches!(
            s3_error(416, &doc("InvalidRange"), "x"),
            Error::Invalid(_)
        ));
        assert!(matches!(
            s3_error(404, &doc("NoSuchBucket"), "x"),
            Error::Invalid(_)
        ));
    }
}
