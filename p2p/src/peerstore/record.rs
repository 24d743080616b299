//! The byte form of a [`PeerInfo`] in a shared store: fixed fields, no separators, so IPv6
//! addresses survive (Kraken's `pid:ip:port:complete` strings drop them).
//!
//! | bytes | field |
//! |---|---|
//! | 1 | version, `1` |
//! | 20 | peer id |
//! | 2 | port, big-endian |
//! | 1 | flags: bit 0 complete, bit 1 origin |
//! | 1 + 4 or 1 + 16 | `4` and an IPv4 address, or `6` and an IPv6 address |

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::PeerInfo;
use crate::peer_id::PeerId;

const VERSION: u8 = 1;
const COMPLETE: u8 = 0b01;
const ORIGIN: u8 = 0b10;

/// Encodes an announce for storage.
pub fn encode(peer: &PeerInfo) -> Vec<u8> {
    let mut out = Vec::with_capacity(41);
    out.push(VERSION);
    out.extend_from_slice(&peer.peer_id.0);
    out.extend_from_slice(&peer.port.to_be_bytes());
    let mut flags = 0;
    if peer.complete {
        flags |= COMPLETE;
    }
    if peer.origin {
        flags |= ORIGIN;
    }
    out.push(flags);
    match peer.ip {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out
}

/// Decodes a stored announce; `None` for anything [`encode`] would not produce (another
/// version, unknown flags, a wrong length), which the store skips rather than fail a whole read.
pub fn decode(bytes: &[u8]) -> Option<PeerInfo> {
    let (&version, rest) = bytes.split_first()?;
    if version != VERSION {
        return None;
    }
    let (id, rest) = rest.split_first_chunk::<20>()?;
    let (port, rest) = rest.split_first_chunk::<2>()?;
    let (&flags, rest) = rest.split_first()?;
    if flags & !(COMPLETE | ORIGIN) != 0 {
        return None;
    }
    let (&family, rest) = rest.split_first()?;
    let ip = match family {
        4 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(rest).ok()?)),
        6 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(rest).ok()?)),
        _ => return None,
    };
    Some(PeerInfo {
        peer_id: PeerId(*id),
        ip,
        port: u16::from_be_bytes(*port),
        complete: flags & COMPLETE != 0,
        origin: flags & ORIGIN != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_peer() -> impl Strategy<Value = PeerInfo> {
        (
            any::<[u8; 20]>(),
            prop_oneof![
                any::<[u8; 4]>().prop_map(|o| IpAddr::V4(o.into())),
                any::<[u8; 16]>().prop_map(|o| IpAddr::V6(o.into())),
            ],
            any::<u16>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(id, ip, port, complete, origin)| PeerInfo {
                peer_id: PeerId(id),
                ip,
                port,
                complete,
                origin,
            })
    }

    #[test]
    fn rejects_other_versions_flags_and_families() {
        let peer = PeerInfo {
            peer_id: PeerId([1; 20]),
            ip: IpAddr::V6(Ipv6Addr::LOCALHOST),
            port: 1,
            complete: true,
            origin: false,
        };
        let good = encode(&peer);
        assert_eq!(decode(&good), Some(peer));
        for (at, value) in [(0, 2), (23, 0b100), (24, 5)] {
            let mut bad = good.clone();
            bad[at] = value;
            assert_eq!(decode(&bad), None, "byte {at} = {value}");
        }
        assert_eq!(decode(&good[..good.len() - 1]), None);
    }

    proptest! {
        #[test]
        fn round_trips(peer in arb_peer()) {
            prop_assert_eq!(decode(&encode(&peer)), Some(peer));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..60)) {
            let _ = decode(&bytes);
        }
    }
}
