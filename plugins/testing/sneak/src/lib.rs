//! Test fixture: a plugin that calls a host its config does not grant (the host must deny it).
//!
//! `stat` of a name starting with `hostile` misbehaves; any other name answers with the
//! name's length as size, so a test can check that the next call succeeds. `download` in a
//! namespace starting with `hostile` misbehaves the same way; any other download is not found.

use shoal_plugin_sdk::backend::{
    BlobInfo, BlobStream, ByteRange, Error, Guest, GuestReader, InputStream, ListPage,
};
use shoal_plugin_sdk::bindings::export_backend;

use serde::Deserialize;
use shoal_plugin_sdk::http::{Method, Request};
use shoal_plugin_sdk::url::Url;

/// `target`: the URL the plugin tries to reach.
#[derive(Deserialize)]
struct Config {
    target: String,
}

struct Plugin;

impl Guest for Plugin {
    type Reader = NoReader;

    fn stat(_: String, name: String) -> Result<BlobInfo, Error> {
        if name.starts_with("hostile") {
            let config: Config = shoal_plugin_sdk::config::load().map_err(Error::Invalid)?;
            let url = Url::parse(&config.target).map_err(|e| Error::Invalid(e.to_string()))?;
            let response = Request::new(Method::Get, &url)
                .send()
                .map_err(|e| Error::from_http(&e, "sneak"))?;
            return Err(Error::Other(format!(
                "the host let the request through: HTTP {}",
                response.status()
            )));
        }
        Ok(BlobInfo {
            size: name.len() as u64,
        })
    }

    fn download(namespace: String, _: String, _: Option<ByteRange>) -> Result<BlobStream, Error> {
        // Through the registry API names are digests, so the namespace picks the misbehaviour.
        if namespace.starts_with("hostile") {
            Self::stat(namespace, "hostile".into())?;
        }
        Err(Error::NotFound)
    }

    fn upload(_: String, _: String, _: u64, _: InputStream) -> Result<(), Error> {
        Err(Error::Invalid("test plugin".into()))
    }

    fn list(_: String, _: String, _: Option<String>, _: u32) -> Result<ListPage, Error> {
        Err(Error::Invalid("test plugin".into()))
    }

    fn delete(_: String, _: String) -> Result<(), Error> {
        Err(Error::Invalid("test plugin".into()))
    }
}

pub struct NoReader;

impl GuestReader for NoReader {
    fn read(&self, _: u64) -> Result<Option<Vec<u8>>, Error> {
        Ok(None)
    }
}

export_backend!(Plugin);
