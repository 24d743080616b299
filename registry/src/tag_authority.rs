//! Tags that never go stale. A registry whose backing is the authority for tags (an agent: the
//! build-index sees every push) asks the backing on each request by tag, at most once per
//! `ttl` per tag, and serves the manifest of the digest it answers. The local tag is kept as
//! the last digest known, and served (logged and counted as stale) only when the backing does
//! not answer. A reference by digest is immutable and needs no asking.
//!
//! Concurrent requests for one tag share a lookup, but only one that started after they
//! arrived: with `ttl` 0 a request never gets an answer older than itself, so a tag pushed
//! before the request is what the request sees.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::api::Registry;
use crate::digest::Digest;
use crate::error::{ApiResult, ErrorCode, RegistryError};
use crate::name::{Reference, RepoName, Tag, TagKey};
use crate::store::StoredManifest;

/// Tags whose last lookup is remembered while nobody waits for it (only with a `ttl`); past
/// this many, the expired ones are forgotten, then all that nobody waits for.
const MAX_REMEMBERED: usize = 10_000;

/// What the backing said about a tag.
#[derive(Clone, Debug)]
enum Outcome {
    Tagged(Digest),
    Untagged,
    /// The backing did not answer: its error's code and message.
    Failed(ErrorCode, String),
}

/// One lookup at the backing and when it started.
#[derive(Clone, Debug)]
struct Lookup {
    started: Instant,
    outcome: Outcome,
}

/// A tag's last lookup; its lock is held while a lookup runs, so requests arriving meanwhile
/// wait for it.
type Slot = Arc<tokio::sync::Mutex<Option<Lookup>>>;

/// The state behind [`Registry::tags_from_backing`].
pub(crate) struct TagAuthority {
    ttl: Duration,
    /// Only for namespaces whose tags move upstream ([`Backing::tags_move_upstream`]).
    upstream_only: bool,
    slots: Mutex<HashMap<TagKey, Slot>>,
    stale_served: AtomicU64,
}

impl TagAuthority {
    pub(crate) fn new(ttl: Duration, upstream_only: bool) -> Self {
        TagAuthority {
            ttl,
            upstream_only,
            slots: Mutex::new(HashMap::new()),
            stale_served: AtomicU64::new(0),
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<TagKey, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The slot of `key`, held until the guard drops.
    fn slot(&self, key: &TagKey) -> SlotGuard<'_> {
        let mut slots = self.slots();
        if !slots.contains_key(key) && slots.len() >= MAX_REMEMBERED {
            let ttl = self.ttl;
            slots.retain(|_, s| {
                Arc::strong_count(s) > 1
                    || s.try_lock()
                        .ok()
                        .and_then(|l| l.as_ref().map(|l| l.started.elapsed() < ttl))
                        .unwrap_or(false)
            });
            if slots.len() >= MAX_REMEMBERED {
                slots.retain(|_, s| Arc::strong_count(s) > 1);
            }
        }
        let slot = slots.entry(key.clone()).or_default().clone();
        SlotGuard {
            authority: self,
            key: key.clone(),
            slot,
        }
    }

    /// Whether `last` answers a request that arrived at `arrived`: it started after the request
    /// arrived, or it found an answer less than `ttl` ago.
    fn answers(&self, last: &Lookup, arrived: Instant) -> bool {
        last.started >= arrived
            || (!matches!(last.outcome, Outcome::Failed(..)) && last.started.elapsed() < self.ttl)
    }
}

/// A request's hold on a tag's slot; without a `ttl` the slot is forgotten when the last
/// request holding it is done.
struct SlotGuard<'a> {
    authority: &'a TagAuthority,
    key: TagKey,
    slot: Slot,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if !self.authority.ttl.is_zero() {
            return;
        }
        let mut slots = self.authority.slots();
        // The map's reference and this guard's: nobody else waits.
        if Arc::strong_count(&self.slot) <= 2 {
            slots.remove(&self.key);
        }
    }
}

impl Registry {
    /// Makes the backing the authority for tags: a manifest requested by tag is resolved at
    /// the backing (at most once per `ttl` per tag; `ttl` zero asks on every request), so a
    /// tag pushed again is served with its new digest at once. When the backing does not
    /// answer, the last digest this registry served for the tag is served, with a warning and
    /// [`Registry::stale_tags_served`] counting it. For registries in front of a tag service
    /// that knows every push (the agent); without it, a tag is asked for only when it is
    /// missing locally, which suits a registry that holds its own tags (`shoal dev`).
    pub fn tags_from_backing(mut self, ttl: Duration) -> Self {
        self.tag_authority = Some(TagAuthority::new(ttl, false));
        self
    }

    /// [`Registry::tags_from_backing`] for the namespaces whose tags an upstream registry owns
    /// (pull-through, `registry_tag`): there a tag is revalidated after `ttl` (zero: on every
    /// request, as distribution's proxy does) and served stale only while the upstream does
    /// not answer. Every other namespace keeps its own tags, the ones pushed here, which are
    /// written through to a backend that nobody else moves (`shoal dev`).
    pub fn upstream_tags_from_backing(mut self, ttl: Duration) -> Self {
        self.tag_authority = Some(TagAuthority::new(ttl, true));
        self
    }

    /// Requests by tag answered with the last known digest because the backing did not
    /// answer; a counter for `/metrics`.
    pub fn stale_tags_served(&self) -> u64 {
        self.tag_authority
            .as_ref()
            .map_or(0, |a| a.stale_served.load(Ordering::Relaxed))
    }

    /// Whether the backing, not the local store, says what `repo`'s tags name.
    pub(crate) fn tags_owned_by_backing(&self, repo: &RepoName) -> bool {
        match (&self.tag_authority, &self.backing) {
            (Some(authority), Some(backing)) => {
                !authority.upstream_only || backing.tags_move_upstream(repo)
            }
            _ => false,
        }
    }

    /// Manifest `tag` of `repo` as the backing resolves the tag now; `None` when this registry
    /// keeps its own tags (no [`Registry::tags_from_backing`]).
    pub(crate) async fn authoritative_manifest(
        &self,
        repo: &RepoName,
        tag: &Tag,
    ) -> ApiResult<Option<StoredManifest>> {
        let (Some(authority), Some(backing)) = (&self.tag_authority, &self.backing) else {
            return Ok(None);
        };
        if !self.tags_owned_by_backing(repo) {
            return Ok(None);
        }
        let arrived = Instant::now();
        let outcome = {
            let guard = authority.slot(&TagKey::new(repo.clone(), tag.clone()));
            let mut last = guard.slot.lock().await;
            match last.as_ref() {
                Some(l) if authority.answers(l, arrived) => l.outcome.clone(),
                _ => {
                    let started = Instant::now();
                    let outcome = match backing.get_tag(repo, tag).await {
                        Ok(Some(d)) => Outcome::Tagged(d),
                        Ok(None) => Outcome::Untagged,
                        Err(e) => Outcome::Failed(e.code, e.message),
                    };
                    *last = Some(Lookup {
                        started,
                        outcome: outcome.clone(),
                    });
                    outcome
                }
            }
        };
        match outcome {
            Outcome::Tagged(d) => self.serve_tagged(repo, tag, &d).await.map(Some),
            Outcome::Untagged => {
                self.store.untag(repo, tag).await?;
                Err(RegistryError::new(
                    ErrorCode::ManifestUnknown,
                    format!("tag {} is unknown to repository {repo}", tag.as_str()),
                ))
            }
            Outcome::Failed(code, message) => {
                let failed = || RegistryError::new(code, message.clone());
                let Some(d) = self.store.tag_digest(repo, tag).await? else {
                    return Err(failed());
                };
                let Ok(m) = self.store.get_manifest(repo, &Reference::Digest(d)).await else {
                    return Err(failed());
                };
                authority.stale_served.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    %repo,
                    tag = %tag.as_str(),
                    digest = %m.digest,
                    error = %message,
                    "serving a stale tag: the tag service (or upstream registry) did not \
                     answer, so this is the last digest it named"
                );
                Ok(Some(m))
            }
        }
    }

    /// The manifest `d` that `tag` of `repo` now names, fetched from the backing if the local
    /// store lacks it; the local tag follows.
    async fn serve_tagged(
        &self,
        repo: &RepoName,
        tag: &Tag,
        d: &Digest,
    ) -> ApiResult<StoredManifest> {
        if self.store.has_manifest(repo, d).await? {
            // Written only on a change: a request by tag costs no fsync.
            if self.store.tag_digest(repo, tag).await?.as_ref() != Some(d) {
                self.store.set_tag(repo, tag, d).await?;
            }
        } else if !self.fill_manifest_at(repo, d, Some(tag)).await? {
            return Err(RegistryError::new(
                ErrorCode::ManifestUnknown,
                format!(
                    "tag {} of repository {repo} names {d}, which the storage behind this \
                     registry does not hold",
                    tag.as_str()
                ),
            ));
        }
        self.store
            .get_manifest(repo, &Reference::Digest(d.clone()))
            .await
    }
}
