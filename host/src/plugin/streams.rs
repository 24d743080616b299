//! Blob bytes across the plugin boundary, in both directions, without copies where the
//! design allows: an upload is a host `input-stream` over the caller's byte stream, and a
//! passthrough download is the `wasi:http` body the plugin received, streamed natively.

use std::io;

use bytes::Bytes;
use futures_util::{FutureExt, StreamExt, stream};
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError};
use wasmtime_wasi_http::p2::body::HostIncomingBody;

use super::ByteStream;

/// The `input-stream` an upload hands the plugin: reads come straight from the caller's
/// stream, chunk by chunk; a splice moves them into an outgoing HTTP body unchanged.
pub(crate) struct UploadStream {
    source: ByteStream,
    buffer: Bytes,
    state: SourceState,
}

enum SourceState {
    Open,
    Failed(io::Error),
    Done,
}

impl UploadStream {
    pub(crate) fn new(source: ByteStream) -> Self {
        UploadStream {
            source,
            buffer: Bytes::new(),
            state: SourceState::Open,
        }
    }

    fn record(&mut self, item: Option<io::Result<Bytes>>) {
        match item {
            Some(Ok(bytes)) => self.buffer = bytes,
            Some(Err(e)) => self.state = SourceState::Failed(e),
            None => self.state = SourceState::Done,
        }
    }

    fn has_news(&self) -> bool {
        !self.buffer.is_empty() || !matches!(self.state, SourceState::Open)
    }
}

impl InputStream for UploadStream {
    fn read(&mut self, size: usize) -> Result<Bytes, StreamError> {
        loop {
            if !self.buffer.is_empty() {
                let n = size.min(self.buffer.len());
                return Ok(self.buffer.split_to(n));
            }
            match std::mem::replace(&mut self.state, SourceState::Done) {
                SourceState::Failed(e) => {
                    return Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                        "upload source failed: {e}"
                    )));
                }
                SourceState::Done => return Err(StreamError::Closed),
                SourceState::Open => self.state = SourceState::Open,
            }
            // Non-blocking: take what is ready now; `ready` waits for the rest.
            match self.source.next().now_or_never() {
                Some(item) => self.record(item),
                None => return Ok(Bytes::new()),
            }
        }
    }
}

#[async_trait::async_trait]
impl Pollable for UploadStream {
    async fn ready(&mut self) {
        if !self.has_news() {
            let item = self.source.next().await;
            self.record(item);
        }
    }
}

/// The body of a response the plugin fetched, taken out of its store and streamed on the
/// host. The `HostIncomingBody` is kept alive beside its stream: it owns the connection task.
pub(crate) fn passthrough(mut body: HostIncomingBody) -> io::Result<ByteStream> {
    let Some(reader) = body.take_stream() else {
        return Err(io::Error::other(
            "the plugin returned a response body it had already started reading",
        ));
    };
    let state = (reader, body);
    Ok(Box::pin(stream::unfold(Some(state), |state| async move {
        let (mut reader, body) = state?;
        loop {
            match reader.read(usize::MAX) {
                Ok(chunk) if chunk.is_empty() => reader.ready().await,
                Ok(chunk) => return Some((Ok(chunk), Some((reader, body)))),
                Err(StreamError::Closed) => return None,
                Err(StreamError::LastOperationFailed(e) | StreamError::Trap(e)) => {
                    let e = io::Error::other(format!("blob body broke off: {e:#}"));
                    return Some((Err(e), None));
                }
            }
        }
    })))
}
