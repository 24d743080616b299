//! An origin's view of its own ring (`cluster:`, `hashring:`): the members, re-resolved every
//! `hashring.refresh_interval` when they are a DNS name, and their health from the active
//! check: every `cluster.healthcheck.monitor.interval` each other member's `/health` is asked
//! (within `cluster.healthcheck.timeout`) and the answer fed to the active health policy
//! passed in (in production the `health-active` component: `fails` in a row out, `passes` in a
//! row back in, or a custom `policy:`).
//! Requests for a blob go to the healthy members of its replica set, best score first.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use shoal_config::{ClusterConfig, HashRingConfig, HostPort, Hosts};
use shoal_p2p::tls::{ClusterHttp, ClusterTls};
use shoal_p2p::{HashRing, HealthFilter, Tasks};
use shoal_registry::Digest;

use crate::RoleError;
use crate::hosts::hosts_of;

/// What turns a `dns:` host list into members: DNS in production, a script in tests.
type Resolver = Arc<
    dyn Fn(Hosts) -> futures_util::future::BoxFuture<'static, Result<Vec<HostPort>, RoleError>>
        + Send
        + Sync,
>;

fn dns_resolver() -> Resolver {
    Arc::new(|hosts: Hosts| Box::pin(async move { hosts_of(&hosts).await }))
}

/// The ring and what the active check last concluded of each member.
pub struct Ring {
    me: Option<HostPort>,
    max_replica: usize,
    state: RwLock<State>,
}

struct State {
    ring: HashRing,
    /// Verdict per member; members never checked (this origin) are healthy.
    healthy: BTreeMap<HostPort, bool>,
}

/// Where this member listens, to find itself in the list.
struct Where {
    listen: SocketAddr,
    peer_ip: Option<IpAddr>,
}

impl Ring {
    /// Builds the ring for an origin listening on `listen` and starts its monitor (judged by
    /// `health`, over HTTPS when `tls` says so) and, for a DNS name, its refresher, both in `tasks`. Without `cluster.hosts`
    /// the ring is this origin alone.
    pub async fn start(
        cluster: &ClusterConfig,
        hashring: &HashRingConfig,
        listen: SocketAddr,
        peer_ip: Option<IpAddr>,
        health: Arc<dyn HealthFilter>,
        tls: &ClusterTls,
        tasks: &Tasks,
    ) -> Result<Arc<Ring>, RoleError> {
        let at = Where { listen, peer_ip };
        Self::start_with(cluster, hashring, at, health, tls, tasks, dns_resolver()).await
    }

    async fn start_with(
        cluster: &ClusterConfig,
        hashring: &HashRingConfig,
        Where { listen, peer_ip }: Where,
        health: Arc<dyn HealthFilter>,
        tls: &ClusterTls,
        tasks: &Tasks,
        resolve: Resolver,
    ) -> Result<Arc<Ring>, RoleError> {
        let alone = HostPort::new(listen.ip().to_string(), listen.port());
        let hosts = match &cluster.hosts {
            Some(h) => resolve(h.clone()).await?,
            None => vec![alone.clone()],
        };
        let me = hosts.iter().find(|h| is_me(h, listen, peer_ip)).cloned();
        let ring = Arc::new(Ring {
            me,
            max_replica: hashring.max_replica.max(1) as usize,
            state: RwLock::new(State {
                healthy: hosts.iter().map(|h| (h.clone(), true)).collect(),
                ring: HashRing::new(hosts)?,
            }),
        });
        if cluster.hosts.is_some() {
            let check = cluster.healthcheck.clone();
            let watched = ring.clone();
            let http = tls.http(Some(check.timeout.get()))?;
            tasks.spawn(async move {
                watched
                    .monitor(health, http, check.monitor.interval.get())
                    .await
            });
        }
        if let Some(Hosts::Dns(name)) = &cluster.hosts {
            let refreshed = ring.clone();
            let hosts = Hosts::Dns(name.clone());
            let every = hashring.refresh_interval.get().max(Duration::from_secs(1));
            tasks.spawn(async move { refreshed.refresh(hosts, every, resolve).await });
        }
        Ok(ring)
    }

    /// This origin's entry in the ring, when it is listed.
    pub fn me(&self) -> Option<&HostPort> {
        self.me.as_ref()
    }

    /// The healthy members of `digest`'s replica set, best first (never empty: see
    /// [`HashRing::owners`]).
    pub fn owners(&self, digest: &Digest) -> Vec<HostPort> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .ring
            .owners(digest, self.max_replica, |h| {
                state.healthy.get(h).copied().unwrap_or(true)
            })
            .into_iter()
            .cloned()
            .collect()
    }

    /// `digest`'s whole replica set, best first, healthy or not: the members that should hold
    /// a copy (a copy for an unhealthy one waits until it is back).
    pub fn replica_set(&self, digest: &Digest) -> Vec<HostPort> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .ring
            .replica_set(digest, self.max_replica)
            .into_iter()
            .cloned()
            .collect()
    }

    /// The active check's verdict on `host` (healthy when never checked).
    pub fn is_healthy(&self, host: &HostPort) -> bool {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.healthy.get(host).copied().unwrap_or(true)
    }

    /// Every member and its verdict, for `/metrics`.
    pub fn health(&self) -> Vec<(HostPort, bool)> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .healthy
            .iter()
            .map(|(h, ok)| (h.clone(), *ok))
            .collect()
    }

    async fn monitor(&self, policy: Arc<dyn HealthFilter>, http: ClusterHttp, every: Duration) {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let members: Vec<HostPort> = {
                let state = self.state.read().unwrap_or_else(|e| e.into_inner());
                state.ring.hosts().to_vec()
            };
            let checks = members
                .iter()
                .filter(|h| Some(*h) != self.me.as_ref())
                .map(|h| {
                    let http = &http;
                    async move {
                        let ok = match http.get(http.url(h, "/health")).send().await {
                            Ok(r) => r.status().is_success(),
                            Err(_) => false,
                        };
                        (h, ok)
                    }
                });
            let results = futures_util::future::join_all(checks).await;
            let now = SystemTime::now();
            let mut verdicts = Vec::with_capacity(results.len());
            for (host, ok) in results {
                let name = host.to_string();
                // A policy that cannot answer fails open (HealthFilter's contract): it must not
                // empty the ring.
                policy.observe(&name, ok, now).await;
                let healthy = policy.healthy(&name, now).await;
                verdicts.push((host.clone(), healthy));
            }
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            for (host, healthy) in verdicts {
                let before = state.healthy.insert(host.clone(), healthy);
                if before != Some(healthy) {
                    if healthy {
                        tracing::info!(%host, "origin is healthy");
                    } else {
                        tracing::warn!(%host, "origin is unhealthy");
                    }
                }
            }
        }
    }

    async fn refresh(&self, hosts: Hosts, every: Duration, resolve: Resolver) {
        loop {
            tokio::time::sleep(every).await;
            let resolved = match resolve(hosts.clone()).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(%e, "re-resolving the ring failed; keeping the members");
                    continue;
                }
            };
            let Ok(ring) = HashRing::new(resolved.clone()) else {
                continue;
            };
            let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
            if state.ring.hosts() != ring.hosts() {
                tracing::info!(members = resolved.len(), "ring members changed");
                let old = std::mem::take(&mut state.healthy);
                state.healthy = resolved
                    .iter()
                    .map(|h| (h.clone(), old.get(h).copied().unwrap_or(true)))
                    .collect();
                state.ring = ring;
            }
        }
    }
}

/// Whether ring member `h` is this origin: its port, and its address, or any loopback or
/// `peer.ip` address when the origin listens on all addresses.
fn is_me(h: &HostPort, listen: SocketAddr, peer_ip: Option<IpAddr>) -> bool {
    let Ok(ip) = h.host().parse::<IpAddr>() else {
        return false;
    };
    h.port() == listen.port()
        && (ip == listen.ip()
            || (listen.ip().is_unspecified() && (ip.is_loopback() || Some(ip) == peer_ip)))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;

    use super::*;

    /// The last check decides, as the active policy with `fails: 1, passes: 1` does.
    #[derive(Default)]
    struct LastCheck(Mutex<BTreeMap<String, bool>>);

    #[async_trait]
    impl HealthFilter for LastCheck {
        async fn observe(&self, host: &str, ok: bool, _: SystemTime) {
            self.0.lock().unwrap().insert(host.to_owned(), ok);
        }
        async fn healthy(&self, host: &str, _: SystemTime) -> bool {
            self.0.lock().unwrap().get(host).copied().unwrap_or(true)
        }
    }

    async fn poll(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `cluster.healthcheck.monitor.interval` paces the pings of the other members, and
    /// `cluster.healthcheck.timeout` bounds each: a member that accepts the connection and never
    /// answers is judged unhealthy through the timeout alone, while one that answers stays up.
    /// Origins and trackers run this same monitor over their `cluster.healthcheck`.
    #[tokio::test]
    async fn the_monitor_pings_every_interval_and_a_silent_member_fails_by_timeout() {
        let pings = Arc::new(AtomicUsize::new(0));
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_addr = live.local_addr().unwrap();
        let counted = pings.clone();
        let app = axum::Router::new().route(
            "/health",
            axum::routing::get(move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { "ok" }
            }),
        );
        tokio::spawn(async move { axum::serve(live, app).await });
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                held.push(s);
            }
        });
        let cluster: ClusterConfig = serde_yaml_ng::from_str(&format!(
            "hosts:\n  static: [\"{live_addr}\", \"{silent_addr}\"]\nhealthcheck:\n  \
             filter: {{fails: 1, passes: 1}}\n  monitor: {{interval: 100ms}}\n  timeout: 300ms\n"
        ))
        .unwrap();
        let tasks = Tasks::new();
        let me: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let ring = Ring::start(
            &cluster,
            &HashRingConfig::default(),
            me,
            None,
            Arc::new(LastCheck::default()),
            &ClusterTls::plain(),
            &tasks,
        )
        .await
        .unwrap();
        let silent_host = HostPort::new("127.0.0.1", silent_addr.port());
        let live_host = HostPort::new("127.0.0.1", live_addr.port());
        poll("the silent member is judged unhealthy", || {
            !ring.is_healthy(&silent_host)
        })
        .await;
        poll("the live member is pinged again and again", || {
            pings.load(Ordering::SeqCst) >= 5
        })
        .await;
        assert!(ring.is_healthy(&live_host));
        tasks.shutdown().await;
    }

    /// `hashring.refresh_interval`: a `dns:` ring is resolved again on this interval and takes
    /// the new member list (here a resolver that answers one list, then another).
    #[tokio::test]
    async fn a_dns_ring_is_resolved_again_every_refresh_interval() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let resolve: Resolver = Arc::new(move |_| {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                Ok(if n == 0 {
                    vec![HostPort::new("10.0.0.1", 15002)]
                } else {
                    vec![
                        HostPort::new("10.0.0.1", 15002),
                        HostPort::new("10.0.0.2", 15002),
                    ]
                })
            })
        });
        let cluster: ClusterConfig =
            serde_yaml_ng::from_str("hosts:\n  dns: origins.test:15002\n").unwrap();
        let hashring: HashRingConfig =
            serde_yaml_ng::from_str("max_replica: 2\nrefresh_interval: 1s\n").unwrap();
        let tasks = Tasks::new();
        let at = Where {
            listen: "127.0.0.1:15002".parse().unwrap(),
            peer_ip: None,
        };
        let health = Arc::new(LastCheck::default());
        let ring = Ring::start_with(
            &cluster,
            &hashring,
            at,
            health,
            &ClusterTls::plain(),
            &tasks,
            resolve,
        )
        .await
        .unwrap();
        assert_eq!(ring.health().len(), 1, "the first answer");
        poll("the second answer becomes the ring", || {
            ring.health().len() == 2
        })
        .await;
        poll("and it is asked again, interval after interval", || {
            calls.load(Ordering::SeqCst) >= 3
        })
        .await;
        tasks.shutdown().await;
    }
}
