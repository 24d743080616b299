//! Host lists and addresses the roles share: the members of a `hosts:` list (static, or a DNS
//! name resolved now) and the address a peer announces.

use std::net::{IpAddr, SocketAddr};

use shoal_config::{HostPort, Hosts};
use tokio::net::TcpListener;

use crate::RoleError;

/// The members of a `hosts:` list: a static list as written, or every address a DNS name
/// resolves to now (the ring re-resolves on its refresh interval).
pub async fn hosts_of(hosts: &Hosts) -> Result<Vec<HostPort>, RoleError> {
    match hosts {
        Hosts::Static(list) => Ok(list.clone()),
        Hosts::Dns(name) => {
            let resolve = |why: String| RoleError::Resolve {
                name: name.to_string(),
                why,
            };
            let addrs = tokio::net::lookup_host((name.host(), name.port()))
                .await
                .map_err(|e| resolve(e.to_string()))?;
            let mut out: Vec<HostPort> = addrs
                .map(|a| HostPort::new(a.ip().to_string(), a.port()))
                .collect();
            out.sort_by_key(|h| h.to_string());
            out.dedup();
            if out.is_empty() {
                return Err(resolve("no address".into()));
            }
            Ok(out)
        }
    }
}

/// `hosts` with a `dns:` name resolved into the static list it names now.
pub async fn resolved(hosts: &Option<Hosts>) -> Result<Option<Hosts>, RoleError> {
    match hosts {
        Some(h @ Hosts::Dns(_)) => Ok(Some(Hosts::Static(hosts_of(h).await?))),
        other => Ok(other.clone()),
    }
}

/// The address other peers reach this one at: `peer.ip` with the bound port, or the bound
/// address itself when it is a specific one.
pub fn peer_addr(listener: &TcpListener, ip: Option<IpAddr>) -> Result<SocketAddr, RoleError> {
    let bound = listener.local_addr()?;
    match ip {
        Some(ip) => Ok(SocketAddr::new(ip, bound.port())),
        None if !bound.ip().is_unspecified() => Ok(bound),
        None => Err(RoleError::Undialable { bound }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_dns_host_list_resolves_to_every_address() {
        let hosts = Hosts::Dns(HostPort::new("localhost", 15003));
        let resolved = hosts_of(&hosts).await.unwrap();
        assert!(
            resolved.contains(&HostPort::new("127.0.0.1", 15003)),
            "{resolved:?}"
        );
    }

    #[tokio::test]
    async fn a_peer_listening_on_all_addresses_needs_peer_ip() {
        let l = TcpListener::bind("0.0.0.0:0").await.unwrap();
        assert!(matches!(
            peer_addr(&l, None),
            Err(RoleError::Undialable { .. })
        ));
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert_eq!(peer_addr(&l, Some(ip)).unwrap().ip(), ip);
    }
}
