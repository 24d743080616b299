//! The seed's `backends:` list: each namespace goes to the first entry whose regex matches it
//! whole and that holds the kind of content asked for, with that entry's bandwidth limits.
//!
//! Kraken gives the origin (blobs) and build-index (tags) separate lists; `shoal dev` has one,
//! so a `registry_blob` entry (or a store with `name_path: sharded_docker_blob`) serves only
//! blobs and a `registry_tag` entry (or `name_path: docker_tag`) only tags, and such a
//! namespace lists one of each, as an origin's and a build-index's files would.

use std::sync::Arc;

use shoal_config::{AuthConfig, BackendEntry, NamespacePattern};

use super::rate::RateLimit;
use crate::plugin::{Backend, LoadError, PluginEngine};

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
        let name_path = match backend {
            B::RegistryBlob(_) => return Holds::Blobs,
            B::RegistryTag(_) => return Holds::Tags,
            B::S3(c) => c.name_path,
            B::Gcs(c) => c.name_path,
            B::Hdfs(c) => c.name_path,
            B::Fs(c) => c.name_path,
            B::Http(_) | B::Plugin(_) => return Holds::Both,
        };
        match name_path {
            NamePath::ShardedDockerBlob => Holds::Blobs,
            NamePath::DockerTag => Holds::Tags,
            NamePath::Identity => Holds::Both,
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
    /// The backend (a plugin).
    pub backend: Arc<dyn Backend>,
    /// Paces downloads from the backend, when `bandwidth.enable`.
    pub ingress: Option<Arc<RateLimit>>,
    /// Paces uploads to the backend, when `bandwidth.enable`.
    pub egress: Option<Arc<RateLimit>>,
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route")
            .field("namespace", &self.pattern.as_str())
            .field("holds", &self.holds)
            .field("backend", &self.backend.name())
            .field("ingress", &self.ingress.is_some())
            .field("egress", &self.egress.is_some())
            .finish()
    }
}

/// Namespace → backend, in the order the config lists them.
#[derive(Debug, Default)]
pub struct NamespaceRouter {
    routes: Vec<Route>,
}

impl NamespaceRouter {
    /// Loads every entry's plugin (with its `auth:` secrets) in order.
    pub fn load(
        engine: &PluginEngine,
        entries: &[BackendEntry],
        auth: &AuthConfig,
    ) -> Result<Self, LoadError> {
        let mut routes = Vec::with_capacity(entries.len());
        for entry in entries {
            let backend = engine.backend(&entry.backend, auth.secrets_for(&entry.backend))?;
            let (ingress, egress) = RateLimit::from_config(&entry.bandwidth);
            routes.push(Route {
                pattern: entry.namespace.clone(),
                holds: Holds::of(&entry.backend),
                backend: Arc::new(backend),
                ingress,
                egress,
            });
        }
        Ok(NamespaceRouter { routes })
    }

    /// A router over routes built by hand (custom or native backends, tests).
    pub fn new(routes: Vec<Route>) -> Self {
        NamespaceRouter { routes }
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
    use crate::plugin::PluginEngine;

    #[test]
    fn first_match_wins_and_registry_kinds_hold_one_content() {
        let entries: Vec<BackendEntry> = serde_yaml_ng::from_str(
            "- namespace: library/.*\n  backend:\n    registry_blob: {address: 127.0.0.1:1}\n\
             - namespace: library/.*\n  backend:\n    registry_tag: {address: 127.0.0.1:1}\n\
             - namespace: team/.*\n  backend:\n    fs: {root: /tmp/shoal-router-a}\n\
             - namespace: .*\n  backend:\n    fs: {root: /tmp/shoal-router-b}\n",
        )
        .unwrap();
        let engine = PluginEngine::new(Default::default(), None).unwrap();
        let router = NamespaceRouter::load(&engine, &entries, &AuthConfig::default()).unwrap();
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
