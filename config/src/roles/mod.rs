//! One struct per role's YAML file, built from the shared sections.

mod agent;
mod build_index;
mod dev;
mod origin;
mod proxy;
mod tracker;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::server::PeerTls;

pub use agent::{AgentConfig, AgentRegistry};
pub use build_index::{BuildIndexConfig, TagCacheConfig};
pub use dev::DevConfig;
pub use origin::{MetainfoGenConfig, OriginConfig, WritebackConfig};
pub use proxy::{ProxyConfig, ProxyRegistry, StagingConfig};
pub use tracker::TrackerConfig;

/// Declares a role's `peer:` section, the P2P endpoint. Only the default port differs by role
/// (agent 16001, origin 15001, as in Kraken's devcluster), and serde cannot derive over a
/// const generic, hence a macro.
macro_rules! peer_section {
    ($(#[$doc:meta])* $name:ident, $port:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
        #[serde(default, deny_unknown_fields)]
        pub struct $name {
            /// Where the P2P listener binds [0.0.0.0 and the role's port].
            #[serde(with = "crate::net::listen_addr")]
            pub listen: SocketAddr,
            /// The address announced to the tracker; unset means the address the tracker sees.
            pub ip: Option<IpAddr>,
            /// TLS on the P2P port, both ways; unset speaks plain TCP.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub tls: Option<PeerTls>,
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    listen: any_addr($port),
                    ip: None,
                    tls: None,
                }
            }
        }
    };
}

peer_section!(
    /// An agent's `peer:` section [listen 0.0.0.0:16001].
    AgentPeer,
    16001
);

peer_section!(
    /// An origin's `peer:` section [listen 0.0.0.0:15001].
    OriginPeer,
    15001
);

/// `0.0.0.0:port`, the default for services other hosts call.
pub(crate) fn any_addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::UNSPECIFIED, port))
}

/// `127.0.0.1:port`, the default for services only this host calls.
pub(crate) fn local_addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}
