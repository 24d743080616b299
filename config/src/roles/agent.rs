//! The agent: the read-only registry on every node, and a P2P peer.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::{AgentPeer, local_addr};
use crate::cluster::{RemoteCluster, TrackerClientConfig};
use crate::duration::Duration;
use crate::keypath::KeyPath;
use crate::load::sealed;
use crate::log::LogConfig;
use crate::net::Cidr;
use crate::observe::MetricsConfig;
use crate::plugin_source::{check_pins, policy_source};
use crate::scheduler::SchedulerConfig;
use crate::server::{ClientTls, ServerConfig};
use crate::store::StoreConfig;
use crate::validate::{Problems, Validate};

/// `agent.yaml`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The registry endpoint containerd and Docker pull from.
    pub registry: AgentRegistry,
    /// The P2P endpoint.
    pub peer: AgentPeer,
    /// Where tags are resolved.
    pub build_index: RemoteCluster,
    /// Where torrents are announced.
    pub tracker: TrackerClientConfig,
    /// P2P download settings.
    pub scheduler: SchedulerConfig,
    /// On-disk cache.
    pub store: StoreConfig,
    /// Clients allowed to use the registry endpoint; unset means any.
    pub allowed_cidrs: Option<Vec<Cidr>>,
    /// Connection limits, timeouts and TLS of the HTTP listeners.
    pub server: ServerConfig,
    /// HTTPS to the other roles; unset speaks plain HTTP to them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_tls: Option<ClientTls>,
    /// Logging.
    pub log: LogConfig,
    /// Metrics endpoint.
    pub metrics: MetricsConfig,
}

/// An agent's `registry:` section.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentRegistry {
    /// Where the registry listens [127.0.0.1:16000]: only this node's runtime should pull here.
    #[serde(with = "crate::net::listen_addr")]
    pub listen: SocketAddr,
    /// How long a tag the build-index resolved is served without asking again [0s: every
    /// request by tag asks, so a tag pushed again is seen at once].
    pub tag_ttl: Duration,
    /// containerd's `?ns=`: the upstream hosts this agent mirrors, each mapped to the prefix
    /// its repositories have here (empty: names as they are). Unset mirrors every host:
    /// Docker Hub's names as they are, any other host `h`'s under `h/`. A host not listed
    /// gets 404, so containerd falls back to its next host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirrors: Option<BTreeMap<String, String>>,
}

impl Default for AgentRegistry {
    fn default() -> Self {
        AgentRegistry {
            listen: local_addr(16000),
            tag_ttl: Duration::ZERO,
            mirrors: None,
        }
    }
}

impl Validate for AgentRegistry {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        let Some(mirrors) = &self.mirrors else {
            return;
        };
        let at = at.key("mirrors");
        for (host, prefix) in mirrors {
            let here = at.key(host);
            problems.require(
                is_host_port(host),
                &here,
                &format!("{host:?} is not a registry host"),
                "host or host:port, like ghcr.io or registry.local:5000",
            );
            problems.require(
                prefix.is_empty() || is_repository(prefix),
                &here,
                &format!("prefix {prefix:?} is not a repository name"),
                "empty (names as they are) or lowercase components like ghcr.io or mirrors/ghcr",
            );
        }
    }
}

/// `host[:port]`: a DNS name or IPv4 address, or an IPv6 address in brackets; the port from 1
/// to 65535. The registry's `mirror::host_key` reads the same grammar.
fn is_host_port(s: &str) -> bool {
    let (host_ok, port) = match s.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, after)) => (
                ip.parse::<std::net::Ipv6Addr>().is_ok(),
                match after {
                    "" => None,
                    p => Some(p.strip_prefix(':').unwrap_or("")),
                },
            ),
            None => (false, None),
        },
        None => {
            let (host, port) = match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            };
            let label = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            };
            (host.len() <= 253 && host.split('.').all(label), port)
        }
    };
    let port_ok = port.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 5
            && p.bytes().all(|b| b.is_ascii_digit())
            && p.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n))
    });
    host_ok && port_ok
}

/// A repository name: `/`-separated components of `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, at most
/// 255 characters, as the distribution spec writes them.
fn is_repository(s: &str) -> bool {
    let component = |c: &str| {
        let b = c.as_bytes();
        let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
        if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
            return false;
        }
        let mut i = 0;
        while i < b.len() {
            if alnum(b[i]) {
                i += 1;
                continue;
            }
            let (start, sep) = (i, b[i]);
            while i < b.len() && b[i] == sep {
                i += 1;
            }
            let ok = match sep {
                b'.' => i - start == 1,
                b'_' => i - start <= 2,
                b'-' => true,
                _ => false,
            };
            if !ok {
                return false;
            }
        }
        true
    };
    s.len() <= 255 && s.split('/').all(component)
}

impl sealed::Role for AgentConfig {
    fn check(&self, problems: &mut Problems) {
        let root = KeyPath::root();
        self.server.validate(&root.key("server"), problems);
        if let Some(tls) = &self.peer.tls {
            tls.validate(&root.key("peer").key("tls"), problems);
        }
        if let Some(tls) = &self.client_tls {
            tls.validate(&root.key("client_tls"), problems);
        }
        self.registry.validate(&root.key("registry"), problems);
        self.tracker.validate(&root.key("tracker"), problems);
        // No `plugins:` block here: a policy must pin its digest.
        let policy = self.tracker.cluster.healthcheck.policy.as_ref();
        check_pins(
            policy_source(policy, &["tracker", "cluster", "healthcheck", "policy"]),
            false,
            problems,
        );
        self.scheduler.validate(&root.key("scheduler"), problems);
        self.store.validate(&root.key("store"), problems);
    }
}
