//! The peer store in Redis, so several trackers behind one name hand out the same peers.
//!
//! One Redis hash per torrent and window, `shoal:peerset:<info hash>:<window>`, field = peer id,
//! value = the [`record`](super::record) bytes. Every write refreshes the key's expiry to the end
//! of its window's life, so Redis drops old windows by itself; reads only ask for the live
//! window numbers, so correctness never depends on the expiry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rand::SeedableRng;
use rand::rngs::StdRng;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, IntoConnectionInfo};

use super::{Clock, PeerInfo, PeerSetWindows, PeerStore, hand_out, merge, record};
use crate::error::PeerStoreError;
use crate::metainfo::InfoHash;

/// Announces in Redis, bucketed into [`PeerSetWindows`].
pub struct RedisPeerStore {
    windows: PeerSetWindows,
    clock: Arc<dyn Clock>,
    conn: ConnectionManager,
    rng: Mutex<StdRng>,
}

impl std::fmt::Debug for RedisPeerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPeerStore")
            .field("windows", &self.windows)
            .finish_non_exhaustive()
    }
}

/// Connection attempts per request before it fails (the manager's default is six, about ten
/// seconds of backoff).
const CONNECT_RETRIES: usize = 2;

fn backend(e: redis::RedisError) -> PeerStoreError {
    PeerStoreError::Backend(e.to_string())
}

fn key(info_hash: &InfoHash, window: u64) -> String {
    format!("shoal:peerset:{info_hash}:{window}")
}

impl RedisPeerStore {
    /// Connects to the Redis the tracker's `peerstore.redis` section names, with its timeouts
    /// and password; reconnects by itself later if Redis restarts.
    pub async fn connect(
        config: &shoal_config::RedisPeerStore,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, PeerStoreError> {
        let windows = PeerSetWindows::new(
            config.peer_set_window_size.get(),
            config.max_peer_set_windows,
        )?;
        let addr = ConnectionAddr::Tcp(config.addr.host().to_owned(), config.addr.port());
        let mut info = addr.into_connection_info().map_err(backend)?;
        if let Some(password) = &config.password {
            let settings = info
                .redis_settings()
                .clone()
                .set_password(password.expose());
            info = info.set_redis_settings(settings);
        }
        let client = redis::Client::open(info).map_err(backend)?;
        let response_timeout = config.read_timeout.get().max(config.write_timeout.get());
        // Few retries per attempt: while Redis is down an announce fails within seconds instead
        // of hanging; the connection manager tries again on the next request.
        let manager_config = ConnectionManagerConfig::new()
            .set_number_of_retries(CONNECT_RETRIES)
            .set_connection_timeout(Some(config.dial_timeout.get()))
            .set_response_timeout(Some(response_timeout));
        let at = |e: redis::RedisError| {
            PeerStoreError::Backend(format!("Redis at {}: {e}", config.addr))
        };
        let mut conn = ConnectionManager::new_with_config(client, manager_config)
            .await
            .map_err(at)?;
        // The handshake ignores what Redis answers to its only command unless a password is
        // set, so a Redis that needs one (or a wrong one) would connect fine and then refuse
        // every announce: ask once, so that fails at start too.
        redis::cmd("PING").exec_async(&mut conn).await.map_err(at)?;
        Ok(RedisPeerStore {
            windows,
            clock,
            conn,
            rng: Mutex::new(StdRng::from_rng(&mut rand::rng())),
        })
    }
}

#[async_trait]
impl PeerStore for RedisPeerStore {
    async fn update(&self, info_hash: InfoHash, peer: PeerInfo) -> Result<(), PeerStoreError> {
        let now = self.clock.now();
        let window = self.windows.current(now);
        let key = key(&info_hash, window);
        let ttl_ms = self.windows.remaining(window, now).as_millis().max(1);
        let ttl_ms = i64::try_from(ttl_ms).unwrap_or(i64::MAX);
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .hset(&key, peer.peer_id.0.as_slice(), record::encode(&peer))
            .ignore()
            .pexpire(&key, ttl_ms)
            .ignore()
            .exec_async(&mut conn)
            .await
            .map_err(backend)
    }

    async fn ping(&self) -> Result<(), PeerStoreError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .exec_async(&mut conn)
            .await
            .map_err(backend)
    }

    async fn get(
        &self,
        info_hash: InfoHash,
        limit: usize,
    ) -> Result<Vec<PeerInfo>, PeerStoreError> {
        let now = self.clock.now();
        let mut pipe = redis::pipe();
        for window in self.windows.oldest_live(now)..=self.windows.current(now) {
            pipe.hgetall(key(&info_hash, window));
        }
        let mut conn = self.conn.clone();
        let sets: Vec<HashMap<Vec<u8>, Vec<u8>>> =
            pipe.query_async(&mut conn).await.map_err(backend)?;
        let mut skipped = 0usize;
        let merged = merge(sets.iter().map(|set| {
            set.values()
                .filter_map(|v| {
                    let peer = record::decode(v);
                    skipped += usize::from(peer.is_none());
                    peer
                })
                .collect::<Vec<_>>()
        }));
        if skipped > 0 {
            tracing::warn!(%info_hash, skipped, "skipped peer records this build cannot read");
        }
        let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
        Ok(hand_out(merged, limit, &mut *rng))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peerstore::conformance;
    use crate::peerstore::redis_fixture::{
        config, free_port, start_redis, start_redis_on, start_redis_with,
    };
    use shoal_config::{Duration, Secret};
    use std::time::Instant;

    #[tokio::test]
    async fn passes_the_conformance_suite() {
        let Some(server) = start_redis() else { return };
        let port = server.port;
        conformance::run(|windows, clock| async move {
            let store = RedisPeerStore::connect(&config(port), clock).await.unwrap();
            // Each case gets its own windows (the suite's) and a clean database.
            let mut conn = store.conn.clone();
            redis::cmd("FLUSHDB").exec_async(&mut conn).await.unwrap();
            let store = RedisPeerStore { windows, ..store };
            Box::new(store) as Box<dyn PeerStore>
        })
        .await;
    }

    #[tokio::test]
    async fn two_trackers_share_one_view() {
        let Some(server) = start_redis() else { return };
        let clock: Arc<dyn Clock> = Arc::new(crate::peerstore::SystemClock);
        let a = RedisPeerStore::connect(&config(server.port), clock.clone())
            .await
            .unwrap();
        let b = RedisPeerStore::connect(&config(server.port), clock)
            .await
            .unwrap();
        let t = InfoHash([3; 32]);
        a.update(t, conformance::peer(7, true, false))
            .await
            .unwrap();
        assert_eq!(
            b.get(t, 10).await.unwrap(),
            vec![conformance::peer(7, true, false)]
        );
    }

    #[tokio::test]
    async fn windows_expire_in_redis_too() {
        let Some(server) = start_redis() else { return };
        let store = RedisPeerStore::connect(
            &config(server.port),
            Arc::new(crate::peerstore::SystemClock),
        )
        .await
        .unwrap();
        let t = InfoHash([4; 32]);
        store
            .update(t, conformance::peer(8, false, false))
            .await
            .unwrap();
        let window = store.windows.current(store.clock.now());
        let mut conn = store.conn.clone();
        let ttl: i64 = redis::cmd("PTTL")
            .arg(key(&t, window))
            .query_async(&mut conn)
            .await
            .unwrap();
        // Default windows: 1h x 5, so the key lives between 4h and 5h from now.
        assert!((4 * 3_600_000..=5 * 3_600_000).contains(&ttl), "pttl {ttl}");
    }

    #[tokio::test]
    async fn unreadable_records_are_skipped_not_fatal() {
        let Some(server) = start_redis() else { return };
        let store = RedisPeerStore::connect(
            &config(server.port),
            Arc::new(crate::peerstore::SystemClock),
        )
        .await
        .unwrap();
        let t = InfoHash([5; 32]);
        store
            .update(t, conformance::peer(9, false, false))
            .await
            .unwrap();
        let window = store.windows.current(store.clock.now());
        let mut conn = store.conn.clone();
        redis::cmd("HSET")
            .arg(key(&t, window))
            .arg("junk")
            .arg("pid:ip:port:complete")
            .exec_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(store.get(t, 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn reconnects_after_redis_restarts() {
        let Some(server) = start_redis() else { return };
        let port = server.port;
        let store = RedisPeerStore::connect(&config(port), Arc::new(crate::peerstore::SystemClock))
            .await
            .unwrap();
        let t = InfoHash([6; 32]);
        store
            .update(t, conformance::peer(1, false, false))
            .await
            .unwrap();
        store.ping().await.unwrap();
        drop(server);
        assert!(store.get(t, 10).await.is_err(), "Redis is down");
        assert!(store.ping().await.is_err(), "Redis is down");
        let _server = start_redis_on(port).unwrap();
        // The first requests after the restart may still see the broken connection.
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        while store
            .update(t, conformance::peer(2, false, false))
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "never reconnected");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        store.ping().await.unwrap();
        // A fresh Redis has lost the first announce, and has the second.
        let peers = store.get(t, 10).await.unwrap();
        assert_eq!(peers, vec![conformance::peer(2, false, false)]);
    }

    #[tokio::test]
    async fn connect_fails_when_nothing_listens() {
        let mut c = config(free_port());
        c.dial_timeout = Duration::from_secs(1);
        let err = RedisPeerStore::connect(&c, Arc::new(crate::peerstore::SystemClock)).await;
        assert!(matches!(err, Err(PeerStoreError::Backend(_))));
    }

    #[tokio::test]
    async fn password_is_sent_and_a_missing_or_wrong_one_fails_at_connect() {
        let Some(server) = start_redis_with(free_port(), &["--requirepass", "s3cret"]) else {
            return;
        };
        let clock: Arc<dyn Clock> = Arc::new(crate::peerstore::SystemClock);
        let mut c = config(server.port);
        c.password = Some(Secret::new("s3cret"));
        let store = RedisPeerStore::connect(&c, clock.clone()).await.unwrap();
        let t = InfoHash([7; 32]);
        store
            .update(t, conformance::peer(3, true, false))
            .await
            .unwrap();
        assert_eq!(
            store.get(t, 10).await.unwrap(),
            vec![conformance::peer(3, true, false)]
        );

        // A tracker without the password, or with a wrong one, fails at start, saying why.
        for password in [None, Some("guess")] {
            c.password = password.map(Secret::new);
            let err = RedisPeerStore::connect(&c, clock.clone())
                .await
                .expect_err("connected to a Redis that needs a password without it");
            let err = err.to_string();
            assert!(
                err.contains(&format!("Redis at 127.0.0.1:{}", server.port))
                    && err.to_lowercase().contains("authentication"),
                "{password:?}: {err}"
            );
        }
    }

    /// `dial_timeout` bounds each connection attempt, Redis's handshake included. The listener
    /// here takes connections (the kernel completes them from its backlog) and never answers,
    /// so only the timeout ends an attempt, and `connect` fails after one to
    /// `CONNECT_RETRIES + 1` of them. Tokio's clock is paused: the 40s timers cost nothing, and
    /// the time measured is theirs.
    #[tokio::test(start_paused = true)]
    async fn dial_timeout_bounds_a_connect_to_a_server_that_never_answers() {
        let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = config(mute.local_addr().unwrap().port());
        c.dial_timeout = Duration::from_secs(40);
        // Far longer, so that they cannot be what ends the wait.
        c.read_timeout = Duration::from_hours(1);
        c.write_timeout = Duration::from_hours(1);
        let attempts = CONNECT_RETRIES as u32 + 1;
        // Room for the backoff between attempts (under a second each).
        let most = c.dial_timeout.get() * attempts + std::time::Duration::from_secs(10);
        let started = tokio::time::Instant::now();
        let connect = RedisPeerStore::connect(&c, Arc::new(crate::peerstore::SystemClock));
        let outcome = tokio::time::timeout(most, connect)
            .await
            .expect("connect still waiting after every attempt's dial_timeout");
        let took = started.elapsed();
        assert!(
            matches!(outcome, Err(PeerStoreError::Backend(_))),
            "{outcome:?}"
        );
        assert!(took >= c.dial_timeout.get(), "gave up after {took:?}");
    }

    /// `read_timeout` and `write_timeout` bound each request; the redis crate has one response
    /// timeout, so the larger of the two is it. Against a Redis frozen with SIGSTOP (the
    /// connection open, nothing answered) a `get` fails after it instead of hanging. Tokio's
    /// clock is paused once connected, so the 40s cost nothing.
    #[tokio::test]
    async fn read_and_write_timeout_bound_a_request_to_a_frozen_redis() {
        for (read, write) in [(40, 1), (1, 40)] {
            let Some(server) = start_redis() else { return };
            let mut c = config(server.port);
            c.read_timeout = Duration::from_secs(read);
            c.write_timeout = Duration::from_secs(write);
            let store = RedisPeerStore::connect(&c, Arc::new(crate::peerstore::SystemClock))
                .await
                .unwrap();
            store.ping().await.unwrap();
            server.freeze();
            tokio::time::pause();
            let started = tokio::time::Instant::now();
            let outcome = tokio::time::timeout(
                std::time::Duration::from_secs(3600),
                store.get(InfoHash([8; 32]), 10),
            )
            .await
            .unwrap_or_else(|_| panic!("read {read}s, write {write}s: get hung"));
            let took = started.elapsed();
            assert!(outcome.is_err(), "a frozen Redis answered");
            let bound = std::time::Duration::from_secs(40);
            assert!(
                took >= bound && took < bound * 2,
                "read {read}s, write {write}s: failed after {took:?}"
            );
            tokio::time::resume();
        }
    }
}
