//! What goes over the tracker's HTTP interface, shared by the service and the client.
//!
//! | request | answer |
//! |---|---|
//! | `POST /announce/{info_hash}` with an [`AnnounceRequest`] | 200 [`AnnounceResponse`] |
//! | `GET /namespace/{ns}/blobs/{digest}/metainfo` | 200 the canonical metainfo bytes (`application/octet-stream`); 202 while the origin is still fetching the blob from its backend; 404 if no backend has it |
//! | `GET /health` | 200 |
//!
//! Every other answer carries an [`ErrorBody`]: 400 names the field that was wrong, 502 means
//! the origin sent something unusable, 503 that no origin could be reached.
//!
//! The JSON types keep addresses and ids as text so a bad value is reported with its field
//! name (`peer.peer_id`) instead of a serde position; [`AnnounceRequest::validate`] turns them
//! into typed values at the edge.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use shoal_registry::Digest;

use crate::metainfo::InfoHash;
use crate::peer_id::PeerId;
use crate::peerstore::PeerInfo;

/// Longest namespace accepted, as the registry caps a repository name.
pub const NAMESPACE_MAX: usize = 255;

/// Most bytes of metainfo read from an origin or a tracker: 32 bytes per piece, so 16 MiB
/// covers half a million pieces (2 TiB in 4 MiB pieces); anything longer is a lying peer.
pub const MAX_METAINFO_BYTES: usize = 16 << 20;

/// Most bytes of a JSON body read (an announce is about 300 bytes; a response with the default
/// 50 peers about 8 KiB).
pub const MAX_JSON_BYTES: usize = 1 << 20;

/// One peer as announced and as handed out. Unknown fields are ignored here and in the other
/// types, so a newer agent can talk to an older tracker during a rolling upgrade.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerJson {
    /// 40 hex digits.
    pub peer_id: String,
    /// Address its P2P port listens on (IPv4 or IPv6, no brackets).
    pub ip: String,
    /// Its P2P port, not 0.
    pub port: u16,
    /// It has the whole blob.
    pub complete: bool,
    /// It is an origin.
    #[serde(default)]
    pub origin: bool,
}

/// The body of `POST /announce/{info_hash}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceRequest {
    /// The repository namespace of the blob.
    pub namespace: String,
    /// The blob's digest (`sha256:<hex>`); the client ranks trackers by it.
    pub digest: String,
    /// The announcing peer.
    pub peer: PeerJson,
}

/// The answer to an announce.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceResponse {
    /// Peers to connect to, complete ones first, then origins, then incomplete; never the asker.
    pub peers: Vec<PeerJson>,
    /// When to announce next, in milliseconds.
    pub interval_ms: u64,
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The field at fault (`peer.port`, `info_hash`, ...), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What was wrong and what was expected.
    pub message: String,
}

impl ErrorBody {
    /// An error about one field.
    pub fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        ErrorBody {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    /// An error about no field in particular.
    pub fn message(message: impl Into<String>) -> Self {
        ErrorBody {
            field: None,
            message: message.into(),
        }
    }
}

/// An announce after validation: every field typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announce {
    /// The torrent.
    pub info_hash: InfoHash,
    /// The repository namespace.
    pub namespace: String,
    /// The blob.
    pub digest: Digest,
    /// The announcing peer.
    pub peer: PeerInfo,
}

/// Parses an info hash from its 64 hex digits.
pub fn parse_info_hash(s: &str) -> Result<InfoHash, ErrorBody> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| {
        ErrorBody::field(
            "info_hash",
            format!("{:?} is not an info hash: expected 64 hex digits", clip(s)),
        )
    })?;
    Ok(InfoHash(out))
}

/// Checks a namespace: 1 to [`NAMESPACE_MAX`] bytes of printable ASCII without spaces (it
/// selects a backend by regex and travels in handshakes; nothing else is assumed).
pub fn check_namespace(ns: &str, field: &str) -> Result<(), ErrorBody> {
    if ns.is_empty() {
        return Err(ErrorBody::field(field, "is empty: expected a namespace"));
    }
    if ns.len() > NAMESPACE_MAX {
        return Err(ErrorBody::field(
            field,
            format!("is {} bytes: expected at most {NAMESPACE_MAX}", ns.len()),
        ));
    }
    if !ns.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ErrorBody::field(
            field,
            format!(
                "{:?} has spaces or non-printable characters: expected a repository name",
                clip(ns)
            ),
        ));
    }
    Ok(())
}

/// Parses a digest, naming `field` when it is not one.
pub fn parse_digest(s: &str, field: &str) -> Result<Digest, ErrorBody> {
    s.parse::<Digest>()
        .map_err(|e| ErrorBody::field(field, e.to_string()))
}

/// At most 80 characters of untrusted text, for error messages.
fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

impl PeerJson {
    /// The peer as the store keeps it; errors name `at.<field>`.
    pub fn to_peer_info(&self, at: &str) -> Result<PeerInfo, ErrorBody> {
        let peer_id = self.peer_id.parse::<PeerId>().map_err(|_| {
            ErrorBody::field(
                format!("{at}.peer_id"),
                format!(
                    "{:?} is not a peer id: expected 40 hex digits",
                    clip(&self.peer_id)
                ),
            )
        })?;
        let ip = self.ip.parse::<IpAddr>().map_err(|_| {
            ErrorBody::field(
                format!("{at}.ip"),
                format!(
                    "{:?} is not an IP address: expected IPv4 or IPv6 without brackets",
                    clip(&self.ip)
                ),
            )
        })?;
        if self.port == 0 {
            return Err(ErrorBody::field(
                format!("{at}.port"),
                "is 0: expected a port from 1 to 65535",
            ));
        }
        Ok(PeerInfo {
            peer_id,
            ip,
            port: self.port,
            complete: self.complete,
            origin: self.origin,
        })
    }
}

impl From<&PeerInfo> for PeerJson {
    fn from(p: &PeerInfo) -> Self {
        PeerJson {
            peer_id: p.peer_id.to_string(),
            ip: p.ip.to_string(),
            port: p.port,
            complete: p.complete,
            origin: p.origin,
        }
    }
}

impl AnnounceRequest {
    /// A request announcing `peer` for the blob `digest` in `namespace`.
    pub fn new(namespace: impl Into<String>, digest: &Digest, peer: &PeerInfo) -> Self {
        AnnounceRequest {
            namespace: namespace.into(),
            digest: digest.to_string(),
            peer: PeerJson::from(peer),
        }
    }

    /// Checks every field and types it; `info_hash` is the path's hex. The info hash cannot be
    /// checked against the digest here (that needs the metainfo), so a peer announcing a wrong
    /// pair only lists itself under a torrent nobody else asks for.
    pub fn validate(&self, info_hash: &str) -> Result<Announce, ErrorBody> {
        let info_hash = parse_info_hash(info_hash)?;
        check_namespace(&self.namespace, "namespace")?;
        let digest = parse_digest(&self.digest, "digest")?;
        let peer = self.peer.to_peer_info("peer")?;
        Ok(Announce {
            info_hash,
            namespace: self.namespace.clone(),
            digest,
            peer,
        })
    }
}

impl AnnounceResponse {
    /// The handed-out peers, typed; an entry the client cannot read fails the whole answer,
    /// since a tracker that sends one is not to be trusted for the rest.
    pub fn peer_infos(&self) -> Result<Vec<PeerInfo>, ErrorBody> {
        self.peers
            .iter()
            .enumerate()
            .map(|(i, p)| p.to_peer_info(&format!("peers[{i}]")))
            .collect()
    }

    /// The announce interval.
    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.interval_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn good() -> AnnounceRequest {
        AnnounceRequest {
            namespace: "library/alpine".into(),
            digest: Digest::sha256_of(b"x").to_string(),
            peer: PeerJson {
                peer_id: "ab".repeat(20),
                ip: "::1".into(),
                port: 7000,
                complete: false,
                origin: false,
            },
        }
    }

    fn field_of(r: Result<Announce, ErrorBody>) -> String {
        r.unwrap_err().field.unwrap()
    }

    #[test]
    fn a_good_announce_is_typed() {
        let a = good().validate(&"cd".repeat(32)).unwrap();
        assert_eq!(a.info_hash, InfoHash([0xcd; 32]));
        assert_eq!(a.peer.peer_id, PeerId([0xab; 20]));
        assert_eq!(PeerJson::from(&a.peer), good().peer);
    }

    #[test]
    fn each_bad_field_is_named() {
        assert_eq!(field_of(good().validate("abc")), "info_hash");
        let mut r = good();
        r.namespace.clear();
        assert_eq!(field_of(r.validate(&"cd".repeat(32))), "namespace");
        let mut r = good();
        r.namespace = "a b".into();
        assert_eq!(field_of(r.validate(&"cd".repeat(32))), "namespace");
        let mut r = good();
        r.digest = "sha256:zz".into();
        assert_eq!(field_of(r.validate(&"cd".repeat(32))), "digest");
        let mut r = good();
        r.peer.peer_id = "ab".repeat(19);
        assert_eq!(field_of(r.validate(&"cd".repeat(32))), "peer.peer_id");
        let mut r = good();
        r.peer.ip = "[::1]".into();
        assert_eq!(field_of(r.validate(&"cd".repeat(32))), "peer.ip");
        let mut r = good();
        r.peer.port = 0;
        assert_eq!(field_of(r.validate(&"cd".repeat(32))), "peer.port");
    }

    proptest! {
        #[test]
        fn info_hash_parsing_never_panics(s in ".{0,80}") {
            let _ = parse_info_hash(&s);
        }

        #[test]
        fn info_hashes_round_trip(bytes in any::<[u8; 32]>()) {
            let h = InfoHash(bytes);
            prop_assert_eq!(parse_info_hash(&h.to_string()).unwrap(), h);
        }
    }
}
