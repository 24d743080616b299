//! The sidecar beside every blob file: the blob's metainfo and which pieces are on disk.
//!
//! # Format
//!
//! One format for `download/<hex>.meta` and `cache/<hex[0..2]>/<hex>.meta` (all integers
//! big-endian):
//!
//! | field          | bytes |
//! |----------------|-------|
//! | magic          | `SHOALSC` + version byte `1` (8 bytes) |
//! | metainfo       | u32 length, then the metainfo's canonical encoding ([`crate::metainfo`]) |
//! | bitfield       | u32 length, then the bitfield bytes (MSB first, `ceil(pieces / 8)` bytes, spare bits zero) |
//! | checksum       | SHA-256 of every byte before it (32 bytes) |
//!
//! The checksum is there because a flipped bit in the bitfield would claim a piece that is not on
//! disk, and nothing else would notice until the whole-blob digest check. A sidecar in `cache/`
//! always has a full bitfield. [`decode`] rejects anything [`encode`] would not produce; the
//! store treats a rejected sidecar as no sidecar (a download starts over, a cache entry is
//! dropped) and logs why.

use sha2::{Digest as _, Sha256};

use crate::bitfield::Bitfield;
use crate::metainfo::Metainfo;

const MAGIC: &[u8; 8] = b"SHOALSC\x01";
const CHECKSUM_LEN: usize = 32;

/// The sidecar's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Sidecar {
    pub(crate) metainfo: Metainfo,
    pub(crate) bitfield: Bitfield,
}

/// The sidecar bytes for `metainfo` with `bitfield`'s pieces present.
pub(crate) fn encode(metainfo: &Metainfo, bitfield: &Bitfield) -> Vec<u8> {
    let meta = metainfo.encode();
    let bits = bitfield.as_bytes();
    let mut out = Vec::with_capacity(MAGIC.len() + 8 + meta.len() + bits.len() + CHECKSUM_LEN);
    out.extend_from_slice(MAGIC);
    // The metainfo of a 64-bit blob in pieces of at least one byte could in theory exceed u32,
    // but MAX_PIECE_LENGTH pieces keep real encodings far below it; `decode` checks anyway.
    out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
    out.extend_from_slice(&meta);
    out.extend_from_slice(&(bits.len() as u32).to_be_bytes());
    out.extend_from_slice(bits);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// Parses sidecar bytes; the error says which field is wrong, for the log line.
pub(crate) fn decode(bytes: &[u8]) -> Result<Sidecar, String> {
    if bytes.len() < MAGIC.len() + CHECKSUM_LEN {
        return Err(format!("{} bytes is too short for a sidecar", bytes.len()));
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
    if Sha256::digest(body).as_slice() != sum {
        return Err("checksum does not match".into());
    }
    let mut at = 0usize;
    let mut take = |n: usize, field: &str| -> Result<&[u8], String> {
        let end = at
            .checked_add(n)
            .filter(|&e| e <= body.len())
            .ok_or_else(|| format!("truncated in {field}"))?;
        let s = &body[at..end];
        at = end;
        Ok(s)
    };
    if take(MAGIC.len(), "magic")? != MAGIC {
        return Err("magic is not SHOALSC version 1".into());
    }
    let meta_len = u32_at(take(4, "metainfo length")?) as usize;
    let metainfo =
        Metainfo::decode(take(meta_len, "metainfo")?).map_err(|e| format!("metainfo: {e}"))?;
    let bits_len = u32_at(take(4, "bitfield length")?) as usize;
    let bitfield = Bitfield::from_bytes(metainfo.piece_count(), take(bits_len, "bitfield")?)
        .map_err(|e| format!("bitfield: {e}"))?;
    if at != body.len() {
        return Err(format!("{} bytes after the bitfield", body.len() - at));
    }
    Ok(Sidecar { metainfo, bitfield })
}

fn u32_at(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(b);
    u32::from_be_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::piece::PieceIndex;
    use proptest::prelude::*;
    use shoal_registry::Digest;

    fn sample() -> (Metainfo, Bitfield) {
        let data: Vec<u8> = (0..100u8).collect();
        let m = Metainfo::from_reader(&data[..], &Digest::sha256_of(&data), 16).unwrap();
        let mut b = Bitfield::empty(m.piece_count());
        b.set(PieceIndex(0), true);
        b.set(PieceIndex(6), true);
        (m, b)
    }

    #[test]
    fn round_trips() {
        let (m, b) = sample();
        let s = decode(&encode(&m, &b)).unwrap();
        assert_eq!(s.metainfo, m);
        assert_eq!(s.bitfield, b);
    }

    #[test]
    fn rejects_a_flipped_bit_anywhere() {
        let (m, b) = sample();
        let bytes = encode(&m, &b);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flip at byte {i} accepted");
        }
    }

    #[test]
    fn rejects_every_truncation() {
        let (m, b) = sample();
        let bytes = encode(&m, &b);
        for n in 0..bytes.len() {
            assert!(decode(&bytes[..n]).is_err(), "truncation to {n} accepted");
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn garbage_with_a_valid_checksum_never_panics(body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut bytes = MAGIC.to_vec();
            bytes.extend_from_slice(&body);
            let sum = Sha256::digest(&bytes);
            bytes.extend_from_slice(&sum);
            let _ = decode(&bytes);
        }
    }
}
