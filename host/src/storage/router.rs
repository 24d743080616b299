//! The seed's `backends:` list: each namespace goes to the first entry whose regex matches it
//! whole, with that entry's bandwidth limits.

use std::sync::Arc;

use shoal_config::{AuthConfig, BackendEntry, NamespacePattern};

use super::rate::RateLimit;
use crate::plugin::{Backend, LoadError, PluginEngine};

/// One `backends:` item, running.
pub struct Route {
    /// Which namespaces it serves.
    pub pattern: NamespacePattern,
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

    /// The first route whose pattern matches `namespace` whole.
    pub fn route(&self, namespace: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.pattern.matches(namespace))
    }

    /// All routes, in order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}
