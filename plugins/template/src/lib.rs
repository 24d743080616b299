//! A storage backend over a plain HTTP object store: `GET`/`HEAD`/`PUT`/`DELETE` on
//! `<base_url>/<namespace>/<name>`, listing with `GET <base_url>?prefix=P&after=A&limit=N`
//! (answered with `{"keys": [...], "truncated": bool}`), every request carrying the store's
//! access token as `Authorization: Bearer <token>`. Blob bytes never pass through this
//! component's memory: downloads hand the response body to the host, uploads splice the
//! host's stream into the request body.
//!
//! Config (the `config:` block of a `plugin:` backend) and its secret (the `auth:` entry its
//! `username` names, read with `get-secret`; never put it in `config:`, which is printed):
//!
//! ```yaml
//! backends:
//!   - namespace: .*
//!     backend:
//!       plugin:
//!         plugin: ./target/wasm32-wasip2/release/shoal_plugin_template.wasm
//!         username: blobs
//!         config:
//!           base_url: http://blobs.internal:8080/store
//!         allowed_hosts: [blobs.internal:8080]
//! auth:
//!   plugin:
//!     blobs:
//!       token: ${BLOBS_TOKEN}
//! ```

use serde::Deserialize;
use shoal_plugin_sdk::backend::{
    BlobInfo, BlobStream, ByteRange, Error, Guest, GuestReader, InputStream, ListPage,
};
use shoal_plugin_sdk::bindings::export_backend;
use shoal_plugin_sdk::http::{self, IncomingResponse, Method, Request};
use shoal_plugin_sdk::url::{Url, percent_encode};
use shoal_plugin_sdk::{config, log};

/// The `auth:` key holding the store's access token.
const TOKEN: &str = "token";
/// The most a listing answer may hold; a page of names is far smaller.
const MAX_LISTING_BYTES: usize = 4 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    base_url: String,
}

/// A listing answer of the store.
#[derive(Deserialize)]
struct Listing {
    keys: Vec<String>,
    truncated: bool,
}

fn base_url() -> Result<String, Error> {
    let config: Config = config::load().map_err(Error::Invalid)?;
    Ok(config.base_url.trim_end_matches('/').to_owned())
}

/// The object key of `name` in `namespace`.
fn key_of(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn url_of(namespace: &str, name: &str) -> Result<Url, Error> {
    let url = format!(
        "{}/{}",
        base_url()?,
        percent_encode(&key_of(namespace, name), "/")
    );
    Url::parse(&url).map_err(|e| Error::Invalid(e.to_string()))
}

/// A request with the store's token, when the operator granted one.
fn request(method: Method, url: &Url) -> Request<'_> {
    let request = Request::new(method, url);
    match config::secret(TOKEN) {
        Some(token) => request.header("authorization", format!("Bearer {token}")),
        None => request,
    }
}

/// Sends `request`; transport failures and error statuses become the WIT error.
fn checked(
    response: Result<IncomingResponse, http::ErrorCode>,
    what: &str,
) -> Result<IncomingResponse, Error> {
    let response = response.map_err(|e| Error::from_http(&e, what))?;
    match Error::from_status(response.status(), what) {
        Some(e) => Err(e),
        None => Ok(response),
    }
}

struct Template;

impl Guest for Template {
    type Reader = Unused;

    fn stat(namespace: String, name: String) -> Result<BlobInfo, Error> {
        let url = url_of(&namespace, &name)?;
        let response = checked(request(Method::Head, &url).send(), "stat")?;
        let size = http::content_length(&response)
            .ok_or_else(|| Error::Other("stat: no Content-Length".into()))?;
        Ok(BlobInfo { size })
    }

    fn download(
        namespace: String,
        name: String,
        range: Option<ByteRange>,
    ) -> Result<BlobStream, Error> {
        let url = url_of(&namespace, &name)?;
        let mut get = request(Method::Get, &url);
        if let Some(value) = http::range_header(range)? {
            get = get.header("range", value);
        }
        let response = checked(get.send(), "download")?;
        log::debug(&format!(
            "download {name}: {:?} bytes",
            http::content_length(&response)
        ));
        // The body goes to the host as it is: its bytes never enter this component.
        http::passthrough(response, range)
    }

    fn upload(namespace: String, name: String, size: u64, body: InputStream) -> Result<(), Error> {
        let url = url_of(&namespace, &name)?;
        checked(
            request(Method::Put, &url).send_with_body(&body, size),
            "upload",
        )
        .map(drop)
    }

    fn list(
        namespace: String,
        prefix: String,
        continuation: Option<String>,
        limit: u32,
    ) -> Result<ListPage, Error> {
        let within = key_of(&namespace, "");
        let mut url = format!(
            "{}?prefix={}&limit={limit}",
            base_url()?,
            percent_encode(&key_of(&namespace, &prefix), "")
        );
        if let Some(after) = &continuation {
            url.push_str(&format!(
                "&after={}",
                percent_encode(&key_of(&namespace, after), "")
            ));
        }
        let url = Url::parse(&url).map_err(|e| Error::Invalid(e.to_string()))?;
        let response = checked(request(Method::Get, &url).send(), "list")?;
        let body = http::read_small_body(response, MAX_LISTING_BYTES)
            .map_err(|e| Error::from_http(&e, "list"))?;
        let listing: Listing = serde_json::from_slice(&body)
            .map_err(|e| Error::Other(format!("list: the store's answer is not a listing: {e}")))?;
        let names = listing
            .keys
            .iter()
            .map(|key| {
                key.strip_prefix(&within).map(str::to_owned).ok_or_else(|| {
                    Error::Other(format!("list: the store answered {key:?}, outside {within}"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let continuation = if listing.truncated {
            names.last().cloned()
        } else {
            None
        };
        Ok(ListPage {
            names,
            continuation,
        })
    }

    fn delete(namespace: String, name: String) -> Result<(), Error> {
        let url = url_of(&namespace, &name)?;
        checked(request(Method::Delete, &url).send(), "delete").map(drop)
    }
}

/// Downloads pass the HTTP body through, so no reader is ever handed out.
struct Unused;

impl GuestReader for Unused {
    fn read(&self, _: u64) -> Result<Option<Vec<u8>>, Error> {
        Ok(None)
    }
}

export_backend!(Template);
