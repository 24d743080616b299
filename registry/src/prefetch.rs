//! Pulling without a client: what a `GET` of a manifest or a blob does to the local store, as
//! methods the agent's preload calls ahead of a rollout. Each goes the way a pull goes (a tag
//! resolved by the backing when it is the authority, a miss filled from the backing under the
//! same per-digest lock, verified, and committed), so a preload leaves the store in the state a
//! pull would and the pull that follows is a local hit. Neither counts as a cache read: the
//! hits and misses on `/metrics` stay the clients'.

use crate::Digest;
use crate::api::{Cached, Registry};
use crate::error::{ApiResult, ErrorCode, RegistryError};
use crate::name::{Reference, RepoName};
use crate::store::StoredManifest;

/// Where a blob was when [`Registry::pull_blob`] asked for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobPull {
    /// The local store held it in the repository already.
    Present,
    /// It was fetched from the backing and committed.
    Fetched,
}

impl Registry {
    /// Manifest `reference` of `repo` as a `GET` would find it, fetched from the backing when
    /// the local store lacks it; a tag is resolved as a `GET` resolves it (at the backing, for
    /// a registry built with [`Registry::tags_from_backing`]).
    pub async fn pull_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> ApiResult<StoredManifest> {
        self.read_manifest(repo, reference, false).await
    }

    /// Brings blob `d` of `repo` into the local store as a `GET` of it would, without reading
    /// it; `BLOB_UNKNOWN` when neither the store nor the backing holds it.
    pub async fn pull_blob(&self, repo: &RepoName, d: &Digest) -> ApiResult<BlobPull> {
        if self.store.repo_has_blob(repo, d).await? {
            return Ok(BlobPull::Present);
        }
        if self.fill_blob(repo, d).await? {
            return Ok(BlobPull::Fetched);
        }
        Err(RegistryError::new(
            ErrorCode::BlobUnknown,
            format!("blob {d} is unknown to repository {repo}"),
        ))
    }

    /// Manifest `r` of `repo` for a read: the backing's answer for a tag it is the authority
    /// for, else the local store's, filled from the backing on a miss. `counted` reads show in
    /// the cache's hits and misses.
    pub(crate) async fn read_manifest(
        &self,
        repo: &RepoName,
        r: &Reference,
        counted: bool,
    ) -> ApiResult<StoredManifest> {
        let count = |hit| {
            if counted {
                self.count_read(Cached::Manifest, hit);
            }
        };
        if let Reference::Tag(t) = r
            && let Some(m) = self.authoritative_manifest(repo, t).await?
        {
            return Ok(m);
        }
        match self.store.get_manifest(repo, r).await {
            Err(e) if e.code == ErrorCode::ManifestUnknown => {
                count(false);
                match self.fill_manifest(repo, r).await? {
                    true => self.store.get_manifest(repo, r).await,
                    false => Err(e),
                }
            }
            other => {
                let m = other?;
                count(true);
                Ok(m)
            }
        }
    }
}
