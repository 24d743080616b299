//! The build-indexes of a test cluster: what each is started from, kept so that a killed one
//! can start again as a restarted process would (same address, config and data directory).

use std::path::PathBuf;
use std::sync::Arc;

use shoal_config::BuildIndexConfig;
use shoal_roles::build_index;
use shoal_storage::NamespaceRouter;
use tokio::net::TcpListener;

use super::{Cluster, Node};

/// What a build-index is started from, kept for restarts (as an origin's is).
pub(super) struct BuildIndexSetup {
    pub(super) name: &'static str,
    pub(super) config: BuildIndexConfig,
    pub(super) data: PathBuf,
    pub(super) router: Arc<NamespaceRouter>,
}

/// Starts a build-index from `setup` on `listener`.
pub(super) fn spawn_build_index(setup: &BuildIndexSetup, listener: TcpListener) -> Node {
    let http = listener.local_addr().unwrap();
    let (cfg, data, router) = (
        setup.config.clone(),
        setup.data.clone(),
        setup.router.clone(),
    );
    Node::spawn(setup.name.into(), http, None, async move {
        let deps = build_index::BuildIndexDeps { backends: router };
        build_index::serve(&cfg, &data, listener, deps, std::future::pending()).await
    })
}

impl Cluster {
    /// Starts the build-index (`remote: false`) or the remote one again on its address, config
    /// and data directory, as a restarted process would (killing it first if it runs); returns
    /// once it answers `/health`.
    pub async fn restart_build_index(&mut self, remote: bool) {
        let (node, setup) = match remote {
            false => (&mut self.build_index, &self.build_index_setup),
            true => (
                self.remote
                    .as_mut()
                    .expect("no remote build-index in this cluster"),
                self.remote_setup.as_ref().expect("no remote build-index"),
            ),
        };
        node.kill().await;
        let listener = TcpListener::bind(node.http)
            .await
            .expect("rebinding the build-index's port");
        *node = spawn_build_index(setup, listener);
        let node = match remote {
            false => &self.build_index,
            true => self.remote.as_ref().unwrap(),
        };
        self.wait_for(node).await;
    }
}
