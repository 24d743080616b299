//! `shoal tracker` as a service, and the tracker client the agent and origin announce through:
//! the p2p crate's [`TrackerClient`] behind the scheduler's [`Tracker`] trait, judged by the
//! passive health policy passed in (`tracker.cluster.healthcheck`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use shoal_config::{ClusterConfig, HashRingConfig, TrackerClientConfig, TrackerConfig};
use shoal_p2p::error::{SchedulerError, TrackerError};
use shoal_p2p::tls::ClusterTls;
use shoal_p2p::tracker::{AnnounceRequest, MetainfoReply, OriginHealth, TrackerClient};
use shoal_p2p::{
    Announce, AnnounceReply, HealthFilter, Metainfo, PeerAddr, PeerInfo, StopOnDrop, Tasks, Tracker,
};
use shoal_registry::Digest;

use crate::RoleError;
use crate::hosts::resolved;
use crate::ring::Ring;

/// What a tracker needs besides its config and listener.
pub struct TrackerDeps {
    /// The active health policy its origins are judged by (`cluster.healthcheck`).
    pub origin_health: Arc<dyn HealthFilter>,
}

/// Serves the tracker on `listeners` until `shutdown`. A `dns:` origin list is resolved once,
/// here; the origins are checked actively with `cluster.healthcheck`, as they check each other,
/// and unhealthy owners are skipped for metainfo.
pub async fn serve(
    mut config: TrackerConfig,
    listeners: impl Into<crate::serve::Listeners>,
    deps: TrackerDeps,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RoleError> {
    let tasks = Tasks::new();
    let _stop = StopOnDrop(tasks.clone());
    let crate::serve::Listeners {
        http: listener,
        metrics: metrics_listener,
    } = listeners.into();
    let options = crate::serve::ServeOptions::from_config(&config.server)?;
    let tls = crate::serve::load_cluster_tls(config.client_tls.as_ref())?;
    config.origin.hosts = resolved(&config.origin.hosts).await?;
    let listen = listener.local_addr()?;
    let mut metrics = crate::metrics::Metrics::new(options.metrics.clone());
    let health: OriginHealth = match &config.origin.hosts {
        Some(hosts) => {
            let cluster = ClusterConfig {
                hosts: Some(hosts.clone()),
                healthcheck: config.cluster.healthcheck.clone(),
            };
            let ring = Ring::start(
                &cluster,
                &HashRingConfig::default(),
                listen,
                None,
                deps.origin_health,
                &tls,
                &tasks,
            )
            .await?;
            let members = ring.clone();
            metrics = metrics.with_fn(move |out| crate::metrics::ring_health(&members, out));
            Arc::new(move |h| ring.is_healthy(h))
        }
        None => Arc::new(|_| true),
    };
    metrics.serve_on(metrics_listener, &options, &tasks);
    let app = shoal_p2p::tracker::app(&config, health, &tasks)
        .await?
        .merge(metrics.router());
    tracing::info!(%listen, "shoal tracker listening");
    let served = crate::serve::serve(listener, app, &options, shutdown).await;
    tasks.shutdown().await;
    Ok(served?)
}

/// The tracker client of an agent or origin, judged by `health` (the passive policy).
pub async fn tracker_client(
    config: &TrackerClientConfig,
    health: Arc<dyn HealthFilter>,
    tls: &ClusterTls,
) -> Result<Arc<dyn Tracker>, RoleError> {
    // A `dns:` tracker list is resolved here, once, into the static list the client takes.
    let mut config = config.clone();
    config.hosts = resolved(&config.hosts).await?;
    let client = TrackerClient::from_config(&config, health, tls)?;
    Ok(Arc::new(ClientTracker(client)))
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
        metainfo_reply(self.0.metainfo(namespace, digest).await)
    }

    async fn metainfo_waiting(
        &self,
        namespace: &str,
        digest: &Digest,
    ) -> Result<Option<Metainfo>, SchedulerError> {
        let hold = self.0.hold();
        metainfo_reply(self.0.metainfo_within(namespace, digest, hold).await)
    }

    async fn more_hashes(
        &self,
        namespace: &str,
        digest: &Digest,
        known: u32,
    ) -> Result<Option<Metainfo>, SchedulerError> {
        let hold = self.0.hold();
        metainfo_reply(
            self.0
                .metainfo_beyond(namespace, digest, Some(known), hold)
                .await,
        )
    }
}

fn metainfo_reply(
    reply: Result<MetainfoReply, TrackerError>,
) -> Result<Option<Metainfo>, SchedulerError> {
    match reply {
        Ok(MetainfoReply::Ready(m)) => Ok(Some(m)),
        Ok(MetainfoReply::Pending) => Ok(None),
        Err(e @ TrackerError::BlobUnknown { .. }) => {
            Err(SchedulerError::UnknownBlob(e.to_string()))
        }
        Err(e) => Err(tracker_err(e)),
    }
}
