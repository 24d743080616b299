//! The seed's `backends:` list: each namespace goes to the first entry whose regex matches it
//! whole and that holds the kind of content asked for, with that entry's bandwidth limits.
//!
//! Kraken gives the origin (blobs) and build-index (tags) separate lists; `shoal dev` has one,
//! so a `registry_blob` entry (or a store with `name_path: sharded_docker_blob`) serves only
//! blobs and a `registry_tag` entry (or `name_path: docker_tag`) only tags, and such a
//! namespace lists one of each, as an origin's and a build-index's files would.

use std::sync::Arc;

use shoal_config::{BackendEntry, NamespacePattern};

use crate::metered::{BackendMetrics, Metered};
use crate::{Backend, BandwidthError, BandwidthLimiter};

/// What a request to the backends is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// Blobs and manifests, by digest.
    Blobs,
    /// Tags, by `<repository>:<tag>`.
    Tags,
}

/// What a backend holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holds {
    /// Only blobs (`registry_blob`).
    Blobs,
    /// Only tags (`registry_tag`).
    Tags,
    /// Anything (storage backends: fs, s3, http, custom plugins...).
    Both,
}

impl Holds {
    /// What a configured backend holds: the registry kinds one content each, as do stores
    /// whose `name_path` can only name one (`sharded_docker_blob` digests, `docker_tag`
    /// `<repository>:<tag>`); anything else both.
    pub fn of(backend: &shoal_config::Backend) -> Holds {
        use shoal_config::{Backend as B, NamePath};
        match backend {
            B::RegistryBlob(_) => Holds::Blobs,
            B::RegistryTag(_) => Holds::Tags,
            other => match other.settings().name_path() {
                Some(NamePath::ShardedDockerBlob) => Holds::Blobs,
                Some(NamePath::DockerTag) => Holds::Tags,
                Some(NamePath::Identity) | None => Holds::Both,
            },
        }
    }

    fn serves(self, content: Content) -> bool {
        matches!(
            (self, content),
            (Holds::Both, _) | (Holds::Blobs, Content::Blobs) | (Holds::Tags, Content::Tags)
        )
    }
}

/// One `backends:` item, running.
pub struct Route {
    /// Which namespaces it serves.
    pub pattern: NamespacePattern,
    /// Which content it serves.
    pub holds: Holds,
    /// An upstream registry's content (`registry_blob`, `registry_tag`): read-only here, and
    /// its tags move there without this registry seeing it.
    pub upstream: bool,
    /// The backend (a plugin, or a native one).
    pub backend: Arc<dyn Backend>,
    /// Paces downloads (ingress) and uploads (egress), when `bandwidth.enable`.
    pub bandwidth: BandwidthLimiter,
}

/// Why a `backends:` list cannot be turned into a router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError<E: std::error::Error + 'static> {
    /// The loader could not build the entry's backend.
    #[error("backends[{index}] (namespace {namespace}): {source}")]
    Load {
        /// Position in the list.
        index: usize,
        /// The entry's namespace regex.
        namespace: String,
        /// What the loader said.
        #[source]
        source: E,
    },
    /// The entry's `bandwidth:` block cannot be enforced.
    #[error("backends[{index}].bandwidth: {source}")]
    Bandwidth {
        /// Position in the list.
        index: usize,
        /// Why.
        #[source]
        source: BandwidthError,
    },
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("namespace", &self.pattern.as_str())
            .field("holds", &self.holds)
            .field("upstream", &self.upstream)
            .field("backend", &self.backend.name())
            .field("bandwidth", &self.bandwidth.is_limited())
            .finish()
    }
}

/// Namespace → backend, in the order the config lists them. Every backend is called through
/// [`Metered`], so each call shows in the router's [`BackendMetrics`].
#[derive(Debug, Default)]
pub struct NamespaceRouter {
    routes: Vec<Route>,
    metrics: Arc<BackendMetrics>,
}

impl NamespaceRouter {
    /// Builds every entry's backend with `load` (the plugin host's loader, or a native one in
    /// tests and simulations), in order.
    pub fn load<E: std::error::Error + 'static>(
        entries: &[BackendEntry],
        mut load: impl FnMut(&BackendEntry) -> Result<Arc<dyn Backend>, E>,
    ) -> Result<Self, RouterError<E>> {
        let metrics = Arc::new(BackendMetrics::default());
        let mut routes = Vec::with_capacity(entries.len());
        for (index, entry) in entries.iter().enumerate() {
            let backend = load(entry).map_err(|source| RouterError::Load {
                index,
                namespace: entry.namespace.as_str().to_owned(),
                source,
            })?;
            let bandwidth = BandwidthLimiter::new(&entry.bandwidth)
                .map_err(|source| RouterError::Bandwidth { index, source })?;
            routes.push(Route {
                pattern: entry.namespace.clone(),
                holds: Holds::of(&entry.backend),
                upstream: matches!(
                    entry.backend,
                    shoal_config::Backend::RegistryBlob(_) | shoal_config::Backend::RegistryTag(_)
                ),
                backend: Metered::wrap(backend, &metrics),
                bandwidth,
            });
        }
        Ok(NamespaceRouter { routes, metrics })
    }

    /// A router sending every namespace to `backend`, for blobs and tags, unlimited.
    pub fn single(backend: Arc<dyn Backend>) -> Self {
        NamespaceRouter::new(vec![Route {
            pattern: NamespacePattern::any(),
            holds: Holds::Both,
            upstream: false,
            backend,
            bandwidth: BandwidthLimiter::unlimited(),
        }])
    }

    /// A router over routes built by hand (custom or native backends, tests).
    pub fn new(mut routes: Vec<Route>) -> Self {
        let metrics = Arc::new(BackendMetrics::default());
        for route in &mut routes {
            route.backend = Metered::wrap(route.backend.clone(), &metrics);
        }
        NamespaceRouter { routes, metrics }
    }

    /// The calls made through this router, for `/metrics`.
    pub fn metrics(&self) -> &Arc<BackendMetrics> {
        &self.metrics
    }

    /// The first route whose pattern matches `namespace` whole and that holds `content`.
    pub fn route(&self, namespace: &str, content: Content) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.holds.serves(content) && r.pattern.matches(namespace))
    }

    /// All routes, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryBackend;

    #[test]
    fn first_match_wins_and_registry_kinds_hold_one_content() {
        let entries: Vec<BackendEntry> = serde_yaml_ng::from_str(
            "- namespace: library/.*\n  backend:\n    registry_blob: {address: 127.0.0.1:1}\n\
             - namespace: library/.*\n  backend:\n    registry_tag: {address: 127.0.0.1:1}\n\
             - namespace: team/.*\n  backend:\n    fs: {root: /tmp/shoal-router-a}\n\
             - namespace: .*\n  backend:\n    fs: {root: /tmp/shoal-router-b}\n",
        )
        .unwrap();
        let router = NamespaceRouter::load(&entries, |_| {
            Ok::<_, std::io::Error>(Arc::new(MemoryBackend::new("memory")) as Arc<dyn Backend>)
        })
        .unwrap();
        let kind = |ns: &str, c: Content| router.route(ns, c).map(|r| r.holds);
        assert_eq!(kind("library/alpine", Content::Blobs), Some(Holds::Blobs));
        assert_eq!(kind("library/alpine", Content::Tags), Some(Holds::Tags));
        assert_eq!(kind("team/app", Content::Tags), Some(Holds::Both));
        let team = router.route("team/app", Content::Blobs).unwrap();
        assert_eq!(team.pattern.as_str(), "team/.*");
        // Anchored: `team/.*` does not match `myteam/app`, the catch-all does.
        let other = router.route("myteam/app", Content::Blobs).unwrap();
        assert_eq!(other.pattern.as_str(), ".*");
        assert!(
            NamespaceRouter::default()
                .route("x", Content::Blobs)
                .is_none()
        );
    }
}
