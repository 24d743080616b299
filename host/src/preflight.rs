//! The checks a role's start makes before it creates anything (a folder, a plugin cache, a
//! socket), as one function per role that `shoal config check` and the start both run: what
//! passes the check does not then fail at start for these reasons, and a start that fails
//! them leaves nothing behind.
//!
//! - addresses: a peer port on every address needs `peer.ip`; agents and origins need
//!   `tracker.hosts`;
//! - TLS: `server.tls`, `client_tls` and `peer.tls` load (files readable, PEM, key matching);
//! - access: `access.htpasswd` and `access.token.key_file` load;
//! - paths: the folders a start creates (`store.root`, `data_dir`, an `fs` backend's `root`)
//!   are folders or can be made: the nearest part that exists is a folder;
//! - plugins: a `backends:` entry's `plugin:` component is a storage backend this host links,
//!   and a health check's `policy:` a health policy (the built-in components always are); an
//!   `oci://` one is taken from the role's plugin cache or fetched (into memory only, nothing
//!   is written) and verified against its digest first.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use shoal_config::{
    AccessConfig, AgentConfig, BackendEntry, BuildIndexConfig, ClientTls, DevConfig, OriginConfig,
    PeerTls, PluginSource, PluginsConfig, Problem, ProxyConfig, ServerConfig, TrackerClientConfig,
    TrackerConfig,
};
use shoal_host::plugin::{
    PluginEngine, PluginFetcher, PluginLimits, WorldKind, cache_dir, inspect,
};

/// What a role's start would fail on, each at its key.
#[derive(Debug, Default)]
pub struct Findings {
    items: Vec<(String, String)>,
    /// The plugin cache of the data directory a start uses, where `oci://` plugins fetched
    /// before are found; `None` for `config check` of a P2P role (its data directory is a flag).
    plugin_cache: Option<PathBuf>,
}

impl Findings {
    fn at(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.items.push((key.into(), message.into()));
    }

    /// The findings as config problems of `file`, or `Ok` when there are none.
    pub fn into_result(self, file: &Path) -> Result<(), Vec<Problem>> {
        if self.items.is_empty() {
            return Ok(());
        }
        Err(self
            .items
            .into_iter()
            .map(|(path, message)| Problem {
                file: file.display().to_string(),
                path,
                message,
                expected: None,
                value: None,
                hint: None,
            })
            .collect())
    }
}

/// A role's config, checked as its start checks it.
pub trait Preflight {
    /// Records what the start would fail on.
    fn preflight(&self, findings: &mut Findings);
}

/// Runs `config`'s checks; the problems are located in `file`.
pub fn run(config: &impl Preflight, file: &Path) -> Result<(), Vec<Problem>> {
    let mut findings = Findings::default();
    config.preflight(&mut findings);
    findings.into_result(file)
}

/// Runs `config`'s checks for a start with `data_dir`, whose plugin cache holds the `oci://`
/// plugins an earlier start fetched (so a restart does not need the registry).
pub fn run_at_start(
    config: &impl Preflight,
    file: &Path,
    data_dir: &Path,
) -> Result<(), Vec<Problem>> {
    let mut findings = Findings {
        plugin_cache: Some(cache_dir(data_dir)),
        ..Findings::default()
    };
    config.preflight(&mut findings);
    findings.into_result(file)
}

/// `--data-dir` of a P2P role: a folder, or one that can be made.
pub fn data_dir(dir: &Path) -> Result<(), Vec<Problem>> {
    let mut findings = Findings::default();
    creatable("--data-dir", dir, &mut findings);
    findings.into_result(Path::new("(flags)"))
}

/// The problems as the one message a failed start prints.
pub fn message(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

fn peer(listen: SocketAddr, ip: Option<IpAddr>, findings: &mut Findings) {
    if listen.ip().is_unspecified() && ip.is_none() {
        findings.at(
            "peer.ip",
            format!(
                "peer.listen is {listen}, which other peers cannot dial: set peer.ip to this \
                 host's address, or listen on a specific one"
            ),
        );
    }
}

fn tracker_hosts(tracker: &TrackerClientConfig, findings: &mut Findings) {
    if tracker.hosts.is_none() {
        findings.at(
            "tracker.hosts",
            "is not set: every blob is announced to a tracker; expected static: [host:port, ...] \
             or dns: host:port",
        );
    }
}

fn server_tls(server: &ServerConfig, findings: &mut Findings) {
    if let Some(tls) = &server.tls
        && let Err(e) = shoal_roles::serve::load_server_tls(tls)
    {
        findings.at("server.tls", source_of(&e));
    }
}

fn client_tls(tls: Option<&ClientTls>, findings: &mut Findings) {
    if let Err(e) = shoal_roles::serve::load_cluster_tls(tls) {
        findings.at("client_tls", source_of(&e));
    }
}

fn peer_tls(tls: Option<&PeerTls>, findings: &mut Findings) {
    if let Err(e) = shoal_roles::serve::load_peer_tls(tls) {
        findings.at("peer.tls", source_of(&e));
    }
}

fn access(access: &AccessConfig, findings: &mut Findings) {
    if let Err(e) = shoal_registry::Access::load(access) {
        findings.at("access", e.to_string());
    }
}

/// A folder the start creates: it is one, or the nearest part of it that exists is a folder.
fn creatable(key: &str, path: &Path, findings: &mut Findings) {
    let Some(existing) = path
        .ancestors()
        .find(|p| p.as_os_str().is_empty() || p.exists())
    else {
        return;
    };
    if existing.as_os_str().is_empty() || existing.is_dir() {
        return;
    }
    let what = if existing == path {
        "is not a folder".to_owned()
    } else {
        format!("cannot be made: {} is not a folder", existing.display())
    };
    findings.at(key, format!("{} {what}", path.display()));
}

fn store_root(store: &shoal_config::StoreConfig, findings: &mut Findings) {
    if let Some(root) = &store.root {
        creatable("store.root", root, findings);
    }
}

fn fs_roots(backends: &[BackendEntry], findings: &mut Findings) {
    for (i, entry) in backends.iter().enumerate() {
        if let shoal_config::Backend::Fs(fs) = &entry.backend {
            creatable(
                &format!("backends[{i}].backend.fs.root"),
                &fs.root,
                findings,
            );
        }
    }
}

/// The cause of a start error, without the key its message starts with (the finding names it).
fn source_of(e: &dyn std::error::Error) -> String {
    e.source().map_or_else(|| e.to_string(), |s| s.to_string())
}

/// Components named by the config: each must implement `world`. An engine is made only when
/// there is one to look at, and without a compilation cache; `oci://` components are read
/// from the plugin cache or fetched into memory; so nothing is written.
struct Components<'a> {
    plugins: &'a PluginsConfig,
    fetcher: PluginFetcher,
    engine: Option<PluginEngine>,
}

impl<'a> Components<'a> {
    fn new(plugins: &'a PluginsConfig, plugin_cache: Option<&Path>) -> Self {
        Components {
            plugins,
            fetcher: PluginFetcher::read_only(plugins, plugin_cache),
            engine: None,
        }
    }

    fn check(
        &mut self,
        key: String,
        source: &PluginSource,
        world: WorldKind,
        findings: &mut Findings,
    ) {
        let (name, wasm) = match self.fetcher.component(source) {
            Ok(found) => found,
            Err(e) => return findings.at(key, e.to_string()),
        };
        if self.engine.is_none() {
            match PluginEngine::new(PluginLimits::from_config(self.plugins), None) {
                Ok(engine) => self.engine = Some(engine),
                Err(e) => return findings.at(key, format!("the plugin engine: {e}")),
            }
        }
        let Some(engine) = &self.engine else { return };
        match inspect(engine, &name, &wasm) {
            Err(e) => findings.at(key, format!("{source}: {e}")),
            Ok(found) if found.world != world => findings.at(
                key,
                format!("{source} implements {}, not {world}", found.world),
            ),
            Ok(found) => {
                if let Err(why) = found.runnable {
                    findings.at(key, format!("{source} cannot run here: {why}"));
                }
            }
        }
    }

    fn backends(&mut self, backends: &[BackendEntry], findings: &mut Findings) {
        for (i, entry) in backends.iter().enumerate() {
            if let shoal_config::Backend::Plugin(p) = &entry.backend {
                let key = format!("backends[{i}].backend.plugin.plugin");
                self.check(key, &p.plugin, WorldKind::Backend, findings);
            }
        }
    }

    fn policy(&mut self, key: &str, policy: Option<&PluginSource>, findings: &mut Findings) {
        if let Some(source) = policy {
            self.check(key.to_owned(), source, WorldKind::Policy, findings);
        }
    }
}

impl Preflight for AgentConfig {
    fn preflight(&self, f: &mut Findings) {
        store_root(&self.store, f);
        peer(self.peer.listen, self.peer.ip, f);
        tracker_hosts(&self.tracker, f);
        server_tls(&self.server, f);
        client_tls(self.client_tls.as_ref(), f);
        peer_tls(self.peer.tls.as_ref(), f);
        let plugins = PluginsConfig::default();
        let mut components = Components::new(&plugins, f.plugin_cache.as_deref());
        let policy = self.tracker.cluster.healthcheck.policy.as_ref();
        components.policy("tracker.cluster.healthcheck.policy", policy, f);
    }
}

impl Preflight for OriginConfig {
    fn preflight(&self, f: &mut Findings) {
        store_root(&self.store, f);
        fs_roots(&self.backends, f);
        peer(self.peer.listen, self.peer.ip, f);
        tracker_hosts(&self.tracker, f);
        server_tls(&self.server, f);
        client_tls(self.client_tls.as_ref(), f);
        peer_tls(self.peer.tls.as_ref(), f);
        let mut components = Components::new(&self.plugins, f.plugin_cache.as_deref());
        components.backends(&self.backends, f);
        let active = self.cluster.healthcheck.policy.as_ref();
        components.policy("cluster.healthcheck.policy", active, f);
        let passive = self.tracker.cluster.healthcheck.policy.as_ref();
        components.policy("tracker.cluster.healthcheck.policy", passive, f);
    }
}

impl Preflight for TrackerConfig {
    fn preflight(&self, f: &mut Findings) {
        server_tls(&self.server, f);
        client_tls(self.client_tls.as_ref(), f);
        let plugins = PluginsConfig::default();
        let mut components = Components::new(&plugins, f.plugin_cache.as_deref());
        let policy = self.cluster.healthcheck.policy.as_ref();
        components.policy("cluster.healthcheck.policy", policy, f);
    }
}

impl Preflight for BuildIndexConfig {
    fn preflight(&self, f: &mut Findings) {
        server_tls(&self.server, f);
        client_tls(self.client_tls.as_ref(), f);
        fs_roots(&self.backends, f);
        Components::new(&self.plugins, f.plugin_cache.as_deref()).backends(&self.backends, f);
    }
}

impl Preflight for ProxyConfig {
    fn preflight(&self, f: &mut Findings) {
        server_tls(&self.server, f);
        client_tls(self.client_tls.as_ref(), f);
        access(&self.access, f);
    }
}

impl Preflight for DevConfig {
    fn preflight(&self, f: &mut Findings) {
        creatable("data_dir", &self.data_dir, f);
        server_tls(&self.server, f);
        access(&self.access, f);
        fs_roots(&self.backends, f);
        // The dev role names its data directory in its config: its cache is known here.
        let cache = cache_dir(&self.data_dir);
        Components::new(&self.plugins, Some(&cache)).backends(&self.backends, f);
    }
}
