//! The build-index's tags over a backend that can be switched down or read-only: a PUT updates
//! the cache at once, a tag changed behind the build-index's back is seen once its cached entry
//! is older than `tag_cache.tti` (however often it was read meanwhile), a failed revalidation
//! serves the cached digest, and `DELETE /tags/{repo}:{tag}` answers 204 / 404 / 403 / 502.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use async_trait::async_trait;
use common::{Node, digest_of};
use shoal_config::BuildIndexConfig;
use shoal_roles::build_index;
use shoal_storage::{
    Backend, BackendError, BlobInfo, ByteRange, ByteStream, Download, ListPage, MemoryBackend,
    NamespaceRouter,
};

const UP: u8 = 0;
const DOWN: u8 = 1;
const READ_ONLY: u8 = 2;

/// A [`MemoryBackend`] with a switch: up, down (every call unavailable), or read-only (writes
/// refused as invalid, as a `registry_tag` upstream refuses them).
struct Switched {
    inner: MemoryBackend,
    mode: AtomicU8,
}

impl Switched {
    fn check(&self, write: bool) -> Result<(), BackendError> {
        let plugin = "switched".to_owned();
        match self.mode.load(Ordering::SeqCst) {
            DOWN => Err(BackendError::Unavailable {
                plugin,
                message: "switched off".into(),
            }),
            READ_ONLY if write => Err(BackendError::Invalid {
                plugin,
                message: "read-only".into(),
            }),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Backend for Switched {
    fn name(&self) -> &str {
        "switched"
    }
    async fn stat(&self, ns: &str, name: &str) -> Result<BlobInfo, BackendError> {
        self.check(false)?;
        self.inner.stat(ns, name).await
    }
    async fn download(
        &self,
        ns: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<Download, BackendError> {
        self.check(false)?;
        self.inner.download(ns, name, range).await
    }
    async fn upload(
        &self,
        ns: &str,
        name: &str,
        size: u64,
        body: ByteStream,
    ) -> Result<(), BackendError> {
        self.check(true)?;
        self.inner.upload(ns, name, size, body).await
    }
    async fn list(
        &self,
        ns: &str,
        prefix: &str,
        after: Option<String>,
        limit: u32,
    ) -> Result<ListPage, BackendError> {
        self.check(false)?;
        self.inner.list(ns, prefix, after, limit).await
    }
    async fn delete(&self, ns: &str, name: &str) -> Result<(), BackendError> {
        self.check(true)?;
        self.inner.delete(ns, name).await
    }
}

struct Index {
    node: Node,
    http: reqwest::Client,
    /// The build-index's data directory (its replication queue), gone with it.
    _data: tempfile::TempDir,
}

impl Index {
    /// A build-index with `tag_cache.tti: {tti}` over `backend`.
    async fn start(tti: &str, backend: &Arc<Switched>) -> Index {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let config: BuildIndexConfig = shoal_config::load_str(
            &format!("listen: \"{addr}\"\ntag_cache:\n  tti: {tti}\n"),
            &|_| None,
        )
        .unwrap();
        let router = Arc::new(NamespaceRouter::single(backend.clone() as Arc<dyn Backend>));
        let deps = build_index::BuildIndexDeps { backends: router };
        let data = tempfile::tempdir().unwrap();
        let dir = data.path().to_owned();
        let node = Node::spawn("build-index".into(), addr, None, async move {
            build_index::serve(&config, &dir, listener, deps, std::future::pending()).await
        });
        let index = Index {
            _data: data,
            node,
            http: reqwest::Client::new(),
        };
        let up = common::poll_until(std::time::Duration::from_secs(10), || async {
            index.call(reqwest::Method::GET, "/health").await.0 == 200
        })
        .await;
        assert!(up, "the build-index did not come up");
        index
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> (u16, String) {
        let url = format!("http://{}{path}", self.node.http);
        let resp = self.http.request(method, url).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn get(&self, tag: &str) -> (u16, String) {
        self.call(reqwest::Method::GET, &format!("/tags/team%2Fapp:{tag}"))
            .await
    }

    async fn put(&self, tag: &str, digest: &str) -> u16 {
        let path = format!("/tags/team%2Fapp:{tag}/digest/{digest}");
        self.call(reqwest::Method::PUT, &path).await.0
    }

    async fn delete(&self, tag: &str) -> (u16, String) {
        self.call(reqwest::Method::DELETE, &format!("/tags/team%2Fapp:{tag}"))
            .await
    }
}

fn backend() -> Arc<Switched> {
    Arc::new(Switched {
        inner: MemoryBackend::new("memory"),
        mode: AtomicU8::new(UP),
    })
}

/// Sets a tag behind the build-index's back, as another writer of a shared backend or a
/// read-only upstream's own pushes would.
fn retag_behind(backend: &Switched, tag: &str, digest: &str) {
    backend
        .inner
        .insert("team/app", &format!("team/app:{tag}"), digest.to_owned());
}

#[tokio::test]
async fn puts_update_the_cache_and_reads_are_revalidated_after_the_tti() {
    let backend = backend();
    let (a, b, c) = (digest_of(b"a"), digest_of(b"b"), digest_of(b"c"));
    let cached = Index::start("1h", &backend).await;
    let always = Index::start("0s", &backend).await;

    assert_eq!(cached.put("latest", &a).await, 200);
    assert_eq!(cached.get("latest").await, (200, a.clone()));
    assert_eq!(always.get("latest").await, (200, a.clone()));
    // A PUT through the build-index is seen at once, whatever the tti.
    assert_eq!(cached.put("latest", &b).await, 200);
    assert_eq!(cached.get("latest").await, (200, b.clone()));

    // Behind its back: the 1h cache still says b (fresh, confirmed by the PUT); the one with
    // a zero tti revalidates on every read.
    retag_behind(&backend, "latest", &c);
    assert_eq!(cached.get("latest").await, (200, b.clone()));
    assert_eq!(always.get("latest").await, (200, c.clone()));

    // The backend down: a failed revalidation serves what was cached; nothing cached is a 502.
    backend.mode.store(DOWN, Ordering::SeqCst);
    assert_eq!(always.get("latest").await, (200, c.clone()));
    assert_eq!(cached.get("latest").await, (200, b.clone()));
    assert_eq!(always.get("other").await.0, 502);

    // Up again, and the tag removed behind its back: 404, and forgotten.
    backend.mode.store(UP, Ordering::SeqCst);
    backend
        .inner
        .delete("team/app", "team/app:latest")
        .await
        .unwrap();
    assert_eq!(always.get("latest").await.0, 404);
    backend.mode.store(DOWN, Ordering::SeqCst);
    assert_eq!(always.get("latest").await.0, 502, "nothing cached any more");
}

#[tokio::test]
async fn delete_removes_the_tag_from_backend_and_cache() {
    let backend = backend();
    let index = Index::start("1h", &backend).await;
    let a = digest_of(b"a");
    assert_eq!(index.put("latest", &a).await, 200);
    assert_eq!(index.get("latest").await, (200, a.clone()));

    assert_eq!(index.delete("latest").await.0, 204);
    assert!(backend.inner.get("team/app", "team/app:latest").is_none());
    assert_eq!(index.get("latest").await.0, 404, "cached no more");
    assert_eq!(index.delete("latest").await.0, 404);

    assert_eq!(index.put("latest", &a).await, 200);
    backend.mode.store(READ_ONLY, Ordering::SeqCst);
    let (status, body) = index.delete("latest").await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(index.get("latest").await, (200, a.clone()), "still tagged");
    backend.mode.store(DOWN, Ordering::SeqCst);
    assert_eq!(index.delete("latest").await.0, 502);
    backend.mode.store(UP, Ordering::SeqCst);
    assert_eq!(index.get("latest").await, (200, a));
    assert_eq!(index.delete("bad:tag:").await.0, 400);
}
