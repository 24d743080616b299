//! [`FlakyBackend`]: a misbehaving backend fixture. It is the shared [`MemoryBackend`] whose
//! uploads fail (as `Unavailable`, what a plugin reports for a storage outage) while the test
//! says so, and which counts the failures it caused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use shoal_storage::{
    Backend, BackendError, BlobInfo, ByteRange, ByteStream, Download, ListPage, MemoryBackend,
};

/// The size of a held download's chunks.
const CHUNK: usize = 64 << 10;

/// [`MemoryBackend`] with uploads that fail on demand.
pub struct FlakyBackend {
    inner: Arc<MemoryBackend>,
    /// While true, a download sends its first `hold_after` bytes and then waits until it is
    /// false.
    held: tokio::sync::watch::Sender<bool>,
    /// Bytes a held download sends first: 64 KiB unless [`FlakyBackend::hold_downloads_after`].
    hold_after: AtomicU64,
    /// Uploads still to fail; `u32::MAX` fails every one until changed.
    failing: AtomicU32,
    failed: AtomicU64,
}

impl FlakyBackend {
    /// `inner`, behaving.
    pub fn new(inner: Arc<MemoryBackend>) -> Arc<Self> {
        Arc::new(FlakyBackend {
            inner,
            held: tokio::sync::watch::Sender::new(false),
            hold_after: AtomicU64::new(CHUNK as u64),
            failing: AtomicU32::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// Fails the next `n` uploads (`u32::MAX`: all of them, until called again).
    pub fn fail_uploads(&self, n: u32) {
        self.failing.store(n, Ordering::SeqCst);
    }

    /// Holds downloads after their first 64 KiB (`true`) or lets them go on (`false`).
    pub fn hold_downloads(&self, held: bool) {
        self.hold_downloads_after(CHUNK as u64, held);
    }

    /// Holds downloads after their first `bytes` (rounded up to 64 KiB), or lets them go on.
    pub fn hold_downloads_after(&self, bytes: u64, held: bool) {
        self.hold_after.store(bytes, Ordering::SeqCst);
        self.held.send_replace(held);
    }

    /// Uploads failed so far.
    pub fn failed_uploads(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }

    fn should_fail(&self) -> bool {
        let failing = self
            .failing
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                0 => None,
                u32::MAX => Some(u32::MAX),
                n => Some(n - 1),
            });
        failing.is_ok()
    }
}

#[async_trait]
impl Backend for FlakyBackend {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn stat(&self, namespace: &str, name: &str) -> Result<BlobInfo, BackendError> {
        self.inner.stat(namespace, name).await
    }

    async fn download(
        &self,
        namespace: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<Download, BackendError> {
        let download = self.inner.download(namespace, name, range).await?;
        if !*self.held.borrow() {
            return Ok(download);
        }
        // Re-chunked into 64 KiB pieces, the one after `hold_after` bytes waiting for the hold
        // to be lifted.
        let held = self.held.subscribe();
        let wait_at = self
            .hold_after
            .load(Ordering::SeqCst)
            .div_ceil(CHUNK as u64) as usize;
        let chunks = download.body.flat_map(|chunk| {
            let pieces: Vec<std::io::Result<Bytes>> = match chunk {
                Ok(b) => (0..b.len())
                    .step_by(CHUNK)
                    .map(|at| Ok(b.slice(at..(at + CHUNK).min(b.len()))))
                    .collect(),
                Err(e) => vec![Err(e)],
            };
            futures_util::stream::iter(pieces)
        });
        let body = futures_util::stream::unfold(
            (Box::pin(chunks), held, 0usize),
            move |(mut chunks, mut held, sent)| async move {
                if sent == wait_at {
                    let _ = held.wait_for(|h| !*h).await;
                }
                let next = chunks.next().await?;
                Some((next, (chunks, held, sent + 1)))
            },
        );
        Ok(Download {
            length: download.length,
            body: Box::pin(body),
        })
    }

    async fn upload(
        &self,
        namespace: &str,
        name: &str,
        size: u64,
        body: ByteStream,
    ) -> Result<(), BackendError> {
        if self.should_fail() {
            self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(BackendError::Unavailable {
                plugin: self.name().to_owned(),
                message: "the test took the storage down".into(),
            });
        }
        self.inner.upload(namespace, name, size, body).await
    }

    async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        continuation: Option<String>,
        limit: u32,
    ) -> Result<ListPage, BackendError> {
        self.inner
            .list(namespace, prefix, continuation, limit)
            .await
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<(), BackendError> {
        self.inner.delete(namespace, name).await
    }
}
