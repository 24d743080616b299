//! `shoal tracker`, and the tracker client the agent and origin announce through: the p2p
//! crate's [`TrackerClient`] behind the scheduler's [`Tracker`] trait, judged by the passive
//! health-policy component (`tracker.cluster.healthcheck`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use anyhow::Context;
use async_trait::async_trait;
use shoal_config::{TrackerClientConfig, TrackerConfig};
use shoal_host::plugin::{HealthPolicy, PluginEngine};
use shoal_p2p::error::{SchedulerError, TrackerError};
use shoal_p2p::health::HealthFilter;
use shoal_p2p::tracker::{AnnounceRequest, MetainfoReply, TrackerClient};
use shoal_p2p::{Announce, AnnounceReply, Metainfo, PeerAddr, PeerInfo, Tracker};
use shoal_registry::Digest;

/// Runs `shoal tracker` until `shutdown`.
pub async fn run(
    mut config: TrackerConfig,
    data_dir: std::path::PathBuf,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding listen {}", config.listen))?;
    // A `dns:` origin list is resolved here, once: the tracker's ring takes a static list.
    if let Some(hosts @ shoal_config::Hosts::Dns(_)) = &config.origin.hosts {
        let resolved = super::hosts_of(hosts).await?;
        config.origin.hosts = Some(shoal_config::Hosts::Static(resolved));
    }
    let listen = listener.local_addr()?;
    tracing::info!(%listen, "shoal tracker listening");
    // The origins are checked actively, as they check each other: `cluster.healthcheck`
    // (fails / passes / monitor.interval, or a custom policy) over `origin.hosts`.
    let health: shoal_p2p::tracker::OriginHealth = match &config.origin.hosts {
        Some(hosts) => {
            let engine = super::policy_engine(&data_dir)?;
            let cluster = shoal_config::ClusterConfig {
                hosts: Some(hosts.clone()),
                healthcheck: config.cluster.healthcheck.clone(),
            };
            let ring = super::ring::Ring::start(
                &cluster,
                &shoal_config::HashRingConfig::default(),
                listen,
                None,
                &engine,
            )
            .await?;
            Arc::new(move |h| ring.is_healthy(h))
        }
        None => Arc::new(|_| true),
    };
    shoal_p2p::tracker::run_with_origin_health(config, listener, shutdown, health).await?;
    Ok(())
}

/// The tracker client of an agent or origin, with the passive health check as a plugin.
pub async fn tracker_client(
    config: &TrackerClientConfig,
    engine: &PluginEngine,
) -> anyhow::Result<Arc<dyn Tracker>> {
    let check = &config.cluster.healthcheck;
    let policy = engine
        .passive_health(check)
        .context("loading the tracker health policy (tracker.cluster.healthcheck)")?;
    let filter: Arc<dyn HealthFilter> = Arc::new(PolicyFilter(policy));
    // A `dns:` tracker list is resolved here, once, into the static list the client takes.
    let mut config = config.clone();
    if let Some(hosts @ shoal_config::Hosts::Dns(_)) = &config.hosts {
        config.hosts = Some(shoal_config::Hosts::Static(super::hosts_of(hosts).await?));
    }
    let client = TrackerClient::from_config(&config, filter)?;
    Ok(Arc::new(ClientTracker(client)))
}

/// A health-policy component as the p2p crate's [`HealthFilter`]: a policy that cannot answer
/// (trapped, breaker open) fails open, so a broken plugin never takes every tracker away.
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

struct ClientTracker(TrackerClient);

fn tracker_err(e: TrackerError) -> SchedulerError {
    SchedulerError::Tracker(e.to_string())
}

#[async_trait]
impl Tracker for ClientTracker {
    async fn announce(&self, a: &Announce) -> Result<AnnounceReply, SchedulerError> {
        let me = PeerInfo {
            peer_id: a.peer_id,
            ip: a.addr.ip(),
            port: a.addr.port(),
            complete: a.complete,
            origin: a.origin,
        };
        let request = AnnounceRequest::new(a.namespace.clone(), &a.digest, &me);
        let response = self
            .0
            .announce(a.info_hash, &request)
            .await
            .map_err(tracker_err)?;
        let peers = response
            .peer_infos()
            .map_err(|e| SchedulerError::Tracker(format!("tracker sent a bad peer: {e:?}")))?
            .into_iter()
            .map(|p| PeerAddr {
                peer_id: p.peer_id,
                addr: SocketAddr::new(p.ip, p.port),
                complete: p.complete,
                origin: p.origin,
            })
            .collect();
        Ok(AnnounceReply {
            peers,
            interval: response.interval(),
        })
    }

    async fn metainfo(
        &self,
        namespace: &str,
        digest: &Digest,
    ) -> Result<Option<Metainfo>, SchedulerError> {
        match self.0.metainfo(namespace, digest).await {
            Ok(MetainfoReply::Ready(m)) => Ok(Some(m)),
            Ok(MetainfoReply::Pending) => Ok(None),
            Err(e) => Err(tracker_err(e)),
        }
    }
}
