//! The tracker's memory of who has which torrent.
//!
//! Announces land in time windows (`peer_set_window_size` long, `max_peer_set_windows` of them
//! kept): a peer is remembered for the window it last announced in plus the ones after it, so
//! peers that stop announcing age out without a timer per peer. Reads merge the live windows
//! and hand peers out in a fixed class order (see [`hand_out`]).
//!
//! [`PeerStore`] is the boundary the tracker service codes against; [`InMemoryPeerStore`] is
//! the single-tracker store, [`RedisPeerStore`] the one several trackers share. Every implementation must pass the shared conformance suite in
//! `conformance.rs`.

mod clock;
#[cfg(test)]
pub(crate) mod conformance;
mod handout;
mod memory;
mod record;
mod redis;
#[cfg(test)]
pub(crate) mod redis_fixture;
mod windows;

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::PeerStoreError;
use crate::metainfo::InfoHash;
use crate::peer_id::PeerId;

pub use clock::{Clock, ManualClock, SystemClock};
pub use handout::{PeerClass, hand_out, merge};
pub use memory::InMemoryPeerStore;
pub use redis::RedisPeerStore;
pub use windows::PeerSetWindows;

/// One announce: who the peer is, where to reach it, and what it has.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerInfo {
    /// The peer's identity; a second announce with the same id replaces the first.
    pub peer_id: PeerId,
    /// Address its P2P port listens on; an `IpAddr`, never a string split on `:`, so IPv6 works.
    pub ip: IpAddr,
    /// Its P2P port.
    pub port: u16,
    /// It has the whole blob (a seeder).
    pub complete: bool,
    /// It is an origin, a dedicated seeder that is handed out after complete agents to spare it.
    pub origin: bool,
}

/// Where the tracker keeps announces. Async so a networked store (Redis) fits behind it.
#[async_trait]
pub trait PeerStore: Send + Sync {
    /// Records an announce in the current window.
    async fn update(&self, info_hash: InfoHash, peer: PeerInfo) -> Result<(), PeerStoreError>;

    /// Up to `limit` peers of the torrent from the live windows, in hand-out order.
    async fn get(&self, info_hash: InfoHash, limit: usize)
    -> Result<Vec<PeerInfo>, PeerStoreError>;

    /// Whether the store answers now (the tracker's `/ready`); a store in memory always does.
    async fn ping(&self) -> Result<(), PeerStoreError> {
        Ok(())
    }
}

/// The store the tracker's `peerstore:` section asks for, reading the system clock. Connects to
/// Redis at once, so a wrong address fails at start rather than on the first announce.
pub async fn from_config(
    config: &shoal_config::PeerStoreConfig,
) -> Result<Arc<dyn PeerStore>, PeerStoreError> {
    Ok(match config {
        shoal_config::PeerStoreConfig::Memory(m) => {
            Arc::new(InMemoryPeerStore::new(PeerSetWindows::from_config(m)?))
        }
        shoal_config::PeerStoreConfig::Redis(r) => {
            Arc::new(RedisPeerStore::connect(r, Arc::new(SystemClock)).await?)
        }
    })
}
