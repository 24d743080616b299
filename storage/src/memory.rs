//! [`MemoryBackend`]: a native backend that keeps objects in memory. It is what a whole
//! cluster in one test process (or a simulator) stores blobs and tags in, so role logic can be
//! exercised without the plugin host; it follows the same contract as the plugins (not-found
//! distinct, ranges, paged listing in name order).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;

use crate::{Backend, BackendError, BlobInfo, ByteRange, ByteStream, Download, ListPage};

/// Chunk size of download bodies, so readers see a stream, not one buffer.
const CHUNK: usize = 256 << 10;

/// Objects in memory under `(namespace, name)`.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    name: String,
    objects: Mutex<BTreeMap<(String, String), Bytes>>,
    downloads: AtomicU64,
}

impl MemoryBackend {
    /// An empty backend called `name` in errors and logs.
    pub fn new(name: impl Into<String>) -> Self {
        MemoryBackend {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Stores `bytes` directly (test setup).
    pub fn insert(&self, namespace: &str, name: &str, bytes: impl Into<Bytes>) {
        self.lock()
            .insert((namespace.to_owned(), name.to_owned()), bytes.into());
    }

    /// The object's bytes, when held.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Bytes> {
        self.lock()
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// How many downloads were started (a test's "one upstream read per blob").
    pub fn downloads(&self) -> u64 {
        self.downloads.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Bytes>> {
        self.objects.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn not_found(&self, name: &str) -> BackendError {
        BackendError::NotFound {
            plugin: self.name.clone(),
            name: name.to_owned(),
        }
    }
}

#[async_trait::async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn stat(&self, namespace: &str, name: &str) -> Result<BlobInfo, BackendError> {
        self.get(namespace, name)
            .map(|b| BlobInfo {
                size: b.len() as u64,
            })
            .ok_or_else(|| self.not_found(name))
    }

    async fn download(
        &self,
        namespace: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<Download, BackendError> {
        let bytes = self
            .get(namespace, name)
            .ok_or_else(|| self.not_found(name))?;
        self.downloads.fetch_add(1, Ordering::Relaxed);
        let len = bytes.len() as u64;
        let (start, end) = match range {
            None => (0, len),
            Some(r) => {
                if r.offset > len {
                    return Err(BackendError::Invalid {
                        plugin: self.name.clone(),
                        message: format!("range starts at {} past the end ({len})", r.offset),
                    });
                }
                let end = r
                    .length
                    .map_or(len, |l| r.offset.saturating_add(l).min(len));
                (r.offset, end)
            }
        };
        let body = bytes.slice(start as usize..end as usize);
        let chunks: Vec<std::io::Result<Bytes>> =
            body.chunks(CHUNK).map(|c| Ok(body.slice_ref(c))).collect();
        Ok(Download {
            length: Some(end - start),
            body: Box::pin(futures_util::stream::iter(chunks)),
        })
    }

    async fn upload(
        &self,
        namespace: &str,
        name: &str,
        size: u64,
        mut body: ByteStream,
    ) -> Result<(), BackendError> {
        let mut buf = BytesMut::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BackendError::Other {
                plugin: self.name.clone(),
                message: format!("reading the upload body: {e}"),
            })?;
            buf.extend_from_slice(&chunk);
        }
        if buf.len() as u64 != size {
            return Err(BackendError::Invalid {
                plugin: self.name.clone(),
                message: format!("upload of {name}: {} bytes, expected {size}", buf.len()),
            });
        }
        // Nothing is visible until the whole body has arrived.
        self.insert(namespace, name, buf.freeze());
        Ok(())
    }

    async fn list(
        &self,
        namespace: &str,
        prefix: &str,
        continuation: Option<String>,
        limit: u32,
    ) -> Result<ListPage, BackendError> {
        let objects = self.lock();
        let mut names: Vec<String> = objects
            .keys()
            .filter(|(ns, n)| ns == namespace && n.starts_with(prefix))
            .filter(|(_, n)| continuation.as_ref().is_none_or(|c| n > c))
            .map(|(_, n)| n.clone())
            .take(limit.max(1) as usize + 1)
            .collect();
        let more = names.len() > limit.max(1) as usize;
        if more {
            names.pop();
        }
        let continuation = if more { names.last().cloned() } else { None };
        Ok(ListPage {
            names,
            continuation,
        })
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<(), BackendError> {
        self.lock()
            .remove(&(namespace.to_owned(), name.to_owned()))
            .map(|_| ())
            .ok_or_else(|| self.not_found(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(d: Download) -> Vec<u8> {
        let mut body = d.body;
        let mut out = Vec::new();
        while let Some(c) = body.next().await {
            out.extend_from_slice(&c.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn round_trip_ranges_listing_and_not_found() {
        let b = MemoryBackend::new("mem");
        let body: ByteStream = Box::pin(futures_util::stream::iter([
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"world")),
        ]));
        b.upload("ns", "a", 11, body).await.unwrap();
        assert_eq!(b.stat("ns", "a").await.unwrap().size, 11);
        let whole = b.download("ns", "a", None).await.unwrap();
        assert_eq!(read(whole).await, b"hello world");
        let part = b
            .download(
                "ns",
                "a",
                Some(ByteRange {
                    offset: 6,
                    length: Some(100),
                }),
            )
            .await
            .unwrap();
        assert_eq!(part.length, Some(5));
        assert_eq!(read(part).await, b"world");
        assert!(matches!(
            b.stat("other", "a").await,
            Err(BackendError::NotFound { .. })
        ));
        for n in ["b", "c", "d"] {
            b.insert("ns", n, "x");
        }
        let first = b.list("ns", "", None, 2).await.unwrap();
        assert_eq!(first.names, ["a", "b"]);
        let second = b.list("ns", "", first.continuation, 2).await.unwrap();
        assert_eq!(second.names, ["c", "d"]);
        assert_eq!(second.continuation, None);
        b.delete("ns", "a").await.unwrap();
        assert!(matches!(
            b.delete("ns", "a").await,
            Err(BackendError::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn a_short_upload_leaves_nothing() {
        let b = MemoryBackend::new("mem");
        let body: ByteStream =
            Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(b"abc"))]));
        assert!(matches!(
            b.upload("ns", "a", 10, body).await,
            Err(BackendError::Invalid { .. })
        ));
        assert!(b.get("ns", "a").is_none());
    }
}
