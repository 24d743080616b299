//! The client side of the build-index's tag API, shared by the agent (which resolves tags) and
//! the proxy (which also sets and deletes them): `GET`, `PUT` and `DELETE` of
//! `/tags/{repo}:{tag}` and the list of `/repositories/{repo}/tags`, tried at each
//! build-index host in turn until one answers.

use shoal_p2p::with_causes;
use std::time::Duration;

use shoal_config::HostPort;
use shoal_p2p::tls::{ClusterHttp, ClusterTls};
use shoal_registry::{ApiResult, Digest, ErrorCode, RegistryError, RepoName, Tag, TagKey};

use crate::http::segment;
use reqwest::StatusCode;

/// How long one tag request at a build-index may take.
const TAG_TIMEOUT: Duration = Duration::from_secs(30);

/// The most a build-index's tag list may take (a million tags of 16 bytes, about).
const MAX_TAG_LIST_BYTES: usize = 16 << 20;

/// The body of `GET /repositories/{repo}/tags`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TagList {
    /// The repository's tags, sorted.
    pub tags: Vec<String>,
}

/// The build-index hosts, asked in order: the first one that answers decides.
pub struct TagClient {
    hosts: Vec<HostPort>,
    http: ClusterHttp,
}

impl TagClient {
    /// A client of `hosts` (an empty list knows no tags and cannot set any), over HTTPS when
    /// `tls` says so.
    pub fn new(hosts: Vec<HostPort>, tls: &ClusterTls) -> Result<Self, reqwest::Error> {
        Ok(TagClient {
            hosts,
            http: tls.http(Some(TAG_TIMEOUT))?,
        })
    }

    /// The digest `key` points at; `None` when a build-index says it is not tagged.
    /// `UNAVAILABLE` when no build-index answered.
    pub async fn get(&self, key: &TagKey) -> ApiResult<Option<Digest>> {
        let path = format!("/tags/{}", segment(&key.to_string()));
        let Some((host, r)) = self.first_answer(&path, &[StatusCode::NOT_FOUND]).await? else {
            return Ok(None);
        };
        if !r.status().is_success() {
            return Ok(None);
        }
        let text = r.text().await.unwrap_or_default();
        text.trim().parse().map(Some).map_err(|e| {
            RegistryError::new(
                ErrorCode::Unavailable,
                format!("build-index {host} sent a bad digest for {key}: {e}"),
            )
        })
    }

    /// Every tag of `repo`, as the first build-index that answers lists them; `None` when its
    /// backend cannot list (501) or it predates the list (404). `UNAVAILABLE` when no
    /// build-index answered or one sent something else than a list. Names that are not tags
    /// are left out.
    pub async fn list(&self, repo: &RepoName) -> ApiResult<Option<Vec<String>>> {
        let path = format!("/repositories/{}/tags", segment(repo.as_str()));
        let unlisted = [StatusCode::NOT_FOUND, StatusCode::NOT_IMPLEMENTED];
        let Some((host, r)) = self.first_answer(&path, &unlisted).await? else {
            return Ok(None);
        };
        if !r.status().is_success() {
            return Ok(None);
        }
        let bad = |why: String| {
            RegistryError::new(
                ErrorCode::Unavailable,
                format!("build-index {host} sent a bad tag list for {repo}: {why}"),
            )
        };
        let body = read_capped(r, MAX_TAG_LIST_BYTES).await.map_err(bad)?;
        let list: TagList = serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))?;
        Ok(Some(
            list.tags
                .into_iter()
                .filter(|t| t.parse::<Tag>().is_ok())
                .collect(),
        ))
    }

    /// `GET path` at each host in turn until one answers with a success or one of `decisive`;
    /// `None` when there are no hosts. `UNAVAILABLE`, with the last failure, when none did.
    async fn first_answer(
        &self,
        path: &str,
        decisive: &[StatusCode],
    ) -> ApiResult<Option<(&HostPort, reqwest::Response)>> {
        let mut last = None;
        for host in &self.hosts {
            match self.http.get(self.http.url(host, path)).send().await {
                Ok(r) if r.status().is_success() || decisive.contains(&r.status()) => {
                    return Ok(Some((host, r)));
                }
                Ok(r) => last = Some(format!("build-index {host}: {}", r.status())),
                Err(e) => last = Some(format!("build-index {host}: {}", with_causes(&e))),
            }
        }
        match last {
            Some(why) => Err(RegistryError::new(ErrorCode::Unavailable, why)),
            None => Ok(None),
        }
    }

    /// [`TagClient::list`] for a registry that can fall back on the tags it knows itself:
    /// `None` (logged) when no build-index answered, as a tag read serves its last digest then.
    pub async fn list_or_local(&self, repo: &RepoName) -> ApiResult<Option<Vec<String>>> {
        match self.list(repo).await {
            Err(e) if e.code == ErrorCode::Unavailable => {
                tracing::warn!(repository = %repo, error = %e.message, "listing the tags this node knows: no build-index listed them");
                Ok(None)
            }
            other => other,
        }
    }

    /// Points `key` at `d` at the first build-index that takes it.
    pub async fn put(&self, key: &TagKey, d: &Digest) -> ApiResult<()> {
        let path = format!("/tags/{}/digest/{d}", segment(&key.to_string()));
        self.write(reqwest::Method::PUT, &path, key, false).await
    }

    /// Removes `key` at the first build-index that answers; an unknown tag is not an error.
    pub async fn delete(&self, key: &TagKey) -> ApiResult<()> {
        let path = format!("/tags/{}", segment(&key.to_string()));
        self.write(reqwest::Method::DELETE, &path, key, true).await
    }

    /// Sends a write to each host in turn until one answers; `gone_ok` counts a 404 as done.
    async fn write(
        &self,
        method: reqwest::Method,
        path: &str,
        key: &TagKey,
        gone_ok: bool,
    ) -> ApiResult<()> {
        if self.hosts.is_empty() {
            return Err(RegistryError::new(
                ErrorCode::Unavailable,
                format!("no build-index is configured to keep {key} (build_index.hosts)"),
            ));
        }
        let mut last = String::new();
        for host in &self.hosts {
            let url = self.http.url(host, path);
            match self.http.request(method.clone(), &url).send().await {
                Ok(r)
                    if r.status().is_success()
                        || (gone_ok && r.status() == reqwest::StatusCode::NOT_FOUND) =>
                {
                    return Ok(());
                }
                Ok(r) if r.status().is_client_error() => {
                    let status = r.status();
                    let body = r.text().await.unwrap_or_default();
                    return Err(RegistryError::new(
                        ErrorCode::Unavailable,
                        format!("build-index {host} refused {method} of {key}: {status} {body}"),
                    ));
                }
                Ok(r) => last = format!("build-index {host}: {}", r.status()),
                Err(e) => last = format!("build-index {host}: {}", with_causes(&e)),
            }
        }
        Err(RegistryError::new(ErrorCode::Unavailable, last))
    }
}

/// `r`'s body, or why not: it failed, or it is longer than `cap`.
async fn read_capped(mut r: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| with_causes(&e))? {
        if body.len() + chunk.len() > cap {
            return Err(format!("longer than {cap} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
