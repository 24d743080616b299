//! The seed's `backends:` list as running plugins: the plugin host's loader for
//! [`shoal_storage::NamespaceRouter`], and health policies as the roles' health filters.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use shoal_config::{AuthConfig, BackendEntry, NamePath};
use shoal_p2p::HealthFilter;
use shoal_storage::router::RouterError;
use shoal_storage::{
    Backend, BackendError, BlobInfo, ByteRange, ByteStream, Download, HealthPolicy, ListPage,
    NamespaceRouter,
};

use crate::plugin::{LoadError, PluginEngine};

/// Loads every entry's plugin (with its `auth:` secrets) in order into a router.
pub fn load_router(
    engine: &PluginEngine,
    entries: &[BackendEntry],
    auth: &AuthConfig,
) -> Result<NamespaceRouter, RouterError<LoadError>> {
    NamespaceRouter::load(entries, |entry| {
        let backend = engine.backend(&entry.backend, auth.secrets_for(&entry.backend))?;
        Ok(match &entry.backend {
            shoal_config::Backend::Fs(fs) => Arc::new(LinkingFs {
                inner: backend,
                root: fs.root.clone(),
                name_path: fs.name_path,
            }) as Arc<dyn Backend>,
            _ => Arc::new(backend) as Arc<dyn Backend>,
        })
    })
}

/// The `fs` plugin with one native shortcut: a blob the local store committed is written by
/// hard-linking its file into the plugin's folder, so `shoal dev`'s default setup (the store
/// in `cache/`, the `fs` backend in `backend/`, one disk) keeps each blob once, not twice.
///
/// Crash safety is the store's and the plugin's own: the store's blob files are complete,
/// synced and never written again once committed, and the plugin replaces objects by rename,
/// never in place, so the two names can share the inode. The link is made under a hidden
/// `.part` name (which the plugin's listing skips) and renamed into place, then the folder is
/// synced: the object appears whole or not at all, and stays when the garbage collector
/// deletes the cache's name. Everything else, and any file on another file system, goes
/// through the plugin.
struct LinkingFs<B> {
    inner: B,
    root: PathBuf,
    name_path: NamePath,
}

impl<B> LinkingFs<B> {
    /// The object path the plugin uses for a blob name, for the schemes whose blob names are
    /// plain digests (a name the plugin would refuse is left to the plugin).
    fn object(&self, name: &str) -> Option<PathBuf> {
        let plain = !name.is_empty()
            && !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.'));
        match self.name_path {
            NamePath::Identity if plain => Some(self.root.join(name)),
            NamePath::ShardedDockerBlob
                if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Some(
                    self.root
                        .join("docker/registry/v2/blobs/sha256")
                        .join(&name[..2])
                        .join(name)
                        .join("data"),
                )
            }
            _ => None,
        }
    }
}

/// Links `src` to `dest` through a hidden temporary name; `false` across file systems.
fn link_into_place(src: &Path, dest: &Path) -> std::io::Result<bool> {
    let dir = dest.parent().expect("object paths have a parent");
    std::fs::create_dir_all(dir)?;
    let file_name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("blob");
    let part = dir.join(format!(".{file_name}.{}.part", link_number()));
    match std::fs::hard_link(src, &part) {
        Ok(()) => {}
        // EXDEV: another file system; EPERM: one that has no hard links (some FUSE mounts).
        Err(e) if matches!(e.raw_os_error(), Some(18) | Some(1)) => return Ok(false),
        Err(e) => return Err(e),
    }
    std::fs::rename(&part, dest).inspect_err(|_| {
        let _ = std::fs::remove_file(&part);
    })?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(true)
}

/// A part name no concurrent link picks: the process id (the data directory has one shoal at
/// a time, but the backend folder may be shared) and a counter.
fn link_number() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

#[async_trait]
impl<B: Backend> Backend for LinkingFs<B> {
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

    fn plugin_health(&self) -> Option<shoal_storage::PluginHealth> {
        self.inner.plugin_health()
    }

    async fn link_file(
        &self,
        _namespace: &str,
        name: &str,
        path: &Path,
    ) -> Result<bool, BackendError> {
        let Some(dest) = self.object(name) else {
            return Ok(false);
        };
        let src = path.to_owned();
        let linked = tokio::task::spawn_blocking(move || link_into_place(&src, &dest))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()));
        match linked.and_then(|r| r) {
            Ok(linked) => Ok(linked),
            Err(e) => Err(BackendError::Other {
                plugin: self.inner.name().to_owned(),
                message: format!("linking {name} into {}: {e}", self.root.display()),
            }),
        }
    }
}

/// A health-policy component as the roles' [`HealthFilter`]: a policy that cannot answer
/// (trapped, breaker open) fails open, so a broken plugin never takes every host away.
pub struct PolicyFilter(pub Arc<dyn HealthPolicy>);

#[async_trait]
impl HealthFilter for PolicyFilter {
    async fn observe(&self, host: &str, ok: bool, now: SystemTime) {
        if let Err(e) = self.0.observe(host, ok, now).await {
            tracing::warn!(%host, %e, "health policy failed to record a check");
        }
    }

    async fn healthy(&self, host: &str, now: SystemTime) -> bool {
        self.0.healthy(host, now).await.unwrap_or_else(|e| {
            tracing::warn!(%host, %e, "health policy failed; treating the host as healthy");
            true
        })
    }
}

/// `policy` as a [`HealthFilter`].
pub fn filter(policy: Arc<dyn HealthPolicy>) -> Arc<dyn HealthFilter> {
    Arc::new(PolicyFilter(policy))
}
