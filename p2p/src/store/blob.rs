//! Handles to one blob: [`CompleteBlob`] (verified, in `cache/`) and [`PartialBlob`] (pieces
//! arriving in `download/`). A live handle keeps its blob safe from cleanup.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use shoal_registry::store::direct;
use shoal_registry::{Digest, Digester};

use super::{Access, StoreInner, blocking, io_at, remove_if_exists, write_sidecar};
use crate::bitfield::Bitfield;
use crate::error::StoreError;
use crate::metainfo::{MAX_PIECE_LENGTH, Metainfo};
use crate::piece::PieceIndex;

/// Bytes read per blocking read while hashing a whole blob.
const HASH_CHUNK: usize = 1 << 20;

pub(crate) struct CompleteInner {
    pub(crate) metainfo: Arc<Metainfo>,
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    /// For a blob this node downloaded around the page cache: its handle for direct I/O, which
    /// peers' pieces are read through (see [`PartialInner::direct`]).
    pub(crate) direct: Option<File>,
    pub(crate) access: Access,
}

/// A whole blob in `cache/`, checked against its digest, with its metainfo. Cheap to clone;
/// while any clone lives, cleanup keeps the blob.
#[derive(Clone)]
pub struct CompleteBlob(pub(crate) Arc<CompleteInner>);

impl fmt::Debug for CompleteBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompleteBlob")
            .field("digest", self.0.metainfo.digest())
            .field("path", &self.0.path)
            .finish()
    }
}

fn no_such_piece(metainfo: &Metainfo, index: PieceIndex) -> StoreError {
    StoreError::NoSuchPiece {
        index,
        count: metainfo.piece_count(),
    }
}

/// A handle's open file; `None` for a download handle made for an already complete blob,
/// which never reads or writes its own file.
pub(crate) trait BlobFile: Send + Sync + 'static {
    fn blob_file(&self) -> Option<&File>;
}

/// An open file of a blob being written (an origin's import): the pieces whose hashes are
/// known in it are written once and never change.
impl BlobFile for File {
    fn blob_file(&self) -> Option<&File> {
        Some(self)
    }
}

impl BlobFile for CompleteInner {
    fn blob_file(&self) -> Option<&File> {
        Some(&self.file)
    }
}

impl BlobFile for PartialInner {
    fn blob_file(&self) -> Option<&File> {
        self.file.as_ref()
    }
}

fn no_file(path: &Path) -> StoreError {
    io_at(path)(io::Error::other("this handle has no open file"))
}

/// `len` bytes at `offset` of the handle's file, as a read-only map of its page cache (sent to a
/// peer or a client without a copy into a buffer first), made off the runtime.
///
/// Callers map only bytes that never change: a complete blob's, or a partial blob's pieces
/// that are on disk (a piece is written once; a download that starts over writes a new file,
/// see `open_download`), or an import's pieces whose hashes are known (the import wrote them
/// before it published those hashes, and never writes there again).
pub(crate) async fn read_at<T: BlobFile>(
    holder: Arc<T>,
    path: PathBuf,
    offset: u64,
    len: u64,
) -> Result<Bytes, StoreError> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    blocking(move || {
        let file = holder.blob_file().ok_or_else(|| no_file(&path))?;
        // SAFETY: the range is within the file (the callers check it against the metainfo's
        // length, which the file has), and its bytes never change (see above); the file is
        // never truncated while open, and unlinking or renaming it keeps the pages valid.
        #[allow(unsafe_code)]
        let map = unsafe { shoal_registry::store::map_window(file, offset, len) };
        Ok(Bytes::from_owner(map.map_err(io_at(&path))?))
    })
    .await
}

/// A handle's file opened for direct I/O, next to its ordinary one.
pub(crate) trait DirectFile: BlobFile {
    fn direct_file(&self) -> Option<&File>;
}

impl DirectFile for CompleteInner {
    fn direct_file(&self) -> Option<&File> {
        self.direct.as_ref()
    }
}

impl DirectFile for PartialInner {
    fn direct_file(&self) -> Option<&File> {
        self.direct.as_ref()
    }
}

/// The bytes of `range` of the handle's file read around the page cache into a reused buffer
/// (made off the runtime); through [`read_at`]'s map when the handle has no direct file.
/// Callers read only bytes that never change, as for [`read_at`].
async fn read_direct<T: DirectFile>(
    holder: Arc<T>,
    path: PathBuf,
    range: std::ops::Range<u64>,
) -> Result<Bytes, StoreError> {
    let len = range.end - range.start;
    if holder.direct_file().is_none() {
        return read_at(holder, path, range.start, len).await;
    }
    blocking(move || {
        let file = holder.blob_file().ok_or_else(|| no_file(&path))?;
        let direct = holder.direct_file().ok_or_else(|| no_file(&path))?;
        let len = usize::try_from(len).map_err(|e| io_at(&path)(io::Error::other(e)))?;
        direct::read_at(direct, file, range.start, len).map_err(io_at(&path))
    })
    .await
}

impl CompleteBlob {
    /// The blob's metainfo, as stored in its sidecar.
    pub fn metainfo(&self) -> &Arc<Metainfo> {
        &self.0.metainfo
    }

    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        self.0.metainfo.digest()
    }

    /// Where the blob's bytes are, for callers that serve the file directly.
    pub fn path(&self) -> &Path {
        &self.0.path
    }

    /// Blob length in bytes.
    pub fn len(&self) -> u64 {
        self.0.metainfo.length()
    }

    /// True for the empty blob.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One piece, for seeding; counts as an access.
    pub async fn read_piece(&self, index: PieceIndex) -> Result<Bytes, StoreError> {
        let range = self
            .0
            .metainfo
            .piece_range(index)
            .map_err(|_| no_such_piece(&self.0.metainfo, index))?;
        self.0.access.touch();
        read_direct(self.0.clone(), self.0.path.clone(), range).await
    }

    /// `len` bytes from `offset`, for range requests; counts as an access. At most
    /// [`MAX_PIECE_LENGTH`] bytes at once: stream a large range as several reads.
    pub async fn read_range(&self, offset: u64, len: u64) -> Result<Bytes, StoreError> {
        if len > MAX_PIECE_LENGTH {
            return Err(StoreError::ReadTooLong {
                len,
                max: MAX_PIECE_LENGTH,
            });
        }
        let length = self.len();
        if offset.checked_add(len).is_none_or(|end| end > length) {
            return Err(StoreError::OutOfRange {
                offset,
                len,
                length,
            });
        }
        self.0.access.touch();
        read_at(self.0.clone(), self.0.path.clone(), offset, len).await
    }
}

/// How long after a piece is written its sidecar is flushed (data synced, then the bitfield).
pub const FLUSH_DELAY: std::time::Duration = std::time::Duration::from_millis(250);

pub(crate) struct PartialInner {
    store: Arc<StoreInner>,
    /// Replaced by one that knows more hashes as a prefix grows ([`PartialBlob::learn`]).
    metainfo: std::sync::RwLock<Arc<Metainfo>>,
    data_path: PathBuf,
    sidecar_path: PathBuf,
    /// `None` only for a handle made for a blob that was already complete.
    file: Option<File>,
    /// The same file opened for direct I/O, when its pieces can go around the page cache
    /// (aligned piece length, a filesystem that does it): pieces are written through it and
    /// read back through it for peers, so a download does not grow the page cache by its
    /// length (see [`shoal_registry::store::direct`] for why that matters).
    direct: Option<File>,
    access: Access,
    state: Mutex<PartialState>,
    /// The generation last written to the sidecar. Held while a sidecar is written, and by
    /// whoever moves or deletes the files (after the index lock: index, then this).
    persisted: tokio::sync::Mutex<u64>,
    /// A background flush of the sidecar is due (see [`PartialBlob::write_piece`]).
    flush_due: std::sync::atomic::AtomicBool,
    /// One `finish` at a time; the others wait and get its result.
    finishing: tokio::sync::Mutex<()>,
}

impl Drop for PartialInner {
    /// The last handle is gone with pieces written since the last flush: flush them now
    /// (synchronously: this runs once per download), so a reopen resumes from them.
    fn drop(&mut self) {
        let persisted = *self.persisted.get_mut();
        let metainfo = self.metainfo();
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if state.discarded || state.done.is_some() || state.generation <= persisted {
            return;
        }
        let Some(file) = &self.file else {
            return;
        };
        let flushed = file
            .sync_data()
            .map_err(io_at(&self.data_path))
            .and_then(|()| write_sidecar(&self.sidecar_path, &metainfo, &state.have));
        if let Err(e) = flushed {
            tracing::warn!(digest = %metainfo.digest(), %e, "flushing a dropped download failed");
        }
    }
}

struct PartialState {
    have: Bitfield,
    /// Bumped each time a piece is marked; the sidecar is current when `persisted` reaches it.
    generation: u64,
    discarded: bool,
    done: Option<CompleteBlob>,
}

/// A blob whose pieces are arriving. One handle per digest (clones share it); many sessions
/// write and read pieces at once. Pieces are verified before they are written.
#[derive(Clone)]
pub struct PartialBlob(pub(crate) Arc<PartialInner>);

impl fmt::Debug for PartialBlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.lock();
        f.debug_struct("PartialBlob")
            .field("digest", self.0.metainfo().digest())
            .field("have", &s.have.count_ones())
            .field("pieces", &s.have.len())
            .finish()
    }
}

impl PartialInner {
    pub(crate) fn new(
        store: Arc<StoreInner>,
        metainfo: Arc<Metainfo>,
        data_path: PathBuf,
        sidecar_path: PathBuf,
        (file, direct): (File, Option<File>),
        have: Bitfield,
        access: Access,
    ) -> Self {
        PartialInner {
            store,
            metainfo: std::sync::RwLock::new(metainfo),
            data_path,
            sidecar_path,
            file: Some(file),
            direct,
            access,
            state: Mutex::new(PartialState {
                have,
                generation: 0,
                discarded: false,
                done: None,
            }),
            persisted: tokio::sync::Mutex::new(0),
            flush_due: std::sync::atomic::AtomicBool::new(false),
            finishing: tokio::sync::Mutex::new(()),
        }
    }

    /// The metainfo pieces are verified against now.
    pub(crate) fn metainfo(&self) -> Arc<Metainfo> {
        self.metainfo
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, PartialState> {
        // Nothing panics while holding it; if something did, the bitfield is still consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn discarded(&self) -> StoreError {
        StoreError::Discarded {
            digest: self.metainfo().digest().to_string(),
        }
    }

    /// Marks the download dead so no sidecar is written again; the caller holds the index lock
    /// and deletes the files after this returns.
    pub(crate) async fn discard(&self) {
        let _persist = self.persisted.lock().await;
        self.lock().discarded = true;
    }
}

impl PartialBlob {
    /// A handle for a blob that is already complete: every piece present, reads served from
    /// the cached file, `finish` returns it.
    pub(crate) fn completed(
        store: Arc<StoreInner>,
        metainfo: Arc<Metainfo>,
        complete: CompleteBlob,
    ) -> Self {
        let access = complete.0.access.clone();
        PartialBlob(Arc::new(PartialInner {
            store,
            data_path: complete.0.path.clone(),
            sidecar_path: PathBuf::new(),
            file: None,
            direct: None,
            access,
            state: Mutex::new(PartialState {
                have: Bitfield::full(metainfo.piece_count()),
                generation: 0,
                discarded: false,
                done: Some(complete),
            }),
            metainfo: std::sync::RwLock::new(metainfo),
            persisted: tokio::sync::Mutex::new(0),
            flush_due: std::sync::atomic::AtomicBool::new(false),
            finishing: tokio::sync::Mutex::new(()),
        }))
    }

    /// The metainfo this download verifies pieces against (the latest it learned).
    pub fn metainfo(&self) -> Arc<Metainfo> {
        self.0.metainfo()
    }

    /// Adopts `newer` when it is the same torrent and knows more hashes (a longer prefix, or
    /// all of them); returns whether it did. Hashes the two disagree on refuse it
    /// (`MetainfoConflict`): someone lied.
    pub fn learn(&self, newer: &Arc<Metainfo>) -> Result<bool, StoreError> {
        let mut m = self
            .0
            .metainfo
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if !m.agrees_with(newer) {
            return Err(StoreError::MetainfoConflict {
                digest: m.digest().to_string(),
            });
        }
        if newer.known() <= m.known() {
            return Ok(false);
        }
        *m = newer.clone();
        Ok(true)
    }

    /// The pieces on disk now (a snapshot), for the handshake and the picker.
    pub fn bitfield(&self) -> Bitfield {
        self.0.lock().have.clone()
    }

    /// The file the pieces are written into, each at its offset (renamed into the cache when
    /// the download finishes; an open handle keeps reading the same file). A piece's bytes
    /// there never change once [`PartialBlob::has`] says it is on disk.
    pub fn path(&self) -> &Path {
        &self.0.data_path
    }

    /// Bytes of the pieces on disk now (a snapshot): how far the download has come.
    pub fn bytes_present(&self) -> u64 {
        let m = self.0.metainfo();
        let have = self.0.lock().have.clone();
        have.ones().map(|i| m.piece_size(i).unwrap_or(0)).sum()
    }

    /// Whether piece `index` is on disk.
    pub fn has(&self, index: PieceIndex) -> bool {
        self.0.lock().have.get(index)
    }

    /// True once every piece is present (`finish` may still be pending).
    pub fn is_full(&self) -> bool {
        self.0.lock().have.is_full()
    }

    /// Verifies piece `index` against the metainfo, writes it at its offset and marks it
    /// present; `Ok(false)` if it was already present (nothing written). A piece that fails
    /// verification is `BadPiece` and nothing is written. When this returns `Ok(true)` the
    /// sidecar marks the piece once its data is synced (within [`FLUSH_DELAY`]).
    pub async fn write_piece(&self, index: PieceIndex, data: Bytes) -> Result<bool, StoreError> {
        self.write(index, data, true).await
    }

    /// [`PartialBlob::write_piece`] for bytes the caller has just checked against this very
    /// metainfo (the connection's reader does, before the scheduler sees a payload): hashing
    /// them again cost a third of a fan-out's CPU.
    pub(crate) async fn write_verified_piece(
        &self,
        index: PieceIndex,
        data: Bytes,
    ) -> Result<bool, StoreError> {
        self.write(index, data, false).await
    }

    async fn write(
        &self,
        index: PieceIndex,
        data: Bytes,
        verify: bool,
    ) -> Result<bool, StoreError> {
        let inner = &self.0;
        if index.0 >= inner.metainfo().piece_count() {
            return Err(no_such_piece(&inner.metainfo(), index));
        }
        {
            let s = inner.lock();
            if s.discarded {
                return Err(inner.discarded());
            }
            if s.have.get(index) {
                return Ok(false);
            }
        }
        {
            // Two sessions may write the same piece at once (endgame): both wrote verified,
            // identical bytes to the same place, and the first to mark it reports `true`.
            let inner = inner.clone();
            blocking(move || {
                let bad = |source| StoreError::BadPiece { index, source };
                if verify {
                    inner.metainfo().verify_piece(index, &data).map_err(bad)?;
                } else {
                    let expected = inner.metainfo().piece_size(index).map_err(bad)?;
                    if data.len() as u64 != expected {
                        return Err(bad(crate::error::MetainfoError::PieceSize {
                            index,
                            got: data.len() as u64,
                            expected,
                        }));
                    }
                }
                let Some(file) = &inner.file else {
                    return Ok(());
                };
                let start = inner
                    .metainfo()
                    .piece_range(index)
                    .map_err(|source| StoreError::BadPiece { index, source })?
                    .start;
                match &inner.direct {
                    Some(direct) => direct::write_at(direct, file, &data, start),
                    None => file.write_all_at(&data, start),
                }
                .map_err(io_at(&inner.data_path))
            })
            .await?;
        }
        let generation = {
            let mut s = inner.lock();
            if s.discarded {
                return Err(inner.discarded());
            }
            if s.have.get(index) {
                return Ok(false);
            }
            s.have.set(index, true);
            s.generation += 1;
            s.generation
        };
        inner.access.touch();
        let _ = generation;
        self.flush_later();
        Ok(true)
    }

    /// Persists the sidecar (data synced first) now, covering every piece written so far. A
    /// restart resumes from what was flushed; [`PartialBlob::write_piece`] flushes within
    /// [`FLUSH_DELAY`] by itself.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let generation = self.0.lock().generation;
        self.persist(generation).await
    }

    /// Schedules one flush [`FLUSH_DELAY`] from now unless one is due already: an fsync per
    /// piece made eight agents on one disk wait on each other's syncs.
    fn flush_later(&self) {
        use std::sync::atomic::Ordering;
        if self.0.flush_due.swap(true, Ordering::AcqRel) {
            return;
        }
        // Weak: a pending flush must not count as an open handle (cleanup skips those).
        let weak = Arc::downgrade(&self.0);
        tokio::spawn(async move {
            tokio::time::sleep(FLUSH_DELAY).await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let this = PartialBlob(inner);
            this.0.flush_due.store(false, Ordering::Release);
            if let Err(e) = this.flush().await {
                tracing::warn!(digest = %this.0.metainfo().digest(), %e, "flushing a download's sidecar failed");
            }
        });
    }

    /// Brings the sidecar up to at least `generation`: syncs the data, then writes the sidecar
    /// of the bitfield as it is now, covering every writer that marked a piece meanwhile.
    async fn persist(&self, generation: u64) -> Result<(), StoreError> {
        let mut persisted = self.0.persisted.lock().await;
        if *persisted >= generation {
            return Ok(());
        }
        let (have, snapshot) = {
            let s = self.0.lock();
            if s.discarded || s.done.is_some() {
                return Ok(());
            }
            (s.have.clone(), s.generation)
        };
        let inner = self.0.clone();
        blocking(move || {
            if let Some(file) = &inner.file {
                file.sync_data().map_err(io_at(&inner.data_path))?;
            }
            write_sidecar(&inner.sidecar_path, &inner.metainfo(), &have)
        })
        .await?;
        *persisted = snapshot;
        Ok(())
    }

    /// A piece this node has, for seeding while downloading; `MissingPiece` otherwise.
    pub async fn read_piece(&self, index: PieceIndex) -> Result<Bytes, StoreError> {
        let range = self
            .0
            .metainfo()
            .piece_range(index)
            .map_err(|_| no_such_piece(&self.0.metainfo(), index))?;
        let done = {
            let s = self.0.lock();
            if !s.have.get(index) {
                return Err(StoreError::MissingPiece(index));
            }
            s.done.clone()
        };
        if let Some(complete) = done {
            return complete.read_piece(index).await;
        }
        self.0.access.touch();
        read_direct(self.0.clone(), self.0.data_path.clone(), range).await
    }

    /// Completes the download once every piece is present: checks the whole file against the
    /// digest, syncs it, and renames it into `cache/` with its sidecar. A chained metainfo's
    /// verified pieces already prove the digest ([`Metainfo::pieces_prove_digest`]), so only an
    /// independent one's file is hashed again. On `DigestMismatch`
    /// (the metainfo's piece hashes lied about the blob) the download is discarded. Calling it
    /// again, from any clone, returns the same blob.
    pub async fn finish(&self) -> Result<CompleteBlob, StoreError> {
        let inner = &self.0;
        let _one = inner.finishing.lock().await;
        {
            let s = inner.lock();
            if let Some(done) = &s.done {
                return Ok(done.clone());
            }
            if s.discarded {
                return Err(inner.discarded());
            }
            if !s.have.is_full() {
                return Err(StoreError::Incomplete {
                    missing: s.have.len() - s.have.count_ones(),
                    count: s.have.len(),
                });
            }
        }
        // Every piece present but not every hash known: pieces past a prefix were never
        // verified (only a caller that skipped the checks could have written them).
        let metainfo = inner.metainfo();
        if !metainfo.is_complete() {
            return Err(StoreError::Incomplete {
                missing: metainfo.piece_count() - metainfo.known(),
                count: metainfo.piece_count(),
            });
        }
        let actual = {
            let inner = inner.clone();
            blocking(move || hash_file(&inner)).await?
        };
        let digest = metainfo.digest();
        let store = inner.store.clone();
        let mut state = store.state.lock().await;
        let _persist = inner.persisted.lock().await;
        if inner.lock().discarded {
            return Err(inner.discarded());
        }
        // The index entry of this download, if it is still ours (a `remove` takes it away).
        let ours = state
            .downloads
            .get(digest)
            .is_some_and(|e| std::ptr::eq(e.handle.as_ptr(), Arc::as_ptr(inner)));
        let remove_download = |data: PathBuf, side: PathBuf| {
            blocking(move || {
                remove_if_exists(&side)?;
                remove_if_exists(&data)
            })
        };
        if &actual != digest {
            inner.lock().discarded = true;
            if ours {
                state.downloads.remove(digest);
            }
            remove_download(inner.data_path.clone(), inner.sidecar_path.clone()).await?;
            tracing::warn!(%digest, %actual, "download does not match its digest; discarded");
            return Err(StoreError::DigestMismatch {
                expected: digest.to_string(),
                actual: actual.to_string(),
            });
        }
        let complete = match store.open_complete(&mut state, digest).await? {
            Some(existing) => {
                // Someone imported it meanwhile; ours is a duplicate.
                remove_download(inner.data_path.clone(), inner.sidecar_path.clone()).await?;
                existing
            }
            None => {
                let complete = store
                    .install(
                        &mut state,
                        inner.metainfo(),
                        inner.data_path.clone(),
                        inner.direct.as_ref().and_then(|d| d.try_clone().ok()),
                        inner.access.clone(),
                    )
                    .await?;
                let side = inner.sidecar_path.clone();
                blocking(move || remove_if_exists(&side)).await?;
                complete
            }
        };
        if ours {
            state.downloads.remove(digest);
        }
        inner.lock().done = Some(complete.clone());
        Ok(complete)
    }
}

/// The digest of a download's whole file, read positionally in chunks, or the metainfo's when
/// its verified pieces prove it; syncs the file after.
fn hash_file(inner: &PartialInner) -> Result<Digest, StoreError> {
    let file = inner.blob_file().ok_or_else(|| no_file(&inner.data_path))?;
    if inner.metainfo().pieces_prove_digest() {
        file.sync_all().map_err(io_at(&inner.data_path))?;
        return Ok(inner.metainfo().digest().clone());
    }
    let mut digester = Digester::new(inner.metainfo().digest().algorithm());
    let mut buf = match inner.direct {
        Some(_) => Vec::new(),
        None => vec![0u8; HASH_CHUNK],
    };
    let length = inner.metainfo().length();
    let mut at = 0u64;
    while at < length {
        let n = (length - at).min(HASH_CHUNK as u64) as usize;
        // Read the way the pieces were written: a download around the page cache stays so.
        match &inner.direct {
            Some(direct) => {
                let chunk =
                    direct::read_at(direct, file, at, n).map_err(io_at(&inner.data_path))?;
                digester.update(&chunk);
            }
            None => {
                file.read_exact_at(&mut buf[..n], at)
                    .map_err(io_at(&inner.data_path))?;
                digester.update(&buf[..n]);
            }
        }
        at += n as u64;
    }
    file.sync_all().map_err(io_at(&inner.data_path))?;
    Ok(digester.current())
}
