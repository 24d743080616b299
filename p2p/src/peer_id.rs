//! Peer identities: each agent and origin picks one at start and sends it in every handshake
//! and announce, so the tracker and the picker can tell peers apart behind shared addresses.

use std::fmt;
use std::str::FromStr;

/// A peer's 20-byte identity, printed as 40 hex digits (Kraken's `PeerID` has the same shape).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub [u8; 20]);

impl PeerId {
    /// Bytes in a peer id.
    pub const LEN: usize = 20;

    /// A fresh random id, for a process that does not derive one from its address.
    pub fn random() -> Self {
        PeerId(rand::random())
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({self})")
    }
}

/// Why a string is not a peer id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("peer id {0:?} is invalid: expected 40 hex digits")]
pub struct PeerIdError(String);

impl FromStr for PeerId {
    type Err = PeerIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 20];
        hex::decode_to_slice(s, &mut out).map_err(|_| PeerIdError(s.chars().take(64).collect()))?;
        Ok(PeerId(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rejects_wrong_length_and_non_hex() {
        for bad in ["", "00", &"0".repeat(41), &"g".repeat(40)] {
            assert!(bad.parse::<PeerId>().is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn round_trips_through_hex(bytes in any::<[u8; 20]>()) {
            let id = PeerId(bytes);
            prop_assert_eq!(id.to_string().parse::<PeerId>().unwrap(), id);
        }

        #[test]
        fn parsing_never_panics(s in ".{0,64}") {
            let _ = s.parse::<PeerId>();
        }
    }
}
