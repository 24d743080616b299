//! `gcs`: blobs and tags as objects in a Google Cloud Storage bucket, over the JSON API and
//! `wasi:http`, with every key of the seed's `gcs:` block (and `endpoint` for emulators such
//! as fake-gcs-server).
//!
//! A download hands the `alt=media` response body to the host (`body.incoming`), which
//! streams it natively; an upload opens a resumable session and splices the host's stream
//! into the session's `PUT` bodies, `upload_chunk_size` bytes at a time. Blob bytes never
//! enter this component's memory; only request heads, JSON metadata and error documents do.
//!
//! Credentials: the service-account key the host grants as `access_blob` (from
//! `auth.gcs.<username>.gcs`). The plugin signs the OAuth2 JWT-bearer assertion itself
//! ([`jwt`]), trades it at the key's `token_uri` for an access token, and keeps that token
//! while it lives (the host reuses warm instances, so the cache spans calls). Without a key
//! (an emulator) requests go out with no `Authorization` at all.

mod jwt;

use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use shoal_plugin_sdk::backend::{
    BlobInfo, BlobStream, ByteRange, Error, Guest, GuestReader, InputStream, ListPage,
};
use shoal_plugin_sdk::bindings::export_backend;
use shoal_plugin_sdk::errors::retry;
use shoal_plugin_sdk::http::{self, IncomingResponse, Method, Request};
use shoal_plugin_sdk::name_path::NamePath;
use shoal_plugin_sdk::url::{Url, percent_encode};
use shoal_plugin_sdk::{config, log};

use jwt::ServiceAccount;

/// The keys of the `gcs:` block this plugin reads (the host passes the whole block; keys
/// that are the host's business, like `allowed_hosts`, are ignored here).
#[derive(Deserialize)]
struct Config {
    bucket: String,
    #[serde(default)]
    root_directory: String,
    #[serde(default)]
    name_path: NamePath,
    #[serde(default)]
    username: String,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default = "default_chunk_size")]
    upload_chunk_size: u64,
}

fn default_chunk_size() -> u64 {
    16 << 20
}

/// Google's JSON API when no `endpoint` is set.
const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";
/// Resumable-upload chunks (all but the last) must be multiples of this.
const CHUNK_QUANTUM: u64 = 256 << 10;
/// The most of an error document, metadata or a listing page read into memory.
const SMALL_BODY_LIMIT: usize = 4 << 20;
/// A cached access token is dropped this long before the token endpoint said it expires, so
/// a request never leaves with a token that dies on the way.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// The access token of the last key used, and when to stop using it.
struct CachedToken {
    /// `client_email` and `token_uri`: a different key in a later call never gets this token.
    owner: String,
    token: String,
    until: Instant,
}

thread_local! {
    /// The host keeps warm instances between calls: this cache is what spares a token
    /// request (and an RSA signature) per call.
    static TOKEN: RefCell<Option<CachedToken>> = const { RefCell::new(None) };
}

/// Where requests go and how they are authorized: the config, parsed once per call.
struct Bucket {
    endpoint: Url,
    bucket: String,
    root: String,
    name_path: NamePath,
    chunk_size: u64,
    account: Option<ServiceAccount>,
}

impl Bucket {
    fn load() -> Result<Bucket, Error> {
        let c: Config = config::load().map_err(Error::Invalid)?;
        if c.bucket.is_empty() {
            return Err(Error::Invalid("gcs.bucket is empty".into()));
        }
        let endpoint = c.endpoint.as_deref().unwrap_or(DEFAULT_ENDPOINT);
        let endpoint = Url::parse(endpoint.trim_end_matches('/'))
            .map_err(|e| Error::Invalid(format!("gcs.endpoint: {e}")))?;
        let account = match config::secret("access_blob").filter(|v| !v.trim().is_empty()) {
            Some(blob) => Some(
                ServiceAccount::parse(&blob)
                    .map_err(|e| Error::Unauthorized(format!("auth.gcs.{}.gcs.{e}", c.username)))?,
            ),
            // Google itself refuses anonymous writes; say why before any request does.
            None if c.endpoint.is_none() => {
                return Err(Error::Unauthorized(format!(
                    "no credentials: grant auth.gcs.{}.gcs.access_blob (a service-account key)",
                    c.username
                )));
            }
            None => None,
        };
        let chunk_size = (c.upload_chunk_size / CHUNK_QUANTUM).max(1) * CHUNK_QUANTUM;
        Ok(Bucket {
            endpoint,
            bucket: c.bucket,
            root: c.root_directory,
            name_path: c.name_path,
            chunk_size,
            account,
        })
    }

    /// The object name of a blob or tag name.
    fn key(&self, name: &str) -> Result<String, Error> {
        self.name_path
            .object_path(&self.root, name)
            .map_err(|e| Error::Invalid(e.to_string()))
    }

    /// A URL under the endpoint: `path` (already encoded) and query pairs (encoded here).
    fn url(&self, path: &str, query: &[(&str, String)]) -> Url {
        let base = self.endpoint.path_with_query.trim_end_matches('/');
        let mut path_with_query = format!("{base}{path}");
        for (i, (k, v)) in query.iter().enumerate() {
            path_with_query.push(if i == 0 { '?' } else { '&' });
            path_with_query.push_str(k);
            path_with_query.push('=');
            path_with_query.push_str(&percent_encode(v, ""));
        }
        Url {
            scheme: self.endpoint.scheme,
            authority: self.endpoint.authority.clone(),
            path_with_query,
        }
    }

    /// `/storage/v1/b/<bucket>/o/<object>`: the object name encoded into one path segment,
    /// its `/` included, as the JSON API wants it.
    fn object_url(&self, key: &str, query: &[(&str, String)]) -> Url {
        self.url(
            &format!(
                "/storage/v1/b/{}/o/{}",
                percent_encode(&self.bucket, ""),
                percent_encode(key, "")
            ),
            query,
        )
    }

    /// `Bearer <token>`, from the cache or a fresh grant; `None` without a key.
    fn authorization(&self) -> Result<Option<String>, Error> {
        let Some(account) = &self.account else {
            return Ok(None);
        };
        let owner = format!("{}\n{}", account.client_email, account.token_uri);
        let cached = TOKEN.with_borrow(|t| {
            t.as_ref()
                .filter(|t| t.owner == owner && Instant::now() < t.until)
                .map(|t| t.token.clone())
        });
        if let Some(token) = cached {
            return Ok(Some(format!("Bearer {token}")));
        }
        let token = retry("token", || fetch_token(account))?;
        let lifetime = Duration::from_secs(token.expires_in).saturating_sub(TOKEN_MARGIN);
        TOKEN.set(Some(CachedToken {
            owner,
            token: token.access_token.clone(),
            until: Instant::now() + lifetime,
        }));
        Ok(Some(format!("Bearer {}", token.access_token)))
    }

    /// Sends one request with the access token and turns an error answer into the WIT
    /// error. A 401 drops the cached token (revoked, or expired early); a request without a
    /// blob body is then sent once more with a fresh one, and an upload's next call gets one.
    fn exchange(
        &self,
        what: &str,
        method: Method,
        url: &Url,
        extra: &[(&str, String)],
        body: Payload<'_>,
    ) -> Result<IncomingResponse, Error> {
        let mut stale = false;
        let result = self.exchange_once(what, method.clone(), url, extra, body, &mut stale);
        if stale && !matches!(body, Payload::Stream(..)) {
            log::info(&format!(
                "{what}: the access token was refused; retrying with a new one"
            ));
            return self.exchange_once(what, method, url, extra, body, &mut stale);
        }
        result
    }

    /// One try of [`Bucket::exchange`]; sets `stale` when the storage refused the token sent.
    fn exchange_once(
        &self,
        what: &str,
        method: Method,
        url: &Url,
        extra: &[(&str, String)],
        body: Payload<'_>,
        stale: &mut bool,
    ) -> Result<IncomingResponse, Error> {
        let mut request = Request::new(method, url);
        if let Some(auth) = self.authorization()? {
            request = request.header("authorization", auth);
        }
        for (name, value) in extra {
            request = request.header(name, value.as_bytes());
        }
        let response = match body {
            Payload::None => request.send(),
            Payload::Bytes(bytes) => request.send_with_bytes(bytes),
            Payload::Stream(stream, size) => request.send_with_body(stream, size),
        }
        .map_err(|e| Error::from_http(&e, what))?;
        let status = response.status();
        // 308 is how a resumable session says "chunk stored, send the next".
        if (200..300).contains(&status) || status == 308 {
            return Ok(response);
        }
        if status == 401 && self.account.is_some() {
            TOKEN.set(None);
            *stale = true;
        }
        let text = http::read_small_body(response, SMALL_BODY_LIMIT)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Err(gcs_error(status, &text, what))
    }
}

/// A request body.
#[derive(Clone, Copy)]
enum Payload<'a> {
    None,
    /// A small body made here (JSON).
    Bytes(&'a [u8]),
    /// `size` bytes spliced from the host's stream.
    Stream(&'a InputStream, u64),
}

/// Trades a signed assertion for an access token at the key's `token_uri`.
fn fetch_token(account: &ServiceAccount) -> Result<jwt::Token, Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let assertion = account.assertion(now).map_err(Error::Unauthorized)?;
    let url = Url::parse(&account.token_uri)
        .map_err(|e| Error::Unauthorized(format!("the key's token_uri: {e}")))?;
    let body = jwt::token_request_body(&assertion);
    let response = Request::new(Method::Post, &url)
        .header("content-type", "application/x-www-form-urlencoded")
        .send_with_bytes(body.as_bytes())
        .map_err(|e| Error::from_http(&e, "token"))?;
    let status = response.status();
    let text = http::read_small_body(response, SMALL_BODY_LIMIT)
        .map_err(|e| Error::from_http(&e, "token"))?;
    if (200..300).contains(&status) {
        return jwt::parse_token(&text).map_err(Error::Other);
    }
    let detail = format!(
        "token: {} answered HTTP {status}: {}",
        account.token_uri,
        String::from_utf8_lossy(&text)
            .chars()
            .take(300)
            .collect::<String>()
    );
    // The grant's own failures (invalid_grant, invalid_client, a key Google revoked) are
    // 400 and 401: the credentials are wrong, not the request.
    Err(match status {
        400 | 401 | 403 => Error::Unauthorized(detail),
        429 => Error::Throttled(detail),
        500..=599 => Error::Unavailable(detail),
        _ => Error::Other(detail),
    })
}

/// The WIT error for a JSON API error answer, by status; the document's message is kept.
fn gcs_error(status: u16, body: &str, what: &str) -> Error {
    #[derive(Deserialize)]
    struct Doc {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        message: String,
    }
    let message = serde_json::from_str::<Doc>(body)
        .map(|d| d.error.message)
        .unwrap_or_else(|_| body.chars().take(300).collect());
    let detail = if message.trim().is_empty() {
        format!("{what}: HTTP {status}")
    } else {
        format!("{what}: HTTP {status}: {}", message.trim())
    };
    match status {
        404 | 410 => Error::NotFound,
        401 | 403 => Error::Unauthorized(detail),
        429 => Error::Throttled(detail),
        416 => Error::Invalid(detail),
        500..=599 => Error::Unavailable(detail),
        400..=499 => Error::Invalid(detail),
        _ => Error::Other(detail),
    }
}

/// Reads a small JSON answer.
fn json<T: for<'de> Deserialize<'de>>(response: IncomingResponse, what: &str) -> Result<T, Error> {
    let body = http::read_small_body(response, SMALL_BODY_LIMIT)
        .map_err(|e| Error::from_http(&e, what))?;
    serde_json::from_slice(&body).map_err(|e| Error::Other(format!("{what}: bad JSON answer: {e}")))
}

/// The JSON API writes 64-bit numbers as strings; accept both.
fn size_of(value: &serde_json::Value) -> Option<u64> {
    match value {
        serde_json::Value::String(s) => s.parse().ok(),
        v => v.as_u64(),
    }
}

struct Gcs;

impl Guest for Gcs {
    type Reader = NoReader;

    fn stat(_namespace: String, name: String) -> Result<BlobInfo, Error> {
        let bucket = Bucket::load()?;
        let url = bucket.object_url(&bucket.key(&name)?, &[("fields", "size".into())]);
        let meta: serde_json::Value = retry("stat", || {
            let response = bucket.exchange("stat", Method::Get, &url, &[], Payload::None)?;
            json(response, "stat")
        })?;
        let size = size_of(&meta["size"])
            .ok_or_else(|| Error::Other("stat: the object's metadata has no size".into()))?;
        Ok(BlobInfo { size })
    }

    fn download(
        _namespace: String,
        name: String,
        range: Option<ByteRange>,
    ) -> Result<BlobStream, Error> {
        let bucket = Bucket::load()?;
        let url = bucket.object_url(&bucket.key(&name)?, &[("alt", "media".into())]);
        let extra: Vec<(&str, String)> = http::range_header(range)?
            .into_iter()
            .map(|value| ("range", value))
            .collect();
        let response = retry("download", || {
            bucket.exchange("download", Method::Get, &url, &extra, Payload::None)
        })?;
        http::passthrough(response, range)
    }

    fn upload(_namespace: String, name: String, size: u64, body: InputStream) -> Result<(), Error> {
        let bucket = Bucket::load()?;
        let key = bucket.key(&name)?;
        let session = open_session(&bucket, &key, size)?;
        let result = send_chunks(&bucket, &session, size, &body);
        if result.is_err() {
            // A session that is left open holds nothing visible and expires in a week; cancel
            // it anyway (GCS answers 499 to the cancel, which is its success).
            let cancel = Request::new(Method::Delete, &session).send();
            if let Err(e) = cancel {
                log::warn(&format!("upload: cancelling the session of {key:?}: {e:?}"));
            }
        }
        result
    }

    fn list(
        _namespace: String,
        prefix: String,
        continuation: Option<String>,
        limit: u32,
    ) -> Result<ListPage, Error> {
        let bucket = Bucket::load()?;
        // A name scheme with fixed folders around the name lists its folder; filter below.
        let object_prefix = bucket.name_path.list_prefix(&bucket.root, &prefix);
        let mut query = vec![
            ("prefix", object_prefix),
            ("maxResults", limit.clamp(1, 1000).to_string()),
            ("fields", "items(name),nextPageToken".to_owned()),
        ];
        if let Some(token) = &continuation {
            query.push(("pageToken", token.clone()));
        }
        let url = bucket.url(
            &format!("/storage/v1/b/{}/o", percent_encode(&bucket.bucket, "")),
            &query,
        );
        #[derive(Deserialize)]
        struct Item {
            name: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Page {
            #[serde(default)]
            items: Vec<Item>,
            #[serde(default)]
            next_page_token: Option<String>,
        }
        let page: Page = retry("list", || {
            let response = bucket.exchange("list", Method::Get, &url, &[], Payload::None)?;
            json(response, "list")
        })?;
        let names = page
            .items
            .into_iter()
            .filter_map(|item| bucket.name_path.name_of(&bucket.root, &item.name))
            .filter(|name| name.starts_with(&prefix))
            .collect();
        Ok(ListPage {
            names,
            continuation: page.next_page_token.filter(|t| !t.is_empty()),
        })
    }

    fn delete(_namespace: String, name: String) -> Result<(), Error> {
        let bucket = Bucket::load()?;
        let url = bucket.object_url(&bucket.key(&name)?, &[]);
        // DELETE answers 404 for a missing object: that is the WIT's not-found as it is.
        retry("delete", || {
            bucket.exchange("delete", Method::Delete, &url, &[], Payload::None)
        })?;
        Ok(())
    }
}

/// Starts a resumable upload of `size` bytes to `key`; the session URI comes back in
/// `Location`.
fn open_session(bucket: &Bucket, key: &str, size: u64) -> Result<Url, Error> {
    let url = bucket.url(
        &format!(
            "/upload/storage/v1/b/{}/o",
            percent_encode(&bucket.bucket, "")
        ),
        &[("uploadType", "resumable".into()), ("name", key.to_owned())],
    );
    let metadata = serde_json::json!({ "name": key }).to_string();
    let location = retry("upload", || {
        let response = bucket.exchange(
            "upload",
            Method::Post,
            &url,
            &[
                ("content-type", "application/json; charset=UTF-8".into()),
                ("x-upload-content-length", size.to_string()),
                ("x-upload-content-type", "application/octet-stream".into()),
            ],
            Payload::Bytes(metadata.as_bytes()),
        )?;
        http::header(&response, "location").ok_or_else(|| {
            Error::Other("upload: the resumable upload answered without a Location".into())
        })
    })?;
    // A relative Location (some emulators) is relative to the endpoint.
    if location.starts_with('/') {
        return Ok(Url {
            scheme: bucket.endpoint.scheme,
            authority: bucket.endpoint.authority.clone(),
            path_with_query: location,
        });
    }
    Url::parse(&location)
        .map_err(|e| Error::Other(format!("upload: the session's Location is no URL: {e}")))
}

/// `PUT`s the body to the session in chunks of `chunk_size` bytes (one `PUT` when it fits),
/// each spliced from the host's stream with its `Content-Range`. GCS answers 308 to every
/// chunk but the last and 200 or 201 to the last.
fn send_chunks(bucket: &Bucket, session: &Url, size: u64, body: &InputStream) -> Result<(), Error> {
    if size == 0 {
        let response = bucket.exchange(
            "upload",
            Method::Put,
            session,
            &[("content-range", "bytes */0".into())],
            Payload::Bytes(&[]),
        )?;
        return finished(response.status(), size);
    }
    let mut sent = 0;
    while sent < size {
        let len = (size - sent).min(bucket.chunk_size);
        let range = format!("bytes {}-{}/{size}", sent, sent + len - 1);
        let response = bucket.exchange(
            "upload",
            Method::Put,
            session,
            &[("content-range", range)],
            Payload::Stream(body, len),
        )?;
        sent += len;
        if sent < size {
            if response.status() != 308 {
                return Err(Error::Other(format!(
                    "upload: the session answered HTTP {} after {sent} of {size} bytes",
                    response.status()
                )));
            }
            // `Range: bytes=0-N` is what the session holds; a server that kept less than
            // it was sent cannot be resumed from this stream, which has moved on.
            let held = http::header(&response, "range")
                .and_then(|r| {
                    r.rsplit('-')
                        .next()
                        .and_then(|n| n.trim().parse::<u64>().ok())
                })
                .map(|last| last + 1);
            if held.is_some_and(|h| h != sent) {
                return Err(Error::Unavailable(format!(
                    "upload: the session kept {} of the {sent} bytes sent",
                    held.unwrap_or(0)
                )));
            }
        } else {
            return finished(response.status(), size);
        }
    }
    Ok(())
}

fn finished(status: u16, size: u64) -> Result<(), Error> {
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(Error::Other(format!(
            "upload: the session answered HTTP {status} after all {size} bytes"
        )))
    }
}

/// Downloads always pass the response body through, so no reader is ever made.
struct NoReader;

impl GuestReader for NoReader {
    fn read(&self, _max: u64) -> Result<Option<Vec<u8>>, Error> {
        Err(Error::Other("the gcs backend has no reader".into()))
    }
}

export_backend!(Gcs);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_map_by_status() {
        let doc = r#"{"error":{"code":403,"message":"no access to bucket"}}"#;
        match gcs_error(403, doc, "stat") {
            Error::Unauthorized(m) => assert!(m.contains("no access to bucket"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(gcs_error(404, "", "x"), Error::NotFound));
        assert!(matches!(gcs_error(401, "", "x"), Error::Unauthorized(_)));
        assert!(matches!(gcs_error(429, "", "x"), Error::Throttled(_)));
        assert!(matches!(gcs_error(503, "", "x"), Error::Unavailable(_)));
        assert!(matches!(gcs_error(500, "oops", "x"), Error::Unavailable(m) if m.contains("oops")));
        assert!(matches!(gcs_error(416, "", "x"), Error::Invalid(_)));
        assert!(matches!(gcs_error(400, "", "x"), Error::Invalid(_)));
    }

    #[test]
    fn sizes_come_as_strings_or_numbers() {
        assert_eq!(size_of(&serde_json::json!("123")), Some(123));
        assert_eq!(size_of(&serde_json::json!(7)), Some(7));
        assert_eq!(size_of(&serde_json::json!(null)), None);
    }
}
