//! A pull-through miss streamed to its clients while it is fetched.
//!
//! The first GET of a blob the local store lacks starts one fetch from the backing, in a task
//! of its own (a client that goes away does not stop it); the fetch writes into a scratch file,
//! hashing as it goes, and commits it when the digest matches. Every client that asks for the
//! blob meanwhile, the first included, follows the scratch file as it grows and is sent what
//! has reached it, all but the last byte: that one goes out only once the whole blob verified,
//! so no client ever completes a blob that failed its digest (the connection is cut instead).
//! It does not wait for the commit (the sync to disk and the rename): what the client has is
//! verified, and a commit that fails loses only the cached copy.
//! A follower that keeps up is sent the chunks the fetch just wrote, from memory
//! ([`Recent`]); one that fell behind is sent read-only maps of the written part of the file.
//! Neither copies the bytes: the chunks received from the backing are the ones written,
//! hashed and sent.
//! A backing whose blob lands in a file of its own ([`Landing`]: the agent's P2P download,
//! piece by piece) is followed the same way without a scratch file: clients are sent the
//! landed front of that file, and the verified file is linked into the store at the end.
//! A backing that does not say the blob's length first is fetched whole, as before.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::Stream;
use tokio::sync::watch;

use crate::api::Registry;
use crate::backing::Landing;
use crate::digest::Digest;
use crate::error::{ApiResult, ErrorCode, RegistryError};
use crate::name::RepoName;
use crate::store::{Followers, Progress, Recent, SEND_CHUNK, map_window};

/// Where one fetch stands.
#[derive(Clone, Debug)]
enum FillState {
    /// Deciding: the store may hold it after all, or the backing may not.
    Starting,
    /// Landing in `tmp`; `written` says how many bytes of `length` are there, and whether
    /// they verified; `recent` holds the newest of them in memory.
    Streaming {
        length: u64,
        tmp: PathBuf,
        written: watch::Receiver<Progress>,
        recent: Recent,
        /// `tmp` is written around the page cache ([`Landing::direct`]): set until its first
        /// follower takes it and reads the file the same way. Later followers read maps of the
        /// page cache, which they share (direct reads would each read the disk, into buffers
        /// of their own).
        direct: Option<Arc<std::sync::atomic::AtomicBool>>,
    },
    /// Committed to the local store (or it was there already).
    Local,
    /// The backing does not hold it, or the store knows it already (deleted on purpose).
    Missing,
    /// The fetch failed.
    Failed(ErrorCode, String),
}

/// The fetches running, by repository and digest.
#[derive(Default)]
pub(crate) struct Following {
    fetches: Mutex<HashMap<(RepoName, Digest), watch::Receiver<FillState>>>,
}

/// What a GET of a blob the local store lacks gets.
pub(crate) enum Fetched {
    /// It is in the local store now.
    Local,
    /// Nothing to fetch.
    Missing,
    /// The blob, `length` bytes, as it arrives.
    Follow {
        length: u64,
        body: std::pin::Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>,
    },
}

impl Registry {
    /// Joins the fetch of blob `d` of `repo` from the backing, starting it when none runs.
    pub(crate) async fn fetch_followed(
        self: &Arc<Self>,
        repo: &RepoName,
        d: &Digest,
    ) -> ApiResult<Fetched> {
        if self.backing.is_none() {
            return Ok(Fetched::Missing);
        }
        let mut state = {
            let key = (repo.clone(), d.clone());
            let mut fetches = self.following.fetches.lock().expect("fetch map lock");
            match fetches.get(&key) {
                // A fetch that failed a moment ago is not joined: this client starts another.
                Some(state) if !matches!(*state.borrow(), FillState::Failed(..)) => state.clone(),
                _ => {
                    let (tx, rx) = watch::channel(FillState::Starting);
                    fetches.insert(key.clone(), rx.clone());
                    let reg = self.clone();
                    let ours = rx.clone();
                    tokio::spawn(async move {
                        reg.run_fetch(&key.0, &key.1, &tx).await;
                        let mut fetches = reg.following.fetches.lock().expect("fetch map lock");
                        if fetches.get(&key).is_some_and(|r| r.same_channel(&ours)) {
                            fetches.remove(&key);
                        }
                    });
                    rx
                }
            }
        };
        loop {
            let now = state.borrow_and_update().clone();
            match now {
                FillState::Starting => {}
                FillState::Local => return Ok(Fetched::Local),
                FillState::Missing => return Ok(Fetched::Missing),
                FillState::Failed(code, message) => return Err(RegistryError::new(code, message)),
                FillState::Streaming {
                    length,
                    tmp,
                    written,
                    recent,
                    direct,
                } => {
                    match open_followed(tmp, direct.is_some_and(|d| !d.swap(true, SeqCst))).await {
                        Ok(file) => {
                            let body = follow(file, length, written, recent, state);
                            return Ok(Fetched::Follow {
                                length,
                                body: Box::pin(body),
                            });
                        }
                        // Committed (renamed away) or failed meanwhile: the next state says which.
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            if state.changed().await.is_err() {
                let last = state.borrow().clone();
                return match last {
                    FillState::Local => Ok(Fetched::Local),
                    FillState::Failed(code, message) => Err(RegistryError::new(code, message)),
                    _ => Ok(Fetched::Missing),
                };
            }
        }
    }

    /// The fetch itself, telling `state` where it stands; one per digest at a time (it shares
    /// [`Registry::fill_blob`]'s lock).
    async fn run_fetch(&self, repo: &RepoName, d: &Digest, state: &watch::Sender<FillState>) {
        let outcome = self.fetch(repo, d, state).await;
        state.send_replace(match outcome {
            Ok(true) => FillState::Local,
            Ok(false) => FillState::Missing,
            Err(e) => FillState::Failed(e.code, e.message),
        });
    }

    async fn fetch(
        &self,
        repo: &RepoName,
        d: &Digest,
        state: &watch::Sender<FillState>,
    ) -> ApiResult<bool> {
        let Some(backing) = &self.backing else {
            return Ok(false);
        };
        let _fill = self.fills.lock(d).await;
        if let Some(settled) = self.settled_locally(backing.as_ref(), repo, d).await? {
            return Ok(settled);
        }
        if let Some(landing) = backing.get_blob_landing(repo, d).await? {
            return self.follow_landing(repo, d, landing, state).await;
        }
        if let Some(settled) = self.adopted_from_backing(backing.as_ref(), repo, d).await? {
            return Ok(settled);
        }
        let Some((length, body)) = backing.get_blob_sized(repo, d).await? else {
            return Ok(false);
        };
        let Some(length) = length else {
            self.store
                .put_blob(repo, d, body)
                .await
                .map_err(|e| crate::backing::fetched_corrupt(repo, d, e))?;
            return Ok(true);
        };
        let tmp = self.store.scratch_file().await?;
        let (written_tx, written) = watch::channel(Progress::default());
        let followers = Followers {
            written: written_tx,
            recent: Recent::default(),
        };
        state.send_replace(FillState::Streaming {
            length,
            tmp: tmp.clone(),
            written,
            recent: followers.recent.clone(),
            direct: None,
        });
        self.store
            .put_blob_followed(repo, d, length, body, &tmp, &followers)
            .await
            .map_err(|e| crate::backing::fetched_corrupt(repo, d, e))?;
        Ok(true)
    }
}

impl Registry {
    /// A fetch whose blob lands in the backing's own file: clients follow its landed front;
    /// the verified file is linked into the store (copied, when it is on another filesystem).
    async fn follow_landing(
        &self,
        repo: &RepoName,
        d: &Digest,
        landing: Landing,
        state: &watch::Sender<FillState>,
    ) -> ApiResult<bool> {
        let Landing {
            length,
            path,
            mut landed,
            direct,
            mut done,
        } = landing;
        let front = *landed.borrow_and_update();
        let (written_tx, written) = watch::channel(Progress {
            bytes: front,
            verified: false,
        });
        state.send_replace(FillState::Streaming {
            length,
            tmp: path,
            written,
            recent: Recent::default(),
            direct: direct.then(Arc::default),
        });
        let mut watching = true;
        let file = loop {
            tokio::select! {
                file = &mut done => break file?,
                changed = landed.changed(), if watching => match changed {
                    Ok(()) => {
                        let bytes = *landed.borrow_and_update();
                        written_tx.send_replace(Progress { bytes, verified: false });
                    }
                    Err(_) => watching = false,
                },
            }
        };
        written_tx.send_replace(Progress {
            bytes: length,
            verified: true,
        });
        if self.store.adopt_verified_file(repo, d, &file).await? {
            return Ok(true);
        }
        let body = tokio_util::io::ReaderStream::with_capacity(
            tokio::fs::File::open(&file).await?,
            SEND_CHUNK as usize,
        );
        self.store
            .put_blob(repo, d, Box::pin(body))
            .await
            .map_err(|e| crate::backing::fetched_corrupt(repo, d, e))?;
        Ok(true)
    }
}

/// What one client is sent of a fetch: the bytes in `file` as `written` grows, all but the
/// last until `state` says the blob committed; an error when the fetch fails. Bytes still in
/// `recent` are sent from memory; a client that fell further behind is sent windows of the
/// file mapped read-only (the written part of a scratch file never changes), so neither path
/// copies the bytes before the connection does.
/// A follower's handles of the file it follows: `direct` (opened for direct I/O) when the
/// file is written around the page cache and its filesystem does direct I/O.
struct Followed {
    file: std::fs::File,
    direct: Option<std::fs::File>,
}

impl Followed {
    /// `n` bytes at `pos`, which are written and never change.
    fn read(&self, pos: u64, n: u64) -> io::Result<Bytes> {
        if let Some(direct) = &self.direct {
            let n = usize::try_from(n).map_err(io::Error::other)?;
            return crate::store::direct::read_at(direct, &self.file, pos, n);
        }
        // SAFETY: `pos + n` never passes what the writer reported written: a scratch file is
        // written front to back, each byte once; a backing's landing file piece by piece,
        // each once, and only its landed front is reported.
        #[allow(unsafe_code)]
        let map = unsafe { map_window(&self.file, pos, n) }?;
        Ok(Bytes::from_owner(map))
    }
}

/// Opens `path` for a follower (see [`Followed`]).
async fn open_followed(path: PathBuf, direct: bool) -> io::Result<Followed> {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::File::open(&path)?;
        let direct = match direct {
            true => crate::store::direct::open(&path, false)?,
            false => None,
        };
        Ok(Followed { file, direct })
    })
    .await
    .map_err(io::Error::other)?
}

fn follow(
    file: Followed,
    length: u64,
    written: watch::Receiver<Progress>,
    recent: Recent,
    state: watch::Receiver<FillState>,
) -> impl Stream<Item = io::Result<Bytes>> + Send {
    struct Reader {
        file: Arc<Followed>,
        pos: u64,
        length: u64,
        written: watch::Receiver<Progress>,
        recent: Recent,
        state: watch::Receiver<FillState>,
        failed: bool,
        /// Bytes sent from memory, for the debug line at the end.
        from_memory: u64,
    }
    impl Drop for Reader {
        fn drop(&mut self) {
            tracing::debug!(
                sent = self.pos,
                from_memory = self.from_memory,
                "a follower of a pull-through fetch is done"
            );
        }
    }
    let reader = Reader {
        file: Arc::new(file),
        pos: 0,
        length,
        written,
        recent,
        state,
        failed: false,
        from_memory: 0,
    };
    futures_util::stream::unfold(reader, |mut r| async move {
        if r.failed || r.pos >= r.length {
            return None;
        }
        loop {
            let verdict = match &*r.state.borrow() {
                FillState::Local => Ok(true),
                FillState::Failed(_, message) => Err(message.clone()),
                _ => Ok(false),
            };
            let committed = match verdict {
                Ok(committed) => committed,
                Err(message) => {
                    let e = io::Error::other(format!("fetching the blob failed: {message}"));
                    r.failed = true;
                    return Some((Err(e), r));
                }
            };
            let progress = *r.written.borrow();
            let available = if committed || progress.verified {
                r.length
            } else {
                progress.bytes.min(r.length - 1)
            };
            if let Some(bytes) = r.recent.get(r.pos, available) {
                r.pos += bytes.len() as u64;
                r.from_memory += bytes.len() as u64;
                return Some((Ok(bytes), r));
            }
            if r.pos < available {
                let n = (available - r.pos).min(SEND_CHUNK);
                // Off the runtime: a map faults its pages in as it is sent, a direct read
                // waits for the disk here.
                let read = match r.file.direct.is_some() {
                    true => {
                        let (file, pos) = (r.file.clone(), r.pos);
                        tokio::task::spawn_blocking(move || file.read(pos, n))
                            .await
                            .unwrap_or_else(|e| Err(io::Error::other(e)))
                    }
                    false => r.file.read(r.pos, n),
                };
                return match read {
                    Ok(bytes) => {
                        r.pos += n;
                        Some((Ok(bytes), r))
                    }
                    Err(e) => {
                        r.failed = true;
                        Some((Err(e), r))
                    }
                };
            }
            // Wait for more bytes or a verdict; once the writer is done, for the verdict.
            let state_open = if r.written.has_changed().is_ok() {
                tokio::select! {
                    _ = r.written.changed() => true,
                    s = r.state.changed() => s.is_ok(),
                }
            } else {
                r.state.changed().await.is_ok()
            };
            if !state_open
                && !matches!(&*r.state.borrow(), FillState::Local | FillState::Failed(..))
            {
                r.failed = true;
                let e = io::Error::other("the fetch of the blob ended without a verdict");
                return Some((Err(e), r));
            }
        }
    })
}
