//! The seed's `backends:` list as running plugins: the plugin host's loader for
//! [`shoal_storage::NamespaceRouter`], and health policies as the roles' health filters.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use shoal_config::{AuthConfig, BackendEntry};
use shoal_p2p::HealthFilter;
use shoal_storage::router::RouterError;
use shoal_storage::{Backend, HealthPolicy, NamespaceRouter};

use crate::plugin::{LoadError, PluginEngine};

/// Loads every entry's plugin (with its `auth:` secrets) in order into a router.
pub fn load_router(
    engine: &PluginEngine,
    entries: &[BackendEntry],
    auth: &AuthConfig,
) -> Result<NamespaceRouter, RouterError<LoadError>> {
    NamespaceRouter::load(entries, |entry| {
        let backend = engine.backend(&entry.backend, auth.secrets_for(&entry.backend))?;
        Ok(Arc::new(backend) as Arc<dyn Backend>)
    })
}

/// A health-policy component as the roles' [`HealthFilter`]: a policy that cannot answer
/// (trapped, breaker open) fails open, so a broken plugin never takes every host away.
pub struct PolicyFilter(pub Arc<dyn HealthPolicy>);

#[async_trait]
impl HealthFilter for PolicyFilter {
    async fn observe(&self, host: &str, ok: bool, now: SystemTime) {
        if let Err(e) = self.0.observe(host, ok, now).await {
            tracing::warn!(%host, %e, "health policy failed to record a check");
        }
    }

    async fn healthy(&self, host: &str, now: SystemTime) -> bool {
        self.0.healthy(host, now).await.unwrap_or_else(|e| {
            tracing::warn!(%host, %e, "health policy failed; treating the host as healthy");
            true
        })
    }
}

/// `policy` as a [`HealthFilter`].
pub fn filter(policy: Arc<dyn HealthPolicy>) -> Arc<dyn HealthFilter> {
    Arc::new(PolicyFilter(policy))
}
