//! The P2P side an agent and an origin share: the piece store, the tracker client and the
//! scheduler serving the peer port, started in the role's task set.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use shoal_config::{SchedulerConfig, StoreConfig, TrackerClientConfig};
use shoal_p2p::store::PieceStore;
use shoal_p2p::tls::ClusterTls;
use shoal_p2p::{HealthFilter, Identity, PeerId, Scheduler, StopOnDrop, Tasks};
use tokio::net::TcpListener;

use crate::RoleError;
use crate::hosts::peer_addr;
use crate::tracker::tracker_client;

/// What a role's P2P side needs.
pub(crate) struct PeerSettings<'a> {
    pub store_root: &'a Path,
    pub store: &'a StoreConfig,
    pub scheduler: &'a SchedulerConfig,
    pub tracker: &'a TrackerClientConfig,
    pub tracker_health: Arc<dyn HealthFilter>,
    /// `peer.ip`.
    pub ip: Option<std::net::IpAddr>,
    /// Whether this host is an origin (announced, so the tracker ranks it).
    pub origin: bool,
    /// How the tracker is reached (`client_tls:`).
    pub cluster_tls: &'a ClusterTls,
    /// `peer.tls`.
    pub peer_tls: Option<&'a shoal_config::PeerTls>,
}

/// A running P2P side; dropping it stops the scheduler's torrents and connections.
pub(crate) struct PeerSide {
    pub scheduler: Scheduler,
    pub advertise: SocketAddr,
    _stop: StopOnDrop,
}

impl PeerSide {
    /// Opens the piece store (cleanup in `tasks`), builds the tracker client and the
    /// scheduler, and serves `listener` in `tasks`.
    pub async fn start(
        s: PeerSettings<'_>,
        listener: TcpListener,
        tasks: &Tasks,
    ) -> Result<PeerSide, RoleError> {
        // What can fail on the config first: a failed start leaves no store folder behind.
        let advertise = peer_addr(&listener, s.ip)?;
        let tracker = tracker_client(s.tracker, s.tracker_health, s.cluster_tls).await?;
        let peer_tls = crate::serve::load_peer_tls(s.peer_tls)?;
        let store =
            PieceStore::open(s.store_root, s.store).map_err(|source| RoleError::PieceStore {
                path: s.store_root.to_owned(),
                source,
            })?;
        tasks.spawn(store.cleanup_loop());
        let identity = Identity {
            peer_id: PeerId::random(),
            advertise,
            origin: s.origin,
        };
        let scheduler = Scheduler::new(identity, s.scheduler.clone(), store, tracker, peer_tls)?;
        let stop = StopOnDrop(scheduler.tasks().clone());
        let serving = scheduler.clone();
        tasks.spawn(async move { serving.serve(listener).await });
        Ok(PeerSide {
            scheduler,
            advertise,
            _stop: stop,
        })
    }
}
