//! [`StorageBacking`]: the registry's durable storage over the namespace router, with Kraken's
//! naming. The namespace is the repository; a blob is named by its digest's hex (as Kraken's
//! origin names it, so an existing Kraken bucket reads as is; other algorithms keep their
//! `alg:` prefix), a tag by `<repository>:<tag>`, whose content is the digest it points at
//! (as Kraken's build-index stores tags).

use std::path::Path;
use std::sync::Arc;

use futures_util::StreamExt;
use shoal_registry::error::ApiResult;
use shoal_registry::{
    Algorithm, Backing, BlobStat, BodyStream, Digest, ErrorCode, RegistryError, RepoName, Tag,
    TagKey,
};

use crate::router::{Content, NamespaceRouter, Route};
use crate::{BackendError, ByteStream};

/// The most a tag object may hold: a digest string and some slack.
const MAX_TAG_BYTES: usize = 1024;
/// Names asked for per `list` call when listing a repository's tags.
const TAG_PAGE: u32 = 1000;
/// The most pages of tags one listing reads (a backend whose continuation never ends).
const MAX_TAG_PAGES: usize = 1000;
/// Read size when streaming a committed blob to a backend.
const UPLOAD_CHUNK: usize = 1 << 20;

/// The registry's [`Backing`] over the storage backends (plugins or native), routed by
/// namespace.
#[derive(Debug)]
pub struct StorageBacking {
    router: Arc<NamespaceRouter>,
}

impl StorageBacking {
    /// Backing over `router`.
    pub fn new(router: Arc<NamespaceRouter>) -> Self {
        StorageBacking { router }
    }

    /// Blob `d` of `repo` from the backend its namespace routes to, with its length when the
    /// backend says it (the origin picks a piece length by it), or `None` when not held.
    pub async fn download_blob(
        &self,
        repo: &RepoName,
        d: &Digest,
    ) -> ApiResult<Option<(Option<u64>, BodyStream)>> {
        self.download_object(repo, &blob_name(d)).await
    }

    /// Object `name` of `repo`'s blob route, with its length when the backend says it.
    async fn download_object(
        &self,
        repo: &RepoName,
        name: &str,
    ) -> ApiResult<Option<(Option<u64>, BodyStream)>> {
        let Some(route) = self.route(repo, Content::Blobs) else {
            return Ok(None);
        };
        match route.backend.download(repo.as_str(), name, None).await {
            Ok(download) => {
                let body = route.bandwidth.pace_ingress(download.body);
                Ok(Some((download.length, body)))
            }
            Err(BackendError::NotFound { .. }) => Ok(None),
            Err(e) => Err(api_error(repo, e)),
        }
    }

    fn route(&self, repo: &RepoName, content: Content) -> Option<&Route> {
        let route = self.router.route(repo.as_str(), content);
        if route.is_none() {
            tracing::warn!(namespace = %repo, ?content, "no `backends:` entry holds this");
        }
        route
    }

    /// The route for a write, which has nowhere to go without one.
    fn route_for_write(&self, repo: &RepoName, content: Content) -> ApiResult<&Route> {
        self.route(repo, content).ok_or_else(|| {
            let what = match content {
                Content::Blobs => "blobs",
                Content::Tags => "tags",
            };
            RegistryError::new(
                ErrorCode::Denied,
                format!(
                    "namespace {repo} matches no `backends:` entry that holds {what}, so \
                     nothing can be stored there"
                ),
            )
        })
    }
}

/// A blob's object name.
fn blob_name(d: &Digest) -> String {
    match d.algorithm() {
        Algorithm::Sha256 => d.hex().to_owned(),
        _ => d.to_string(),
    }
}

/// A tag's object name.
fn tag_name(repo: &RepoName, tag: &Tag) -> String {
    TagKey::new(repo.clone(), tag.clone()).to_string()
}

/// A backend failure as the API reports it: the code the client can act on, and a message
/// naming the plugin and the namespace.
fn api_error(repo: &RepoName, e: BackendError) -> RegistryError {
    let code = match &e {
        BackendError::NotFound { .. } => ErrorCode::BlobUnknown,
        BackendError::Unauthorized { .. } => ErrorCode::Unauthorized,
        BackendError::Throttled { .. } => ErrorCode::TooManyRequests,
        BackendError::Invalid { .. } => ErrorCode::Denied,
        BackendError::Unavailable { .. }
        | BackendError::Trapped { .. }
        | BackendError::BreakerOpen { .. } => ErrorCode::Unavailable,
        BackendError::Other { .. } | BackendError::HostDenied { .. } => ErrorCode::Unknown,
    };
    tracing::warn!(namespace = %repo, plugin = e.plugin(), "storage backend call failed: {e}");
    RegistryError::new(code, format!("storage backend for namespace {repo}: {e}"))
        .with_detail(serde_json::json!({ "plugin": e.plugin(), "namespace": repo.as_str() }))
}

/// A committed file as a stream of 1 MiB chunks.
async fn file_stream(path: &Path) -> std::io::Result<ByteStream> {
    let file = tokio::fs::File::open(path).await?;
    Ok(Box::pin(tokio_util::io::ReaderStream::with_capacity(
        file,
        UPLOAD_CHUNK,
    )))
}

#[async_trait::async_trait]
impl Backing for StorageBacking {
    async fn put_blob(&self, repo: &RepoName, d: &Digest, path: &Path, size: u64) -> ApiResult<()> {
        let route = self.route_for_write(repo, Content::Blobs)?;
        let name = blob_name(d);
        // Content-addressed: a copy of the right size is this content already.
        match route.backend.stat(repo.as_str(), &name).await {
            Ok(info) if info.size == size => return Ok(()),
            Ok(_) | Err(BackendError::NotFound { .. }) => {}
            Err(e) => return Err(api_error(repo, e)),
        }
        // The local store's blob files are immutable once committed: a backend on the same
        // disk shares the file instead of holding a second copy.
        if route
            .backend
            .link_file(repo.as_str(), &name, path)
            .await
            .map_err(|e| api_error(repo, e))?
        {
            return Ok(());
        }
        let body = route.bandwidth.pace_egress(file_stream(path).await?);
        route
            .backend
            .upload(repo.as_str(), &name, size, body)
            .await
            .map_err(|e| api_error(repo, e))
    }

    async fn get_blob(&self, repo: &RepoName, d: &Digest) -> ApiResult<Option<BodyStream>> {
        Ok(self.download_blob(repo, d).await?.map(|(_, body)| body))
    }

    async fn get_blob_sized(
        &self,
        repo: &RepoName,
        d: &Digest,
    ) -> ApiResult<Option<(Option<u64>, BodyStream)>> {
        self.download_blob(repo, d).await
    }

    async fn stat_blob(&self, repo: &RepoName, d: &Digest) -> ApiResult<BlobStat> {
        let Some(route) = self.route(repo, Content::Blobs) else {
            return Ok(BlobStat::Absent);
        };
        match route.backend.stat(repo.as_str(), &blob_name(d)).await {
            Ok(info) => Ok(BlobStat::Present(info.size)),
            Err(BackendError::NotFound { .. }) => Ok(BlobStat::Absent),
            Err(e) => Err(api_error(repo, e)),
        }
    }

    async fn get_blob_range(
        &self,
        repo: &RepoName,
        d: &Digest,
        offset: u64,
        length: u64,
    ) -> ApiResult<Option<BodyStream>> {
        let Some(route) = self.route(repo, Content::Blobs) else {
            return Ok(None);
        };
        let range = crate::ByteRange {
            offset,
            length: Some(length),
        };
        match route
            .backend
            .download(repo.as_str(), &blob_name(d), Some(range))
            .await
        {
            Ok(download) if download.length.is_none_or(|n| n == length) => {
                Ok(Some(route.bandwidth.pace_ingress(download.body)))
            }
            Ok(download) => Err(RegistryError::new(
                ErrorCode::Unavailable,
                format!(
                    "storage backend {} for namespace {repo} answered a range of {length} bytes \
                     with {:?}",
                    route.backend.name(),
                    download.length
                ),
            )),
            Err(BackendError::NotFound { .. }) => Ok(None),
            // A backend that cannot read ranges: the blob is fetched whole instead.
            Err(BackendError::Invalid { message, .. }) => {
                tracing::debug!(namespace = %repo, plugin = route.backend.name(), "ranged read refused, fetching the whole blob: {message}");
                Ok(None)
            }
            Err(e) => Err(api_error(repo, e)),
        }
    }

    async fn list_tags(&self, repo: &RepoName) -> ApiResult<Option<Vec<String>>> {
        let Some(route) = self.router.route(repo.as_str(), Content::Tags) else {
            return Ok(None);
        };
        let prefix = format!("{repo}:");
        let mut tags = Vec::new();
        let mut continuation: Option<String> = None;
        for _ in 0..MAX_TAG_PAGES {
            let page = match route
                .backend
                .list(repo.as_str(), &prefix, continuation.clone(), TAG_PAGE)
                .await
            {
                Ok(page) => page,
                // A backend that cannot list (plain HTTP, a blob-only registry): the local
                // store's tags are the list.
                Err(BackendError::Invalid { message, .. }) => {
                    tracing::debug!(namespace = %repo, plugin = route.backend.name(), "tags not listed by the backend: {message}");
                    return Ok(None);
                }
                Err(BackendError::NotFound { .. }) => return Ok(Some(tags)),
                Err(e) => return Err(api_error(repo, e)),
            };
            tags.extend(
                page.names
                    .iter()
                    .filter_map(|name| name.strip_prefix(&prefix))
                    .filter(|tag| tag.parse::<Tag>().is_ok())
                    .map(str::to_owned),
            );
            match page.continuation {
                Some(next) if Some(&next) != continuation.as_ref() => continuation = Some(next),
                _ => return Ok(Some(tags)),
            }
        }
        Err(RegistryError::new(
            ErrorCode::Unavailable,
            format!(
                "storage backend {} for namespace {repo} listed more than {} pages of tags",
                route.backend.name(),
                MAX_TAG_PAGES
            ),
        ))
    }

    async fn get_manifest(&self, repo: &RepoName, d: &Digest) -> ApiResult<Option<BodyStream>> {
        // A storage backend keeps a manifest as the blob it is. An upstream registry keeps
        // manifests apart: `manifest:<digest>` asks it for one as such, so it is not asked
        // for a blob first (a 404 per manifest on every cold pull).
        let upstream = self
            .router
            .route(repo.as_str(), Content::Blobs)
            .is_some_and(|r| r.upstream);
        let name = if upstream {
            format!("manifest:{d}")
        } else {
            blob_name(d)
        };
        Ok(self
            .download_object(repo, &name)
            .await?
            .map(|(_, body)| body))
    }

    async fn delete_blob(&self, repo: &RepoName, d: &Digest) -> ApiResult<()> {
        let Some(route) = self.route(repo, Content::Blobs) else {
            return Ok(());
        };
        match route.backend.delete(repo.as_str(), &blob_name(d)).await {
            Ok(()) | Err(BackendError::NotFound { .. }) => Ok(()),
            Err(e) => Err(api_error(repo, e)),
        }
    }

    async fn put_tag(&self, repo: &RepoName, tag: &Tag, d: &Digest) -> ApiResult<()> {
        let route = self.route_for_write(repo, Content::Tags)?;
        let content = bytes::Bytes::from(d.to_string());
        let size = content.len() as u64;
        let body: ByteStream = Box::pin(futures_util::stream::iter([Ok(content)]));
        route
            .backend
            .upload(repo.as_str(), &tag_name(repo, tag), size, body)
            .await
            .map_err(|e| api_error(repo, e))
    }

    fn tags_move_upstream(&self, repo: &RepoName) -> bool {
        self.router
            .route(repo.as_str(), Content::Tags)
            .is_some_and(|r| r.upstream)
    }

    async fn get_tag(&self, repo: &RepoName, tag: &Tag) -> ApiResult<Option<Digest>> {
        let Some(route) = self.route(repo, Content::Tags) else {
            return Ok(None);
        };
        let name = tag_name(repo, tag);
        let mut body = match route.backend.download(repo.as_str(), &name, None).await {
            Ok(download) => download.body,
            Err(BackendError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(api_error(repo, e)),
        };
        let mut raw = Vec::new();
        while let Some(chunk) = body.next().await {
            raw.extend_from_slice(&chunk?);
            if raw.len() > MAX_TAG_BYTES {
                break;
            }
        }
        let bad = |why: String| {
            RegistryError::new(
                ErrorCode::Unavailable,
                format!(
                    "storage backend {} for namespace {repo}: tag object {name} {why}",
                    route.backend.name()
                ),
            )
        };
        if raw.len() > MAX_TAG_BYTES {
            return Err(bad(format!("is over {MAX_TAG_BYTES} bytes, not a digest")));
        }
        let text = String::from_utf8(raw).map_err(|_| bad("is not text".into()))?;
        text.trim()
            .parse()
            .map(Some)
            .map_err(|e| bad(format!("does not hold a digest: {e}")))
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> ApiResult<()> {
        let route = self.route_for_write(repo, Content::Tags)?;
        match route
            .backend
            .delete(repo.as_str(), &tag_name(repo, tag))
            .await
        {
            Ok(()) | Err(BackendError::NotFound { .. }) => Ok(()),
            Err(e) => Err(api_error(repo, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBackend;

    /// plugins/README.md's table of what each WIT error becomes on the API is what
    /// `api_error` does: the first code of each row and its status, variant by variant.
    #[test]
    fn the_authors_guide_says_what_each_wit_error_becomes() {
        let guide = include_str!("../../plugins/README.md");
        let repo: RepoName = "team/app".parse().unwrap();
        let plugin = || "p".to_owned();
        let message = || "why".to_owned();
        let variants = [
            (
                "not-found",
                BackendError::NotFound {
                    plugin: plugin(),
                    name: "x".into(),
                },
            ),
            (
                "unauthorized",
                BackendError::Unauthorized {
                    plugin: plugin(),
                    message: message(),
                },
            ),
            (
                "throttled",
                BackendError::Throttled {
                    plugin: plugin(),
                    message: message(),
                },
            ),
            (
                "invalid",
                BackendError::Invalid {
                    plugin: plugin(),
                    message: message(),
                },
            ),
            (
                "unavailable",
                BackendError::Unavailable {
                    plugin: plugin(),
                    message: message(),
                },
            ),
            (
                "other",
                BackendError::Other {
                    plugin: plugin(),
                    message: message(),
                },
            ),
        ];
        for (variant, error) in variants {
            let row = guide
                .lines()
                .find(|l| l.starts_with(&format!("| `{variant}` |")))
                .unwrap_or_else(|| panic!("plugins/README.md has no row for `{variant}`"));
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let (code, status) = api_error(&repo, error).code.describe();
            assert!(
                cells[2].starts_with(&format!("`{code}`")),
                "`{variant}` becomes {code}, the guide says {}",
                cells[2]
            );
            assert_eq!(
                cells[3],
                status.as_str(),
                "`{variant}` is HTTP {status}, the guide says {}",
                cells[3]
            );
        }
    }

    #[tokio::test]
    async fn delete_blob_removes_the_routed_copy_and_tolerates_a_missing_one() {
        let memory = Arc::new(MemoryBackend::new("memory"));
        let backing = StorageBacking::new(Arc::new(NamespaceRouter::single(memory.clone())));
        let repo: RepoName = "team/app".parse().unwrap();
        let d = Digest::sha256_of(b"layer");
        memory.insert("team/app", d.hex(), &b"layer"[..]);
        backing.delete_blob(&repo, &d).await.unwrap();
        assert!(memory.get("team/app", d.hex()).is_none());
        // Already gone: not an error, as a second collection may find it so.
        backing.delete_blob(&repo, &d).await.unwrap();
    }
}
