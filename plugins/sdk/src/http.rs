//! Outbound HTTP over `wasi:http`: one request, its response, and the body passthrough.
//!
//! Every request passes the host's allow-list: a host the backend's config does not name
//! fails with `ErrorCode::HttpRequestDenied`.
//!
//! A download is [`range_header`] on the way out and [`passthrough`] on the way back: the
//! response body goes to the host untouched, so blob bytes never enter guest memory.

use std::time::Duration;

use crate::backend::{BlobStream, Body, ByteRange, Error};
use crate::bindings::wasi::http::outgoing_handler;
pub use crate::bindings::wasi::http::types::{ErrorCode, IncomingBody, IncomingResponse, Method};
use crate::bindings::wasi::http::types::{
    Fields, FutureIncomingResponse, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use crate::bindings::wasi::io::streams::{InputStream, StreamError};
use crate::url::{self, Url};

/// One outgoing request, built up and then sent.
#[derive(Debug)]
pub struct Request<'a> {
    method: Method,
    url: &'a Url,
    headers: Vec<(String, Vec<u8>)>,
    timeout: Option<Duration>,
}

impl<'a> Request<'a> {
    /// A request of `method` to `url`.
    pub fn new(method: Method, url: &'a Url) -> Self {
        Request {
            method,
            url,
            headers: Vec::new(),
            timeout: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Bounds connecting, the first byte and every gap between bytes by `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request without a body and waits for the response head.
    pub fn send(self) -> Result<IncomingResponse, ErrorCode> {
        let (request, options) = self.build()?;
        wait(outgoing_handler::handle(request, options)?)
    }

    /// Sends `size` bytes of `body` as the request body. The bytes move from the host's
    /// stream into the outgoing body with `output-stream.splice`: they never enter guest
    /// memory.
    pub fn send_with_body(
        self,
        body: &InputStream,
        size: u64,
    ) -> Result<IncomingResponse, ErrorCode> {
        let request = self.header("content-length", size.to_string());
        let (request, options) = request.build()?;
        let outgoing = request
            .body()
            .map_err(|()| internal("request body taken twice"))?;
        // Send first: the host buffers only a chunk of the body, so writing before sending
        // would wait forever once that buffer is full.
        let response = outgoing_handler::handle(request, options)?;
        {
            let sink = outgoing
                .write()
                .map_err(|()| internal("body stream taken twice"))?;
            let mut left = size;
            while left > 0 {
                match sink.blocking_splice(body, left) {
                    Ok(n) => left -= n.min(left),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(internal(&format!("upload body: {}", e.to_debug_string())));
                    }
                }
            }
            if left > 0 {
                // The server stopped taking the body; its answer (a 413, say) says why
                // better than the short count does.
                drop(sink);
                drop(outgoing);
                return match wait(response) {
                    Ok(r) if !(200..300).contains(&r.status()) => Ok(r),
                    _ => Err(ErrorCode::HttpRequestBodySize(Some(size - left))),
                };
            }
            // `sink` drops here: the body stream must be closed before `finish`.
        }
        OutgoingBody::finish(outgoing, None)?;
        wait(response)
    }

    /// Sends `bytes` as the request body: for small bodies the plugin makes itself (an XML
    /// or JSON document), never for blobs, which go through [`Request::send_with_body`].
    pub fn send_with_bytes(self, bytes: &[u8]) -> Result<IncomingResponse, ErrorCode> {
        let request = self.header("content-length", bytes.len().to_string());
        let (request, options) = request.build()?;
        let outgoing = request
            .body()
            .map_err(|()| internal("request body taken twice"))?;
        // Send first, as in `send_with_body`: the host takes the body while it sends.
        let response = outgoing_handler::handle(request, options)?;
        {
            let sink = outgoing
                .write()
                .map_err(|()| internal("body stream taken twice"))?;
            // `blocking-write-and-flush` takes at most 4096 bytes a call.
            for chunk in bytes.chunks(4096) {
                if let Err(e) = sink.blocking_write_and_flush(chunk) {
                    drop(sink);
                    drop(outgoing);
                    return match (e, wait(response)) {
                        (_, Ok(r)) if !(200..300).contains(&r.status()) => Ok(r),
                        (StreamError::LastOperationFailed(e), _) => {
                            Err(internal(&format!("request body: {}", e.to_debug_string())))
                        }
                        (StreamError::Closed, _) => Err(ErrorCode::HttpRequestBodySize(None)),
                    };
                }
            }
        }
        OutgoingBody::finish(outgoing, None)?;
        wait(response)
    }

    fn build(self) -> Result<(OutgoingRequest, Option<RequestOptions>), ErrorCode> {
        let headers = Fields::from_list(&self.headers)
            .map_err(|e| internal(&format!("bad request header: {e:?}")))?;
        let request = OutgoingRequest::new(headers);
        let scheme = match self.url.scheme {
            url::Scheme::Http => Scheme::Http,
            url::Scheme::Https => Scheme::Https,
        };
        let set = [
            request.set_method(&self.method),
            request.set_scheme(Some(&scheme)),
            request.set_authority(Some(&self.url.authority)),
            request.set_path_with_query(Some(&self.url.path_with_query)),
        ];
        if set.iter().any(Result::is_err) {
            return Err(ErrorCode::HttpRequestUriInvalid);
        }
        let options = self.timeout.map(|t| {
            let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
            let options = RequestOptions::new();
            // A host may not support every timeout; the ones it takes still apply.
            let _ = options.set_connect_timeout(Some(ns));
            let _ = options.set_first_byte_timeout(Some(ns));
            let _ = options.set_between_bytes_timeout(Some(ns));
            options
        });
        Ok((request, options))
    }
}

/// The first value of header `name` of `response`, as text.
pub fn header(response: &IncomingResponse, name: &str) -> Option<String> {
    let values = response.headers().get(name);
    let first = values.into_iter().next()?;
    String::from_utf8(first).ok()
}

/// The `Content-Length` of `response`, when it sent a readable one.
pub fn content_length(response: &IncomingResponse) -> Option<u64> {
    header(response, "content-length").and_then(|v| v.trim().parse().ok())
}

/// The `Range` header that asks for `range` of a blob: `bytes=<first>-<last>`, or
/// `bytes=<first>-` to the end; `None` without a range. An empty range has no HTTP form, so
/// it is refused here, before any request, with the error every backend gives for it.
pub fn range_header(range: Option<ByteRange>) -> Result<Option<String>, Error> {
    let Some(ByteRange { offset, length }) = range else {
        return Ok(None);
    };
    match length {
        Some(0) => Err(Error::Invalid(
            "an empty range has no bytes to download".into(),
        )),
        Some(len) => Ok(Some(format!(
            "bytes={offset}-{}",
            offset.saturating_add(len - 1)
        ))),
        None => Ok(Some(format!("bytes={offset}-"))),
    }
}

/// Hands the body of a successful download `response` back to the host as the blob stream
/// (`body.incoming`), with its `Content-Length` as the length: the host streams it natively
/// and the bytes never cross this component's memory.
///
/// `range` is the range the request asked for with a [`range_header`]: the answer must then
/// be `206 Partial Content`. A server that ignored the header and sent the whole blob is
/// refused, because skipping bytes here would pull the blob through guest memory. Pass `None`
/// where the range went some other way (WebHDFS's `offset` and `length`) and the answer
/// holds exactly the bytes asked for. Error statuses are the caller's to map before this.
pub fn passthrough(
    response: IncomingResponse,
    range: Option<ByteRange>,
) -> Result<BlobStream, Error> {
    if range.is_some() && response.status() != 206 {
        return Err(Error::Invalid(format!(
            "download: asked for a range, the server answered HTTP {} with the whole blob",
            response.status()
        )));
    }
    let length = content_length(&response);
    let body = response
        .consume()
        .map_err(|()| Error::Other("download: response body taken twice".into()))?;
    Ok(BlobStream {
        length,
        body: Body::Incoming(body),
    })
}

/// Reads a whole (small) response body into memory; for error messages and listings, never
/// for blobs.
pub fn read_small_body(response: IncomingResponse, limit: usize) -> Result<Vec<u8>, ErrorCode> {
    let body = response
        .consume()
        .map_err(|()| internal("response body taken twice"))?;
    let mut out = Vec::new();
    {
        let stream = body
            .stream()
            .map_err(|()| internal("response stream taken twice"))?;
        while out.len() < limit {
            match stream.blocking_read((limit - out.len()) as u64) {
                Ok(chunk) => out.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(internal(&e.to_debug_string()));
                }
            }
        }
    }
    Ok(out)
}

fn wait(response: FutureIncomingResponse) -> Result<IncomingResponse, ErrorCode> {
    loop {
        match response.get() {
            Some(Ok(result)) => return result,
            Some(Err(())) => return Err(internal("response taken twice")),
            None => response.subscribe().block(),
        }
    }
}

fn internal(message: &str) -> ErrorCode {
    ErrorCode::InternalError(Some(message.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(offset: u64, length: Option<u64>) -> Option<ByteRange> {
        Some(ByteRange { offset, length })
    }

    #[test]
    fn ranges_become_inclusive_byte_ranges() {
        let header = |r| range_header(r).ok().flatten();
        assert_eq!(header(None), None);
        assert_eq!(header(range(0, Some(10))).as_deref(), Some("bytes=0-9"));
        assert_eq!(header(range(5, None)).as_deref(), Some("bytes=5-"));
        assert_eq!(
            header(range(u64::MAX - 1, Some(10))),
            Some(format!("bytes={}-{}", u64::MAX - 1, u64::MAX))
        );
        assert!(matches!(
            range_header(range(5, Some(0))),
            Err(Error::Invalid(m)) if m.contains("empty range")
        ));
    }
}
