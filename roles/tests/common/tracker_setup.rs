//! The trackers of a test cluster, started from one config so that a killed one can start
//! again on its address as a restarted process would.

use shoal_config::TrackerConfig;
use shoal_roles::tracker;
use tokio::net::TcpListener;

use super::{Cluster, Consecutive, Node};

/// Starts tracker `i` from `config` (its `listen` set to the listener's address).
pub(super) fn spawn_tracker(i: usize, config: &TrackerConfig, listener: TcpListener) -> Node {
    let addr = listener.local_addr().unwrap();
    let mut cfg = config.clone();
    cfg.listen = addr;
    let deps = tracker::TrackerDeps {
        origin_health: Consecutive::new(2, 2),
    };
    let service = tracker::serve(cfg, listener, deps, std::future::pending());
    Node::spawn(format!("tracker{i}"), addr, None, service)
}

impl Cluster {
    /// Starts tracker `i` again on its address (killing it first if it runs), with a fresh
    /// peer store, as a restarted process would; returns once it answers `/health`.
    pub async fn restart_tracker(&mut self, i: usize) {
        self.trackers[i].kill().await;
        let listener = TcpListener::bind(self.trackers[i].http)
            .await
            .expect("rebinding the tracker's port");
        self.trackers[i] = spawn_tracker(i, &self.tracker_config, listener);
        self.wait_for(&self.trackers[i]).await;
    }
}
