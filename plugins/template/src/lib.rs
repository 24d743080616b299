//! A storage backend over a plain HTTP object store: `GET`/`HEAD`/`PUT`/`DELETE` on
//! `<base_url>/<namespace>/<name>`. Blob bytes never pass through this component's memory:
//! downloads hand the response body to the host, uploads splice the host's stream into the
//! request body.
//!
//! Config (the `config:` block of a `plugin:` backend):
//!
//! ```yaml
//! backend:
//!   plugin:
//!     plugin: ./target/wasm32-wasip2/release/shoal_plugin_template.wasm
//!     config:
//!       base_url: http://blobs.internal:8080/store
//!     allowed_hosts: [blobs.internal:8080]
//! ```

use serde::Deserialize;
use shoal_plugin_sdk::backend::{
    BlobInfo, BlobStream, ByteRange, Error, Guest, GuestReader, InputStream, ListPage,
};
use shoal_plugin_sdk::bindings::export_backend;
use shoal_plugin_sdk::http::{self, IncomingResponse, Method, Request};
use shoal_plugin_sdk::url::{Url, fill_template};
use shoal_plugin_sdk::{config, log};

#[derive(Deserialize)]
struct Config {
    base_url: String,
}

fn url_of(namespace: &str, name: &str) -> Result<Url, Error> {
    let config: Config = config::load().map_err(Error::Invalid)?;
    let template = format!("{}/%s", config.base_url.trim_end_matches('/'));
    Url::parse(&fill_template(&template, &format!("{namespace}/{name}")))
        .map_err(|e| Error::Invalid(e.to_string()))
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
        let response = checked(Request::new(Method::Head, &url).send(), "stat")?;
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
        let mut request = Request::new(Method::Get, &url);
        if let Some(value) = http::range_header(range)? {
            request = request.header("range", value);
        }
        let response = checked(request.send(), "download")?;
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
            Request::new(Method::Put, &url).send_with_body(&body, size),
            "upload",
        )
        .map(drop)
    }

    fn list(_: String, _: String, _: Option<String>, _: u32) -> Result<ListPage, Error> {
        Err(Error::Invalid("this store cannot list".into()))
    }

    fn delete(namespace: String, name: String) -> Result<(), Error> {
        let url = url_of(&namespace, &name)?;
        checked(Request::new(Method::Delete, &url).send(), "delete").map(drop)
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
