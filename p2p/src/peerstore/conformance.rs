//! The behaviour every [`PeerStore`] must have, as one suite each implementation's tests run
//! (the distribution/distribution driver-testsuite habit).

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{Clock, ManualClock, PeerClass, PeerInfo, PeerSetWindows, PeerStore};
use crate::metainfo::InfoHash;
use crate::peer_id::PeerId;

const WINDOW: Duration = Duration::from_secs(10);
const WINDOWS: u32 = 3;

/// A start time at a window boundary near now (Redis expiries are relative to its own clock,
/// so the manual clock must not start in the distant past).
pub(crate) fn start() -> SystemTime {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    UNIX_EPOCH + Duration::from_secs(now - now % WINDOW.as_secs())
}

pub(crate) fn peer(n: u8, complete: bool, origin: bool) -> PeerInfo {
    PeerInfo {
        peer_id: PeerId([n; 20]),
        ip: if n.is_multiple_of(2) {
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))
        } else {
            IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, n.into()))
        },
        port: 16000 + u16::from(n),
        complete,
        origin,
    }
}

/// Runs every check against fresh stores made by `make` (windows of 10 s, three kept).
pub(crate) async fn run<F, Fut>(make: F)
where
    F: Fn(PeerSetWindows, Arc<dyn Clock>) -> Fut,
    Fut: Future<Output = Box<dyn PeerStore>>,
{
    let windows = PeerSetWindows::new(WINDOW, WINDOWS).unwrap();
    let fresh = || {
        let clock = Arc::new(ManualClock::new(start()));
        let store = make(windows, clock.clone() as Arc<dyn Clock>);
        async move { (store.await, clock) }
    };
    let t = InfoHash([0xab; 32]);

    // An announce is handed back, with its address intact (IPv6 included).
    let (store, _) = fresh().await;
    store.update(t, peer(1, false, false)).await.unwrap();
    store.update(t, peer(2, true, false)).await.unwrap();
    let mut got = store.get(t, 10).await.unwrap();
    got.sort_by_key(|p| p.peer_id);
    assert_eq!(got, vec![peer(1, false, false), peer(2, true, false)]);

    // Unknown torrents have no peers, and torrents do not mix.
    assert!(store.get(InfoHash([0; 32]), 10).await.unwrap().is_empty());

    // A re-announce replaces the peer rather than adding a second entry.
    let (store, clock) = fresh().await;
    store.update(t, peer(1, false, false)).await.unwrap();
    clock.advance(WINDOW);
    let mut moved = peer(1, false, false);
    moved.port = 9;
    store.update(t, moved.clone()).await.unwrap();
    assert_eq!(store.get(t, 10).await.unwrap(), vec![moved]);

    // Complete in any live window means complete.
    let (store, clock) = fresh().await;
    store.update(t, peer(3, true, false)).await.unwrap();
    clock.advance(WINDOW);
    store.update(t, peer(3, false, false)).await.unwrap();
    assert!(store.get(t, 10).await.unwrap()[0].complete);

    // An announce lives for window x windows, then is dropped.
    let (store, clock) = fresh().await;
    store.update(t, peer(4, false, false)).await.unwrap();
    clock.advance(WINDOW * WINDOWS - Duration::from_millis(1));
    assert_eq!(store.get(t, 10).await.unwrap().len(), 1);
    clock.advance(Duration::from_millis(1));
    assert!(store.get(t, 10).await.unwrap().is_empty());

    // Announcing again keeps a peer alive.
    let (store, clock) = fresh().await;
    store.update(t, peer(5, false, false)).await.unwrap();
    for _ in 0..5 {
        clock.advance(WINDOW);
        store.update(t, peer(5, false, false)).await.unwrap();
    }
    assert_eq!(store.get(t, 10).await.unwrap().len(), 1);

    // Hand-out order and the limit.
    let (store, _) = fresh().await;
    for n in 0..9 {
        store
            .update(t, peer(n, n % 3 != 0, n % 3 == 1))
            .await
            .unwrap();
    }
    let all = store.get(t, 100).await.unwrap();
    assert_eq!(all.len(), 9);
    let classes: Vec<PeerClass> = all.iter().map(PeerClass::of).collect();
    let mut sorted = classes.clone();
    sorted.sort();
    assert_eq!(classes, sorted, "hand-out order");
    let some = store.get(t, 4).await.unwrap();
    assert_eq!(some.len(), 4);
    assert!(
        some[..3]
            .iter()
            .all(|p| PeerClass::of(p) == PeerClass::Complete)
    );
    assert_eq!(PeerClass::of(&some[3]), PeerClass::Origin);
    assert!(store.get(t, 0).await.unwrap().is_empty());
}
