//! A whole shoal cluster in one test process: tracker, origins, build-index and agents as the
//! library services of `shoal-roles`, each on its own 127.0.0.x address and port 0, over one
//! shared native [`MemoryBackend`], with native health filters. A node is "killed" by dropping
//! its service future: its listeners close and every task it owns (peer connections included)
//! stops, as when a process dies.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use shoal_config::{AgentConfig, BuildIndexConfig, OriginConfig, TrackerConfig};
use shoal_p2p::HealthFilter;
use shoal_roles::{RoleError, agent, build_index, origin, tracker};
use shoal_storage::{Backend, MemoryBackend, NamespaceRouter};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A native stand-in for the health-policy components: `fails` failures in a row take a host
/// out, `passes` successes in a row bring it back (the active filter's rule; with `passes: 1`
/// close enough to the passive one for these tests).
#[derive(Debug)]
pub struct Consecutive {
    fails: u32,
    passes: u32,
    hosts: Mutex<HashMap<String, (bool, u32)>>,
}

impl Consecutive {
    pub fn new(fails: u32, passes: u32) -> Arc<Self> {
        Arc::new(Consecutive {
            fails,
            passes,
            hosts: Mutex::new(HashMap::new()),
        })
    }
}

#[async_trait]
impl HealthFilter for Consecutive {
    async fn observe(&self, host: &str, ok: bool, _: SystemTime) {
        let mut hosts = self.hosts.lock().unwrap();
        let (healthy, streak) = hosts.entry(host.to_owned()).or_insert((true, 0));
        if ok == *healthy {
            *streak = 0;
            return;
        }
        *streak += 1;
        let needed = if *healthy { self.fails } else { self.passes };
        if *streak >= needed {
            *healthy = ok;
            *streak = 0;
        }
    }

    async fn healthy(&self, host: &str, _: SystemTime) -> bool {
        self.hosts.lock().unwrap().get(host).is_none_or(|h| h.0)
    }
}

/// Polls `ready` every 50 ms until it holds or `deadline` passes.
pub async fn poll_until<F, Fut>(deadline: Duration, mut ready: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if ready().await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `n`-th test address, 127.0.0.`100 + n` (the whole 127/8 is loopback on Linux).
pub fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 100 + n)
}

async fn bind(ip: Ipv4Addr) -> TcpListener {
    TcpListener::bind((ip, 0)).await.expect("binding port 0")
}

/// One running service; dropping it (or [`Node::kill`]) stops it.
pub struct Node {
    pub name: String,
    /// Its HTTP address (registry port for an agent).
    pub http: SocketAddr,
    /// Its peer port (agents and origins).
    pub peer: Option<SocketAddr>,
    task: Option<JoinHandle<Result<(), RoleError>>>,
}

impl Node {
    fn spawn(
        name: String,
        http: SocketAddr,
        peer: Option<SocketAddr>,
        service: impl std::future::Future<Output = Result<(), RoleError>> + Send + 'static,
    ) -> Node {
        let task = tokio::spawn(service);
        Node {
            name,
            http,
            peer,
            task: Some(task),
        }
    }

    /// Drops the service at once, as `kill -9` would end its process; returns when it is gone.
    pub async fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Whether the service is still running (it did not fail at start).
    pub fn running(&self) -> bool {
        self.task.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Settings of a test cluster.
pub struct Spec {
    pub origins: usize,
    pub agents: usize,
    pub max_replica: u32,
    /// Each origin's egress cap on its peer connections, in bits per second.
    pub origin_egress_bits: Option<u64>,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            origins: 2,
            agents: 3,
            max_replica: 2,
            origin_egress_bits: None,
        }
    }
}

/// The running cluster.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// The one storage backend origins and build-index share.
    pub backend: Arc<MemoryBackend>,
    pub tracker: Node,
    pub origins: Vec<Node>,
    pub build_index: Node,
    pub agents: Vec<Node>,
    pub http: reqwest::Client,
}

fn hosts(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", list.join(", "))
}

fn config<T: shoal_config::RoleConfig>(yaml: &str) -> T {
    shoal_config::load_str(yaml, &|_| None)
        .unwrap_or_else(|e| panic!("test config does not load: {e}\n{yaml}"))
}

impl Cluster {
    pub async fn start(spec: Spec) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("shoal-roles-cluster-")
            .tempdir()
            .unwrap();
        let backend = Arc::new(MemoryBackend::new("memory"));
        let router = Arc::new(NamespaceRouter::single(backend.clone() as Arc<dyn Backend>));
        let mut n = 0u8;
        let mut next_ip = || {
            n += 1;
            ip(n)
        };
        // Bind everything first: every config can then name every address.
        let tracker_listener = bind(next_ip()).await;
        let tracker_addr = tracker_listener.local_addr().unwrap();
        let mut origin_listeners = Vec::new();
        for _ in 0..spec.origins {
            let ip = next_ip();
            origin_listeners.push(origin::OriginListeners {
                http: bind(ip).await,
                peer: bind(ip).await,
            });
        }
        let origin_http: Vec<SocketAddr> = origin_listeners
            .iter()
            .map(|l| l.http.local_addr().unwrap())
            .collect();
        let build_index_listener = bind(next_ip()).await;
        let build_index_addr = build_index_listener.local_addr().unwrap();

        let tracker_client = format!(
            "tracker:\n  hosts:\n    static: [\"{tracker_addr}\"]\n  cluster:\n    healthcheck:\n      fails: 2\n      fail_timeout: 5s\n"
        );
        let scheduler =
            "scheduler:\n  announce_interval: 500ms\n  seeder_tti: 2m\n  leecher_tti: 2m\n";

        let tracker_config: TrackerConfig = config(&format!(
            "listen: \"{tracker_addr}\"\nannounce_interval: 500ms\norigin:\n  hosts:\n    static: {}\n",
            hosts(&origin_http)
        ));
        let tracker = Node::spawn(
            "tracker".into(),
            tracker_addr,
            None,
            tracker::serve(
                tracker_config,
                tracker_listener,
                tracker::TrackerDeps {
                    origin_health: Consecutive::new(2, 2),
                },
                std::future::pending(),
            ),
        );

        let origin_scheduler = match spec.origin_egress_bits {
            Some(bits) => format!(
                "{scheduler}  conn:\n    bandwidth:\n      enable: true\n      egress_bits_per_sec: {bits}\n      ingress_bits_per_sec: {}\n",
                bits * 100
            ),
            None => scheduler.to_owned(),
        };
        let mut origins = Vec::new();
        for (i, listeners) in origin_listeners.into_iter().enumerate() {
            let http = listeners.http.local_addr().unwrap();
            let peer = listeners.peer.local_addr().unwrap();
            let cfg: OriginConfig = config(&format!(
                "listen: \"{http}\"\npeer:\n  listen: \"{}\"\ncluster:\n  hosts:\n    static: {}\n  healthcheck:\n    filter:\n      fails: 2\n      passes: 2\n    monitor:\n      interval: 500ms\n    timeout: 500ms\nhashring:\n  max_replica: {}\nmetainfogen:\n  piece_lengths:\n    0: 1MB\n{tracker_client}{origin_scheduler}",
                listeners.peer.local_addr().unwrap(),
                hosts(&origin_http),
                spec.max_replica,
            ));
            let data = dir.path().join(format!("origin{i}"));
            let deps = origin::OriginDeps {
                backends: router.clone(),
                ring_health: Consecutive::new(2, 2),
                tracker_health: Consecutive::new(2, 1),
            };
            origins.push(Node::spawn(format!("origin{i}"), http, Some(peer), async move {
                origin::serve(&cfg, &data, listeners, deps, std::future::pending()).await
            }));
        }

        let bi_config: BuildIndexConfig = config(&format!("listen: \"{build_index_addr}\"\n"));
        let bi_router = router.clone();
        let build_index = Node::spawn("build-index".into(), build_index_addr, None, async move {
            build_index::serve(
                &bi_config,
                build_index_listener,
                build_index::BuildIndexDeps {
                    backends: bi_router,
                },
                std::future::pending(),
            )
            .await
        });

        let mut agents = Vec::new();
        for i in 0..spec.agents {
            let ip = next_ip();
            let listeners = agent::AgentListeners {
                registry: bind(ip).await,
                peer: bind(ip).await,
            };
            let http = listeners.registry.local_addr().unwrap();
            let peer = listeners.peer.local_addr().unwrap();
            let cfg: AgentConfig = config(&format!(
                "registry:\n  listen: \"{http}\"\npeer:\n  listen: \"{}\"\nbuild_index:\n  hosts:\n    static: [\"{build_index_addr}\"]\n{tracker_client}{scheduler}",
                listeners.peer.local_addr().unwrap(),
            ));
            let data = dir.path().join(format!("agent{i}"));
            let deps = agent::AgentDeps {
                tracker_health: Consecutive::new(2, 1),
            };
            agents.push(Node::spawn(format!("agent{i}"), http, Some(peer), async move {
                agent::serve(&cfg, &data, listeners, deps, std::future::pending()).await
            }));
        }

        let cluster = Cluster {
            dir,
            backend,
            tracker,
            origins,
            build_index,
            agents,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .build()
                .unwrap(),
        };
        cluster.wait_up().await;
        cluster
    }

    /// Waits until every service answers on its HTTP address.
    async fn wait_up(&self) {
        let nodes = std::iter::once(&self.tracker)
            .chain(&self.origins)
            .chain(std::iter::once(&self.build_index))
            .chain(&self.agents);
        for node in nodes {
            let path = if node.name.starts_with("agent") {
                "/v2/"
            } else {
                "/health"
            };
            let url = format!("http://{}{path}", node.http);
            let up = poll_until(Duration::from_secs(30), || async {
                assert!(node.running(), "{} stopped at start", node.name);
                self.http
                    .get(&url)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            })
            .await;
            assert!(up, "{} did not come up at {url}", node.name);
        }
    }

    /// A counter from a node's `/metrics`.
    pub async fn metric(&self, node: &Node, name: &str) -> Option<u64> {
        let text = self
            .http
            .get(format!("http://{}/metrics", node.http))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    }

    /// Whether origin `node` holds `digest` whole.
    pub async fn holds(&self, node: &Node, namespace: &str, digest: &str) -> bool {
        let url = format!(
            "http://{}/namespace/{}/blobs/{digest}",
            node.http,
            shoal_roles::http::segment(namespace)
        );
        self.http
            .head(url)
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 200)
    }

    /// GETs `path` from agent `i`: status and body.
    pub async fn get(&self, agent: usize, path: &str) -> (u16, Vec<u8>) {
        let url = format!("http://{}{path}", self.agents[agent].http);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = resp.status().as_u16();
        (status, resp.bytes().await.unwrap().to_vec())
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest_of(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// `len` bytes that do not repeat in any obvious way (a counter through SHA-256).
pub fn noise(len: usize, seed: u8) -> Vec<u8> {
    use sha2::Digest as _;
    let mut out = Vec::with_capacity(len + 32);
    let mut i: u64 = 0;
    while out.len() < len {
        let mut h = sha2::Sha256::new();
        h.update([seed]);
        h.update(i.to_le_bytes());
        out.extend_from_slice(&h.finalize());
        i += 1;
    }
    out.truncate(len);
    out
}
