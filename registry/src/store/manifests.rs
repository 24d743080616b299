//! Manifests, tags, referrers and the repository catalog.

use std::io;
use std::path::Path;

use bytes::Bytes;

use super::{LocalStore, MANIFEST_CACHE_BYTES, exists, read_optional, remove_optional};
use crate::digest::{Algorithm, Digest, Digester};
use crate::error::{ApiResult, ErrorCode, RegistryError};
use crate::manifest::{Descriptor, Manifest};
use crate::name::{Reference, RepoName, Tag};

/// A manifest as stored: its digest, the media type it was pushed with, and its exact bytes.
#[derive(Clone, Debug)]
pub struct StoredManifest {
    /// Digest of `bytes`.
    pub digest: Digest,
    /// Media type returned as `Content-Type`.
    pub media_type: String,
    /// The bytes the client pushed.
    pub bytes: Bytes,
}

fn manifest_unknown(repo: &RepoName, reference: &Reference) -> RegistryError {
    RegistryError::new(
        ErrorCode::ManifestUnknown,
        format!("manifest {reference} is unknown to repository {repo}"),
    )
}

fn name_unknown(repo: &RepoName) -> RegistryError {
    RegistryError::new(
        ErrorCode::NameUnknown,
        format!("repository {repo} is not known"),
    )
}

impl LocalStore {
    /// Stores a validated manifest under its digest, and under `reference` when that is a tag.
    /// Refuses one whose blobs or child manifests the repository lacks.
    pub async fn put_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
        bytes: Bytes,
        manifest: &Manifest,
    ) -> ApiResult<Digest> {
        let digest = match reference {
            Reference::Digest(d) if d.algorithm() != Algorithm::Sha256 => {
                let mut h = Digester::new(d.algorithm());
                h.update(&bytes);
                h.current()
            }
            _ => Digest::sha256_of(&bytes),
        };
        if let Reference::Digest(d) = reference
            && *d != digest
        {
            return Err(super::blobs::digest_mismatch(d, &digest));
        }
        // From the checks to the last write, so the collector cannot sweep what they found.
        let _permit = self
            .fence
            .commit(std::iter::once(&digest).chain(manifest.references()))
            .await;
        let mut missing = Vec::new();
        for blob in manifest.required_blobs() {
            if !self.repo_has_blob(repo, blob).await? {
                missing.push(blob.to_string());
            }
        }
        for child in manifest.required_manifests() {
            if !tokio::fs::try_exists(self.revision_link(repo, child)).await? {
                missing.push(child.to_string());
            }
        }
        if !missing.is_empty() {
            return Err(RegistryError::new(
                ErrorCode::ManifestBlobUnknown,
                format!(
                    "manifest references content that repository {repo} does not have: {}",
                    missing.join(", ")
                ),
            )
            .with_detail(serde_json::json!({ "missing": missing })));
        }
        let tag = match reference {
            Reference::Tag(t) => Some(t),
            Reference::Digest(_) => None,
        };
        self.record_manifest(repo, &digest, bytes, manifest, tag)
            .await?;
        Ok(digest)
    }

    /// Stores a manifest fetched from the storage backend: the digest is checked, the
    /// references are not (the backend holds the whole image; layers are fetched on demand).
    pub async fn adopt_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        bytes: Bytes,
        manifest: &Manifest,
        tag: Option<&Tag>,
    ) -> ApiResult<()> {
        let mut h = Digester::new(digest.algorithm());
        h.update(&bytes);
        let actual = h.current();
        if actual != *digest {
            return Err(super::blobs::digest_mismatch(digest, &actual));
        }
        let _permit = self
            .fence
            .commit(std::iter::once(digest).chain(manifest.references()))
            .await;
        self.record_manifest(repo, digest, bytes, manifest, tag)
            .await
    }

    /// Whether `repo` holds manifest `d`.
    pub async fn has_manifest(&self, repo: &RepoName, d: &Digest) -> io::Result<bool> {
        if self.index.revision(repo, d).is_some() {
            return Ok(true);
        }
        tokio::fs::try_exists(self.revision_link(repo, d)).await
    }

    /// Points `tag` of `repo` at `d`.
    pub async fn set_tag(&self, repo: &RepoName, tag: &Tag, d: &Digest) -> io::Result<()> {
        let _permit = self.fence.commit([d]).await;
        self.write_tag(repo, tag, d).await
    }

    /// [`LocalStore::set_tag`] under a commit permit the caller holds.
    async fn write_tag(&self, repo: &RepoName, tag: &Tag, d: &Digest) -> io::Result<()> {
        let written = self
            .write_atomic(
                &self.tag_path(repo, tag.as_str()),
                d.to_string().into_bytes(),
            )
            .await;
        self.index.forget_tag(repo, tag.as_str());
        written
    }

    /// What `tag` of `repo` points at locally, `None` when the store has no such tag.
    pub async fn tag_digest(&self, repo: &RepoName, tag: &Tag) -> ApiResult<Option<Digest>> {
        match self.resolve(repo, &Reference::Tag(tag.clone())).await {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.code == ErrorCode::ManifestUnknown => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Removes `tag` of `repo` locally and only there; `false` when it was not there.
    pub async fn untag(&self, repo: &RepoName, tag: &Tag) -> io::Result<bool> {
        let removed = remove_optional(&self.tag_path(repo, tag.as_str())).await;
        self.index.forget_tag(repo, tag.as_str());
        removed
    }

    /// The writes of a manifest whose checks passed: content, revision link, referrer
    /// entry, tag. The caller holds a commit permit naming the manifest and its references.
    async fn record_manifest(
        &self,
        repo: &RepoName,
        digest: &Digest,
        bytes: Bytes,
        manifest: &Manifest,
        tag: Option<&Tag>,
    ) -> ApiResult<()> {
        let blob = self.blob_path(digest);
        if !tokio::fs::try_exists(&blob).await? {
            self.write_atomic(&blob, bytes.to_vec()).await?;
        }
        self.unmark_deleted(repo, digest).await?;
        let written = self
            .write_atomic(
                &self.revision_link(repo, digest),
                manifest.media_type.clone().into_bytes(),
            )
            .await;
        // A manifest without a mediaType field takes its type from the push's Content-Type,
        // so the same digest pushed again may change it.
        self.index.forget_revision(repo, digest);
        written?;
        if let Some(subject) = &manifest.subject {
            let descriptor = Descriptor {
                media_type: manifest.media_type.clone(),
                digest: digest.clone(),
                size: bytes.len() as u64,
                urls: None,
                artifact_type: manifest.artifact_type.clone(),
                annotations: manifest.annotations.clone(),
                platform: None,
            };
            let entry = self.referrers_dir(repo, &subject.digest).join(format!(
                "{}-{}",
                digest.algorithm().as_str(),
                digest.hex()
            ));
            let json = serde_json::to_vec(&descriptor)
                .map_err(|e| RegistryError::internal("encoding a referrer", e))?;
            self.write_atomic(&entry, json).await?;
        }
        if let Some(tag) = tag {
            self.write_tag(repo, tag, digest).await?;
        }
        self.cache_manifest(digest, &bytes);
        Ok(())
    }

    /// Resolves a tag to a digest.
    async fn resolve(&self, repo: &RepoName, reference: &Reference) -> ApiResult<Digest> {
        match reference {
            Reference::Digest(d) => Ok(d.clone()),
            Reference::Tag(t) => {
                if let Some(d) = self.index.tag(repo, t.as_str()) {
                    return Ok(d);
                }
                let epoch = self.index.epoch();
                let raw = read_optional(&self.tag_path(repo, t.as_str()))
                    .await?
                    .ok_or_else(|| manifest_unknown(repo, reference))?;
                let d: Digest = String::from_utf8_lossy(&raw)
                    .trim()
                    .parse()
                    .map_err(|e| RegistryError::internal("tag file is corrupt", e))?;
                self.index.fill_tag(epoch, repo, t.as_str(), &d);
                Ok(d)
            }
        }
    }

    /// Fetches a manifest by tag or digest.
    pub async fn get_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> ApiResult<StoredManifest> {
        let digest = self.resolve(repo, reference).await?;
        let media_type = match self.index.revision(repo, &digest) {
            Some(media) => String::from(&*media),
            None => {
                let epoch = self.index.epoch();
                let media = read_optional(&self.revision_link(repo, &digest))
                    .await?
                    .ok_or_else(|| manifest_unknown(repo, reference))?;
                let media_type = String::from_utf8(media)
                    .map_err(|e| RegistryError::internal("revision link is corrupt", e))?;
                self.index.fill_revision(epoch, repo, &digest, &media_type);
                media_type
            }
        };
        let cached = self
            .manifest_cache
            .lock()
            .expect("cache lock")
            .entries
            .get(&digest)
            .cloned();
        let bytes = match cached {
            Some(b) => b,
            None => {
                let b = Bytes::from(
                    read_optional(&self.blob_path(&digest))
                        .await?
                        .ok_or_else(|| manifest_unknown(repo, reference))?,
                );
                self.cache_manifest(&digest, &b);
                b
            }
        };
        Ok(StoredManifest {
            digest,
            media_type,
            bytes,
        })
    }

    fn cache_manifest(&self, digest: &Digest, bytes: &Bytes) {
        let mut cache = self.manifest_cache.lock().expect("cache lock");
        if cache.bytes + bytes.len() <= MANIFEST_CACHE_BYTES && !cache.entries.contains_key(digest)
        {
            cache.bytes += bytes.len();
            cache.entries.insert(digest.clone(), bytes.clone());
        }
    }

    /// Deletes a tag, or a manifest by digest together with every tag pointing at it and its
    /// referrers entry. Returns the tags removed.
    pub async fn delete_manifest(
        &self,
        repo: &RepoName,
        reference: &Reference,
    ) -> ApiResult<Vec<Tag>> {
        let mut removed = Vec::new();
        match reference {
            Reference::Tag(t) => {
                let gone = remove_optional(&self.tag_path(repo, t.as_str())).await;
                self.index.forget_tag(repo, t.as_str());
                if !gone? {
                    return Err(manifest_unknown(repo, reference));
                }
                removed.push(t.clone());
            }
            Reference::Digest(d) => {
                let stored = self.get_manifest(repo, reference).await?;
                let gone = remove_optional(&self.revision_link(repo, d)).await;
                self.index.forget_revision(repo, d);
                if !gone? {
                    return Err(manifest_unknown(repo, reference));
                }
                self.mark_deleted(repo, d).await?;
                for tag in self.all_tags(repo).await.unwrap_or_default() {
                    let path = self.tag_path(repo, &tag);
                    if read_optional(&path)
                        .await?
                        .is_some_and(|v| v.trim_ascii() == d.to_string().as_bytes())
                    {
                        let gone = remove_optional(&path).await;
                        self.index.forget_tag(repo, &tag);
                        gone?;
                        if let Ok(tag) = tag.parse() {
                            removed.push(tag);
                        }
                    }
                }
                if let Ok(m) = Manifest::parse(&stored.bytes, Some(&stored.media_type))
                    && let Some(subject) = m.subject
                {
                    let entry = self.referrers_dir(repo, &subject.digest).join(format!(
                        "{}-{}",
                        d.algorithm().as_str(),
                        d.hex()
                    ));
                    remove_optional(&entry).await?;
                }
            }
        }
        Ok(removed)
    }

    /// All tags of `repo`, sorted; `NAME_UNKNOWN` when the repository does not exist.
    pub async fn all_tags(&self, repo: &RepoName) -> ApiResult<Vec<String>> {
        let dir = self.repo_dir(repo);
        let tags_dir = dir.join("_manifests/tags");
        tokio::task::spawn_blocking(move || -> io::Result<Option<Vec<String>>> {
            if !exists(&dir)? {
                return Ok(None);
            }
            let mut tags = list_names(&tags_dir)?;
            tags.sort();
            Ok(Some(tags))
        })
        .await
        .map_err(io::Error::other)??
        .ok_or_else(|| name_unknown(repo))
    }

    /// Every repository name in the store, sorted.
    pub async fn catalog(&self) -> io::Result<Vec<String>> {
        let root = self.root.join("repositories");
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk_repos(&root, String::new(), &mut out)?;
            out.sort();
            Ok(out)
        })
        .await
        .map_err(io::Error::other)?
    }

    /// Descriptors of the manifests in `repo` whose `subject` is `subject`.
    pub async fn referrers(&self, repo: &RepoName, subject: &Digest) -> ApiResult<Vec<Descriptor>> {
        let dir = self.referrers_dir(repo, subject);
        let mut out = Vec::new();
        for name in tokio::task::spawn_blocking(move || list_names(&dir))
            .await
            .map_err(io::Error::other)??
        {
            let path = self.referrers_dir(repo, subject).join(&name);
            let Some(raw) = read_optional(&path).await? else {
                continue;
            };
            match serde_json::from_slice::<Descriptor>(&raw) {
                Ok(d) => out.push(d),
                Err(e) => {
                    tracing::warn!(path = %path.display(), %e, "skipping unreadable referrer entry")
                }
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }
}

/// File names in a directory; empty when it does not exist.
pub(super) fn list_names(dir: &Path) -> io::Result<Vec<String>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e?;
        if let Some(n) = e.file_name().to_str() {
            out.push(n.to_owned());
        }
    }
    Ok(out)
}

/// Collects repository names: a directory holding `_manifests` or `_layers` is a repository;
/// name components never start with `_`, so the two cannot collide.
pub(super) fn walk_repos(dir: &Path, prefix: String, out: &mut Vec<String>) -> io::Result<()> {
    for name in list_names(dir)? {
        if name.starts_with('_') {
            continue;
        }
        let path = dir.join(&name);
        if !path.is_dir() {
            continue;
        }
        let full = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if path.join("_manifests").is_dir() || path.join("_layers").is_dir() {
            out.push(full.clone());
        }
        walk_repos(&path, full, out)?;
    }
    Ok(())
}
