//! The peer store in this process: enough for one tracker, lost on restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{Clock, PeerInfo, PeerSetWindows, PeerStore, SystemClock, hand_out, merge};
use crate::error::PeerStoreError;
use crate::metainfo::InfoHash;
use crate::peer_id::PeerId;

/// The peers that announced one torrent within one window.
type PeerSet = HashMap<PeerId, PeerInfo>;

#[derive(Debug)]
struct State {
    /// Per torrent, its peer sets by window number.
    torrents: HashMap<InfoHash, BTreeMap<u64, PeerSet>>,
    rng: StdRng,
}

/// Announces in memory, bucketed into [`PeerSetWindows`].
///
/// One lock over everything: updates and reads are short map operations, never I/O, and a
/// tracker's load is announces every few seconds per downloading peer.
#[derive(Debug)]
pub struct InMemoryPeerStore {
    windows: PeerSetWindows,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

impl InMemoryPeerStore {
    /// A store using the system clock.
    pub fn new(windows: PeerSetWindows) -> Self {
        Self::with_clock(windows, Arc::new(SystemClock))
    }

    /// A store reading time from `clock`, for tests of expiry.
    pub fn with_clock(windows: PeerSetWindows, clock: Arc<dyn Clock>) -> Self {
        InMemoryPeerStore {
            windows,
            clock,
            state: Mutex::new(State {
                torrents: HashMap::new(),
                rng: StdRng::from_rng(&mut rand::rng()),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain maps, valid even if a holder panicked mid-update.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops expired windows of every torrent, and torrents left with none. The tracker runs
    /// this periodically; reads and updates already prune the torrent they touch.
    pub fn prune(&self) {
        let oldest = self.windows.oldest_live(self.clock.now());
        let mut state = self.lock();
        state.torrents.retain(|_, sets| {
            sets.retain(|&w, _| w >= oldest);
            !sets.is_empty()
        });
    }

    /// Torrents with at least one live or not yet pruned window, for metrics and tests.
    pub fn torrent_count(&self) -> usize {
        self.lock().torrents.len()
    }
}

#[async_trait]
impl PeerStore for InMemoryPeerStore {
    async fn update(&self, info_hash: InfoHash, peer: PeerInfo) -> Result<(), PeerStoreError> {
        let now = self.clock.now();
        let current = self.windows.current(now);
        let oldest = self.windows.oldest_live(now);
        let mut state = self.lock();
        let sets = state.torrents.entry(info_hash).or_default();
        sets.retain(|&w, _| w >= oldest);
        sets.entry(current).or_default().insert(peer.peer_id, peer);
        Ok(())
    }

    async fn get(
        &self,
        info_hash: InfoHash,
        limit: usize,
    ) -> Result<Vec<PeerInfo>, PeerStoreError> {
        let oldest = self.windows.oldest_live(self.clock.now());
        let mut state = self.lock();
        let State { torrents, rng } = &mut *state;
        let Some(sets) = torrents.get_mut(&info_hash) else {
            return Ok(Vec::new());
        };
        sets.retain(|&w, _| w >= oldest);
        let merged = merge(sets.values().map(|set| set.values().cloned()));
        if sets.is_empty() {
            torrents.remove(&info_hash);
        }
        Ok(hand_out(merged, limit, rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peerstore::ManualClock;
    use crate::peerstore::conformance;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        conformance::run(|windows, clock| async move {
            Box::new(InMemoryPeerStore::with_clock(windows, clock)) as Box<dyn PeerStore>
        })
        .await;
    }

    #[tokio::test]
    async fn prune_drops_idle_torrents() {
        let clock = Arc::new(ManualClock::new(conformance::start()));
        let windows = PeerSetWindows::new(std::time::Duration::from_secs(10), 2).unwrap();
        let store = InMemoryPeerStore::with_clock(windows, clock.clone());
        store
            .update(InfoHash([1; 32]), conformance::peer(1, false, false))
            .await
            .unwrap();
        store.prune();
        assert_eq!(store.torrent_count(), 1);
        clock.advance(std::time::Duration::from_secs(20));
        store.prune();
        assert_eq!(store.torrent_count(), 0);
    }
}
