//! A whole shoal cluster in one test process: tracker, origins, build-index and agents as the
//! library services of `shoal-roles`, each on its own 127.0.0.x address and port 0, over one
//! shared native [`MemoryBackend`], with native health filters. A node is "killed" by dropping
//! its service future: its listeners close and every task it owns (peer connections included)
//! stops, as when a process dies.

#![allow(dead_code)]

mod build_index_setup;
pub mod flaky;
pub mod images;
pub mod proxy_setup;
mod tracker_setup;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use shoal_config::{AgentConfig, OriginConfig, TrackerConfig};
use shoal_p2p::HealthFilter;
use shoal_p2p::tls::{ClusterHttp, ClusterTls};
use shoal_roles::{RoleError, agent, origin};
use shoal_storage::{Backend, MemoryBackend, NamespaceRouter};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use build_index_setup::{BuildIndexSetup, spawn_build_index};
use flaky::FlakyBackend;
use tracker_setup::spawn_tracker;

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

/// A client's tracker health filter that also keeps count of what it was told: per tracker,
/// the requests that got an answer and those that failed. The tracker client reports every
/// request it sends to its filter, so this is the client's own ledger of whom it contacted.
pub struct Observed {
    inner: Arc<dyn HealthFilter>,
    counts: Mutex<HashMap<(String, bool), u64>>,
}

impl Observed {
    /// Counts what `inner` is told, and lets it judge.
    pub fn new(inner: Arc<dyn HealthFilter>) -> Arc<Self> {
        Arc::new(Observed {
            inner,
            counts: Mutex::new(HashMap::new()),
        })
    }

    /// Requests to `host` that got an answer.
    pub fn answered(&self, host: SocketAddr) -> u64 {
        self.count(host, true)
    }

    /// Requests to `host` that failed on the network.
    pub fn failed(&self, host: SocketAddr) -> u64 {
        self.count(host, false)
    }

    fn count(&self, host: SocketAddr, ok: bool) -> u64 {
        let counts = self.counts.lock().unwrap();
        counts.get(&(host.to_string(), ok)).copied().unwrap_or(0)
    }
}

#[async_trait]
impl HealthFilter for Observed {
    async fn observe(&self, host: &str, ok: bool, now: SystemTime) {
        *self
            .counts
            .lock()
            .unwrap()
            .entry((host.to_owned(), ok))
            .or_default() += 1;
        self.inner.observe(host, ok, now).await;
    }

    async fn healthy(&self, host: &str, now: SystemTime) -> bool {
        self.inner.healthy(host, now).await
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
    /// What its tracker client told its health filter (agents and origins).
    pub tracker_calls: Option<Arc<Observed>>,
    task: Option<JoinHandle<Result<(), RoleError>>>,
}

impl Node {
    /// Runs `service` as a node named `name` serving on `http`.
    pub fn spawn(
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
            tracker_calls: None,
            task: Some(task),
        }
    }

    /// Drops the service at once, as `kill -9` would end its process; returns when it is gone
    /// (its listeners closed, so its addresses can be bound again).
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
    pub trackers: usize,
    pub origins: usize,
    pub agents: usize,
    pub max_replica: u32,
    /// Each origin's egress cap on its peer connections, in bits per second.
    pub origin_egress_bits: Option<u64>,
    /// Whether to run a second build-index, over a backend of its own ([`Cluster::remote`]),
    /// as the remote cluster the first one replicates tags to.
    pub remote_build_index: bool,
    /// TLS everywhere: every HTTP port serves `server.tls` (with `client_ca`, but on agents),
    /// every role calls the others with `client_tls`, and peers speak `peer.tls`, all from one
    /// test CA; [`Cluster::http`] presents a certificate from it.
    pub tls: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            trackers: 1,
            origins: 2,
            agents: 3,
            max_replica: 2,
            origin_egress_bits: None,
            remote_build_index: false,
            tls: false,
        }
    }
}

/// What an origin is started from, kept so that a killed one can start again as a restarted
/// process would: same addresses, same config, same data directory, fresh health state.
struct OriginSetup {
    config: OriginConfig,
    data: PathBuf,
}

/// The running cluster.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    /// The one storage backend origins and build-index share.
    pub backend: Arc<MemoryBackend>,
    /// The same backend as seen by the roles: its uploads fail when a test says so.
    pub flaky: Arc<FlakyBackend>,
    router: Arc<NamespaceRouter>,
    pub trackers: Vec<Node>,
    /// What every tracker is started from (its `listen` set per tracker).
    tracker_config: TrackerConfig,
    pub origins: Vec<Node>,
    origin_setups: Vec<OriginSetup>,
    pub build_index: Node,
    build_index_setup: BuildIndexSetup,
    /// The remote cluster's build-index ([`Spec::remote_build_index`]), and its own backend.
    pub remote: Option<Node>,
    remote_setup: Option<BuildIndexSetup>,
    pub remote_backend: Arc<MemoryBackend>,
    pub agents: Vec<Node>,
    /// The config every agent shares (build-index, tracker, scheduler).
    agent_base: String,
    /// The number `ip` gives the next node added.
    next_ip: u8,
    /// What each node's YAML adds for [`Spec::tls`].
    tls: TlsYaml,
    /// A client of every node, over HTTPS with a client certificate when [`Spec::tls`].
    pub http: ClusterHttp,
}

/// The YAML a node of a TLS cluster adds (empty strings for a plain one).
#[derive(Clone, Default)]
struct TlsYaml {
    /// `server:` with `tls` and `client_ca`, and `client_tls:`.
    role: String,
    /// The same without `client_ca`: the registry port of an agent.
    agent: String,
    /// Lines of `peer:` (`tls:` indented by two).
    peer: String,
}

impl TlsYaml {
    fn new(ca: &std::path::Path, cert: &std::path::Path, key: &std::path::Path) -> TlsYaml {
        let (ca, cert, key) = (ca.display(), cert.display(), key.display());
        let client = format!("client_tls:\n  ca: {ca}\n  cert: {cert}\n  key: {key}\n");
        TlsYaml {
            role: format!(
                "server:\n  tls:\n    cert: {cert}\n    key: {key}\n    client_ca: {ca}\n{client}"
            ),
            agent: format!("server:\n  tls:\n    cert: {cert}\n    key: {key}\n{client}"),
            peer: format!("  tls:\n    cert: {cert}\n    key: {key}\n    ca: {ca}\n"),
        }
    }
}

fn hosts(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", list.join(", "))
}

fn config<T: shoal_config::RoleConfig>(yaml: &str) -> T {
    shoal_config::load_str(yaml, &|_| None)
        .unwrap_or_else(|e| panic!("test config does not load: {e}\n{yaml}"))
}

/// Starts origin `i` from `setup` on `listeners`.
fn spawn_origin(
    i: usize,
    setup: &OriginSetup,
    listeners: origin::OriginListeners,
    router: &Arc<NamespaceRouter>,
) -> Node {
    let http = listeners.http.local_addr().unwrap();
    let peer = listeners.peer.local_addr().unwrap();
    let (cfg, data) = (setup.config.clone(), setup.data.clone());
    // The tracker client's filter: `fails` (2) errors in a row take a tracker out; with no
    // request to take it back in, it stays out, as for a `fail_timeout` longer than the test.
    let calls = Observed::new(Consecutive::new(2, 1));
    let deps = origin::OriginDeps {
        backends: router.clone(),
        ring_health: Consecutive::new(2, 2),
        tracker_health: calls.clone(),
    };
    let mut node = Node::spawn(format!("origin{i}"), http, Some(peer), async move {
        origin::serve(&cfg, &data, listeners, deps, std::future::pending()).await
    });
    node.tracker_calls = Some(calls);
    node
}

/// Starts agent `i` on `ip` from the shared `base` config; `registry` is more of its
/// `registry:` section (lines indented by two spaces).
async fn start_agent(
    dir: &std::path::Path,
    i: usize,
    ip: Ipv4Addr,
    base: &str,
    peer_tls: &str,
    registry: &str,
) -> Node {
    let listeners = agent::AgentListeners {
        registry: bind(ip).await,
        peer: bind(ip).await,
        metrics: None,
    };
    let http = listeners.registry.local_addr().unwrap();
    let peer = listeners.peer.local_addr().unwrap();
    let cfg: AgentConfig = config(&format!(
        "registry:\n  listen: \"{http}\"\n{registry}peer:\n  listen: \"{peer}\"\n{peer_tls}{base}"
    ));
    let data = dir.join(format!("agent{i}"));
    // As an origin's: see `spawn_origin`.
    let calls = Observed::new(Consecutive::new(2, 1));
    let deps = agent::AgentDeps {
        tracker_health: calls.clone(),
    };
    let mut node = Node::spawn(format!("agent{i}"), http, Some(peer), async move {
        agent::serve(&cfg, &data, listeners, deps, std::future::pending()).await
    });
    node.tracker_calls = Some(calls);
    node
}

impl Cluster {
    /// Starts one more agent, with `registry` added to its `registry:` section (lines indented
    /// by two spaces, e.g. `"  tag_ttl: 1s\n"`); returns its index once it answers.
    pub async fn add_agent(&mut self, registry: &str) -> usize {
        let i = self.agents.len();
        let ip = ip(self.next_ip);
        self.next_ip += 1;
        let node = start_agent(
            self.dir.path(),
            i,
            ip,
            &self.agent_base,
            &self.tls.peer,
            registry,
        )
        .await;
        self.wait_for(&node).await;
        self.agents.push(node);
        i
    }

    pub async fn start(spec: Spec) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("shoal-roles-cluster-")
            .tempdir()
            .unwrap();
        let backend = Arc::new(MemoryBackend::new("memory"));
        let flaky = FlakyBackend::new(backend.clone());
        let router = Arc::new(NamespaceRouter::single(flaky.clone() as Arc<dyn Backend>));
        let mut n = 0u8;
        let mut next_ip = || {
            n += 1;
            ip(n)
        };
        let (tls, http) = if spec.tls {
            let ca = shoal_p2p::testing::TestCa::new(dir.path(), "cluster");
            // One certificate for every node: it names each address the cluster may use.
            let ips: Vec<std::net::IpAddr> = (1..=60).map(|n| ip(n).into()).collect();
            let (cert, key) = ca.issue_for("node", &ips);
            let client = shoal_config::ClientTls {
                ca: ca.cert(),
                cert: Some(cert.clone()),
                key: Some(key.clone()),
            };
            (
                TlsYaml::new(&ca.cert(), &cert, &key),
                ClusterTls::load(Some(&client)).unwrap(),
            )
        } else {
            (TlsYaml::default(), ClusterTls::plain())
        };
        let tls_role = tls.role.clone();
        // Bind everything first: every config can then name every address.
        let mut tracker_listeners = Vec::new();
        for _ in 0..spec.trackers {
            tracker_listeners.push(bind(next_ip()).await);
        }
        let tracker_addrs: Vec<SocketAddr> = tracker_listeners
            .iter()
            .map(|l| l.local_addr().unwrap())
            .collect();
        let mut origin_listeners = Vec::new();
        for _ in 0..spec.origins {
            let ip = next_ip();
            origin_listeners.push(origin::OriginListeners {
                http: bind(ip).await,
                peer: bind(ip).await,
                metrics: None,
            });
        }
        let origin_http: Vec<SocketAddr> = origin_listeners
            .iter()
            .map(|l| l.http.local_addr().unwrap())
            .collect();
        let build_index_listener = bind(next_ip()).await;
        let build_index_addr = build_index_listener.local_addr().unwrap();
        let remote_listener = match spec.remote_build_index {
            true => Some(bind(next_ip()).await),
            false => None,
        };

        let tracker_client = format!(
            "tracker:\n  hosts:\n    static: {}\n  cluster:\n    healthcheck:\n      fails: 2\n      fail_timeout: 5s\n",
            hosts(&tracker_addrs)
        );
        let scheduler =
            "scheduler:\n  announce_interval: 500ms\n  seeder_tti: 2m\n  leecher_tti: 2m\n";

        let tracker_config: TrackerConfig = config(&format!(
            "announce_interval: 500ms\norigin:\n  hosts:\n    static: {}\n{tls_role}",
            hosts(&origin_http)
        ));
        let trackers = tracker_listeners
            .into_iter()
            .enumerate()
            .map(|(i, listener)| spawn_tracker(i, &tracker_config, listener))
            .collect();

        let origin_scheduler = match spec.origin_egress_bits {
            Some(bits) => format!(
                "{scheduler}  conn:\n    bandwidth:\n      enable: true\n      egress_bits_per_sec: {bits}\n      ingress_bits_per_sec: {}\n",
                bits * 100
            ),
            None => scheduler.to_owned(),
        };
        let mut origins = Vec::new();
        let mut origin_setups = Vec::new();
        for (i, listeners) in origin_listeners.into_iter().enumerate() {
            let http = listeners.http.local_addr().unwrap();
            let setup = OriginSetup {
                config: config(&format!(
                    "listen: \"{http}\"\npeer:\n  listen: \"{}\"\n{}{tls_role}cluster:\n  hosts:\n    static: {}\n  healthcheck:\n    filter:\n      fails: 2\n      passes: 2\n    monitor:\n      interval: 500ms\n    timeout: 500ms\nhashring:\n  max_replica: {}\nmetainfogen:\n  piece_lengths:\n    0: 1MB\nwriteback:\n  retries: 10\n  delay: 100ms\n{tracker_client}{origin_scheduler}",
                    listeners.peer.local_addr().unwrap(),
                    tls.peer,
                    hosts(&origin_http),
                    spec.max_replica,
                )),
                data: dir.path().join(format!("origin{i}")),
            };
            origins.push(spawn_origin(i, &setup, listeners, &router));
            origin_setups.push(setup);
        }

        let remote_backend = Arc::new(MemoryBackend::new("remote-memory"));
        let remotes = match &remote_listener {
            Some(l) => format!(
                "cluster:\n  hosts:\n    static: [\"{}\"]\nreplication:\n  retries: 10\n  delay: 100ms\n",
                l.local_addr().unwrap()
            ),
            None => String::new(),
        };
        let build_index_setup = BuildIndexSetup {
            name: "build-index",
            config: config(&format!(
                "listen: \"{build_index_addr}\"\n{remotes}{tls_role}"
            )),
            data: dir.path().join("build-index"),
            router: router.clone(),
        };
        let build_index = spawn_build_index(&build_index_setup, build_index_listener);
        let (remote, remote_setup) = match remote_listener {
            Some(listener) => {
                let setup = BuildIndexSetup {
                    name: "remote-build-index",
                    config: config(&format!(
                        "listen: \"{}\"\n{tls_role}",
                        listener.local_addr().unwrap()
                    )),
                    data: dir.path().join("remote-build-index"),
                    router: Arc::new(NamespaceRouter::single(
                        remote_backend.clone() as Arc<dyn Backend>
                    )),
                };
                (Some(spawn_build_index(&setup, listener)), Some(setup))
            }
            None => (None, None),
        };

        let agent_base = format!(
            "build_index:\n  hosts:\n    static: [\"{build_index_addr}\"]\n{tracker_client}{scheduler}{}",
            tls.agent
        );
        let mut agents = Vec::new();
        for i in 0..spec.agents {
            agents.push(start_agent(dir.path(), i, next_ip(), &agent_base, &tls.peer, "").await);
        }

        let cluster = Cluster {
            dir,
            backend,
            flaky,
            router,
            trackers,
            tracker_config,
            origins,
            origin_setups,
            build_index,
            build_index_setup,
            remote,
            remote_setup,
            remote_backend,
            agents,
            agent_base,
            next_ip: n + 1,
            tls,
            http: http.http(None).unwrap(),
        };
        cluster.wait_up().await;
        cluster
    }

    /// Starts killed origin `i` again on its addresses, config and data directory, as a
    /// restarted process would (its piece store is what it left on disk); returns once it
    /// answers `/health`.
    pub async fn restart_origin(&mut self, i: usize) {
        let old = &mut self.origins[i];
        old.kill().await;
        let (http, peer) = (old.http, old.peer.unwrap());
        let listeners = origin::OriginListeners {
            http: TcpListener::bind(http)
                .await
                .expect("rebinding the origin's port"),
            peer: TcpListener::bind(peer)
                .await
                .expect("rebinding the origin's peer port"),
            metrics: None,
        };
        self.origins[i] = spawn_origin(i, &self.origin_setups[i], listeners, &self.router);
        self.wait_for(&self.origins[i]).await;
    }

    /// The path of origin `i`'s data directory.
    pub fn origin_data(&self, i: usize) -> &std::path::Path {
        &self.origin_setups[i].data
    }

    /// Waits until every service answers on its HTTP address.
    async fn wait_up(&self) {
        let nodes = self
            .trackers
            .iter()
            .chain(&self.origins)
            .chain(std::iter::once(&self.build_index))
            .chain(&self.remote)
            .chain(&self.agents);
        for node in nodes {
            self.wait_for(node).await;
        }
    }

    /// Waits until `node` answers on its HTTP address (`/v2/` for an agent, else `/health`).
    async fn wait_for(&self, node: &Node) {
        let path = if node.name.starts_with("agent") {
            "/v2/"
        } else {
            "/health"
        };
        let url = self.url(node.http, path);
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

    /// A counter from a node's `/metrics`.
    pub async fn metric(&self, node: &Node, name: &str) -> Option<u64> {
        let text = self
            .http
            .get(self.url(node.http, "/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    }

    /// A node's `/metrics`, parsed by the strict reader (a scrape Prometheus would refuse
    /// fails the test).
    pub async fn scrape(&self, node: &Node) -> shoal_metrics::parse::Scrape {
        let r = self
            .http
            .get(self.url(node.http, "/metrics"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("scraping {}: {e}", node.name));
        assert_eq!(
            r.headers()["content-type"],
            shoal_roles::metrics::CONTENT_TYPE
        );
        let text = r.text().await.unwrap();
        shoal_metrics::parse::parse(&text)
            .unwrap_or_else(|e| panic!("/metrics of {}: {e}\n{text}", node.name))
    }

    /// Whether origin `node` holds `digest` whole (in its piece store: `?local=true`).
    pub async fn holds(&self, node: &Node, namespace: &str, digest: &str) -> bool {
        let path = format!(
            "/namespace/{}/blobs/{digest}?local=true",
            shoal_roles::http::segment(namespace)
        );
        let url = self.url(node.http, &path);
        self.http
            .head(url)
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 200)
    }

    /// Whether origin `witness`'s active check counts ring member `member` healthy (its
    /// `/metrics` line `shoal_ring_member_healthy{member="..."}`); `None` when it cannot say.
    pub async fn sees_healthy(&self, witness: &Node, member: SocketAddr) -> Option<bool> {
        let url = self.url(witness.http, "/metrics");
        let text = self.http.get(url).send().await.ok()?.text().await.ok()?;
        let key = format!("shoal_ring_member_healthy{{member=\"{member}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&key))
            .map(|v| v.trim() == "1")
    }

    /// Waits (up to 30 s) until origin `witness`'s active check counts origin `member` healthy
    /// or not, as `healthy` says; whether it did.
    pub async fn until_judged(&self, witness: usize, member: usize, healthy: bool) -> bool {
        let (witness, member) = (&self.origins[witness], self.origins[member].http);
        poll_until(Duration::from_secs(30), || async {
            self.sees_healthy(witness, member).await == Some(healthy)
        })
        .await
    }

    /// Puts `bytes` into the cluster through origin `i`, as a push: verified and stored, its
    /// write-back to the backend and its copies to the replica set queued. Returns the digest.
    pub async fn push(&self, origin: usize, namespace: &str, bytes: Vec<u8>) -> String {
        let digest = digest_of(&bytes);
        let path = format!(
            "/namespace/{}/blobs/{digest}",
            shoal_roles::http::segment(namespace)
        );
        let url = self.url(self.origins[origin].http, &path);
        let resp = self
            .http
            .put(url)
            .body(bytes)
            .send()
            .await
            .expect("pushing to an origin");
        let status = resp.status().as_u16();
        assert_eq!(status, 201, "push refused: {:?}", resp.text().await);
        digest
    }

    /// Puts `bytes` into the cluster as the proxy does: through the first origin of its
    /// replica set, which then answers the tracker for it. Returns the digest.
    pub async fn push_to_owner(&self, namespace: &str, bytes: Vec<u8>) -> String {
        let digest: shoal_registry::Digest = digest_of(&bytes).parse().unwrap();
        let members: Vec<shoal_config::HostPort> = self
            .origins
            .iter()
            .map(|o| shoal_config::HostPort::new(o.http.ip().to_string(), o.http.port()))
            .collect();
        let ring = shoal_p2p::HashRing::new(members.clone()).unwrap();
        let first = ring.ranked(&digest)[0];
        let owner = members.iter().position(|m| m == first).unwrap();
        self.push(owner, namespace, bytes).await
    }

    /// Starts pulling blob `digest` of `namespace` from every agent at once. The handle yields,
    /// per agent in order, the digest of the bytes it served (hashed as they stream, never held
    /// whole) or why the pull failed.
    pub fn pull_everywhere(
        &self,
        namespace: &str,
        digest: &str,
    ) -> JoinHandle<Vec<Result<String, String>>> {
        let pulls: Vec<_> = self
            .agents
            .iter()
            .map(|a| {
                let url = self.url(a.http, &format!("/v2/{namespace}/blobs/{digest}"));
                pull((*self.http).clone(), url)
            })
            .collect();
        tokio::spawn(futures_util::future::join_all(pulls))
    }

    /// The URL of `path` at `addr`, `https` in a TLS cluster.
    pub fn url(&self, addr: SocketAddr, path: &str) -> String {
        let host = shoal_config::HostPort::new(addr.ip().to_string(), addr.port());
        self.http.url(&host, path)
    }

    /// GETs `path` from agent `i`: status and body.
    pub async fn get(&self, agent: usize, path: &str) -> (u16, Vec<u8>) {
        let url = self.url(self.agents[agent].http, path);
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

/// GETs `url` and hashes the body as it streams: its `sha256:<hex>`, or why it failed.
async fn pull(http: reqwest::Client, url: String) -> Result<String, String> {
    use sha2::Digest as _;
    let mut resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("GET {url}: {status}: {body}"));
    }
    let mut hash = sha2::Sha256::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
        hash.update(&chunk);
    }
    Ok(format!("sha256:{}", hex::encode(hash.finalize())))
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
