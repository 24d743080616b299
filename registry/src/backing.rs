//! The durable storage behind the local store: the origin's storage backends (plugins), as
//! the API sees them.
//!
//! The local store is a cache in front of a [`Backing`]. What a client pushes is committed
//! locally and then written through to the backing before the push is acknowledged; what a
//! client asks for and the local store lacks is fetched from the backing, verified against its
//! digest, committed locally, and served. The registry crate knows nothing of plugins: the
//! host implements this trait over its namespace router.
//!
//! The backing is consulted only for content the local store has never held. A blob or
//! manifest a client deleted from one repository stays known locally (other repositories may
//! share it), so it is not brought back from the backing; tags are deleted in both places.
//! A registry built with [`Registry::tags_from_backing`] asks the backing for every tag
//! instead (see `tag_authority.rs`): there, the local tag is only the fallback for when the
//! backing does not answer.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::api::Registry;
use crate::digest::Digest;
use crate::error::{ApiResult, ErrorCode, RegistryError};
use crate::manifest::{MAX_MANIFEST_BYTES, Manifest};
use crate::name::{Reference, RepoName, Tag};

/// Blob bytes from a backing; an `Err` item means the transfer broke off.
pub type BodyStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send + 'static>>;

/// What a backing can tell of a blob without fetching it ([`Backing::stat_blob`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobStat {
    /// It holds the blob, of this many bytes.
    Present(u64),
    /// It does not hold the blob.
    Absent,
    /// It cannot tell without fetching the blob.
    Unknown,
}

/// A blob landing in a file of the backing's own as its pieces arrive, verified one by one
/// ([`Backing::get_blob_landing`]; the agent's P2P download): the registry sends it to its
/// clients as it lands and, once done, links the verified file into the local store.
pub struct Landing {
    /// The blob's length.
    pub length: u64,
    /// The file it lands in. The registry opens it at once; the bytes below `landed` never
    /// change.
    pub path: std::path::PathBuf,
    /// How many bytes from the start are in the file and verified; the sender is dropped when
    /// nothing more will land.
    pub landed: tokio::sync::watch::Receiver<u64>,
    /// Whether the file is written around the page cache ([`crate::store::direct`]): its first
    /// client is then sent it read the same way, into reused buffers, not as maps that would
    /// fill the page cache with a copy of it; more clients share maps of the page cache.
    pub direct: bool,
    /// The verdict: the file of the whole blob, verified against its digest (it may have been
    /// moved from `path`), which the store hard-links as [`Backing::get_blob_file`]'s.
    pub done: Pin<Box<dyn std::future::Future<Output = ApiResult<std::path::PathBuf>> + Send>>,
}

impl std::fmt::Debug for Landing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Landing")
            .field("length", &self.length)
            .field("path", &self.path)
            .field("landed", &*self.landed.borrow())
            .field("direct", &self.direct)
            .finish_non_exhaustive()
    }
}

/// Durable storage for blobs (manifests are blobs too) and tags, keyed by repository.
///
/// Errors are registry errors already: the implementation chooses the code (`UNAUTHORIZED`,
/// `UNAVAILABLE`, ...) and a message that names the backend and the namespace.
#[async_trait::async_trait]
pub trait Backing: Send + Sync {
    /// Stores blob `d` of `repo`, whose verified content is the file at `path` (`size` bytes).
    async fn put_blob(&self, repo: &RepoName, d: &Digest, path: &Path, size: u64) -> ApiResult<()>;

    /// Blob `d` of `repo`, or `None` when the backing does not hold it.
    async fn get_blob(&self, repo: &RepoName, d: &Digest) -> ApiResult<Option<BodyStream>>;

    /// Whether the backing holds blob `d` of `repo`, and its size, without fetching it: what a
    /// `HEAD` of a blob the local store lacks is answered from. The default cannot tell.
    async fn stat_blob(&self, _repo: &RepoName, _d: &Digest) -> ApiResult<BlobStat> {
        Ok(BlobStat::Unknown)
    }

    /// Blob `d` of `repo` with its length when the backing knows it up front, which lets a
    /// miss stream to clients while it is fetched (`follow.rs`); `None` when the backing does
    /// not hold it. The default knows no length.
    async fn get_blob_sized(
        &self,
        repo: &RepoName,
        d: &Digest,
    ) -> ApiResult<Option<(Option<u64>, BodyStream)>> {
        Ok(self.get_blob(repo, d).await?.map(|body| (None, body)))
    }

    /// `length` bytes of blob `d` of `repo` from `offset`, straight from the backing: what a
    /// `Range` GET of a blob the local store lacks is answered with, so a client reading part
    /// of a blob (a lazy-pulling snapshotter, a resumed download) does not wait for all of it.
    /// `None` when the backing does not hold it or cannot read ranges (the default): the
    /// registry then fetches the whole blob. A range cannot be checked against the digest;
    /// the client verifies what it reads, as it would from any registry.
    async fn get_blob_range(
        &self,
        _repo: &RepoName,
        _d: &Digest,
        _offset: u64,
        _length: u64,
    ) -> ApiResult<Option<BodyStream>> {
        Ok(None)
    }

    /// Every tag of `repo` the backing holds, when it can list them; `None` when it cannot
    /// (the default), and the local store's tags are the list.
    async fn list_tags(&self, _repo: &RepoName) -> ApiResult<Option<Vec<String>>> {
        Ok(None)
    }

    /// Manifest `d` of `repo`, or `None` when the backing does not hold it. The default asks
    /// for it as a blob, which is what a manifest is to a storage backend.
    async fn get_manifest(&self, repo: &RepoName, d: &Digest) -> ApiResult<Option<BodyStream>> {
        self.get_blob(repo, d).await
    }

    /// Blob `d` of `repo` as a local file already verified against `d` on this filesystem,
    /// which the store hard-links instead of copying (the agent's piece store); `None` when
    /// the backing has no such file and [`Backing::get_blob`] is to be used.
    async fn get_blob_file(
        &self,
        _repo: &RepoName,
        _d: &Digest,
    ) -> ApiResult<Option<std::path::PathBuf>> {
        Ok(None)
    }

    /// Blob `d` of `repo` landing in a file of the backing's own, for a GET to follow as it
    /// lands (see [`Landing`]); `None` (the default) when the backing has no such file and the
    /// other ways apply. Asked before [`Backing::get_blob_file`] on a whole GET's miss.
    async fn get_blob_landing(&self, _repo: &RepoName, _d: &Digest) -> ApiResult<Option<Landing>> {
        Ok(None)
    }

    /// Removes blob `d` of `repo`, which the local store's garbage collector found
    /// unreferenced and deleted locally (`store::gc`: the file and its backing copies go
    /// together); a blob that is not there is not an error. The default keeps everything (a
    /// backing that cannot delete, or should not).
    async fn delete_blob(&self, _repo: &RepoName, _d: &Digest) -> ApiResult<()> {
        Ok(())
    }

    /// Points `tag` of `repo` at `d`.
    async fn put_tag(&self, repo: &RepoName, tag: &Tag, d: &Digest) -> ApiResult<()>;

    /// Whether `repo`'s tags belong to an upstream registry this one mirrors (a read-only tag
    /// backend such as `registry_tag`), where they move without this registry seeing it.
    fn tags_move_upstream(&self, _repo: &RepoName) -> bool {
        false
    }

    /// What `tag` of `repo` points at, or `None` when the backing has no such tag.
    async fn get_tag(&self, repo: &RepoName, tag: &Tag) -> ApiResult<Option<Digest>>;

    /// Removes `tag` of `repo`; a tag that is not there is not an error.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> ApiResult<()>;
}

/// One fetch per digest at a time: a second request for content being fetched waits for the
/// first and then finds it in the local store.
#[derive(Default)]
pub(crate) struct Fills {
    inflight: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

impl Fills {
    pub(crate) async fn lock(&self, d: &Digest) -> FillGuard<'_> {
        let slot = self
            .inflight
            .lock()
            .expect("fill map lock")
            .entry(d.clone())
            .or_default()
            .clone();
        let guard = slot.clone().lock_owned().await;
        FillGuard {
            fills: self,
            digest: d.clone(),
            slot,
            _guard: guard,
        }
    }
}

/// Held while one fetch of a digest runs; forgets the slot when the last waiter is done.
pub(crate) struct FillGuard<'a> {
    fills: &'a Fills,
    digest: Digest,
    slot: Arc<tokio::sync::Mutex<()>>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for FillGuard<'_> {
    fn drop(&mut self) {
        let mut map = self.fills.inflight.lock().expect("fill map lock");
        // The map's reference, this guard's, and the lock guard's own: nobody else waits.
        if Arc::strong_count(&self.slot) <= 3 {
            map.remove(&self.digest);
        }
    }
}

impl Registry {
    /// Writes a committed blob of `repo` through to the backing, if there is one. When that
    /// fails the blob is unlinked from the repository again, so the client's retry uploads it
    /// once more instead of finding it present and skipping it.
    pub(crate) async fn persist_blob(&self, repo: &RepoName, d: &Digest) -> ApiResult<()> {
        let Some(backing) = &self.backing else {
            return Ok(());
        };
        let res = async {
            let path = self.store.blob_file(d);
            let size = self.store.blob_size(d).await?.ok_or_else(|| {
                RegistryError::internal("persisting a blob", format!("{d} vanished from the store"))
            })?;
            backing.put_blob(repo, d, &path, size).await
        }
        .await;
        if res.is_err() {
            let _ = self.store.unlink_blob(repo, d).await;
        }
        res
    }

    /// Writes a committed manifest, and the tag that named it, through to the backing. When
    /// that fails the tag is removed locally, so the next read asks the backing, which still
    /// holds what it held before the push.
    pub(crate) async fn persist_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        d: &Digest,
    ) -> ApiResult<()> {
        let Some(backing) = &self.backing else {
            return Ok(());
        };
        let res = async {
            let path = self.store.blob_file(d);
            let size = self.store.blob_size(d).await?.ok_or_else(|| {
                RegistryError::internal("persisting a manifest", format!("{d} vanished"))
            })?;
            backing.put_blob(repo, d, &path, size).await?;
            if let Reference::Tag(tag) = reference {
                backing.put_tag(repo, tag, d).await?;
            }
            Ok(())
        }
        .await;
        if res.is_err()
            && let Reference::Tag(_) = reference
        {
            let _ = self.store.delete_manifest(repo, reference).await;
        }
        res
    }

    /// Removes tags from the backing after they were removed locally.
    pub(crate) async fn forget_tags(&self, repo: &RepoName, tags: &[Tag]) -> ApiResult<()> {
        if let Some(backing) = &self.backing {
            for tag in tags {
                backing.delete_tag(repo, tag).await?;
            }
        }
        Ok(())
    }

    /// What the backing knows of blob `d` of `repo`, which the local store does not hold in
    /// that repository, for a `HEAD`: [`BlobStat::Absent`] without a backing, and for content
    /// that is not `repo`'s here (as for [`Registry::fill_blob`]).
    pub(crate) async fn stat_from_backing(
        &self,
        repo: &RepoName,
        d: &Digest,
    ) -> ApiResult<BlobStat> {
        let Some(backing) = &self.backing else {
            return Ok(BlobStat::Absent);
        };
        if self.not_in_repo_here(repo, d).await? {
            return Ok(BlobStat::Absent);
        }
        backing.stat_blob(repo, d).await
    }

    /// Whether content the store holds for other repositories may be served in `repo` once the
    /// backing says `repo` holds it too: where the backing, not this store, says what `repo`
    /// holds (an upstream registry this one mirrors, the cluster behind an agent or the
    /// proxy). In a namespace of its own (`shoal dev`'s), what was pushed to `repo` here is
    /// all it holds, whatever a backend that names blobs by digest alone would answer.
    fn backing_says_what_repo_holds(&self, repo: &RepoName) -> bool {
        self.tags_owned_by_backing(repo)
    }

    /// Whether content `d`, which `repo` does not link here, is not `repo`'s in a namespace of
    /// the store's own: a client deleted it from `repo`, or the store holds it for other
    /// repositories only. Where the backing says what `repo` holds, neither counts: a delete
    /// there only evicts the local copy (an agent's or the proxy's cache, a pull-through
    /// namespace's), and the next read asks the backing again.
    async fn not_in_repo_here(&self, repo: &RepoName, d: &Digest) -> io::Result<bool> {
        if self.backing_says_what_repo_holds(repo) {
            return Ok(false);
        }
        Ok(self.store.deleted_from(repo, d).await? || self.store.blob_size(d).await?.is_some())
    }

    /// Bytes `offset..offset + length` of blob `d` of `repo`, which the local store lacks,
    /// from the backing; `None` when the backing cannot serve a range of it. The stream ends
    /// with an error rather than give more or fewer bytes than asked.
    pub(crate) async fn range_from_backing(
        &self,
        repo: &RepoName,
        d: &Digest,
        offset: u64,
        length: u64,
    ) -> ApiResult<Option<BodyStream>> {
        let Some(backing) = &self.backing else {
            return Ok(None);
        };
        let body = backing.get_blob_range(repo, d, offset, length).await?;
        Ok(body.map(|body| exactly(body, length)))
    }

    /// The tags of `repo`: the local store's, and the backing's when it can list them. Where
    /// the backing owns `repo`'s tags (an agent's or the proxy's build-index, a pull-through
    /// namespace's upstream), its list alone: tags this store saw may have been deleted there.
    pub(crate) async fn tags_with_backing(&self, repo: &RepoName) -> ApiResult<Vec<String>> {
        let listed = match &self.backing {
            Some(backing) => backing.list_tags(repo).await?,
            None => None,
        };
        let mut all = match listed {
            Some(listed) if self.tags_owned_by_backing(repo) => {
                if listed.is_empty() {
                    return Err(RegistryError::new(
                        ErrorCode::NameUnknown,
                        format!("repository {repo} is not known"),
                    ));
                }
                listed
            }
            listed => match (self.store.all_tags(repo).await, listed) {
                (Ok(mut local), Some(listed)) => {
                    local.extend(listed);
                    local
                }
                (Ok(local), None) => local,
                (Err(e), Some(listed))
                    if e.code == ErrorCode::NameUnknown && !listed.is_empty() =>
                {
                    listed
                }
                (Err(e), _) => return Err(e),
            },
        };
        all.sort();
        all.dedup();
        Ok(all)
    }

    /// Brings blob `d` of `repo` into the local store from the backing. `Ok(false)` when
    /// there is nothing to fetch: no backing, content that is not this repository's here (in
    /// a namespace of the store's own: deleted from it, or held for other repositories only;
    /// see [`Registry::settled_before_fetch`]), or content the backing does not hold.
    pub(crate) async fn fill_blob(&self, repo: &RepoName, d: &Digest) -> ApiResult<bool> {
        let Some(backing) = &self.backing else {
            return Ok(false);
        };
        let _fill = self.fills.lock(d).await;
        if let Some(settled) = self.settled_before_fetch(backing.as_ref(), repo, d).await? {
            return Ok(settled);
        }
        let Some(body) = backing.get_blob(repo, d).await? else {
            return Ok(false);
        };
        self.store
            .put_blob(repo, d, body)
            .await
            .map_err(|e| fetched_corrupt(repo, d, e))?;
        Ok(true)
    }

    /// What a fetch of blob `d` of `repo` finds before it downloads anything, under the
    /// digest's fill lock: `Some(true)` when the store holds it in `repo` now (a concurrent
    /// request fetched it, the copy held for another repository was linked, or the backing's
    /// verified file was adopted), `Some(false)` when it is not to be fetched (in a namespace
    /// of the store's own, a client deleted it from `repo` or it is held for other
    /// repositories only; elsewhere, the backing says `repo` lacks it), `None` to fetch.
    pub(crate) async fn settled_before_fetch(
        &self,
        backing: &dyn Backing,
        repo: &RepoName,
        d: &Digest,
    ) -> ApiResult<Option<bool>> {
        if let Some(settled) = self.settled_locally(backing, repo, d).await? {
            return Ok(Some(settled));
        }
        self.adopted_from_backing(backing, repo, d).await
    }

    /// The local half of [`Registry::settled_before_fetch`]: what the store says.
    pub(crate) async fn settled_locally(
        &self,
        backing: &dyn Backing,
        repo: &RepoName,
        d: &Digest,
    ) -> ApiResult<Option<bool>> {
        if self.store.repo_has_blob(repo, d).await? {
            return Ok(Some(true));
        }
        if self.not_in_repo_here(repo, d).await? {
            return Ok(Some(false));
        }
        if self.store.blob_size(d).await?.is_some() {
            // Held for another repository (images share layers): linked into `repo` when the
            // backing says `repo` holds the blob too, without fetching the bytes again.
            match backing.stat_blob(repo, d).await? {
                BlobStat::Present(_) if self.store.link_held_blob(repo, d).await? => {
                    return Ok(Some(true));
                }
                BlobStat::Absent => return Ok(Some(false)),
                // Collected meanwhile, or the backing cannot tell: fetch.
                BlobStat::Present(_) | BlobStat::Unknown => {}
            }
        }
        Ok(None)
    }

    /// The other half of [`Registry::settled_before_fetch`]: `Some(true)` when the backing's
    /// verified file was adopted.
    pub(crate) async fn adopted_from_backing(
        &self,
        backing: &dyn Backing,
        repo: &RepoName,
        d: &Digest,
    ) -> ApiResult<Option<bool>> {
        if let Some(file) = backing.get_blob_file(repo, d).await?
            && self.store.adopt_verified_file(repo, d, &file).await?
        {
            return Ok(Some(true));
        }
        Ok(None)
    }

    /// Brings manifest `reference` of `repo` into the local store from the backing, tag
    /// included. `Ok(false)` as for [`Registry::fill_blob`].
    pub(crate) async fn fill_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> ApiResult<bool> {
        let Some(backing) = &self.backing else {
            return Ok(false);
        };
        match reference {
            Reference::Digest(d) => self.fill_manifest_at(repo, d, None).await,
            Reference::Tag(t) => match backing.get_tag(repo, t).await? {
                Some(d) => self.fill_manifest_at(repo, &d, Some(t)).await,
                None => Ok(false),
            },
        }
    }

    /// Brings manifest `digest` of `repo` into the local store from the backing, and points
    /// `tag` at it when given. In a namespace of the store's own, a manifest a client deleted
    /// from `repo` by digest, or one held for other repositories only, is fetched only for a
    /// tag (a backing's tag outranks a local delete by digest).
    pub(crate) async fn fill_manifest_at(
        &self,
        repo: &RepoName,
        digest: &Digest,
        tag: Option<&Tag>,
    ) -> ApiResult<bool> {
        let Some(backing) = &self.backing else {
            return Ok(false);
        };
        let digest = digest.clone();
        let _fill = self.fills.lock(&digest).await;
        if self.store.has_manifest(repo, &digest).await? {
            // Known locally (fetched concurrently, or only the tag was missing).
            if let Some(t) = tag {
                self.store.set_tag(repo, t, &digest).await?;
            }
            return Ok(true);
        }
        if tag.is_none() && self.not_in_repo_here(repo, &digest).await? {
            return Ok(false);
        }
        let Some(body) = backing.get_manifest(repo, &digest).await? else {
            return Ok(false);
        };
        let bytes = read_capped(body, MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| fetched_corrupt(repo, &digest, e))?;
        let manifest =
            Manifest::parse(&bytes, None).map_err(|e| fetched_corrupt(repo, &digest, e))?;
        self.store
            .adopt_manifest(repo, &digest, bytes, &manifest, tag)
            .await
            .map_err(|e| fetched_corrupt(repo, &digest, e))?;
        Ok(true)
    }
}

/// Reads a small body whole, refusing more than `cap` bytes.
pub(crate) async fn read_capped(mut body: BodyStream, cap: usize) -> Result<Bytes, String> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("the transfer broke off: {e}"))?;
        if out.len() + chunk.len() > cap {
            return Err(format!("it is larger than the {cap}-byte manifest limit"));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// Content from the backing that failed verification: the backend is at fault, not the client.
pub(crate) fn fetched_corrupt(
    repo: &RepoName,
    d: &Digest,
    cause: impl std::fmt::Display,
) -> RegistryError {
    tracing::error!(%repo, digest = %d, %cause, "content from the storage backend was rejected");
    RegistryError::new(
        ErrorCode::Unavailable,
        format!("{d} of repository {repo} from the storage backend was rejected: {cause}"),
    )
}

/// `body`, cut at `length` bytes, and failing if it ends before them.
fn exactly(body: BodyStream, length: u64) -> BodyStream {
    Box::pin(futures_util::stream::unfold(
        (body, length),
        |(mut body, left)| async move {
            if left == 0 {
                return None;
            }
            match body.next().await {
                Some(Ok(mut chunk)) => {
                    if chunk.len() as u64 > left {
                        chunk.truncate(left as usize);
                    }
                    let n = chunk.len() as u64;
                    Some((Ok(chunk), (body, left - n)))
                }
                Some(Err(e)) => Some((Err(e), (body, 0))),
                None => Some((
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("the backend's range ended {left} bytes short"),
                    )),
                    (body, 0),
                )),
            }
        },
    ))
}
