//! Blob upload sessions: start, append chunks in order, finish with a digest, cancel.
//!
//! The bytes of a session live in `uploads/<uuid>/data`; its SHA-256 state is kept in memory so
//! finishing costs no second pass. After a restart the state is rebuilt from the file, so an
//! upload in progress survives a crash.
//!
//! The session's offset counts only chunks that arrived whole. A chunk that fails midway (the
//! disk is full, the client went away, the request was dropped) is cut off the file again, so
//! the client can resume from the last good offset and the space is freed. Sessions nobody
//! touched for a while are purged ([`LocalStore::purge_uploads`]).

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderValue, header};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use uuid::Uuid;

use super::LocalStore;
use super::blobs::digest_mismatch;
use crate::digest::{Algorithm, Digest, Digester};
use crate::error::{ApiResult, ErrorCode, RegistryError};
use crate::name::RepoName;

pub(super) struct Upload {
    repo: RepoName,
    dir: PathBuf,
    offset: u64,
    sha256: Digester,
    /// Set once the session is finished, cancelled or purged; later requests see it as unknown.
    closed: bool,
    /// The number of the chunk allowed to touch `data`. Every write and every rollback of a
    /// chunk happens under this lock and only while the number is still its own, so a chunk
    /// whose request was dropped can neither write after, nor cut off, the chunk that follows.
    writer: Arc<std::sync::Mutex<u64>>,
}

/// The bytes a chunk's `Content-Range` announces: `len` bytes from `start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkRange {
    /// The first byte; it must equal the bytes the session holds.
    pub start: u64,
    /// How many bytes the body must carry.
    pub len: u64,
}

/// What [`LocalStore::purge_uploads`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadPurge {
    /// Sessions deleted because nobody had written to them for the whole age.
    pub purged: usize,
    /// Bytes those sessions held.
    pub bytes_freed: u64,
    /// Idle sessions kept because a request was using them.
    pub kept_busy: usize,
}

/// Where an upload stands, for `Location` and `Range` headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UploadStatus {
    /// The session id.
    pub id: Uuid,
    /// Bytes received so far.
    pub offset: u64,
}

fn upload_unknown(id: &str) -> RegistryError {
    RegistryError::new(
        ErrorCode::BlobUploadUnknown,
        format!("upload {id} is unknown"),
    )
}

impl LocalStore {
    /// Starts an upload session in `repo`.
    pub async fn start_upload(&self, repo: &RepoName) -> io::Result<UploadStatus> {
        let id = Uuid::new_v4();
        let dir = self.root.join("uploads").join(id.to_string());
        tokio::fs::create_dir_all(&dir).await?;
        tokio::fs::write(dir.join("repo"), repo.as_str()).await?;
        tokio::fs::File::create(dir.join("data")).await?;
        let upload = Upload {
            repo: repo.clone(),
            dir,
            offset: 0,
            sha256: Digester::new(Algorithm::Sha256),
            closed: false,
            writer: Arc::default(),
        };
        self.uploads
            .lock()
            .expect("uploads lock")
            .insert(id, Arc::new(tokio::sync::Mutex::new(upload)));
        Ok(UploadStatus { id, offset: 0 })
    }

    /// Finds a session of `repo` by the id in the URL, reloading it from disk after a restart.
    async fn upload(
        &self,
        repo: &RepoName,
        id: &str,
    ) -> ApiResult<Arc<tokio::sync::Mutex<Upload>>> {
        let uuid: Uuid = id.parse().map_err(|_| upload_unknown(id))?;
        let found = self
            .uploads
            .lock()
            .expect("uploads lock")
            .get(&uuid)
            .cloned();
        let upload = match found {
            Some(u) => u,
            None => {
                let dir = self.root.join("uploads").join(uuid.to_string());
                let Some(owner) = super::read_optional(&dir.join("repo")).await? else {
                    return Err(upload_unknown(id));
                };
                let owner: RepoName = String::from_utf8_lossy(&owner)
                    .parse()
                    .map_err(|_| upload_unknown(id))?;
                let (offset, sha256) = hash_file(dir.join("data"), Algorithm::Sha256).await?;
                let u = Arc::new(tokio::sync::Mutex::new(Upload {
                    repo: owner,
                    dir,
                    offset,
                    sha256,
                    closed: false,
                    writer: Arc::default(),
                }));
                self.uploads
                    .lock()
                    .expect("uploads lock")
                    .entry(uuid)
                    .or_insert(u)
                    .clone()
            }
        };
        if upload.lock().await.repo != *repo {
            return Err(upload_unknown(id));
        }
        Ok(upload)
    }

    /// Reports how many bytes a session holds.
    pub async fn upload_status(&self, repo: &RepoName, id: &str) -> ApiResult<UploadStatus> {
        let upload = self.upload(repo, id).await?;
        let u = upload.lock().await;
        if u.closed {
            return Err(upload_unknown(id));
        }
        Ok(UploadStatus {
            id: id.parse().map_err(|_| upload_unknown(id))?,
            offset: u.offset,
        })
    }

    /// Appends a chunk. A `Content-Range` must start at the bytes received so far and cover
    /// exactly the body, or the chunk is refused with 416 and nothing changes.
    pub async fn append_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        range: Option<ChunkRange>,
        body: S,
    ) -> ApiResult<UploadStatus>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let u = self.append_checked(repo, id, range, body).await?;
        Ok(UploadStatus {
            id: id.parse().map_err(|_| upload_unknown(id))?,
            offset: u.offset,
        })
    }

    /// Appends the final chunk (if any), verifies the digest, and commits the blob into `repo`.
    /// On a mismatch the session and its bytes are discarded and nothing is stored.
    pub async fn finish_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        expected: &Digest,
        range: Option<ChunkRange>,
        body: S,
    ) -> ApiResult<u64>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut u = self.append_checked(repo, id, range, body).await?;
        let data = u.dir.join("data");
        let actual = match expected.algorithm() {
            Algorithm::Sha256 => u.sha256.current(),
            other => hash_file(data.clone(), other).await?.1.current(),
        };
        // The session stays locked and in the table until its folder is gone, so the purge
        // never deletes what this commit is renaming.
        u.closed = true;
        let size = u.offset;
        let dir = u.dir.clone();
        let result = if actual != *expected {
            Err(digest_mismatch(expected, &actual))
        } else {
            let commit = async {
                let file = tokio::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&data)
                    .await?;
                self.commit_file(file, &data, repo, expected).await
            };
            commit.await.map(|()| size).map_err(RegistryError::from)
        };
        let _ = tokio::fs::remove_dir_all(&dir).await;
        drop(u);
        self.forget_upload(id);
        result
    }

    /// Locks an open session, checks that a chunk in `range` continues it, and appends the
    /// body; returns the session still locked.
    async fn append_checked<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        range: Option<ChunkRange>,
        body: S,
    ) -> ApiResult<tokio::sync::OwnedMutexGuard<Upload>>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut u = self.upload(repo, id).await?.lock_owned().await;
        if u.closed {
            return Err(upload_unknown(id));
        }
        if let Some(range) = range
            && range.start != u.offset
        {
            return Err(out_of_order(range.start, u.offset));
        }
        append_locked(&mut u, range.map(|r| r.len), body).await?;
        Ok(u)
    }

    /// Cancels a session and deletes its bytes.
    pub async fn cancel_upload(&self, repo: &RepoName, id: &str) -> ApiResult<()> {
        let upload = self.upload(repo, id).await?;
        let mut u = upload.lock().await;
        if u.closed {
            return Err(upload_unknown(id));
        }
        u.closed = true;
        let removed = tokio::fs::remove_dir_all(&u.dir).await;
        drop(u);
        self.forget_upload(id);
        Ok(removed?)
    }

    /// Deletes the sessions nobody has written to for `max_age` (by their file's modification
    /// time), with their bytes: what a client that died or gave up leaves, or a `kill -9`
    /// during a push. A session a request is using is kept whatever its age, and so is one
    /// younger than `max_age`; a later request for a purged session gets
    /// `BLOB_UPLOAD_UNKNOWN`, as after a cancel.
    pub async fn purge_uploads(&self, max_age: Duration) -> io::Result<UploadPurge> {
        let mut report = UploadPurge::default();
        let mut entries = tokio::fs::read_dir(self.root.join("uploads")).await?;
        while let Some(entry) = entries.next_entry().await? {
            // Folders not named by a session id are not shoal's: leave them.
            let Some(id) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<Uuid>().ok())
            else {
                continue;
            };
            let dir = entry.path();
            if idle_for(&dir).await? < max_age {
                continue;
            }
            let Some(owner) = super::read_optional(&dir.join("repo")).await? else {
                // No owner: no request can reach it, and it is old.
                report.bytes_freed += remove_session(&dir).await?;
                report.purged += 1;
                continue;
            };
            let Ok(owner) = String::from_utf8_lossy(&owner).parse::<RepoName>() else {
                report.bytes_freed += remove_session(&dir).await?;
                report.purged += 1;
                continue;
            };
            // Claim the session: the one in the table, or a closed stand-in, so a request that
            // reloads it from disk meanwhile finds it gone rather than half deleted.
            let session = self
                .uploads
                .lock()
                .expect("uploads lock")
                .entry(id)
                .or_insert_with(|| {
                    Arc::new(tokio::sync::Mutex::new(Upload {
                        repo: owner,
                        dir: dir.clone(),
                        offset: 0,
                        sha256: Digester::new(Algorithm::Sha256),
                        closed: true,
                        writer: Arc::default(),
                    }))
                })
                .clone();
            let Ok(mut u) = session.try_lock_owned() else {
                report.kept_busy += 1;
                continue;
            };
            // Closed: the stand-in, or a session finished just now whose folder is gone.
            if !u.closed && idle_for(&dir).await? < max_age {
                // Written to between the first look and the lock.
                continue;
            }
            u.closed = true;
            report.bytes_freed += remove_session(&dir).await?;
            report.purged += 1;
            drop(u);
            self.forget_upload(&id.to_string());
        }
        Ok(report)
    }

    fn forget_upload(&self, id: &str) {
        if let Ok(uuid) = id.parse::<Uuid>() {
            self.uploads.lock().expect("uploads lock").remove(&uuid);
        }
    }
}

/// Appends to a locked session, `len` bytes when the chunk announced its length. On failure,
/// or when the request is dropped midway, the file is cut back to the last good offset and the
/// hash state is left as it was.
async fn append_locked<S, E>(u: &mut Upload, len: Option<u64>, mut body: S) -> ApiResult<()>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let start = u.offset;
    let mut chunk = {
        let data = u.dir.join("data");
        let writer = u.writer.clone();
        tokio::task::spawn_blocking(move || -> io::Result<Chunk> {
            let mut number = writer.lock().unwrap_or_else(|e| e.into_inner());
            *number += 1;
            let file = std::fs::OpenOptions::new().write(true).open(&data)?;
            // Bytes past the offset belong to a chunk whose request was dropped mid-write.
            file.set_len(start)?;
            Ok(Chunk {
                file: Arc::new(file),
                writer: writer.clone(),
                number: *number,
                start,
                done: false,
            })
        })
        .await
        .map_err(io::Error::other)??
    };
    let mut digester = u.sha256.clone();
    let mut pos = start;
    let mut buf = BytesMut::new();
    while let Some(piece) = body.next().await {
        let piece = piece.map_err(|e| {
            RegistryError::new(
                ErrorCode::BlobUploadInvalid,
                format!("reading the request body failed: {e}"),
            )
        })?;
        digester.update(&piece);
        buf.extend_from_slice(&piece);
        if buf.len() >= WRITE_BUFFER {
            pos = chunk.write_at(buf.split().freeze(), pos).await?;
        }
    }
    if !buf.is_empty() {
        pos = chunk.write_at(buf.freeze(), pos).await?;
    }
    let received = pos - start;
    if let Some(len) = len
        && received != len
    {
        return Err(RegistryError::new(
            ErrorCode::RangeInvalid,
            format!("Content-Range announced {len} bytes but the body carried {received}"),
        ));
    }
    chunk.done = true;
    u.offset = pos;
    u.sha256 = digester;
    Ok(())
}

/// Bytes buffered before each write of a chunk to disk.
const WRITE_BUFFER: usize = 1024 * 1024;

/// One chunk being written into a session's file; cut off again when dropped unfinished.
struct Chunk {
    file: Arc<std::fs::File>,
    writer: Arc<std::sync::Mutex<u64>>,
    number: u64,
    start: u64,
    done: bool,
}

impl Chunk {
    /// Writes `bytes` at `pos` on a blocking thread; returns the position after them.
    async fn write_at(&self, bytes: Bytes, pos: u64) -> io::Result<u64> {
        let (file, writer, number) = (self.file.clone(), self.writer.clone(), self.number);
        tokio::task::spawn_blocking(move || {
            use std::os::unix::fs::FileExt;
            let current = writer.lock().unwrap_or_else(|e| e.into_inner());
            if *current != number {
                return Err(io::Error::new(
                    io::ErrorKind::Interrupted,
                    "a later chunk took over the upload",
                ));
            }
            file.write_all_at(&bytes, pos)?;
            Ok(pos + bytes.len() as u64)
        })
        .await
        .map_err(io::Error::other)?
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // Blocks for at most the one write of this chunk in flight (WRITE_BUFFER bytes). A
        // write of this chunk queued behind the lock must not land after the cut: the chunk
        // number moves on, so it finds itself superseded. A later chunk that already took over
        // has cut the file itself.
        let mut current = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        if *current == self.number {
            *current += 1;
            if let Err(e) = self.file.set_len(self.start) {
                tracing::warn!(%e, "cutting a failed chunk off an upload failed; the next chunk will");
            }
        }
    }
}

/// How long since a session's bytes (or, before any, its folder) last changed.
async fn idle_for(dir: &std::path::Path) -> io::Result<Duration> {
    let modified = match tokio::fs::metadata(dir.join("data")).await {
        Ok(m) => m.modified()?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => match tokio::fs::metadata(dir).await {
            Ok(m) => m.modified()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Duration::ZERO),
            Err(e) => return Err(e),
        },
        Err(e) => return Err(e),
    };
    // A clock set back makes everything look new: keep it rather than purge early.
    Ok(SystemTime::now()
        .duration_since(modified)
        .unwrap_or(Duration::ZERO))
}

/// Deletes a session's folder; returns the bytes its data held (0 when it was already gone).
async fn remove_session(dir: &std::path::Path) -> io::Result<u64> {
    let bytes = match tokio::fs::metadata(dir.join("data")).await {
        Ok(m) => m.len(),
        Err(_) => 0,
    };
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => Ok(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn out_of_order(start: u64, offset: u64) -> RegistryError {
    let range = if offset == 0 {
        "0-0".to_owned()
    } else {
        format!("0-{}", offset - 1)
    };
    RegistryError::new(
        ErrorCode::RangeInvalid,
        format!("chunk starts at byte {start}, but the upload holds {offset} bytes: chunks must be sent in order"),
    )
    .with_header(header::RANGE, HeaderValue::from_str(&range).expect("digits and a dash"))
}

/// Hashes a whole file on a blocking thread; returns its length and the hash state.
async fn hash_file(path: PathBuf, algorithm: Algorithm) -> io::Result<(u64, Digester)> {
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut f = std::fs::File::open(path)?;
        let mut d = Digester::new(algorithm);
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        loop {
            let k = f.read(&mut buf)?;
            if k == 0 {
                return Ok((n, d));
            }
            d.update(&buf[..k]);
            n += k as u64;
        }
    })
    .await
    .map_err(io::Error::other)?
}
