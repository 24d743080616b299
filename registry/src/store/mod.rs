//! The content-addressed local store behind `shoal dev` (and, later, the agent and origin caches).
//!
//! Layout under the data directory:
//! ```text
//! blobs/<alg>/<hex[0..2]>/<hex>                        content, written once, never modified
//! uploads/<uuid>/{data,repo}                           uploads in progress (purged when idle)
//! tmp/                                                 scratch for atomic writes
//! repositories/<name>/_layers/<alg>/<hex>              blob membership (empty files)
//! repositories/<name>/_manifests/revisions/<alg>/<hex> manifest membership; holds its media type
//! repositories/<name>/_manifests/tags/<tag>            holds the tagged digest
//! repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>  descriptor of a manifest whose subject is <alg>:<hex>
//! repositories/<name>/_deleted/<alg>/<hex>             content a client deleted from the repository (empty)
//! ```
//! Every write lands in a temporary file that is synced and then renamed into place, so a crash
//! never leaves a partial blob or manifest visible. Writes that create references take a
//! permit from the fence (`fence.rs`) so the garbage collector (`gc`) never sweeps what they
//! commit.

mod blobs;
pub mod direct;
mod fence;
pub mod gc;
mod index;
mod manifests;
mod recent;
mod uploads;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::digest::Digest;
use crate::name::RepoName;

pub use blobs::SEND_CHUNK;
pub use blobs::map_window;
pub use blobs::{BlobReader, Followers, Progress};
pub use manifests::StoredManifest;
pub use recent::{RECENT_BYTES, Recent};
pub use uploads::{ChunkRange, UploadPurge, UploadStatus};

/// Bytes of manifests kept in memory for fast GETs (they are immutable once written).
const MANIFEST_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// A local, content-addressed registry store on one directory.
pub struct LocalStore {
    root: PathBuf,
    uploads: Mutex<HashMap<uuid::Uuid, Arc<tokio::sync::Mutex<uploads::Upload>>>>,
    manifest_cache: Mutex<ManifestCache>,
    /// Tags and manifest revisions in memory, the files as the truth (`index.rs`).
    index: index::MetaIndex,
    /// Orders writes against the garbage collector's sweep (see `fence.rs`).
    fence: fence::Fence,
    /// One collection at a time.
    collecting: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct ManifestCache {
    bytes: usize,
    entries: HashMap<Digest, Bytes>,
}

impl LocalStore {
    /// Opens (creating if needed) a store rooted at `root`, clearing leftover scratch files.
    pub async fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        for dir in ["blobs", "uploads", "repositories", "tmp"] {
            tokio::fs::create_dir_all(root.join(dir)).await?;
        }
        // Scratch files belong to writes that never committed; they are garbage after a crash.
        let tmp = root.join("tmp");
        let mut rd = tokio::fs::read_dir(&tmp).await?;
        while let Some(e) = rd.next_entry().await? {
            let _ = tokio::fs::remove_file(e.path()).await;
        }
        Ok(LocalStore {
            root,
            uploads: Mutex::new(HashMap::new()),
            manifest_cache: Mutex::new(ManifestCache::default()),
            index: index::MetaIndex::default(),
            fence: fence::Fence::default(),
            collecting: tokio::sync::Mutex::new(()),
        })
    }

    /// The directory this store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the store can take a write now: a byte written to a scratch file and the file
    /// removed (for readiness: a read-only or full disk fails here).
    pub async fn check_writable(&self) -> io::Result<()> {
        let path = self.tmp_path();
        let written = tokio::fs::write(&path, b"r").await;
        let removed = tokio::fs::remove_file(&path).await;
        written?;
        removed
    }

    pub(super) fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(&d.hex()[..2])
            .join(d.hex())
    }

    fn repo_dir(&self, repo: &RepoName) -> PathBuf {
        self.root.join("repositories").join(repo.as_str())
    }

    fn layer_link(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_layers")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    fn revision_link(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_manifests/revisions")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    /// The mark of content a client deleted from `repo` (a blob, or a manifest by digest): in
    /// a namespace of its own, a registry over a backing does not fetch it back into `repo`
    /// until it is pushed (or tagged) there again, even once the garbage collector freed the
    /// local copy.
    fn deleted_mark(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_deleted")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    /// Whether a client deleted content `d` from `repo` (and nothing put it back since).
    pub async fn deleted_from(&self, repo: &RepoName, d: &Digest) -> io::Result<bool> {
        tokio::fs::try_exists(self.deleted_mark(repo, d)).await
    }

    /// Records that a client deleted `d` from `repo`.
    async fn mark_deleted(&self, repo: &RepoName, d: &Digest) -> io::Result<()> {
        self.write_atomic(&self.deleted_mark(repo, d), Vec::new())
            .await
    }

    /// Forgets a deletion of `d` from `repo`: it is part of `repo` again.
    async fn unmark_deleted(&self, repo: &RepoName, d: &Digest) -> io::Result<()> {
        remove_optional(&self.deleted_mark(repo, d)).await.map(drop)
    }

    fn tag_path(&self, repo: &RepoName, tag: &str) -> PathBuf {
        self.repo_dir(repo).join("_manifests/tags").join(tag)
    }

    fn referrers_dir(&self, repo: &RepoName, subject: &Digest) -> PathBuf {
        self.repo_dir(repo)
            .join("_referrers")
            .join(subject.algorithm().as_str())
            .join(subject.hex())
    }

    fn tmp_path(&self) -> PathBuf {
        self.root.join("tmp").join(uuid::Uuid::new_v4().to_string())
    }

    /// Writes `data` to `dest` atomically: temp file, fsync, rename, fsync of the directory.
    async fn write_atomic(&self, dest: &Path, data: Vec<u8>) -> io::Result<()> {
        let tmp = self.tmp_path();
        let dest = dest.to_owned();
        tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            publish(&tmp, &dest)
        })
        .await
        .map_err(io::Error::other)?
    }
}

/// Renames a synced temp file into place, creating parents and syncing the directory.
fn publish(tmp: &Path, dest: &Path) -> io::Result<()> {
    let parent = dest.parent().expect("store paths always have a parent");
    std::fs::create_dir_all(parent)?;
    std::fs::rename(tmp, dest)?;
    std::fs::File::open(parent)?.sync_all()
}

/// `Ok(false)` for a missing file, the error otherwise.
fn exists(path: &Path) -> io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads a small file, `None` when it does not exist.
async fn read_optional(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match tokio::fs::read(path).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes a file, `false` when it was not there.
async fn remove_optional(path: &Path) -> io::Result<bool> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}
