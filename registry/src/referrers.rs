//! Referrers kept in the backing under the OCI referrers tag schema, for registries whose
//! backing owns the tags (the proxy writes, agents read): the referrers of subject
//! `<alg>:<hex>` in a repository are the image index that tag `<alg>-<hex>` names, as
//! distribution-spec v1.1 has clients keep it on registries without the referrers API. An
//! agent learns of a signature pushed through the proxy by that tag (from the build-index)
//! and the index (over P2P), as it learns of any image; its local store knows only what it
//! pulled.
//!
//! `shoal dev` reads the same index in pull-through namespaces, where the upstream registry
//! keeps it (its clients write it when the upstream lacks the referrers API), so a client
//! asking `shoal dev` sees what it would see upstream.
//!
//! Two pushes of referrers of one subject at the same moment through two proxies can lose one
//! of them from the index (each reads, adds and writes the tag), as with the spec's
//! client-side schema; through one proxy they are serialized.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::api::Registry;
use crate::digest::Digest;
use crate::error::{ApiResult, ErrorCode, RegistryError};
use crate::manifest::{Descriptor, MAX_MANIFEST_BYTES, Manifest, OCI_INDEX};
use crate::name::{Reference, RepoName, Tag};

/// The index a referrers tag names.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
struct ReferrersIndex {
    schema_version: u32,
    media_type: String,
    #[serde(default)]
    manifests: Vec<Descriptor>,
}

/// The tag that names the referrers index of `subject`: `<alg>-<hex>`, the hex cut to 64
/// characters as the spec's schema says (a sha512 digest would pass the 128-character tag
/// limit).
pub fn referrers_tag(subject: &Digest) -> Tag {
    let hex = subject.hex();
    format!(
        "{}-{}",
        subject.algorithm().as_str(),
        &hex[..hex.len().min(64)]
    )
    .parse()
    .expect("an algorithm and at most 64 hex digits make a valid tag")
}

impl Registry {
    /// Keeps referrers in the backing under the referrers tag schema (see the module): a
    /// manifest with a `subject` pushed here is added to its subject's index, one deleted is
    /// removed, and the referrers API adds the index's entries to the local store's. For the
    /// proxy and the agents, whose backing (the build-index and the origins) owns the tags.
    pub fn referrers_in_backing(mut self) -> Self {
        self.referrers_in_backing = true;
        self
    }

    /// The referrers of `subject` in `repo`: the local store's; with
    /// [`Registry::referrers_in_backing`], or in a namespace whose tags an upstream registry
    /// owns (pull-through: clients of an upstream without the referrers API keep the same
    /// index there), the backing's index too; on a read-only registry (an agent) that index
    /// alone, since what the agent pulled may have been deleted since.
    pub(crate) async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> ApiResult<Vec<Descriptor>> {
        let upstream = self
            .backing
            .as_ref()
            .is_some_and(|b| b.tags_move_upstream(repo));
        if !(self.referrers_in_backing || upstream) || self.backing.is_none() {
            return self.store.referrers(repo, subject).await;
        }
        let mut found = match self.read_only {
            Some(_) => Vec::new(),
            None => self.store.referrers(repo, subject).await?,
        };
        let index = match self.read_index(repo, subject).await? {
            Ok(index) => index,
            Err(why) => {
                tracing::warn!(%repo, %subject, %why, "listing no referrers from the backing");
                ReferrersIndex::default()
            }
        };
        for entry in index.manifests {
            if !found.iter().any(|f| f.digest == entry.digest) {
                found.push(entry);
            }
        }
        found.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(found)
    }

    /// Adds `entry`, a manifest of `repo` whose subject is `subject`, to the backing's index
    /// of `subject`'s referrers.
    pub(crate) async fn add_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        entry: Descriptor,
    ) -> ApiResult<()> {
        self.change_index(repo, subject, |list| {
            list.retain(|d| d.digest != entry.digest);
            list.push(entry);
        })
        .await
    }

    /// Removes manifest `gone` from the backing's index of `subject`'s referrers.
    pub(crate) async fn remove_referrer(
        &self,
        repo: &RepoName,
        subject: &Digest,
        gone: &Digest,
    ) -> ApiResult<()> {
        self.change_index(repo, subject, |list| list.retain(|d| d.digest != *gone))
            .await
    }

    async fn change_index(
        &self,
        repo: &RepoName,
        subject: &Digest,
        change: impl FnOnce(&mut Vec<Descriptor>),
    ) -> ApiResult<()> {
        if !self.referrers_in_backing || self.backing.is_none() || self.read_only.is_some() {
            return Ok(());
        }
        let tag = referrers_tag(subject);
        // One change per subject at a time here: read, change, write.
        let _turn = self.referrer_turns.lock(subject).await;
        let mut index = self.read_index(repo, subject).await?.map_err(|why| {
            RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!("stored, but not listed among {subject}'s referrers: {why}"),
            )
        })?;
        change(&mut index.manifests);
        index.schema_version = 2;
        index.media_type = OCI_INDEX.to_owned();
        let bytes = Bytes::from(
            serde_json::to_vec(&index)
                .map_err(|e| RegistryError::internal("encoding a referrers index", e))?,
        );
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(RegistryError::new(
                ErrorCode::ManifestInvalid,
                format!(
                    "the referrers index of {subject} in {repo} would exceed {MAX_MANIFEST_BYTES} bytes"
                ),
            ));
        }
        let manifest = Manifest::parse(&bytes, Some(OCI_INDEX))?;
        let digest = Digest::sha256_of(&bytes);
        self.store
            .adopt_manifest(repo, &digest, bytes, &manifest, Some(&tag))
            .await?;
        self.persist_manifest(repo, &Reference::Tag(tag), &digest)
            .await
    }

    /// The index tag `<alg>-<hex>` names now (as the backing resolves it), an empty one when
    /// there is no such tag, or why what it names is not a referrers index.
    async fn read_index(
        &self,
        repo: &RepoName,
        subject: &Digest,
    ) -> ApiResult<Result<ReferrersIndex, String>> {
        let tag = Reference::Tag(referrers_tag(subject));
        match self.read_manifest(repo, &tag, false).await {
            Ok(m) => Ok(match serde_json::from_slice::<ReferrersIndex>(&m.bytes) {
                Ok(index) if m.media_type == OCI_INDEX => Ok(index),
                Ok(_) => Err(format!(
                    "tag {tag} of {repo} names a {}, not a referrers index (an OCI image index)",
                    m.media_type
                )),
                Err(e) => Err(format!(
                    "tag {tag} of {repo} does not name a referrers index: {e}"
                )),
            }),
            Err(e) if e.code == ErrorCode::ManifestUnknown => Ok(Ok(ReferrersIndex::default())),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_is_the_algorithm_and_hex_of_the_subject() {
        let d = Digest::sha256_of(b"x");
        assert_eq!(referrers_tag(&d).as_str(), format!("sha256-{}", d.hex()));
        let long: Digest = format!("sha512:{}", "ab".repeat(64)).parse().unwrap();
        assert_eq!(
            referrers_tag(&long).as_str(),
            format!("sha512-{}", "ab".repeat(32))
        );
    }
}
