//! Blob upload sessions: start, append chunks in order, finish with a digest, cancel.
//!
//! The bytes of a session live in `uploads/<uuid>/data`; its SHA-256 state is kept in memory so
//! finishing costs no second pass. After a restart the state is rebuilt from the file, so an
//! upload in progress survives a crash.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use axum::http::{HeaderValue, header};
use bytes::Bytes;
use futures_util::Stream;
use uuid::Uuid;

use super::LocalStore;
use super::blobs::{digest_mismatch, ingest};
use crate::digest::{Algorithm, Digest, Digester};
use crate::error::{ApiResult, ErrorCode, RegistryError};
use crate::name::RepoName;

pub(super) struct Upload {
    repo: RepoName,
    dir: PathBuf,
    offset: u64,
    sha256: Digester,
    /// Set once the session is finished or cancelled; later requests see it as unknown.
    closed: bool,
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

    /// Appends a chunk. `start` is the first byte of a `Content-Range`; it must equal the bytes
    /// received so far, or the chunk is refused with 416 and nothing changes.
    pub async fn append_upload<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
        body: S,
    ) -> ApiResult<UploadStatus>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let u = self.append_checked(repo, id, start, body).await?;
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
        start: Option<u64>,
        body: S,
    ) -> ApiResult<u64>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let mut u = self.append_checked(repo, id, start, body).await?;
        let data = u.dir.join("data");
        let actual = match expected.algorithm() {
            Algorithm::Sha256 => u.sha256.current(),
            other => hash_file(data.clone(), other).await?.1.current(),
        };
        u.closed = true;
        let size = u.offset;
        let dir = u.dir.clone();
        drop(u);
        self.forget_upload(id);
        if actual != *expected {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(digest_mismatch(expected, &actual));
        }
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&data)
            .await?;
        self.commit_file(file, &data, repo, expected).await?;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        Ok(size)
    }

    /// Locks an open session, checks that a chunk starting at `start` continues it, and appends
    /// the body; returns the session still locked.
    async fn append_checked<S, E>(
        &self,
        repo: &RepoName,
        id: &str,
        start: Option<u64>,
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
        if let Some(start) = start
            && start != u.offset
        {
            return Err(out_of_order(start, u.offset));
        }
        append_locked(&mut u, body).await?;
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
        let dir = u.dir.clone();
        drop(u);
        self.forget_upload(id);
        tokio::fs::remove_dir_all(&dir).await?;
        Ok(())
    }

    fn forget_upload(&self, id: &str) {
        if let Ok(uuid) = id.parse::<Uuid>() {
            self.uploads.lock().expect("uploads lock").remove(&uuid);
        }
    }
}

/// Appends to a locked session; on failure the file and hash state go back to where they were.
async fn append_locked<S, E>(u: &mut Upload, body: S) -> ApiResult<()>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let data = u.dir.join("data");
    let mut file = tokio::fs::OpenOptions::new()
        .append(true)
        .open(&data)
        .await?;
    let mut digester = u.sha256.clone();
    match ingest(&mut file, body, &mut digester).await {
        Ok(n) => {
            u.offset += n;
            u.sha256 = digester;
            Ok(())
        }
        Err(e) => {
            file.set_len(u.offset).await?;
            Err(e)
        }
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
