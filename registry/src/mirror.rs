//! containerd's `?ns=`: one mirror serves several upstream registries on one address, and
//! containerd names the upstream host of each request in the query
//! (`GET /v2/org/app/manifests/v1?ns=ghcr.io`). [`Mirrors`] maps that host and the path's
//! repository to a repository of this registry (by default Docker Hub's names as they are and
//! any other host's under `<host>/`), and [`apply`] rewrites every `/v2/<name>/...` request
//! with it before the API sees it. A host that is not mirrored gets `NAME_UNKNOWN` (404), which
//! makes containerd fall back to its next host. Requests without `ns` (Docker's
//! `registry-mirrors` sends none) pass unchanged.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::Uri;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::route::{self, Route};
use crate::error::{ErrorCode, RegistryError};
use crate::name::RepoName;

/// The names Docker Hub goes by; their repositories keep their names (`library/alpine`), as
/// Docker's `registry-mirrors` sends them.
pub const DOCKER_HUB: [&str; 3] = ["docker.io", "registry-1.docker.io", "index.docker.io"];

/// Which upstream hosts are mirrored, and where each one's repositories live here.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mirrors {
    /// `None`: every host, with the default prefix. Otherwise only these hosts (lowercase
    /// `host[:port]`), each with its prefix (`None`: names as they are).
    only: Option<BTreeMap<String, Option<RepoName>>>,
}

/// A `mirrors` entry that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MirrorError {
    /// The key is not `host[:port]`.
    #[error("mirrored host {0:?} is not host[:port], like ghcr.io or registry.local:5000")]
    Host(String),
    /// The value is neither empty nor a repository name.
    #[error(
        "prefix {prefix:?} of mirrored host {host} is not a repository name like `ghcr.io` or `mirrors/ghcr` (or empty, for names as they are)"
    )]
    Prefix {
        /// The key.
        host: String,
        /// The value.
        prefix: String,
    },
}

impl Mirrors {
    /// Every upstream host mirrored: Docker Hub's names as they are, any other host `h`'s
    /// under `h/` (a port's `:` written `_`, as a name cannot hold `:`).
    pub fn all() -> Self {
        Mirrors::default()
    }

    /// Only the hosts listed, each under its prefix (empty: names as they are); `entries` are
    /// the config's `registry.mirrors`.
    pub fn only<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, MirrorError> {
        let mut only = BTreeMap::new();
        for (host, prefix) in entries {
            let key = host_key(host).ok_or_else(|| MirrorError::Host(host.to_owned()))?;
            let prefix = match prefix {
                "" => None,
                p => Some(p.parse().map_err(|_| MirrorError::Prefix {
                    host: host.to_owned(),
                    prefix: p.to_owned(),
                })?),
            };
            only.insert(key, prefix);
        }
        Ok(Mirrors { only: Some(only) })
    }

    /// The repository here that holds upstream `ns`'s repository `name`. `NAME_UNKNOWN` for a
    /// host not mirrored, `NAME_INVALID` for an `ns` that is not a host or a result too long.
    pub fn repository(&self, ns: &str, name: &RepoName) -> Result<RepoName, RegistryError> {
        let host = host_key(ns).ok_or_else(|| {
            RegistryError::new(
                ErrorCode::NameInvalid,
                format!("ns={ns:?} is not a registry host like ghcr.io or registry.local:5000"),
            )
        })?;
        let not_mirrored = || {
            RegistryError::new(
                ErrorCode::NameUnknown,
                format!("this registry does not mirror {host}"),
            )
        };
        let prefix = match &self.only {
            Some(only) => only.get(&host).ok_or_else(not_mirrored)?.clone(),
            None if DOCKER_HUB.contains(&host.as_str()) => None,
            None => Some(
                host.replace(':', "_")
                    .parse::<RepoName>()
                    .map_err(|_| not_mirrored())?,
            ),
        };
        let Some(prefix) = prefix else {
            return Ok(name.clone());
        };
        let joined = format!("{}/{}", prefix.as_str(), name.as_str());
        joined.parse().map_err(|_| {
            RegistryError::new(
                ErrorCode::NameInvalid,
                format!(
                    "{name} of {host} would be {joined} here, which is longer than a name may be"
                ),
            )
        })
    }

    /// `path` with its repository mapped for upstream `ns`; `Ok(None)` for paths without a
    /// repository (`/v2/`, the catalog, anything the API does not know), left as they are.
    pub fn rewrite_path(&self, path: &str, ns: &str) -> Result<Option<String>, RegistryError> {
        let repo = match route::parse(path) {
            Ok(Ok(
                Route::Blob(r, _)
                | Route::UploadStart(r)
                | Route::Upload(r, _)
                | Route::Manifest(r, _)
                | Route::Tags(r)
                | Route::Referrers(r, _),
            )) => r,
            _ => return Ok(None),
        };
        // The parser took the name from the segments right after `/v2/`, as they are.
        let rest = &path["/v2/".len() + repo.as_str().len()..];
        let mapped = self.repository(ns, &repo)?;
        Ok(Some(format!("/v2/{}{rest}", mapped.as_str())))
    }
}

/// `input` as a lowercase `host[:port]` (the port without leading zeros), or `None`: a DNS
/// name or IPv4 address, or an IPv6 address in brackets, with an optional port from 1 to 65535.
pub fn host_key(input: &str) -> Option<String> {
    let lower = input.to_ascii_lowercase();
    let (host, port) = match lower.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']')?;
            ip.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (&lower[..ip.len() + 2], port)
        }
        None => {
            let (host, port) = match lower.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (lower.as_str(), None),
            };
            if !is_dns_name(host) {
                return None;
            }
            (host, port)
        }
    };
    match port {
        None => Some(host.to_owned()),
        Some(p) => {
            if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            let n: u32 = p.parse().ok()?;
            (1..=65535).contains(&n).then(|| format!("{host}:{n}"))
        }
    }
}

/// Dot-separated labels of letters, digits and inner `-`, as DNS names (and IPv4 addresses)
/// are written.
fn is_dns_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Rewrites every request that carries `ns` with `mirrors` (see the module doc); the layer an
/// agent puts on its registry router.
pub fn apply(router: Router, mirrors: Mirrors) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        Arc::new(mirrors),
        rewrite,
    ))
}

async fn rewrite(State(mirrors): State<Arc<Mirrors>>, mut req: Request, next: Next) -> Response {
    let query = req.uri().query().map(crate::api::url_pairs);
    let Some(ns) = query.as_ref().and_then(|q| q.get("ns")) else {
        return next.run(req).await;
    };
    match mirrors.rewrite_path(req.uri().path(), ns) {
        Ok(None) => next.run(req).await,
        Ok(Some(path)) => {
            let path_and_query = match req.uri().query() {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            let mut parts = req.uri().clone().into_parts();
            match path_and_query.parse() {
                Ok(pq) => parts.path_and_query = Some(pq),
                Err(e) => {
                    return RegistryError::internal("rewriting a mirrored path", e).into_response();
                }
            }
            match Uri::from_parts(parts) {
                Ok(uri) => *req.uri_mut() = uri,
                Err(e) => {
                    return RegistryError::internal("rewriting a mirrored path", e).into_response();
                }
            }
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    fn code(r: Result<RepoName, RegistryError>) -> ErrorCode {
        r.unwrap_err().code
    }

    #[test]
    fn by_default_docker_hub_keeps_its_names_and_other_hosts_get_a_prefix() {
        let all = Mirrors::all();
        let app = name("org/app");
        for hub in ["docker.io", "registry-1.docker.io", "Index.Docker.IO"] {
            assert_eq!(all.repository(hub, &app).unwrap(), app, "{hub}");
        }
        assert_eq!(
            all.repository("ghcr.io", &app).unwrap(),
            name("ghcr.io/org/app")
        );
        assert_eq!(
            all.repository("registry.local:5000", &app).unwrap(),
            name("registry.local_5000/org/app")
        );
        // An IPv6 host cannot be a name component: not mirrored by default.
        assert_eq!(
            code(all.repository("[::1]:5000", &app)),
            ErrorCode::NameUnknown
        );
        assert_eq!(
            code(all.repository("not a host", &app)),
            ErrorCode::NameInvalid
        );
        assert_eq!(code(all.repository("", &app)), ErrorCode::NameInvalid);
    }

    #[test]
    fn a_list_mirrors_only_its_hosts_under_their_prefixes() {
        let only = Mirrors::only([
            ("docker.io", ""),
            ("GHCR.io", "mirrors/ghcr"),
            ("[::1]:05000", "v6"),
        ])
        .unwrap();
        let app = name("org/app");
        assert_eq!(only.repository("docker.io", &app).unwrap(), app);
        assert_eq!(
            only.repository("ghcr.io", &app).unwrap(),
            name("mirrors/ghcr/org/app")
        );
        assert_eq!(
            only.repository("[::1]:5000", &app).unwrap(),
            name("v6/org/app")
        );
        assert_eq!(
            code(only.repository("quay.io", &app)),
            ErrorCode::NameUnknown
        );
        assert_eq!(
            code(only.repository("registry-1.docker.io", &app)),
            ErrorCode::NameUnknown
        );
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(matches!(
            Mirrors::only([("ghcr.io/x", "")]),
            Err(MirrorError::Host(_))
        ));
        assert!(matches!(
            Mirrors::only([("ghcr.io:0", "")]),
            Err(MirrorError::Host(_))
        ));
        assert!(matches!(
            Mirrors::only([("-a.io", "")]),
            Err(MirrorError::Host(_))
        ));
        assert!(matches!(
            Mirrors::only([("ghcr.io", "Upper")]),
            Err(MirrorError::Prefix { .. })
        ));
        assert!(matches!(
            Mirrors::only([("ghcr.io", "a//b")]),
            Err(MirrorError::Prefix { .. })
        ));
    }

    #[test]
    fn too_long_a_result_is_an_invalid_name() {
        let long = name(&"a".repeat(250));
        assert_eq!(
            code(Mirrors::all().repository("ghcr.io", &long)),
            ErrorCode::NameInvalid
        );
    }

    #[test]
    fn paths_keep_everything_after_the_name() {
        let all = Mirrors::all();
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        for (path, want) in [
            (
                "/v2/org/app/manifests/v1".to_owned(),
                "/v2/ghcr.io/org/app/manifests/v1".to_owned(),
            ),
            (
                format!("/v2/org/app/blobs/{d}"),
                format!("/v2/ghcr.io/org/app/blobs/{d}"),
            ),
            (
                "/v2/org/app/tags/list".to_owned(),
                "/v2/ghcr.io/org/app/tags/list".to_owned(),
            ),
            (
                format!("/v2/a/referrers/{d}"),
                format!("/v2/ghcr.io/a/referrers/{d}"),
            ),
            (
                "/v2/a/blobs/uploads/".to_owned(),
                "/v2/ghcr.io/a/blobs/uploads/".to_owned(),
            ),
        ] {
            assert_eq!(
                all.rewrite_path(&path, "ghcr.io").unwrap(),
                Some(want),
                "{path}"
            );
        }
        for path in [
            "/v2/",
            "/v2/_catalog",
            "/health",
            "/v2/a/unknown/x",
            "/v2/A/manifests/v1",
        ] {
            assert_eq!(all.rewrite_path(path, "ghcr.io").unwrap(), None, "{path}");
        }
        let only = Mirrors::only([("ghcr.io", "")]).unwrap();
        assert_eq!(
            only.rewrite_path("/v2/a/manifests/v1", "quay.io")
                .unwrap_err()
                .code,
            ErrorCode::NameUnknown
        );
    }

    fn component() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,6}([._-][a-z0-9]{1,4})?"
    }

    fn repo() -> impl Strategy<Value = RepoName> {
        proptest::collection::vec(component(), 1..4).prop_map(|c| c.join("/").parse().unwrap())
    }

    fn dns_host() -> impl Strategy<Value = String> {
        "[a-z0-9]{1,8}(-[a-z0-9]{1,4})?(\\.[a-z0-9]{1,8}){0,3}"
    }

    proptest! {
        #[test]
        fn docker_hub_names_never_change(name in repo(), hub in 0..3usize) {
            prop_assert_eq!(Mirrors::all().repository(DOCKER_HUB[hub], &name).unwrap(), name);
        }

        #[test]
        fn other_hosts_prefix_the_name(name in repo(), host in dns_host(), port in proptest::option::of(1..=65535u32)) {
            prop_assume!(!DOCKER_HUB.contains(&host.as_str()));
            let ns = match port { Some(p) => format!("{host}:{p}"), None => host.clone() };
            let got = Mirrors::all().repository(&ns, &name).unwrap();
            let want = match port { Some(p) => format!("{host}_{p}/{name}"), None => format!("{host}/{name}") };
            prop_assert_eq!(got.as_str(), want.as_str());
        }

        #[test]
        fn a_listed_prefix_is_put_before_the_name(name in repo(), prefix in repo(), host in dns_host()) {
            let only = Mirrors::only([(host.as_str(), prefix.as_str())]).unwrap();
            let got = only.repository(&host.to_ascii_uppercase(), &name).unwrap();
            prop_assert_eq!(got.as_str(), format!("{prefix}/{name}"));
            let other = format!("x{host}");
            prop_assert_eq!(only.repository(&other, &name).unwrap_err().code, ErrorCode::NameUnknown);
        }

        #[test]
        fn rewriting_never_panics(path in "(/v2)?(/[a-zA-Z0-9:._-]{0,8}){0,6}/?", ns in "\\PC{0,20}") {
            let _ = Mirrors::all().rewrite_path(&path, &ns);
            let _ = host_key(&ns);
        }
    }
}
