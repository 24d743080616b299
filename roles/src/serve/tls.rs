//! `server.tls`: the listener's certificate and key, and the CA that client certificates must
//! chain to (mTLS), loaded from PEM files into a rustls configuration (ring as the provider)
//! by the loader the cluster's clients and the peer port share.

use std::sync::Arc;

use shoal_config::ServerTls;

use crate::error::RoleError;

/// The rustls server configuration of `server.tls`, speaking HTTP/1.1.
pub fn load_server_tls(tls: &ServerTls) -> Result<Arc<rustls::ServerConfig>, RoleError> {
    let mut config = shoal_p2p::tls::server_config(&tls.cert, &tls.key, tls.client_ca.as_deref())
        .map_err(|source| RoleError::Tls {
        key: "server.tls",
        source,
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The `client_tls:` of a role: how it reaches the other roles.
pub fn load_cluster_tls(
    tls: Option<&shoal_config::ClientTls>,
) -> Result<shoal_p2p::tls::ClusterTls, RoleError> {
    shoal_p2p::tls::ClusterTls::load(tls).map_err(|source| RoleError::Tls {
        key: "client_tls",
        source,
    })
}

/// The `peer.tls` of an agent or origin.
pub fn load_peer_tls(
    tls: Option<&shoal_config::PeerTls>,
) -> Result<Option<shoal_p2p::tls::PeerTls>, RoleError> {
    tls.map(|t| {
        shoal_p2p::tls::PeerTls::load(t).map_err(|source| RoleError::Tls {
            key: "peer.tls",
            source,
        })
    })
    .transpose()
}
