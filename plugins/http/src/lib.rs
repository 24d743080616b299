//! `http`: blobs fetched from a plain HTTP server by URL template (`download_url` with `%s`),
//! read-only unless `upload_url` is set.
//!
//! Downloads hand the response body to the host (`body.incoming`), which streams it
//! natively; uploads splice the host's stream into the request body. Neither copies blob
//! bytes through this component's memory.

use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use shoal_plugin_sdk::backend::{
    BlobInfo, BlobStream, ByteRange, Error, Guest, InputStream, ListPage,
};
use shoal_plugin_sdk::bindings::export_backend;
use shoal_plugin_sdk::http::{self, IncomingResponse, Method, Request};
use shoal_plugin_sdk::url::{Url, fill_template};
use shoal_plugin_sdk::{config, duration, log};

/// The keys of the `http:` block this plugin reads.
#[derive(Deserialize)]
struct Config {
    download_url: String,
    #[serde(default)]
    upload_url: Option<String>,
    #[serde(default)]
    download_backoff: Backoff,
    #[serde(
        default = "default_timeout",
        deserialize_with = "duration::deserialize"
    )]
    timeout: Duration,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

/// `download_backoff`: exponential waits between retries of failed downloads.
#[derive(Deserialize)]
#[serde(default)]
struct Backoff {
    enabled: bool,
    #[serde(deserialize_with = "duration::deserialize")]
    initial_interval: Duration,
    #[serde(deserialize_with = "duration::deserialize")]
    max_interval: Duration,
    #[serde(deserialize_with = "duration::deserialize")]
    max_elapsed_time: Duration,
    multiplier: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            enabled: false,
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
            multiplier: 2.0,
        }
    }
}

impl Backoff {
    /// Runs `attempt` until it succeeds, fails for good, or the backoff budget is spent.
    fn retry<T>(
        &self,
        what: &str,
        mut attempt: impl FnMut() -> Result<T, Error>,
    ) -> Result<T, Error> {
        let start = Instant::now();
        let mut wait = self.initial_interval;
        let mut tries = 1u32;
        loop {
            match attempt() {
                Err(e) if self.enabled && e.is_transient() => {
                    if start.elapsed() + wait > self.max_elapsed_time {
                        return Err(give_up(e, what, tries));
                    }
                    log::info(&format!(
                        "{what}: try {tries} failed ({e:?}); retrying in {wait:?}"
                    ));
                    thread::sleep(wait);
                    tries += 1;
                    wait = wait
                        .mul_f64(self.multiplier.max(1.0))
                        .min(self.max_interval);
                }
                result => return result,
            }
        }
    }
}

fn give_up(e: Error, what: &str, tries: u32) -> Error {
    match e {
        Error::Unavailable(m) => {
            Error::Unavailable(format!("{m} (gave up on {what} after {tries} tries)"))
        }
        Error::Throttled(m) => {
            Error::Throttled(format!("{m} (gave up on {what} after {tries} tries)"))
        }
        other => other,
    }
}

fn settings() -> Result<Config, Error> {
    config::load().map_err(Error::Invalid)
}

fn blob_url(template: &str, name: &str) -> Result<Url, Error> {
    Url::parse(&fill_template(template, name)).map_err(|e| Error::Invalid(e.to_string()))
}

/// Sends `request` and maps transport failures and error statuses to the WIT error.
fn exchange(request: Request<'_>, what: &str) -> Result<IncomingResponse, Error> {
    let response = request.send().map_err(|e| Error::from_http(&e, what))?;
    match Error::from_status(response.status(), what) {
        None => Ok(response),
        Some(e) => Err(e),
    }
}

struct HttpBlobs;

impl Guest for HttpBlobs {
    type Reader = NoReader;

    fn stat(_namespace: String, name: String) -> Result<BlobInfo, Error> {
        let config = settings()?;
        let url = blob_url(&config.download_url, &name)?;
        let response = config.download_backoff.retry("stat", || {
            exchange(
                Request::new(Method::Head, &url).timeout(config.timeout),
                "stat",
            )
        })?;
        let size = http::content_length(&response)
            .ok_or_else(|| Error::Other("stat: the server sent no Content-Length".into()))?;
        Ok(BlobInfo { size })
    }

    fn download(
        _namespace: String,
        name: String,
        range: Option<ByteRange>,
    ) -> Result<BlobStream, Error> {
        let config = settings()?;
        let url = blob_url(&config.download_url, &name)?;
        let range_header = http::range_header(range)?;
        let response = config.download_backoff.retry("download", || {
            let mut request = Request::new(Method::Get, &url).timeout(config.timeout);
            if let Some(value) = &range_header {
                request = request.header("range", value.as_bytes());
            }
            exchange(request, "download")
        })?;
        http::passthrough(response, range)
    }

    fn upload(_namespace: String, name: String, size: u64, body: InputStream) -> Result<(), Error> {
        let config = settings()?;
        let Some(template) = &config.upload_url else {
            return Err(Error::Invalid(
                "this http backend is read-only: it has no upload_url".into(),
            ));
        };
        let url = blob_url(template, &name)?;
        let request = Request::new(Method::Put, &url).timeout(config.timeout);
        let response = request
            .send_with_body(&body, size)
            .map_err(|e| Error::from_http(&e, "upload"))?;
        match Error::from_status(response.status(), "upload") {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    fn list(
        _namespace: String,
        _prefix: String,
        _continuation: Option<String>,
        _limit: u32,
    ) -> Result<ListPage, Error> {
        Err(Error::Invalid("the http backend cannot list blobs".into()))
    }

    fn delete(_namespace: String, _name: String) -> Result<(), Error> {
        Err(Error::Invalid(
            "the http backend is read-only: it cannot delete".into(),
        ))
    }
}

/// Downloads always pass the response body through, so no reader is ever made.
struct NoReader;

impl shoal_plugin_sdk::backend::GuestReader for NoReader {
    fn read(&self, _max: u64) -> Result<Option<Vec<u8>>, Error> {
        Err(Error::Other("the http backend has no reader".into()))
    }
}

export_backend!(HttpBlobs);
