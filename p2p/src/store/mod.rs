//! The piece store of agents and origins: where a blob lives while its pieces arrive, and where
//! it lives once it is whole and verified.
//!
//! # Layout
//!
//! ```text
//! <root>/download/<hex>                 a blob in progress, sparse, written piece by piece
//! <root>/download/<hex>.meta            its sidecar: metainfo + which pieces are on disk
//! <root>/cache/<hex[0..2]>/<hex>        a complete blob, verified against its digest
//! <root>/cache/<hex[0..2]>/<hex>.meta   its sidecar (full bitfield)
//! ... *.tmp                             files being written; removed by `PieceStore::open`
//! ```
//!
//! The sidecar format is documented in `sidecar.rs`.
//!
//! # Invariants
//!
//! - A file in `cache/` is always whole and matches its digest: a blob moves there by one
//!   `rename` after the whole-blob check and an `fsync`, its sidecar written just before. A
//!   crash between the two leaves a sidecar without data, which `open` removes. Partial data is
//!   never visible in `cache/`.
//! - A piece marked present in a download sidecar is on disk: the data is written and
//!   `fdatasync`ed before the sidecar that marks it is renamed into place. Sidecar writes are
//!   batched: writers that arrive while one is being persisted are covered by the next one.
//! - A blob with a live handle ([`CompleteBlob`] or [`PartialBlob`]) is never removed by
//!   [`PieceStore::cleanup`]. [`PieceStore::remove`] is unconditional: an open `CompleteBlob`
//!   keeps reading the unlinked file, an open `PartialBlob` fails with `Discarded`.
//! - Last access is kept in memory (seeded from the file's mtime at open); reading or writing
//!   a blob through a handle, `complete` and `download` count as accesses.
//!
//! Blocking file I/O runs in `spawn_blocking` with positional reads and writes, so many
//! sessions read and write one file at once without a shared cursor. One async lock guards the
//! index of entries; it is held across the short file operations that change what exists
//! (open, rename, unlink), never across hashing a whole blob or reading pieces.

mod blob;
mod evict;
mod follow;
mod sidecar;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use shoal_config::StoreConfig;
use shoal_registry::store::direct;
use shoal_registry::{Algorithm, Digest};

use crate::bitfield::Bitfield;
use crate::error::{MetainfoError, StoreError};
use crate::metainfo::{Metainfo, MetainfoBuilder};

pub(crate) use blob::read_at;
pub use blob::{CompleteBlob, PartialBlob};
use blob::{CompleteInner, PartialInner};
use evict::{Candidate, Limits};
pub use follow::{ImportProgress, complete_body, follow};

/// Bytes gathered from an import body before one blocking write, so a stream of small chunks
/// does not cost one thread hand-off each.
const IMPORT_BATCH: usize = 1 << 20;
/// An import's first write, for the first byte of a follower (see `import_followed`).
const FIRST_IMPORT_BATCH: usize = 64 << 10;

/// The blob store of one node: partial downloads, complete blobs, and their cleanup. Cheap to
/// clone; every clone is the same store.
#[derive(Clone)]
pub struct PieceStore {
    inner: Arc<StoreInner>,
}

impl fmt::Debug for PieceStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PieceStore")
            .field("download", &self.inner.download_dir)
            .field("cache", &self.inner.cache_dir)
            .finish()
    }
}

/// What one cleanup pass removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    /// Complete blobs removed from `cache/` (TTI or capacity).
    pub removed_cache: usize,
    /// Partial downloads removed from `download/` (TTI).
    pub removed_downloads: usize,
    /// Bytes of blob data removed (sidecars not counted).
    pub bytes_freed: u64,
}

pub(crate) struct StoreInner {
    download_dir: PathBuf,
    cache_dir: PathBuf,
    config: StoreConfig,
    state: tokio::sync::Mutex<State>,
    /// Complete blobs the owner still needs (see [`PieceStore::pin_with`]).
    pinned: std::sync::RwLock<Option<Pinned>>,
}

/// Whether the owner of a store still needs a complete blob, so cleanup keeps it.
type Pinned = Arc<dyn Fn(&Digest) -> bool + Send + Sync>;

#[derive(Default)]
struct State {
    cache: HashMap<Digest, CacheEntry>,
    downloads: HashMap<Digest, DownloadEntry>,
}

struct CacheEntry {
    bytes: u64,
    access: Access,
    /// The live handle, if any; reused so every caller shares one open file.
    handle: Weak<CompleteInner>,
}

struct DownloadEntry {
    bytes: u64,
    access: Access,
    /// The one live download of this digest, if any.
    handle: Weak<PartialInner>,
}

/// A last-access time shared between the index and the handles, so reads through a handle
/// update it without the index lock. Microseconds since the epoch.
#[derive(Clone, Debug)]
pub(crate) struct Access(Arc<AtomicU64>);

impl Access {
    fn at(t: SystemTime) -> Self {
        Access(Arc::new(AtomicU64::new(micros(t))))
    }

    pub(crate) fn touch(&self) {
        self.0.store(micros(SystemTime::now()), Ordering::Relaxed);
    }

    #[cfg(test)]
    fn set(&self, t: SystemTime) {
        self.0.store(micros(t), Ordering::Relaxed);
    }

    fn get(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_micros(self.0.load(Ordering::Relaxed))
    }
}

fn micros(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Runs file I/O off the async runtime; a panic in it is re-raised here.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, StoreError>
where
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(StoreError::Shutdown),
    }
}

/// Removes a file; one that is already gone is not an error.
fn remove_if_exists(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(path)(e)),
        _ => Ok(()),
    }
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Writes a sidecar beside its blob: to `<path>.tmp`, then renamed over `path`, so a reader
/// sees the old sidecar or the new one, never half of one.
pub(crate) fn write_sidecar(
    path: &Path,
    metainfo: &Metainfo,
    bitfield: &Bitfield,
) -> Result<(), StoreError> {
    let tmp = with_suffix(path, ".tmp");
    fs::write(&tmp, sidecar::encode(metainfo, bitfield)).map_err(io_at(&tmp))?;
    fs::rename(&tmp, path).map_err(io_at(path))
}

/// The digest a file name stands for: the hex length picks the algorithm.
fn digest_of_name(hex: &str) -> Option<Digest> {
    [Algorithm::Sha256, Algorithm::Sha512]
        .into_iter()
        .find(|a| a.hex_len() == hex.len())
        .and_then(|a| format!("{}:{hex}", a.as_str()).parse().ok())
}

fn mtime(md: &fs::Metadata) -> SystemTime {
    md.modified().unwrap_or_else(|_| SystemTime::now())
}

/// A file removed when dropped unless disarmed: an import that fails or is cancelled leaves
/// nothing behind.
struct TempFile {
    path: PathBuf,
    armed: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl StoreInner {
    fn download_path(&self, d: &Digest) -> PathBuf {
        self.download_dir.join(d.hex())
    }

    fn cache_shard(&self, d: &Digest) -> PathBuf {
        self.cache_dir.join(&d.hex()[..2])
    }

    fn cache_path(&self, d: &Digest) -> PathBuf {
        self.cache_shard(d).join(d.hex())
    }

    /// The complete blob of `d`, opening (and checking) its sidecar if no handle is live. A
    /// sidecar that is missing, corrupt or for another blob drops the entry.
    async fn open_complete(
        &self,
        state: &mut State,
        d: &Digest,
    ) -> Result<Option<CompleteBlob>, StoreError> {
        let Some(entry) = state.cache.get_mut(d) else {
            return Ok(None);
        };
        entry.access.touch();
        if let Some(inner) = entry.handle.upgrade() {
            return Ok(Some(CompleteBlob(inner)));
        }
        let path = self.cache_path(d);
        let side = with_suffix(&path, ".meta");
        let want = d.clone();
        let loaded = {
            let (path, side) = (path.clone(), side.clone());
            blocking(move || load_complete(&path, &side, &want)).await?
        };
        match loaded {
            Ok((file, metainfo)) => {
                let inner = Arc::new(CompleteInner {
                    metainfo: Arc::new(metainfo),
                    path,
                    file,
                    direct: None,
                    access: entry.access.clone(),
                });
                entry.handle = Arc::downgrade(&inner);
                Ok(Some(CompleteBlob(inner)))
            }
            Err(reason) => {
                tracing::warn!(digest = %d, %reason, "dropping a cache entry that cannot be trusted");
                state.cache.remove(d);
                blocking(move || {
                    remove_if_exists(&path)?;
                    remove_if_exists(&side)
                })
                .await?;
                Ok(None)
            }
        }
    }

    /// Moves a whole, verified, fsynced blob file from `src` into `cache/` (sidecar first) and
    /// indexes it. The caller holds the index lock and has checked `d` is not cached yet.
    /// `direct`, a download's direct-I/O handle of the file, keeps serving its pieces to peers
    /// around the page cache.
    async fn install(
        &self,
        state: &mut State,
        metainfo: Arc<Metainfo>,
        src: PathBuf,
        direct: Option<File>,
        access: Access,
    ) -> Result<CompleteBlob, StoreError> {
        let d = metainfo.digest().clone();
        let shard = self.cache_shard(&d);
        let path = self.cache_path(&d);
        let side = with_suffix(&path, ".meta");
        let file = {
            let (m, path, side) = (metainfo.clone(), path.clone(), side.clone());
            blocking(move || {
                fs::create_dir_all(&shard).map_err(io_at(&shard))?;
                write_sidecar(&side, &m, &Bitfield::full(m.piece_count()))?;
                if let Err(e) = fs::rename(&src, &path) {
                    let _ = fs::remove_file(&side);
                    return Err(io_at(&path)(e));
                }
                // Make the rename itself durable, so a cached blob does not vanish on power loss.
                File::open(&shard)
                    .and_then(|dir| dir.sync_all())
                    .map_err(io_at(&shard))?;
                File::open(&path).map_err(io_at(&path))
            })
            .await?
        };
        access.touch();
        let inner = Arc::new(CompleteInner {
            metainfo: metainfo.clone(),
            path,
            file,
            direct,
            access: access.clone(),
        });
        state.cache.insert(
            d,
            CacheEntry {
                bytes: metainfo.length(),
                access,
                handle: Arc::downgrade(&inner),
            },
        );
        Ok(CompleteBlob(inner))
    }
}

/// Opens a cached blob and reads its sidecar. The inner error is a reason to drop the entry.
fn load_complete(
    path: &Path,
    side: &Path,
    want: &Digest,
) -> Result<Result<(File, Metainfo), String>, StoreError> {
    let bytes = match fs::read(side) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err("no sidecar".into())),
        Err(e) => return Err(io_at(side)(e)),
    };
    let sc = match sidecar::decode(&bytes) {
        Ok(sc) => sc,
        Err(reason) => return Ok(Err(format!("sidecar: {reason}"))),
    };
    if sc.metainfo.digest() != want {
        return Ok(Err(format!("sidecar is for {}", sc.metainfo.digest())));
    }
    if !sc.bitfield.is_full() {
        return Ok(Err("sidecar of a cached blob is missing pieces".into()));
    }
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Err("no data file".into())),
        Err(e) => return Err(io_at(path)(e)),
    };
    let len = file.metadata().map_err(io_at(path))?.len();
    if len != sc.metainfo.length() {
        return Ok(Err(format!(
            "data file is {len} bytes, the metainfo says {}",
            sc.metainfo.length()
        )));
    }
    Ok(Ok((file, sc.metainfo)))
}

/// Opens (creating if needed) the data file of a download and the bitfield to resume from: the
/// sidecar's, if it parses, describes the same torrent (hashes both know agree) and the file
/// has the blob's length; otherwise the download starts over from an empty, zero-filled file.
/// Also returns the metainfo to use: whichever of the sidecar's and `metainfo` knows more
/// hashes.
fn open_download(
    path: &Path,
    side: &Path,
    metainfo: Arc<Metainfo>,
) -> Result<(File, Option<File>, Bitfield, Arc<Metainfo>), StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_at(path))?;
    let len = file.metadata().map_err(io_at(path))?.len();
    let resumed = match fs::read(side) {
        Ok(bytes) => match sidecar::decode(&bytes) {
            Ok(sc) if sc.metainfo.agrees_with(&metainfo) && len == metainfo.length() => {
                let best = match sc.metainfo.known() > metainfo.known() {
                    true => Arc::new(sc.metainfo),
                    false => metainfo.clone(),
                };
                Some((sc.bitfield, best))
            }
            Ok(_) => {
                tracing::info!(digest = %metainfo.digest(), "download sidecar has another metainfo; starting over");
                None
            }
            Err(reason) => {
                tracing::warn!(digest = %metainfo.digest(), %reason, "download sidecar is corrupt; starting over");
                None
            }
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_at(side)(e)),
    };
    if let Some((bitfield, metainfo)) = resumed {
        let direct = open_direct(path, &metainfo);
        return Ok((file, direct, bitfield, metainfo));
    }
    // Start over in a new, zero-filled (sparse) file: no stale bytes from an earlier attempt
    // remain, and the old file is unlinked rather than truncated, so a map of its pieces that
    // a reader still holds stays valid (truncating would make touching it fault).
    drop(file);
    remove_if_exists(path)?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_at(path))?;
    file.set_len(metainfo.length()).map_err(io_at(path))?;
    let bitfield = Bitfield::empty(metainfo.piece_count());
    write_sidecar(side, &metainfo, &bitfield)?;
    let direct = open_direct(path, &metainfo);
    Ok((file, direct, bitfield, metainfo))
}

/// A second handle of a download's file for writing and reading its pieces around the page
/// cache ([`shoal_registry::store::direct`]), when its pieces start on aligned offsets and
/// the filesystem does direct I/O; `None` otherwise (the pieces go through the page cache).
fn open_direct(path: &Path, metainfo: &Metainfo) -> Option<File> {
    if !metainfo.piece_length().is_multiple_of(direct::ALIGN as u64) {
        return None;
    }
    match direct::open(path, true) {
        Ok(direct) => direct,
        Err(e) => {
            tracing::debug!(path = %path.display(), %e, "no direct I/O for a download");
            None
        }
    }
}

impl PieceStore {
    /// Opens the store under `root`: creates `download/` and `cache/`, removes temporary files
    /// and sidecars without data left by a crash, and indexes what is there (size, and last
    /// access from the file's mtime). Sidecars are read lazily, when a blob is asked for.
    pub fn open(root: &Path, config: &StoreConfig) -> Result<PieceStore, StoreError> {
        let download_dir = root.join("download");
        let cache_dir = root.join("cache");
        fs::create_dir_all(&download_dir).map_err(io_at(&download_dir))?;
        fs::create_dir_all(&cache_dir).map_err(io_at(&cache_dir))?;
        let mut state = State::default();
        for (d, md) in scan_area(&download_dir)? {
            state.downloads.insert(
                d,
                DownloadEntry {
                    bytes: md.len(),
                    access: Access::at(mtime(&md)),
                    handle: Weak::new(),
                },
            );
        }
        for shard in fs::read_dir(&cache_dir).map_err(io_at(&cache_dir))? {
            let shard = shard.map_err(io_at(&cache_dir))?;
            let shard_path = shard.path();
            if !shard_path.is_dir() {
                tracing::warn!(path = %shard_path.display(), "ignoring a file that is not a shard folder in cache/");
                continue;
            }
            for (d, md) in scan_area(&shard_path)? {
                if shard.file_name().to_str() != Some(&d.hex()[..2]) {
                    tracing::warn!(path = %shard_path.display(), digest = %d, "ignoring a blob in the wrong shard");
                    continue;
                }
                if !with_suffix(&shard_path.join(d.hex()), ".meta").exists() {
                    tracing::warn!(digest = %d, "removing a cached blob without a sidecar");
                    remove_if_exists(&shard_path.join(d.hex()))?;
                    continue;
                }
                state.cache.insert(
                    d,
                    CacheEntry {
                        bytes: md.len(),
                        access: Access::at(mtime(&md)),
                        handle: Weak::new(),
                    },
                );
            }
        }
        tracing::debug!(
            cache = state.cache.len(),
            downloads = state.downloads.len(),
            root = %root.display(),
            "piece store opened"
        );
        Ok(PieceStore {
            inner: Arc::new(StoreInner {
                download_dir,
                cache_dir,
                config: config.clone(),
                state: tokio::sync::Mutex::new(state),
                pinned: std::sync::RwLock::new(None),
            }),
        })
    }

    /// The complete, verified blob `d`, or `None` if this node does not have it (never had it,
    /// or it was evicted: the caller fetches it again). Counts as an access.
    pub async fn complete(&self, d: &Digest) -> Result<Option<CompleteBlob>, StoreError> {
        let mut state = self.inner.state.lock().await;
        self.inner.open_complete(&mut state, d).await
    }

    /// Bytes of blob `d` received so far, while a download of it is live; `None` when none is
    /// (never started, finished, or given up). What a preload shows as a layer's progress.
    pub async fn bytes_downloading(&self, d: &Digest) -> Option<u64> {
        let live = {
            let state = self.inner.state.lock().await;
            state.downloads.get(d)?.handle.upgrade()?
        };
        Some(PartialBlob(live).bytes_present())
    }

    /// The download of `metainfo`'s blob: the same handle to every caller while one is live;
    /// otherwise resumed from `download/` (the sidecar's bitfield) if its sidecar holds this
    /// metainfo, or started over. If the blob is already complete, a handle with every piece
    /// present whose `finish` returns it.
    pub async fn download(&self, metainfo: Arc<Metainfo>) -> Result<PartialBlob, StoreError> {
        let d = metainfo.digest().clone();
        let mut state = self.inner.state.lock().await;
        if let Some(complete) = self.inner.open_complete(&mut state, &d).await? {
            return Ok(PartialBlob::completed(
                self.inner.clone(),
                metainfo,
                complete,
            ));
        }
        if let Some(entry) = state.downloads.get(&d)
            && let Some(live) = entry.handle.upgrade()
        {
            // The same torrent, perhaps knowing more hashes (or fewer) than the live one.
            let live = PartialBlob(live);
            live.learn(&metainfo)?;
            entry.access.touch();
            return Ok(live);
        }
        let path = self.inner.download_path(&d);
        let side = with_suffix(&path, ".meta");
        let (file, direct, have, metainfo) = {
            let (m, path, side) = (metainfo.clone(), path.clone(), side.clone());
            blocking(move || open_download(&path, &side, m)).await?
        };
        let access = match state.downloads.get(&d) {
            Some(e) => e.access.clone(),
            None => Access::at(SystemTime::now()),
        };
        access.touch();
        let inner = Arc::new(PartialInner::new(
            self.inner.clone(),
            metainfo.clone(),
            path,
            side,
            (file, direct),
            have,
            access.clone(),
        ));
        state.downloads.insert(
            d,
            DownloadEntry {
                bytes: metainfo.length(),
                access,
                handle: Arc::downgrade(&inner),
            },
        );
        Ok(PartialBlob(inner))
    }

    /// The origin's way in: a whole blob streamed from a backend is written to `download/`
    /// while its metainfo is built in the same pass, checked against `d`, and renamed into
    /// `cache/` with its sidecar. A digest mismatch, a body error or a dropped future leaves
    /// nothing behind. If the blob is already cached (a concurrent import won), that blob is
    /// returned and this copy discarded.
    pub async fn import<S>(
        &self,
        d: &Digest,
        piece_length: u64,
        body: S,
    ) -> Result<CompleteBlob, StoreError>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
    {
        self.import_followed(d, piece_length, body, None).await
    }

    /// [`PieceStore::import`], telling `progress` where it stands so that readers can
    /// [`follow`] the blob as it lands. The first writes are small (64 KiB, doubling up to
    /// 1 MiB) so that a follower's first byte does not wait for a whole batch.
    pub async fn import_followed<S>(
        &self,
        d: &Digest,
        piece_length: u64,
        mut body: S,
        progress: Option<&tokio::sync::watch::Sender<ImportProgress>>,
    ) -> Result<CompleteBlob, StoreError>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
    {
        let mut builder =
            MetainfoBuilder::new(d.algorithm(), piece_length).map_err(StoreError::Metainfo)?;
        let mut tmp = TempFile {
            path: self.inner.download_dir.join(format!(
                "{}.{:016x}.import.tmp",
                d.hex(),
                rand::random::<u64>()
            )),
            armed: true,
        };
        let file = {
            let path = tmp.path.clone();
            Arc::new(blocking(move || File::create_new(&path).map_err(io_at(&path))).await?)
        };
        if let Some(p) = progress {
            p.send_modify(|p| p.file = Some(tmp.path.clone()));
        }
        let mut offset = 0u64;
        // Whole pieces whose hashes `progress` was last given.
        let mut published = 0usize;
        let mut batch: Vec<Bytes> = Vec::new();
        let mut batched = 0usize;
        loop {
            // A followed import writes what it has whenever the body has nothing more ready,
            // so followers are not kept waiting for a batch to fill.
            let (next, idle) = match progress.is_some() && batched > 0 {
                true => match futures_util::FutureExt::now_or_never(body.next()) {
                    Some(next) => (Some(next), false),
                    None => (None, true),
                },
                false => (Some(body.next().await), false),
            };
            let end = matches!(next, Some(None));
            if let Some(Some(chunk)) = next {
                let chunk = chunk.map_err(StoreError::Body)?;
                batched += chunk.len();
                batch.push(chunk);
            }
            let threshold = (offset as usize).clamp(FIRST_IMPORT_BATCH, IMPORT_BATCH);
            if batched >= threshold || ((end || idle) && batched > 0) {
                let (f, path, chunks) =
                    (file.clone(), tmp.path.clone(), std::mem::take(&mut batch));
                let at = offset;
                builder = blocking(move || {
                    let mut at = at;
                    for c in &chunks {
                        builder.update(c);
                        f.write_all_at(c, at).map_err(io_at(&path))?;
                        at += c.len() as u64;
                    }
                    Ok(builder)
                })
                .await?;
                offset += batched as u64;
                batched = 0;
                if let Some(p) = progress {
                    // A piece became whole: the hashes known so far, for seeding as it lands.
                    let length = p.borrow().length;
                    let hashes = match length {
                        Some(length) if builder.pieces_done() > published => {
                            published = builder.pieces_done();
                            builder.prefix(d, length).map(Arc::new)
                        }
                        _ => None,
                    };
                    p.send_modify(|p| {
                        p.bytes = offset;
                        if hashes.is_some() {
                            p.hashes = hashes;
                        }
                    });
                }
            }
            if end {
                break;
            }
        }
        let metainfo = match builder.finish_verified(d) {
            Ok(m) => {
                if let Some(p) = progress {
                    p.send_modify(|p| p.verified = true);
                }
                Arc::new(m)
            }
            Err(MetainfoError::DigestMismatch { expected, actual }) => {
                return Err(StoreError::DigestMismatch { expected, actual });
            }
            Err(e) => return Err(StoreError::Metainfo(e)),
        };
        {
            let (f, path) = (file.clone(), tmp.path.clone());
            blocking(move || f.sync_all().map_err(io_at(&path))).await?;
        }
        drop(file);
        let mut state = self.inner.state.lock().await;
        if let Some(existing) = self.inner.open_complete(&mut state, d).await? {
            return Ok(existing);
        }
        let access = match state.cache.get(d) {
            Some(e) => e.access.clone(),
            None => Access::at(SystemTime::now()),
        };
        let blob = self
            .inner
            .install(&mut state, metainfo, tmp.path.clone(), None, access)
            .await?;
        tmp.armed = false;
        Ok(blob)
    }

    /// Removes blob `d` from `cache/` and `download/`, whatever handles are open (see the
    /// module docs); true if there was anything to remove. For deletes and garbage collection.
    pub async fn remove(&self, d: &Digest) -> Result<bool, StoreError> {
        let mut state = self.inner.state.lock().await;
        let mut paths = Vec::new();
        if state.cache.remove(d).is_some() {
            let path = self.inner.cache_path(d);
            paths.push(with_suffix(&path, ".meta"));
            paths.push(path);
        }
        if let Some(entry) = state.downloads.remove(d) {
            if let Some(live) = entry.handle.upgrade() {
                live.discard().await;
            }
            let path = self.inner.download_path(d);
            paths.push(with_suffix(&path, ".meta"));
            paths.push(path);
        }
        let removed = !paths.is_empty();
        blocking(move || paths.iter().try_for_each(|p| remove_if_exists(p))).await?;
        Ok(removed)
    }

    /// Tells cleanup which complete blobs the owner still needs whatever their idle time and
    /// the capacity: those for which `pinned` answers true are kept as if a handle were open.
    /// An origin pins the blobs its write-back and replication jobs will read, without holding
    /// a file open per job. Replaces an earlier predicate.
    pub fn pin_with(&self, pinned: impl Fn(&Digest) -> bool + Send + Sync + 'static) {
        let mut slot = self.inner.pinned.write().unwrap_or_else(|e| e.into_inner());
        *slot = Some(Arc::new(pinned));
    }

    /// One cleanup pass as of `now`: closed cache entries idle for `cache_cleanup.tti` and
    /// closed downloads idle for `download_cleanup.tti` go (a TTI of `0s` means never); then,
    /// while the cache holds more than `capacity` blobs or `capacity_bytes` bytes, the least
    /// recently accessed closed blobs go. Blobs with a live handle, and blobs pinned (see
    /// [`PieceStore::pin_with`]), always stay.
    pub async fn cleanup(&self, now: SystemTime) -> Result<CleanupReport, StoreError> {
        let config = &self.inner.config;
        let tti = |t: shoal_config::Duration| (!t.is_zero()).then(|| t.get());
        let pinned = self
            .inner
            .pinned
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let is_pinned = |d: &Digest| pinned.as_ref().is_some_and(|p| p(d));
        let mut state = self.inner.state.lock().await;
        let cache: Vec<_> = state
            .cache
            .iter()
            .map(|(d, e)| Candidate {
                key: d.clone(),
                last_access: e.access.get(),
                bytes: e.bytes,
                open: e.handle.strong_count() > 0 || is_pinned(d),
            })
            .collect();
        let downloads: Vec<_> = state
            .downloads
            .iter()
            .map(|(d, e)| Candidate {
                key: d.clone(),
                last_access: e.access.get(),
                bytes: e.bytes,
                open: e.handle.strong_count() > 0,
            })
            .collect();
        let evict_cache = evict::plan(
            &cache,
            now,
            Limits {
                tti: tti(config.cache_cleanup.tti),
                max_count: Some(config.capacity),
                max_bytes: config.capacity_bytes,
            },
        );
        let evict_downloads = evict::plan(
            &downloads,
            now,
            Limits {
                tti: tti(config.download_cleanup.tti),
                ..Limits::default()
            },
        );
        // (data file, sidecar, bytes, is cache)
        let mut victims = Vec::new();
        for d in evict_cache {
            if let Some(e) = state.cache.remove(&d) {
                let path = self.inner.cache_path(&d);
                victims.push((with_suffix(&path, ".meta"), path, e.bytes, true));
            }
        }
        for d in evict_downloads {
            if let Some(e) = state.downloads.remove(&d) {
                let path = self.inner.download_path(&d);
                victims.push((with_suffix(&path, ".meta"), path, e.bytes, false));
            }
        }
        let report = blocking(move || {
            let mut report = CleanupReport::default();
            for (side, path, bytes, is_cache) in victims {
                // The sidecar first: a crash in between leaves data without a sidecar, which
                // `open` and `download` treat as nothing there.
                match remove_if_exists(&side).and_then(|()| remove_if_exists(&path)) {
                    Ok(()) => {
                        if is_cache {
                            report.removed_cache += 1;
                        } else {
                            report.removed_downloads += 1;
                        }
                        report.bytes_freed += bytes;
                    }
                    Err(e) => tracing::warn!(error = %e, "cleanup could not remove a blob"),
                }
            }
            Ok(report)
        })
        .await?;
        if report != CleanupReport::default() {
            tracing::info!(
                removed_cache = report.removed_cache,
                removed_downloads = report.removed_downloads,
                bytes_freed = report.bytes_freed,
                "store cleanup"
            );
        }
        Ok(report)
    }

    /// Runs [`PieceStore::cleanup`] every `min(cache_cleanup.interval,
    /// download_cleanup.interval)` until the handle is aborted or the store is dropped (the
    /// task holds it weakly, so it does not keep the store alive).
    pub fn spawn_cleanup(&self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.cleanup_loop())
    }

    /// The loop [`PieceStore::spawn_cleanup`] runs, for an owner that spawns it in its own task
    /// set.
    pub fn cleanup_loop(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let config = &self.inner.config;
        let every = config
            .cache_cleanup
            .interval
            .get()
            .min(config.download_cleanup.interval.get())
            // A zero interval is refused by validation; never spin if one gets here anyway.
            .max(Duration::from_secs(1));
        let weak = Arc::downgrade(&self.inner);
        async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                let store = PieceStore { inner };
                if let Err(e) = store.cleanup(SystemTime::now()).await {
                    tracing::warn!(error = %e, "store cleanup failed");
                }
            }
        }
    }

    #[cfg(test)]
    async fn set_last_access(&self, d: &Digest, t: SystemTime) {
        let state = self.inner.state.lock().await;
        if let Some(e) = state.cache.get(d) {
            e.access.set(t);
        }
        if let Some(e) = state.downloads.get(d) {
            e.access.set(t);
        }
    }
}

/// The blobs in one folder (`download/` or a cache shard), by digest, with their metadata.
/// Removes `*.tmp` files and sidecars whose data file is gone; ignores (and logs) other names.
fn scan_area(dir: &Path) -> Result<Vec<(Digest, fs::Metadata)>, StoreError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::warn!(path = %path.display(), "ignoring a file whose name is not UTF-8");
            continue;
        };
        if name.ends_with(".tmp") {
            tracing::debug!(path = %path.display(), "removing a leftover temporary file");
            remove_if_exists(&path)?;
            continue;
        }
        if let Some(hex) = name.strip_suffix(".meta") {
            if !dir.join(hex).exists() {
                tracing::debug!(path = %path.display(), "removing a sidecar without data");
                remove_if_exists(&path)?;
            }
            continue;
        }
        let Some(d) = digest_of_name(&name) else {
            tracing::warn!(path = %path.display(), "ignoring a file that is not named by a digest");
            continue;
        };
        let md = entry.metadata().map_err(io_at(&path))?;
        if md.is_file() {
            out.push((d, md));
        }
    }
    Ok(out)
}
