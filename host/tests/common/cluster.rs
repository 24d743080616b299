//! A P2P cluster of separate `shoal` processes on 127.0.0.x addresses: trackers, origins over
//! one shared `fs` backend, and agents. Each process gets its own loopback address, free ports
//! picked at start, its own data directory, and is killed when the fixture drops.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{lossy_lines, poll_until};

/// A free port on `ip`, found by binding port 0 and letting it go.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .expect("binding a free port")
        .local_addr()
        .unwrap()
        .port()
}

/// The `n`-th test address, 127.0.0.`10 + n` (the whole 127/8 is loopback on Linux).
pub fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + n)
}

/// One `shoal` process of the cluster.
pub struct Node {
    pub name: String,
    /// Its HTTP address (registry port for an agent).
    pub http: SocketAddr,
    /// Its peer port, for agents and origins.
    pub peer: Option<SocketAddr>,
    pub config: PathBuf,
    pub data: PathBuf,
    role: &'static str,
    child: Mutex<Option<Child>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Node {
    fn spawn(
        dir: &Path,
        name: &str,
        role: &'static str,
        yaml: String,
        http: SocketAddr,
        peer: Option<SocketAddr>,
    ) -> Node {
        let config = dir.join(format!("{name}.yaml"));
        std::fs::write(&config, yaml).unwrap();
        let data = dir.join(name);
        std::fs::create_dir_all(&data).unwrap();
        let node = Node {
            name: name.to_owned(),
            http,
            peer,
            config,
            data,
            role,
            child: Mutex::new(None),
            log: Arc::new(Mutex::new(Vec::new())),
        };
        node.start();
        node
    }

    /// Starts the process (again, after [`Node::kill`]) and waits for its `/health`... or, for
    /// an agent, for its registry's `/v2/`.
    pub fn start(&self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
            .arg(self.role)
            .arg("--config")
            .arg(&self.config)
            .arg("--data-dir")
            .arg(&self.data)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,shoal_p2p=debug".to_owned()),
            )
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning shoal");
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        let name = self.name.clone();
        std::thread::spawn(move || {
            for line in lossy_lines(stderr) {
                eprintln!("[{name}] {line}");
                log.lock().unwrap().push(line);
            }
        });
        *self.child.lock().unwrap() = Some(child);
        let url = match self.role {
            "agent" => format!("http://{}/v2/", self.http),
            _ => format!("http://{}/health", self.http),
        };
        let up = poll_until(Duration::from_secs(60), || {
            if let Some(c) = self.child.lock().unwrap().as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "{} exited at start ({status}):\n{}",
                    self.name,
                    self.log().join("\n")
                );
            }
            get(&url).is_some_and(|(status, _)| status == 200)
        });
        assert!(
            up,
            "{} did not come up at {url}:\n{}",
            self.name,
            self.log().join("\n")
        );
    }

    /// Kills the process (SIGKILL: no goodbye to anyone).
    pub fn kill(&self) {
        let child = self.child.lock().unwrap().take();
        if let Some(mut c) = child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// A counter from `/metrics`.
    pub fn metric(&self, name: &str) -> u64 {
        let (status, body) =
            get(&format!("http://{}/metrics", self.http)).expect("reading /metrics");
        assert_eq!(status, 200);
        let text = String::from_utf8(body).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from /metrics of {}:\n{text}", self.name))
    }

    pub fn sent(&self) -> u64 {
        self.metric("shoal_p2p_piece_bytes_sent_total ")
    }

    pub fn received(&self) -> u64 {
        self.metric("shoal_p2p_piece_bytes_received_total ")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A blocking GET with a short timeout: status and body, or `None` when nothing answered.
pub fn get(url: &str) -> Option<(u16, Vec<u8>)> {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(600))
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let resp = client.get(url).send().ok()?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    resp.take(u64::MAX).read_to_end(&mut body).ok()?;
    Some((status, body))
}

/// Settings of a test cluster.
pub struct Spec {
    pub trackers: usize,
    pub origins: usize,
    pub agents: usize,
    pub max_replica: u32,
    /// Whether to run a build-index over the shared backend (agents resolve tags through it).
    pub build_index: bool,
    /// Whether to run a second build-index over a backend folder of its own
    /// ([`Cluster::remote`]), as the remote cluster the first replicates tags to.
    pub remote_build_index: bool,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            trackers: 1,
            origins: 3,
            agents: 6,
            max_replica: 2,
            build_index: false,
            remote_build_index: false,
        }
    }
}

/// The running cluster.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub backend: PathBuf,
    pub trackers: Vec<Node>,
    pub origins: Vec<Node>,
    pub agents: Vec<Node>,
    pub build_index: Option<Node>,
    /// The remote build-index ([`Spec::remote_build_index`]) and its backend folder.
    pub remote: Option<Node>,
    pub remote_backend: PathBuf,
}

fn hosts(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(|a| format!("\"{a}\"")).collect();
    format!("[{}]", list.join(", "))
}

impl Cluster {
    pub fn start(spec: Spec) -> Cluster {
        let dir = super::tempdir("shoal-cluster-");
        let backend = dir.path().join("backend");
        std::fs::create_dir_all(&backend).unwrap();
        let mut n = 0u8;
        let mut next_ip = || {
            n += 1;
            ip(n)
        };
        let tracker_addrs: Vec<SocketAddr> = (0..spec.trackers)
            .map(|_| {
                let ip = next_ip();
                SocketAddr::from((ip, free_port(ip)))
            })
            .collect();
        let origin_addrs: Vec<(SocketAddr, SocketAddr)> = (0..spec.origins)
            .map(|_| {
                let ip = next_ip();
                (
                    SocketAddr::from((ip, free_port(ip))),
                    SocketAddr::from((ip, free_port(ip))),
                )
            })
            .collect();
        let origin_http: Vec<SocketAddr> = origin_addrs.iter().map(|(h, _)| *h).collect();
        let tracker_client = format!(
            "tracker:\n  hosts:\n    static: {}\n  cluster:\n    healthcheck:\n      fails: 2\n      fail_timeout: 5s\n",
            hosts(&tracker_addrs),
        );
        let scheduler =
            "scheduler:\n  announce_interval: 500ms\n  seeder_tti: 2m\n  leecher_tti: 2m\n";
        let trackers = tracker_addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                let yaml = format!(
                    "listen: \"{addr}\"\nannounce_interval: 500ms\norigin:\n  hosts:\n    static: {}\n",
                    hosts(&origin_http)
                );
                Node::spawn(dir.path(), &format!("tracker{i}"), "tracker", yaml, *addr, None)
            })
            .collect();
        let origins = origin_addrs
            .iter()
            .enumerate()
            .map(|(i, (http, peer))| {
                let yaml = format!(
                    "listen: \"{http}\"\npeer:\n  listen: \"{peer}\"\ncluster:\n  hosts:\n    static: {}\n  healthcheck:\n    filter:\n      fails: 2\n      passes: 2\n    monitor:\n      interval: 500ms\n    timeout: 500ms\nhashring:\n  max_replica: {}\nmetainfogen:\n  piece_lengths:\n    0: 1MB\nwriteback:\n  delay: 200ms\nbackends:\n  - namespace: .*\n    backend:\n      fs:\n        root: {}\n{tracker_client}{scheduler}",
                    hosts(&origin_http),
                    spec.max_replica,
                    backend.display(),
                );
                Node::spawn(dir.path(), &format!("origin{i}"), "origin", yaml, *http, Some(*peer))
            })
            .collect();
        let remote_backend = dir.path().join("remote-backend");
        let remote = spec.remote_build_index.then(|| {
            std::fs::create_dir_all(&remote_backend).unwrap();
            let ip = next_ip();
            let addr = SocketAddr::from((ip, free_port(ip)));
            let yaml = format!(
                "listen: \"{addr}\"\nbackends:\n  - namespace: .*\n    backend:\n      fs:\n        root: {}\n",
                remote_backend.display()
            );
            Node::spawn(dir.path(), "remote-build-index", "build-index", yaml, addr, None)
        });
        let build_index = spec.build_index.then(|| {
            let ip = next_ip();
            let addr = SocketAddr::from((ip, free_port(ip)));
            let remotes = match &remote {
                Some(r) => format!(
                    "cluster:\n  hosts:\n    static: [\"{}\"]\nreplication:\n  delay: 200ms\n",
                    r.http
                ),
                None => String::new(),
            };
            let yaml = format!(
                "listen: \"{addr}\"\nbackends:\n  - namespace: .*\n    backend:\n      fs:\n        root: {}\n{remotes}",
                backend.display()
            );
            Node::spawn(dir.path(), "build-index", "build-index", yaml, addr, None)
        });
        let build_index_client = match &build_index {
            Some(b) => format!("build_index:\n  hosts:\n    static: [\"{}\"]\n", b.http),
            None => String::new(),
        };
        let agents = (0..spec.agents)
            .map(|i| {
                let ip = next_ip();
                let http = SocketAddr::from((ip, free_port(ip)));
                let peer = SocketAddr::from((ip, free_port(ip)));
                let yaml = format!(
                    "registry:\n  listen: \"{http}\"\npeer:\n  listen: \"{peer}\"\n{build_index_client}{tracker_client}{scheduler}"
                );
                Node::spawn(dir.path(), &format!("agent{i}"), "agent", yaml, http, Some(peer))
            })
            .collect();
        Cluster {
            dir,
            backend,
            trackers,
            origins,
            agents,
            build_index,
            remote,
            remote_backend,
        }
    }
}
