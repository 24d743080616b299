//! `server:` of every role: how its HTTP listeners treat clients — how many connections at
//! once, how long a client may take to send a request or to read an answer, and TLS.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::bytesize::ByteSize;
use crate::duration::Duration;
use crate::keypath::KeyPath;
use crate::validate::{Problems, Validate};

/// Limits and TLS of a role's HTTP listeners (the registry port, and the HTTP port of origin,
/// tracker and build-index). The defaults protect a node from clients that hold connections
/// without using them; each can be tuned.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Connections served at once [4096]; never more than the process's file-descriptor
    /// limit allows. Past it, the longest-idle connection (one with no request in progress)
    /// is closed to admit the new one; with none idle, new connections wait.
    pub max_connections: u64,
    /// Longest time from a request's first byte to the end of its head (request line and
    /// headers), and for the TLS handshake [10s].
    pub header_timeout: Duration,
    /// Longest a kept-alive connection may stay open with no request [60s].
    pub idle_timeout: Duration,
    /// A request body must bring at least `min_body_rate` bytes per second, measured over
    /// windows of this length [30s]. `0s` turns the check off.
    pub body_timeout: Duration,
    /// The slowest request body accepted, per second [1KB].
    pub min_body_rate: ByteSize,
    /// Longest a response may wait for a client that stops reading [60s].
    pub send_timeout: Duration,
    /// TLS on every HTTP listener of the role; unset serves plain HTTP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<ServerTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_connections: 4096,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(30),
            min_body_rate: ByteSize(1024),
            send_timeout: Duration::from_secs(60),
            tls: None,
        }
    }
}

/// `server.tls`: the listener's certificate, and the CA its clients' certificates must chain
/// to when client certificates are required (mTLS).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    /// The certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The private key of the certificate, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, every client must present a certificate signed by this CA (PEM); others are
    /// refused during the handshake.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
}

/// `client_tls:` of a role that calls other roles: it reaches their HTTP ports over HTTPS,
/// verifying each certificate against `ca` (the name or IP address the role is addressed by
/// must be in the certificate), and presents `cert` to roles that require client certificates
/// (`server.tls.client_ca` there). Unset, the role speaks plain HTTP to the others.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// The CA the other roles' certificates chain to, PEM.
    pub ca: PathBuf,
    /// This role's certificate chain, PEM, leaf first; with `key`, or neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The private key of `cert`, PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// `peer.tls`: TLS on the P2P port, both ways. Each peer presents `cert` when it accepts and
/// when it dials, and requires the other side's certificate to chain to `ca` and, when
/// dialling, to name the IP address it dialled. A peer without a certificate from `ca` is
/// refused during the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeerTls {
    /// This peer's certificate chain, PEM, leaf first.
    pub cert: PathBuf,
    /// The private key of `cert`, PEM.
    pub key: PathBuf,
    /// The CA every peer's certificate chains to, PEM.
    pub ca: PathBuf,
}

/// Each of `paths` that is given must not be empty.
fn require_paths<'a>(
    at: &KeyPath,
    paths: impl IntoIterator<Item = (&'static str, Option<&'a PathBuf>)>,
    problems: &mut Problems,
) {
    for (key, path) in paths {
        if let Some(path) = path {
            problems.require(
                !path.as_os_str().is_empty(),
                &at.key(key),
                "is empty",
                "the path of a PEM file",
            );
        }
    }
}

impl Validate for ClientTls {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        require_paths(
            at,
            [
                ("ca", Some(&self.ca)),
                ("cert", self.cert.as_ref()),
                ("key", self.key.as_ref()),
            ],
            problems,
        );
        problems.require(
            self.cert.is_some() == self.key.is_some(),
            &at.key(if self.cert.is_some() { "key" } else { "cert" }),
            "is missing: a client certificate needs both cert and key",
            "both cert and key (PEM paths), or neither",
        );
    }
}

impl Validate for PeerTls {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        require_paths(
            at,
            [
                ("cert", Some(&self.cert)),
                ("key", Some(&self.key)),
                ("ca", Some(&self.ca)),
            ],
            problems,
        );
    }
}

impl Validate for ServerConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        problems.at_least_one(self.max_connections, &at.key("max_connections"));
        for (key, value) in [
            ("header_timeout", self.header_timeout),
            ("idle_timeout", self.idle_timeout),
            ("send_timeout", self.send_timeout),
        ] {
            problems.require(
                value >= Duration::from_millis(100),
                &at.key(key),
                "is shorter than 100ms, so no client could be served",
                "a duration like 10s",
            );
        }
        problems.require(
            self.body_timeout.is_zero() || self.body_timeout >= Duration::from_millis(100),
            &at.key("body_timeout"),
            "is shorter than 100ms",
            "0s (no minimum rate) or a duration like 30s",
        );
        if let Some(tls) = &self.tls {
            require_paths(
                &at.key("tls"),
                [
                    ("cert", Some(&tls.cert)),
                    ("key", Some(&tls.key)),
                    ("client_ca", tls.client_ca.as_ref()),
                ],
                problems,
            );
        }
    }
}
