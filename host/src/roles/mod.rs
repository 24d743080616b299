//! The P2P roles one `shoal` binary runs: `agent`, `origin` and `tracker`, each from its own
//! config file (the seed's keys), plus what they share: resolving `hosts:` lists, the address
//! a peer announces, and the tracker client with its passive health check.

pub mod agent;
pub mod build_index;
pub mod origin;
pub mod ring;
pub mod tracker;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use anyhow::Context;
use shoal_config::{HostPort, Hosts};
use tokio::net::TcpListener;

/// The members of a `hosts:` list: a static list as written, or every address a DNS name
/// resolves to now (the ring re-resolves on its refresh interval).
pub async fn hosts_of(hosts: &Hosts) -> anyhow::Result<Vec<HostPort>> {
    match hosts {
        Hosts::Static(list) => Ok(list.clone()),
        Hosts::Dns(name) => {
            let addrs = tokio::net::lookup_host((name.host(), name.port()))
                .await
                .with_context(|| format!("resolving hosts.dns {name}"))?;
            let mut out: Vec<HostPort> = addrs
                .map(|a| HostPort::new(a.ip().to_string(), a.port()))
                .collect();
            out.sort_by_key(|h| h.to_string());
            out.dedup();
            anyhow::ensure!(!out.is_empty(), "hosts.dns {name} resolved to no address");
            Ok(out)
        }
    }
}

/// The address other peers reach this one at: `peer.ip` with the bound port, or the bound
/// address itself when it is a specific one.
pub fn peer_addr(listener: &TcpListener, ip: Option<IpAddr>) -> anyhow::Result<SocketAddr> {
    let bound = listener.local_addr()?;
    match ip {
        Some(ip) => Ok(SocketAddr::new(ip, bound.port())),
        None if !bound.ip().is_unspecified() => Ok(bound),
        None => anyhow::bail!(
            "peer.listen is {bound}, which other peers cannot dial: set peer.ip to this \
             host's address, or listen on a specific one"
        ),
    }
}

/// The plugin engine a role without storage backends uses for its health policies.
pub fn policy_engine(data_dir: &Path) -> anyhow::Result<shoal_host::plugin::PluginEngine> {
    shoal_host::plugin::PluginEngine::new(
        shoal_host::plugin::PluginLimits::from_config(&Default::default()),
        Some(data_dir.join("plugin-cache")),
    )
    .context("starting the plugin engine")
}

pub(crate) use tracker::tracker_client;

/// `GET /metrics`: the scheduler's counters in the Prometheus text format, then whatever
/// `extra` adds (the origin's ring health).
pub fn metrics(
    scheduler: shoal_p2p::Scheduler,
    extra: impl Fn() -> String + Clone + Send + Sync + 'static,
) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (sent, received) = scheduler.traffic();
            let torrents = scheduler.active_torrents();
            let extra = extra();
            async move {
                format!(
                    "# HELP shoal_p2p_piece_bytes_sent_total Piece payload bytes sent to peers.\n\
                     # TYPE shoal_p2p_piece_bytes_sent_total counter\n\
                     shoal_p2p_piece_bytes_sent_total {sent}\n\
                     # HELP shoal_p2p_piece_bytes_received_total Piece payload bytes received from peers.\n\
                     # TYPE shoal_p2p_piece_bytes_received_total counter\n\
                     shoal_p2p_piece_bytes_received_total {received}\n\
                     # HELP shoal_p2p_torrents Torrents running.\n\
                     # TYPE shoal_p2p_torrents gauge\n\
                     shoal_p2p_torrents {torrents}\n{extra}"
                )
            }
        }),
    )
}

/// A request a role's HTTP API cannot parse: 400 with the reason as text.
pub struct BadRequest(pub String);

impl axum::response::IntoResponse for BadRequest {
    fn into_response(self) -> axum::response::Response {
        (axum::http::StatusCode::BAD_REQUEST, self.0).into_response()
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
}
