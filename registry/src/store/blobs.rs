//! Blob reads, repository membership, and streaming ingestion with digest verification.

use std::io;
use std::path::Path;

use axum::body::Body;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::{LocalStore, exists, publish, remove_optional};
use crate::digest::{Digest, Digester};
use crate::error::{ApiResult, ErrorCode, RegistryError};
use crate::name::RepoName;

/// Size of each window of a blob mapped and handed to the HTTP layer when streaming it out.
pub const SEND_CHUNK: u64 = 4 * 1024 * 1024;
/// Buffer size for writing uploads to disk.
const WRITE_BUFFER: usize = 1024 * 1024;
/// Batches of chunks a followed fetch holds between receiving and writing (8 MiB at most).
const PIPELINE_CHUNKS: usize = 32;
/// The size of those batches.
const PIPELINE_CHUNK: usize = 256 * 1024;

/// An open blob, ready to stream a byte range of it.
pub struct BlobReader {
    file: std::fs::File,
    len: u64,
}

impl BlobReader {
    /// Total size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for a zero-length blob.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A response body streaming `len` bytes from `offset`.
    ///
    /// The blob is handed to the HTTP layer one 4 MiB window at a time, each window a
    /// read-only memory map made when the body is polled for it and unmapped once the
    /// connection has sent it: no read copy and no per-chunk allocation, so a cached blob
    /// leaves at close to `sendfile` speed (measured in bench/RESULTS.md), and the process
    /// holds only the windows in flight, whatever the blob's size or the number of readers.
    pub fn into_body(self, offset: u64, len: u64) -> io::Result<Body> {
        if len == 0 {
            return Ok(Body::empty());
        }
        let end = offset
            .checked_add(len)
            .filter(|end| *end <= self.len)
            .ok_or_else(|| {
                io::Error::new(io::ErrorKind::UnexpectedEof, "blob shorter than recorded")
            })?;
        let file = std::sync::Arc::new(self.file);
        let windows = futures_util::stream::unfold(offset, move |at| {
            let file = file.clone();
            async move {
                if at >= end {
                    return None;
                }
                let n = SEND_CHUNK.min(end - at);
                // SAFETY: a committed blob file: written in tmp/, synced, renamed into blobs/,
                // never opened for writing again; the window is within `self.len`, checked
                // against the file above.
                #[allow(unsafe_code)]
                let mapped = unsafe { map_window(&file, at, n) };
                match mapped {
                    Ok(map) => Some((Ok(Bytes::from_owner(map)), at + n)),
                    // One error ends the body (the connection is cut mid-blob, so the client
                    // sees a short read, never wrong bytes).
                    Err(e) => Some((Err(e), end)),
                }
            }
        });
        Ok(Body::from_stream(windows))
    }
}

/// Maps `len` bytes of a blob file from `offset`, read-only, and asks the kernel to read
/// them ahead: what blob bodies are sent as, here and in the P2P piece store (no copy between
/// the page cache and the socket, one window resident per reader).
///
/// # Safety
///
/// Bytes `offset..offset + len` must be in the file (within its length) and must not change
/// while the map lives: a file nobody writes again (a committed blob), or the part of a file
/// its writer has reported written and never writes twice (a followed fetch's scratch file,
/// a download's landed front). Deleting or renaming the file keeps the mapped pages valid.
#[allow(unsafe_code)]
pub unsafe fn map_window(file: &std::fs::File, offset: u64, len: u64) -> io::Result<memmap2::Mmap> {
    let len = usize::try_from(len).map_err(io::Error::other)?;
    // SAFETY: read-only, and the caller guarantees the bytes are there and never change.
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .map(file)?
    };
    let _ = map.advise(memmap2::Advice::Sequential);
    let _ = map.advise(memmap2::Advice::WillNeed);
    Ok(map)
}

impl LocalStore {
    /// Where blob `d`'s content lives once committed (it may not be there).
    pub fn blob_file(&self, d: &Digest) -> std::path::PathBuf {
        self.blob_path(d)
    }

    /// Size of a blob anywhere in the store, if present.
    pub async fn blob_size(&self, d: &Digest) -> io::Result<Option<u64>> {
        match tokio::fs::metadata(self.blob_path(d)).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether `repo` holds blob `d` (linked into the repository and present).
    pub async fn repo_has_blob(&self, repo: &RepoName, d: &Digest) -> io::Result<bool> {
        let link = self.layer_link(repo, d);
        let blob = self.blob_path(d);
        tokio::task::spawn_blocking(move || Ok(exists(&link)? && exists(&blob)?))
            .await
            .map_err(io::Error::other)?
    }

    /// Opens blob `d` of `repo` for reading, `BLOB_UNKNOWN` when the repository lacks it.
    pub async fn open_blob(&self, repo: &RepoName, d: &Digest) -> ApiResult<BlobReader> {
        let link = self.layer_link(repo, d);
        let blob = self.blob_path(d);
        let opened = tokio::task::spawn_blocking(move || -> io::Result<Option<BlobReader>> {
            if !exists(&link)? {
                return Ok(None);
            }
            match std::fs::File::open(&blob) {
                Ok(file) => {
                    let len = file.metadata()?.len();
                    Ok(Some(BlobReader { file, len }))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
        .map_err(io::Error::other)??;
        opened.ok_or_else(|| blob_unknown(repo, d))
    }

    /// Links blob `d`, which `from` holds, into `repo` (a cross-repository mount). `false`
    /// when `from` does not hold it, or no longer does: the client then uploads it.
    pub async fn mount_blob(
        &self,
        from: &RepoName,
        repo: &RepoName,
        d: &Digest,
    ) -> io::Result<bool> {
        let _permit = self.fence.commit([d]).await;
        if !self.repo_has_blob(from, d).await? {
            return Ok(false);
        }
        self.write_layer_link(repo, d).await?;
        Ok(true)
    }

    /// Notes that a client checked `repo`'s blob `d`, as a push does before it skips uploading
    /// a blob the registry has: the link's time is renewed, so the garbage collector's grace
    /// period counts from the check, not from the first upload. `BLOB_UNKNOWN` when the
    /// collector freed it since the caller found it.
    pub async fn touch_blob(&self, repo: &RepoName, d: &Digest) -> ApiResult<()> {
        let _permit = self.fence.commit([d]).await;
        let link = self.layer_link(repo, d);
        let blob = self.blob_path(d);
        let present = tokio::task::spawn_blocking(move || match renew(&link) {
            Ok(()) => exists(&blob),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        })
        .await
        .map_err(io::Error::other)??;
        if present {
            Ok(())
        } else {
            Err(blob_unknown(repo, d))
        }
    }

    /// Makes blob `d` part of `repo`, or renews the link's time when it already is. The caller
    /// holds a commit permit naming `d` and has checked that the content is there.
    pub(super) async fn write_layer_link(&self, repo: &RepoName, d: &Digest) -> io::Result<()> {
        self.unmark_deleted(repo, d).await?;
        let link = self.layer_link(repo, d);
        let renewed = {
            let link = link.clone();
            tokio::task::spawn_blocking(move || renew(&link))
                .await
                .map_err(io::Error::other)?
        };
        match renewed {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.write_atomic(&link, Vec::new()).await
            }
            Err(e) => Err(e),
        }
    }

    /// Removes blob `d` from `repo`; `BLOB_UNKNOWN` when it was not there. The content itself
    /// stays until garbage collection, since other repositories may share it.
    pub async fn unlink_blob(&self, repo: &RepoName, d: &Digest) -> ApiResult<()> {
        if remove_optional(&self.layer_link(repo, d)).await? {
            Ok(())
        } else {
            Err(blob_unknown(repo, d))
        }
    }

    /// A client's delete of blob `d` from `repo`: unlinked as by [`LocalStore::unlink_blob`],
    /// and marked so that a backing's copy is not fetched back into `repo` until it is pushed
    /// (or mounted) there again.
    pub async fn delete_blob(&self, repo: &RepoName, d: &Digest) -> ApiResult<()> {
        self.unlink_blob(repo, d).await?;
        self.mark_deleted(repo, d).await?;
        Ok(())
    }

    /// Links blob `d`, which the store holds for another repository, into `repo` (whose
    /// backing holds it too); `false` when the store no longer holds it.
    pub async fn link_held_blob(&self, repo: &RepoName, d: &Digest) -> io::Result<bool> {
        let _permit = self.fence.commit([d]).await;
        if self.blob_size(d).await?.is_none() {
            return Ok(false);
        }
        self.write_layer_link(repo, d).await?;
        Ok(true)
    }

    /// Streams a whole blob into the store (monolithic upload), verifying `expected`.
    /// Nothing becomes visible unless the digest matches.
    pub async fn put_blob<S, E>(
        &self,
        repo: &RepoName,
        expected: &Digest,
        body: S,
    ) -> ApiResult<u64>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let tmp = self.tmp_path();
        let mut file = tokio::fs::File::create(&tmp).await?;
        // A request dropped midway (the client went away) never reaches the cleanup below.
        let scratch = Scratch(tmp.clone());
        let mut digester = Digester::new(expected.algorithm());
        let res = ingest(&mut file, body, &mut digester).await;
        let res = match res {
            Ok(n) if digester.current() == *expected => Ok(n),
            Ok(_) => Err(digest_mismatch(expected, &digester.current())),
            Err(e) => Err(e),
        };
        match res {
            Ok(n) => {
                self.commit_file(file, &tmp, repo, expected).await?;
                drop(scratch); // renamed away by the commit: nothing left to delete
                Ok(n)
            }
            Err(e) => {
                drop(file);
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    /// Writes `body` (`length` bytes, verified against `expected`) into the scratch file at
    /// `tmp`, which the caller created, and commits it into `repo`, as
    /// [`LocalStore::put_blob`] does; meanwhile `followers` are told how many bytes have
    /// reached the file and kept the newest of them, so readers can follow it. A body of
    /// another length is refused. The scratch file is removed unless committed.
    pub async fn put_blob_followed<S, E>(
        &self,
        repo: &RepoName,
        expected: &Digest,
        length: u64,
        body: S,
        tmp: &Path,
        followers: &Followers,
    ) -> ApiResult<u64>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let scratch = Scratch(tmp.to_owned());
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(tmp)
            .await?
            .into_std()
            .await;
        let res = ingest_observed(file, body, expected.algorithm(), length, followers).await;
        let (file, n) = match res {
            Ok((_, _, n)) if n != length => Err(RegistryError::new(
                ErrorCode::BlobUnknown,
                format!("the backing sent {n} bytes of {expected}, having announced {length}"),
            )),
            Ok((file, digest, n)) if digest == *expected => Ok((file, n)),
            Ok((_, digest, _)) => Err(digest_mismatch(expected, &digest)),
            Err(e) => Err(e),
        }?;
        let file = tokio::fs::File::from_std(file);
        // Every byte is in the file and matched the digest: followers may have the last one
        // now, while the file is made durable and committed.
        followers.written.send_replace(Progress {
            bytes: n,
            verified: true,
        });
        self.commit_file(file, tmp, repo, expected).await?;
        drop(scratch);
        Ok(n)
    }

    /// A new, empty scratch file for [`LocalStore::put_blob_followed`], and its path.
    pub async fn scratch_file(&self) -> io::Result<std::path::PathBuf> {
        let tmp = self.tmp_path();
        tokio::fs::File::create(&tmp).await?;
        Ok(tmp)
    }

    /// Adopts `file`, a complete blob already verified against `d` by its owner (the agent's
    /// piece store checked the whole digest), by hard-linking it to `d`'s content address and
    /// linking it into `repo`: no copy and no second hash. `Ok(false)` when the file cannot be
    /// linked (another filesystem): the caller copies it instead.
    pub async fn adopt_verified_file(
        &self,
        repo: &RepoName,
        d: &Digest,
        file: &Path,
    ) -> io::Result<bool> {
        let tmp = self.tmp_path();
        let dest = self.blob_path(d);
        let src = file.to_owned();
        let _permit = self.fence.commit([d]).await;
        let linked = tokio::task::spawn_blocking(move || -> io::Result<bool> {
            if exists(&dest)? {
                return Ok(true);
            }
            match std::fs::hard_link(&src, &tmp) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(18) => return Ok(false), // EXDEV
                Err(e) => return Err(e),
            }
            publish(&tmp, &dest).inspect_err(|_| {
                let _ = std::fs::remove_file(&tmp);
            })?;
            Ok(true)
        })
        .await
        .map_err(io::Error::other)??;
        if linked {
            self.write_layer_link(repo, d).await?;
        }
        Ok(linked)
    }

    /// Syncs a fully written, verified file, renames it to its content address and links it
    /// into `repo`.
    pub(super) async fn commit_file(
        &self,
        file: tokio::fs::File,
        tmp: &Path,
        repo: &RepoName,
        d: &Digest,
    ) -> io::Result<()> {
        file.sync_all().await?;
        drop(file);
        let dest = self.blob_path(d);
        let tmp = tmp.to_owned();
        let _permit = self.fence.commit([d]).await;
        tokio::task::spawn_blocking(move || {
            if exists(&dest)? {
                // Same content already stored: keep the existing file, drop the copy.
                return std::fs::remove_file(&tmp);
            }
            publish(&tmp, &dest)
        })
        .await
        .map_err(io::Error::other)??;
        self.write_layer_link(repo, d).await
    }
}

/// A scratch file (a unique name under `tmp/`) deleted when dropped; after a commit renamed it
/// away there is nothing to delete. The name goes at once; a write still in flight lands in
/// the unlinked file, freed when it closes.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Sets a file's modification time to now; `NotFound` when it does not exist.
fn renew(path: &Path) -> io::Result<()> {
    std::fs::File::options()
        .write(true)
        .open(path)?
        .set_modified(std::time::SystemTime::now())
}

/// Appends a body stream to `file`, feeding `digester`; returns the number of bytes written.
/// A body that fails mid-way (client gone) is an error; the caller decides what to roll back.
pub(super) async fn ingest<S, E>(
    file: &mut tokio::fs::File,
    mut body: S,
    digester: &mut Digester,
) -> ApiResult<u64>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let mut out = tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut n = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("reading the request body failed: {e}"),
            )
        })?;
        out.write_all(&chunk).await?;
        digester.update(&chunk);
        n += chunk.len() as u64;
    }
    out.flush().await?;
    Ok(n)
}

/// As [`ingest`], in three stages that overlap: this task receives the body, a blocking
/// thread writes each chunk to the file and another hashes it (no copy between them), telling
/// `followers.written` every [`WRITE_BUFFER`] bytes and at the end, and keeping the newest
/// chunks written in `followers.recent`. Stops past `limit` bytes. Returns the file, the digest
/// of what was written, and the byte count.
async fn ingest_observed<S, E>(
    file: std::fs::File,
    mut body: S,
    algorithm: crate::digest::Algorithm,
    limit: u64,
    followers: &Followers,
) -> ApiResult<(std::fs::File, Digest, u64)>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    // Chunks travel as received (shared, never copied), in batches of about PIPELINE_CHUNK
    // bytes: each batch costs the writer one vectored write and the channels one hand-off.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<Bytes>>(PIPELINE_CHUNKS);
    // Hashing runs beside the writes, on the same chunks: the slower of the two, not their
    // sum, bounds the fetch.
    let (hash_tx, hash_rx) = std::sync::mpsc::sync_channel::<Vec<Bytes>>(PIPELINE_CHUNKS);
    let hasher = tokio::task::spawn_blocking(move || {
        let mut digester = Digester::new(algorithm);
        for batch in hash_rx {
            for chunk in &batch {
                digester.update(chunk);
            }
        }
        digester.current()
    });
    let progress = followers.written.clone();
    let recent = followers.recent.clone();
    let writer = tokio::task::spawn_blocking(move || -> io::Result<_> {
        let mut file = file;
        let (mut n, mut told) = (0u64, 0u64);
        while let Some(batch) = rx.blocking_recv() {
            hash_tx
                .send(batch.clone())
                .map_err(|_| io::Error::other("the hashing thread stopped"))?;
            write_all_vectored(&mut file, &batch)?;
            for chunk in batch {
                let offset = n;
                n += chunk.len() as u64;
                recent.push(offset, chunk);
            }
            if n - told >= WRITE_BUFFER as u64 {
                told = n;
                progress.send_replace(Progress {
                    bytes: n,
                    verified: false,
                });
            }
        }
        progress.send_replace(Progress {
            bytes: n,
            verified: false,
        });
        Ok((file, n))
    });
    let mut received = 0u64;
    let fed: ApiResult<()> = async {
        let (mut batch, mut batched) = (Vec::new(), 0usize);
        loop {
            let chunk = body.next().await;
            if let Some(chunk) = chunk.as_ref() {
                let chunk = chunk.as_ref().map_err(|e| {
                    RegistryError::new(
                        ErrorCode::BlobUnknown,
                        format!("fetching the blob broke off: {e}"),
                    )
                })?;
                received += chunk.len() as u64;
                if received > limit {
                    return Ok(());
                }
                if !chunk.is_empty() {
                    batched += chunk.len();
                    batch.push(chunk.clone());
                }
            }
            let last = chunk.is_none();
            if !batch.is_empty() && (last || batched >= PIPELINE_CHUNK) {
                batched = 0;
                if tx.send(std::mem::take(&mut batch)).await.is_err() {
                    // The writer stopped: its error says why.
                    return Ok(());
                }
            }
            if last {
                return Ok(());
            }
        }
    }
    .await;
    drop(tx);
    let written = writer.await.map_err(io::Error::other)?;
    // The writer dropped its end of the hashing channel on return, so the hasher finishes.
    let digest = hasher.await.map_err(io::Error::other)?;
    let (file, n) = written?;
    fed?;
    Ok((file, digest, received.max(n)))
}

/// Writes every byte of `chunks` to `file`, as few `writev` calls as the kernel allows.
fn write_all_vectored(file: &mut std::fs::File, chunks: &[Bytes]) -> io::Result<()> {
    use std::io::{IoSlice, Write};
    let mut slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What a followed fetch ([`LocalStore::put_blob_followed`]) tells the clients following it.
#[derive(Debug)]
pub struct Followers {
    /// How far it is.
    pub written: tokio::sync::watch::Sender<Progress>,
    /// The newest chunks written.
    pub recent: super::Recent,
}

/// How far a followed fetch ([`LocalStore::put_blob_followed`]) is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// Bytes written to the scratch file so far.
    pub bytes: u64,
    /// Whether all of them are there and matched the digest (the commit may still be running).
    pub verified: bool,
}

/// The `BLOB_UNKNOWN` error for a repository.
pub(crate) fn blob_unknown(repo: &RepoName, d: &Digest) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUnknown,
        format!("blob {d} is unknown to repository {repo}"),
    )
    .with_detail(serde_json::json!({ "digest": d.to_string() }))
}

/// The `DIGEST_INVALID` error for content that hashed to something else.
pub(crate) fn digest_mismatch(expected: &Digest, actual: &Digest) -> RegistryError {
    RegistryError::new(
        ErrorCode::DigestInvalid,
        format!("uploaded content has digest {actual}, not the {expected} the client named"),
    )
    .with_detail(
        serde_json::json!({ "expected": expected.to_string(), "actual": actual.to_string() }),
    )
}
