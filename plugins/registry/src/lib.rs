//! `registry_blob` and `registry_tag`: a Docker registry (Docker Hub, ECR, GHCR, any
//! Distribution v2 registry) as a read-only backend, which is how an origin mirrors upstream
//! images and a build-index resolves upstream tags. One component serves both; the host
//! writes which one into the config as `kind`.
//!
//! Names follow Kraken's registry backends: for `registry_blob` the namespace is the
//! repository and the name the digest (bare hex, as Kraken passes it, or `sha256:<hex>`); a
//! digest the registry does not know as a blob is tried as a manifest, since Kraken stores
//! manifests as blobs too. A name `manifest:<digest>` is a manifest and only that: shoal
//! names manifests so when it knows it wants one, and the upstream is asked once, not for a
//! blob first. For `registry_tag` the name is `<repo>:<tag>` and the download is
//! the manifest's digest string (`sha256:...`), which is what a build-index stores for a tag.
//! `stat` of a tag gives the length of that string (Kraken's gives the manifest's length,
//! which no download of the tag ever has).
//!
//! Blob bodies are handed to the host (`body.incoming`) and never cross guest memory.

mod client;
mod ecr;
mod reference;

/// The prefix of a name that asks for a manifest by digest, not a blob.
const MANIFEST_PREFIX: &str = "manifest:";

use std::cell::Cell;
use std::time::Duration;

use serde::Deserialize;
use shoal_plugin_sdk::backend::{
    BlobInfo, BlobStream, Body, ByteRange, Error, Guest, GuestReader, InputStream, ListPage, Reader,
};
use shoal_plugin_sdk::bindings::export_backend;
use shoal_plugin_sdk::http::{self, IncomingResponse, Method};
use shoal_plugin_sdk::url::{self, Url};
use shoal_plugin_sdk::{config, duration};

use client::{LoginSource, Registry};
use reference::{Digest, Kind, MANIFEST_TYPES};

/// The keys of the `registry_blob:` / `registry_tag:` block this plugin reads, plus `kind`,
/// which the host adds. `allowed_hosts` is the host's business and ignored here.
#[derive(Deserialize)]
struct Config {
    kind: Kind,
    address: String,
    #[serde(
        default = "default_timeout",
        deserialize_with = "duration::deserialize"
    )]
    timeout: Duration,
    #[serde(default)]
    security: Security,
}

fn default_timeout() -> Duration {
    Duration::from_secs(60)
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Security {
    basic: Option<Basic>,
    tls: Tls,
    #[serde(rename = "credsStore")]
    creds_store: Option<String>,
    ecr: EcrOverride,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Basic {
    username: String,
    password: String,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct Tls {
    client: TlsClient,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct TlsClient {
    disabled: bool,
    cert: Option<String>,
    key: Option<String>,
    ca: Option<String>,
}

/// `security.ecr`: where the ECR API is and which region to sign for, when the registry's
/// address does not say (a mirror, a VPC endpoint, a test's fake).
#[derive(Default, Deserialize)]
#[serde(default)]
struct EcrOverride {
    endpoint: Option<String>,
    region: Option<String>,
}

/// Manifests are small; a bigger answer is not a manifest.
const MANIFEST_LIMIT: usize = 4 << 20;
/// Tag lists are read whole when the registry ignores `n`; bounded all the same.
const TAG_LIST_LIMIT: usize = 16 << 20;

/// The parsed config: what every call needs.
struct Plugin {
    kind: Kind,
    registry: Registry,
    /// The registry's host without the port, for Docker Hub naming.
    host: String,
}

fn plugin() -> Result<Plugin, Error> {
    let config: Config = config::load().map_err(Error::Invalid)?;
    let tls = &config.security.tls.client;
    let scheme = if tls.disabled {
        url::Scheme::Http
    } else {
        url::Scheme::Https
    };
    if !tls.disabled && (tls.cert.is_some() || tls.key.is_some() || tls.ca.is_some()) {
        return Err(Error::Invalid(
            "security.tls.client cert/key/ca are not supported by the registry plugin: the host's wasi:http client trusts the system's web PKI roots only".into(),
        ));
    }
    let address = config.address.trim();
    // A full URL is taken too; its scheme then wins over `tls.client.disabled`.
    let (scheme, authority) = match Url::parse(address) {
        Ok(u) => (u.scheme, u.authority),
        Err(_) => (scheme, address.trim_end_matches('/').to_owned()),
    };
    if authority.is_empty() || authority.contains(['/', '@', ' ']) {
        return Err(Error::Invalid(format!(
            "address {address:?} is not a registry host like index.docker.io or 127.0.0.1:5000"
        )));
    }
    let host = Url {
        scheme,
        authority: authority.clone(),
        path_with_query: "/".into(),
    }
    .host()
    .to_owned();
    let login = match config.security.creds_store.as_deref() {
        None | Some("") => match config.security.basic {
            Some(b) if !b.username.is_empty() => LoginSource::Basic {
                username: b.username,
                password: b.password,
            },
            _ => LoginSource::None,
        },
        Some("ecr-login") => {
            let ecr = config.security.ecr;
            let region = ecr
                .region
                .or_else(|| reference::ecr_region(&host))
                .ok_or_else(|| {
                    Error::Invalid(format!(
                        "credsStore ecr-login: {host:?} is not an ECR host (<account>.dkr.ecr.<region>.amazonaws.com); set security.ecr.region"
                    ))
                })?;
            let endpoint = ecr.endpoint.unwrap_or_else(|| ecr::endpoint(&region));
            let endpoint = Url::parse(&endpoint)
                .map_err(|e| Error::Invalid(format!("security.ecr.endpoint: {e}")))?;
            LoginSource::Ecr { endpoint, region }
        }
        Some(other) => {
            return Err(Error::Invalid(format!(
                "credsStore {other:?} is not supported: only ecr-login is built in (a credential helper program cannot run inside the plugin sandbox)"
            )));
        }
    };
    Ok(Plugin {
        kind: config.kind,
        registry: Registry {
            scheme,
            authority,
            timeout: config.timeout,
            login,
        },
        host,
    })
}

impl Plugin {
    /// The repository as the registry names it, checked.
    fn repository(&self, repo: &str) -> Result<String, Error> {
        reference::check_repository(repo).map_err(Error::Invalid)?;
        Ok(reference::upstream_repository(&self.host, repo))
    }

    fn scope(repo: &str) -> String {
        format!("repository:{repo}:pull")
    }

    /// GET or HEAD of a manifest by tag or digest, asking for every manifest type.
    fn manifest(
        &self,
        method: Method,
        repo: &str,
        reference: &str,
        what: &str,
    ) -> Result<IncomingResponse, Error> {
        self.registry.send(
            method,
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("accept", MANIFEST_TYPES)],
            &Plugin::scope(repo),
            what,
        )
    }

    /// The digest a tag points at: `Docker-Content-Digest`, or the SHA-256 of the manifest
    /// when the registry does not send it.
    fn tag_digest(&self, name: &str, what: &str) -> Result<String, Error> {
        let (repo, tag) = reference::split_tag(name).map_err(Error::Invalid)?;
        let repo = self.repository(repo)?;
        let head = self.manifest(Method::Head, &repo, tag, what)?;
        if let Some(digest) = http::header(&head, "docker-content-digest") {
            return Digest::from_name(digest.trim())
                .map(|d| d.to_string())
                .map_err(|e| Error::Other(format!("{what}: Docker-Content-Digest: {e}")));
        }
        let get = self.manifest(Method::Get, &repo, tag, what)?;
        let body = read_manifest(get, what)?;
        Ok(Digest::sha256_of(&body).to_string())
    }

    fn blob_stat(&self, repo: &str, name: &str) -> Result<BlobInfo, Error> {
        if let Some(name) = name.strip_prefix(MANIFEST_PREFIX) {
            let digest = Digest::from_name(name).map_err(Error::Invalid)?;
            let repo = self.repository(repo)?;
            let response = self.manifest(Method::Head, &repo, digest.as_str(), "stat manifest")?;
            let size = http::content_length(&response)
                .ok_or_else(|| Error::Other("stat: the registry sent no Content-Length".into()))?;
            return Ok(BlobInfo { size });
        }
        let digest = Digest::from_name(name).map_err(Error::Invalid)?;
        let repo = self.repository(repo)?;
        let response = match self.registry.send(
            Method::Head,
            &format!("/v2/{repo}/blobs/{digest}"),
            &[],
            &Plugin::scope(&repo),
            "stat blob",
        ) {
            // Kraken's blob backend does the same: the registry keeps manifests apart from
            // blobs, and a manifest is a blob to Kraken.
            Err(Error::NotFound) => {
                self.manifest(Method::Head, &repo, digest.as_str(), "stat manifest")?
            }
            other => other?,
        };
        let size = http::content_length(&response)
            .ok_or_else(|| Error::Other("stat: the registry sent no Content-Length".into()))?;
        Ok(BlobInfo { size })
    }

    fn blob_download(
        &self,
        repo: &str,
        name: &str,
        range: Option<ByteRange>,
    ) -> Result<BlobStream, Error> {
        if let Some(name) = name.strip_prefix(MANIFEST_PREFIX) {
            let digest = Digest::from_name(name).map_err(Error::Invalid)?;
            let repo = self.repository(repo)?;
            let response =
                self.manifest(Method::Get, &repo, digest.as_str(), "download manifest")?;
            let body = read_manifest(response, "download manifest")?;
            return bytes_stream(body, range);
        }
        let digest = Digest::from_name(name).map_err(Error::Invalid)?;
        let repo = self.repository(repo)?;
        let range_value = http::range_header(range)?;
        let mut headers = Vec::new();
        if let Some(v) = &range_value {
            headers.push(("range", v.as_str()));
        }
        let response = match self.registry.send(
            Method::Get,
            &format!("/v2/{repo}/blobs/{digest}"),
            &headers,
            &Plugin::scope(&repo),
            "download blob",
        ) {
            Err(Error::NotFound) => {
                // Manifests are small and registries do not serve ranges of them: read it
                // here and cut the range out.
                let response =
                    self.manifest(Method::Get, &repo, digest.as_str(), "download manifest")?;
                let body = read_manifest(response, "download manifest")?;
                return bytes_stream(body, range);
            }
            other => other?,
        };
        http::passthrough(response, range)
    }

    /// One page of `<repo>:<tag>` names from `tags/list`. The registry is asked for `n` tags
    /// after `last`; a registry that ignores both (Distribution 2.x does) is paged here.
    fn list_tags(
        &self,
        namespace: &str,
        prefix: &str,
        continuation: Option<String>,
        limit: u32,
    ) -> Result<ListPage, Error> {
        let repo = if namespace.is_empty() {
            prefix.split(':').next().unwrap_or("")
        } else {
            namespace
        };
        let upstream = self.repository(repo)?;
        let limit = limit.max(1) as usize;
        let mut path = format!("/v2/{upstream}/tags/list?n={limit}");
        if let Some(last) = &continuation {
            reference::check_tag(last).map_err(Error::Invalid)?;
            path.push_str(&format!("&last={}", url::percent_encode(last, "")));
        }
        let response = self.registry.send(
            Method::Get,
            &path,
            &[],
            &Plugin::scope(&upstream),
            "list tags",
        )?;
        // Where the registry says the next page starts, when it pages.
        let next_upstream = http::header(&response, "link")
            .and_then(|h| reference::next_link(&h))
            .map(|link| reference::query_param(&link, "last"));
        let body = http::read_small_body(response, TAG_LIST_LIMIT)
            .map_err(|e| Error::from_http(&e, "list tags"))?;
        #[derive(Deserialize)]
        struct Tags {
            tags: Option<Vec<String>>,
        }
        let tags: Tags = serde_json::from_slice(&body)
            .map_err(|e| Error::Other(format!("list tags: the answer is not a tag list: {e}")))?;
        let mut tags: Vec<String> = tags
            .tags
            .unwrap_or_default()
            .into_iter()
            .filter(|t| continuation.as_ref().is_none_or(|last| t > last))
            .collect();
        tags.sort();
        // More tags than `limit` came back: the registry ignored `n`, so page here.
        let truncated = tags.len() > limit;
        tags.truncate(limit);
        let mut names: Vec<String> = Vec::new();
        let mut last_seen = None;
        for tag in &tags {
            let name = format!("{repo}:{tag}");
            if name.starts_with(prefix) {
                names.push(name);
            }
            last_seen = Some(tag.clone());
        }
        let continuation = match next_upstream {
            Some(last) => last.or(last_seen),
            None if truncated => last_seen,
            None => None,
        };
        Ok(ListPage {
            names,
            continuation,
        })
    }
}

fn read_manifest(response: IncomingResponse, what: &str) -> Result<Vec<u8>, Error> {
    let body = http::read_small_body(response, MANIFEST_LIMIT + 1)
        .map_err(|e| Error::from_http(&e, what))?;
    if body.len() > MANIFEST_LIMIT {
        return Err(Error::Other(format!(
            "{what}: the manifest is over {MANIFEST_LIMIT} bytes"
        )));
    }
    Ok(body)
}

/// A download of bytes the plugin holds (a manifest, a digest string), cut to `range`.
fn bytes_stream(data: Vec<u8>, range: Option<ByteRange>) -> Result<BlobStream, Error> {
    let data = match range {
        None => data,
        Some(r) => {
            let start = usize::try_from(r.offset).unwrap_or(usize::MAX);
            if start > data.len() || (start == data.len() && !data.is_empty()) {
                return Err(Error::Invalid(format!(
                    "range starts at {} but the blob has {} bytes",
                    r.offset,
                    data.len()
                )));
            }
            let end = match r.length {
                Some(len) => start.saturating_add(usize::try_from(len).unwrap_or(usize::MAX)),
                None => data.len(),
            }
            .min(data.len());
            data[start..end].to_vec()
        }
    };
    Ok(BlobStream {
        length: Some(data.len() as u64),
        body: Body::Reader(Reader::new(Bytes {
            data,
            at: Cell::new(0),
        })),
    })
}

fn read_only(what: &str) -> Error {
    Error::Invalid(format!(
        "registry backends are read-only: {what} is not supported (push to the registry itself)"
    ))
}

struct RegistryBackend;

impl Guest for RegistryBackend {
    type Reader = Bytes;

    fn stat(namespace: String, name: String) -> Result<BlobInfo, Error> {
        let p = plugin()?;
        match p.kind {
            Kind::Blob => p.blob_stat(&namespace, &name),
            Kind::Tag => {
                let digest = p.tag_digest(&name, "stat tag")?;
                Ok(BlobInfo {
                    size: digest.len() as u64,
                })
            }
        }
    }

    fn download(
        namespace: String,
        name: String,
        range: Option<ByteRange>,
    ) -> Result<BlobStream, Error> {
        let p = plugin()?;
        match p.kind {
            Kind::Blob => p.blob_download(&namespace, &name, range),
            Kind::Tag => {
                let digest = p.tag_digest(&name, "download tag")?;
                bytes_stream(digest.into_bytes(), range)
            }
        }
    }

    fn upload(
        _namespace: String,
        _name: String,
        _size: u64,
        _body: InputStream,
    ) -> Result<(), Error> {
        Err(read_only("upload"))
    }

    fn list(
        namespace: String,
        prefix: String,
        continuation: Option<String>,
        limit: u32,
    ) -> Result<ListPage, Error> {
        let p = plugin()?;
        match p.kind {
            Kind::Tag => p.list_tags(&namespace, &prefix, continuation, limit),
            // The Distribution API has no way to list a repository's blobs.
            Kind::Blob => Err(Error::Invalid(
                "registry_blob cannot list blobs: the registry API has no blob listing".into(),
            )),
        }
    }

    fn delete(_namespace: String, _name: String) -> Result<(), Error> {
        Err(read_only("delete"))
    }
}

/// Bytes the plugin holds, read out by the host chunk by chunk.
struct Bytes {
    data: Vec<u8>,
    at: Cell<usize>,
}

impl GuestReader for Bytes {
    fn read(&self, max: u64) -> Result<Option<Vec<u8>>, Error> {
        let at = self.at.get();
        if at >= self.data.len() {
            return Ok(None);
        }
        let end = at
            .saturating_add(usize::try_from(max).unwrap_or(usize::MAX))
            .min(self.data.len());
        self.at.set(end);
        Ok(Some(self.data[at..end].to_vec()))
    }
}

export_backend!(RegistryBackend);
