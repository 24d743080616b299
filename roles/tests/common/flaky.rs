//! [`FlakyBackend`]: a misbehaving backend fixture. It is the shared [`MemoryBackend`] whose
//! uploads fail (as `Unavailable`, what a plugin reports for a storage outage) while the test
//! says so, and which counts the failures it caused.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use async_trait::async_trait;
use shoal_storage::{
    Backend, BackendError, BlobInfo, ByteRange, ByteStream, Download, ListPage, MemoryBackend,
};

/// [`MemoryBackend`] with uploads that fail on demand.
pub struct FlakyBackend {
    inner: Arc<MemoryBackend>,
    /// Uploads still to fail; `u32::MAX` fails every one until changed.
    failing: AtomicU32,
    failed: AtomicU64,
}

impl FlakyBackend {
    /// `inner`, behaving.
    pub fn new(inner: Arc<MemoryBackend>) -> Arc<Self> {
        Arc::new(FlakyBackend {
            inner,
            failing: AtomicU32::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// Fails the next `n` uploads (`u32::MAX`: all of them, until called again).
    pub fn fail_uploads(&self, n: u32) {
        self.failing.store(n, Ordering::SeqCst);
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
        self.inner.download(namespace, name, range).await
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
