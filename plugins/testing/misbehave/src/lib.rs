//! Test fixture: a backend plugin that misbehaves on request, the way its config says.
//!
//! Config: `{mode: panic | spin | hog | sneak, url: ...}`.
//! - `panic`: panics (a trap: the host must discard the store);
//! - `spin`: never returns (the host's epoch deadline must stop it);
//! - `hog`: allocates past its memory cap (the host's StoreLimits must stop it);
//! - `sneak`: calls `url`, a host its config does not grant (the host must deny it);
//! - `secret`: reports what `get-secret(key)` gave it, as an `other` error (a fixture only: a
//!   real plugin never echoes a secret), or `not-found` when the host gave none.
//!
//! `stat` of a name starting with `hostile` misbehaves; any other name answers with the
//! name's length as size, without reading the config, so a test can check that the next call
//! succeeds (and a benchmark can time a call that does nothing). `download` in a namespace
//! starting with `hostile` misbehaves the same way; any other download is not found. Every
//! other call is refused.

use serde::Deserialize;
use shoal_plugin_sdk::backend::{
    BlobInfo, BlobStream, ByteRange, Error, Guest, GuestReader, InputStream, ListPage,
};
use shoal_plugin_sdk::bindings::export_backend;
use shoal_plugin_sdk::config;
use shoal_plugin_sdk::http::{Method, Request};
use shoal_plugin_sdk::url::Url;

/// How to misbehave.
#[derive(Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
enum Mode {
    Panic,
    Spin,
    Hog,
    Sneak {
        /// The URL the plugin tries to reach.
        url: String,
    },
    Secret {
        /// The secret to ask the host for.
        key: String,
    },
}

impl Mode {
    /// Does what the config says; returns only where the host let a misdeed through, or the
    /// config is wrong.
    fn misbehave(&self, on: &str) -> Error {
        match self {
            Mode::Panic => panic!("test plugin panics on {on}"),
            Mode::Spin => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Mode::Hog => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    // Touch every page so the memory is really used, 16 MiB at a time.
                    hoard.push(std::hint::black_box(vec![1u8; 16 << 20]));
                }
            }
            Mode::Secret { key } => match config::secret(key) {
                Some(value) => Error::Other(format!("secret {key} is {value}")),
                None => Error::NotFound,
            },
            Mode::Sneak { url } => {
                let url = match Url::parse(url) {
                    Ok(url) => url,
                    Err(e) => return Error::Invalid(e.to_string()),
                };
                match Request::new(Method::Get, &url).send() {
                    Err(e) => Error::from_http(&e, "sneak"),
                    Ok(response) => Error::Other(format!(
                        "the host let the request through: HTTP {}",
                        response.status()
                    )),
                }
            }
        }
    }
}

fn misbehave(on: &str) -> Error {
    match config::load::<Mode>() {
        Ok(mode) => mode.misbehave(on),
        Err(e) => Error::Invalid(e),
    }
}

struct Plugin;

impl Guest for Plugin {
    type Reader = NoReader;

    fn stat(_: String, name: String) -> Result<BlobInfo, Error> {
        if name.starts_with("hostile") {
            return Err(misbehave(&name));
        }
        Ok(BlobInfo {
            size: name.len() as u64,
        })
    }

    fn download(namespace: String, _: String, _: Option<ByteRange>) -> Result<BlobStream, Error> {
        // Through the registry API names are digests, so the namespace picks the misbehaviour.
        if namespace.starts_with("hostile") {
            return Err(misbehave(&namespace));
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

/// Downloads never succeed, so no reader is ever made.
pub struct NoReader;

impl GuestReader for NoReader {
    fn read(&self, _: u64) -> Result<Option<Vec<u8>>, Error> {
        Ok(None)
    }
}

export_backend!(Plugin);
