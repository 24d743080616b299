//! Which pieces a peer has, one bit per piece, most significant bit first (piece 0 is the top
//! bit of byte 0, as in BitTorrent), so the bytes can go on the wire as they are.

use crate::error::BitfieldError;
use crate::piece::PieceIndex;

/// A fixed-length set of pieces. The length is the torrent's piece count and never changes;
/// bits past it are always zero, which [`Bitfield::from_bytes`] checks on input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitfield {
    len: u32,
    bytes: Vec<u8>,
}

fn byte_len(bits: u32) -> usize {
    (bits as usize).div_ceil(8)
}

impl Bitfield {
    /// No pieces, for a torrent of `len` pieces that is just starting.
    pub fn empty(len: u32) -> Self {
        Bitfield {
            len,
            bytes: vec![0; byte_len(len)],
        }
    }

    /// Every piece, for a seeder.
    pub fn full(len: u32) -> Self {
        let mut b = Bitfield {
            len,
            bytes: vec![0xff; byte_len(len)],
        };
        b.clear_spare_bits();
        b
    }

    /// Parses a bitfield received from a peer: the byte count must be exactly `ceil(len / 8)`
    /// and the spare bits in the last byte zero, so two encodings never mean the same set.
    pub fn from_bytes(len: u32, bytes: &[u8]) -> Result<Self, BitfieldError> {
        let expected = byte_len(len);
        if bytes.len() != expected {
            return Err(BitfieldError::ByteLength {
                bits: len,
                expected,
                got: bytes.len(),
            });
        }
        let b = Bitfield {
            len,
            bytes: bytes.to_vec(),
        };
        let mut clean = b.clone();
        clean.clear_spare_bits();
        if clean != b {
            return Err(BitfieldError::SpareBits { bits: len });
        }
        Ok(b)
    }

    /// Checks the bitfield covers exactly the torrent's `piece_count` pieces.
    pub fn check_len(&self, piece_count: u32) -> Result<(), BitfieldError> {
        if self.len == piece_count {
            Ok(())
        } else {
            Err(BitfieldError::PieceCount {
                expected: piece_count,
                got: self.len,
            })
        }
    }

    fn clear_spare_bits(&mut self) {
        let spare = (self.bytes.len() * 8) as u32 - self.len;
        if let Some(last) = self.bytes.last_mut()
            && spare > 0
        {
            *last &= 0xffu8 << spare;
        }
    }

    /// Pieces covered.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True for a torrent with no pieces (an empty blob).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The wire form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Whether the piece is in the set; false past the end.
    pub fn get(&self, index: PieceIndex) -> bool {
        if index.0 >= self.len {
            return false;
        }
        let i = index.as_usize();
        self.bytes[i / 8] & (0x80 >> (i % 8)) != 0
    }

    /// Adds or removes a piece; returns false (and changes nothing) past the end.
    pub fn set(&mut self, index: PieceIndex, value: bool) -> bool {
        if index.0 >= self.len {
            return false;
        }
        let i = index.as_usize();
        let mask = 0x80 >> (i % 8);
        if value {
            self.bytes[i / 8] |= mask;
        } else {
            self.bytes[i / 8] &= !mask;
        }
        true
    }

    /// Pieces in the set.
    pub fn count_ones(&self) -> u32 {
        self.bytes.iter().map(|b| b.count_ones()).sum()
    }

    /// True when every piece is in the set: the peer is a seeder.
    pub fn is_full(&self) -> bool {
        self.count_ones() == self.len
    }

    /// The pieces in the set, in index order.
    pub fn ones(&self) -> impl Iterator<Item = PieceIndex> + '_ {
        (0..self.len).map(PieceIndex).filter(|&i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn piece_zero_is_the_top_bit() {
        let mut b = Bitfield::empty(10);
        assert!(b.set(PieceIndex(0), true));
        assert!(b.set(PieceIndex(9), true));
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert_eq!(b.ones().collect::<Vec<_>>(), [PieceIndex(0), PieceIndex(9)]);
    }

    #[test]
    fn full_leaves_spare_bits_clear() {
        let b = Bitfield::full(10);
        assert_eq!(b.as_bytes(), &[0xff, 0xc0]);
        assert!(b.is_full());
        assert_eq!(b.count_ones(), 10);
    }

    #[test]
    fn out_of_range_is_absent_and_not_settable() {
        let mut b = Bitfield::full(3);
        assert!(!b.get(PieceIndex(3)));
        assert!(!b.set(PieceIndex(3), true));
        assert_eq!(b, Bitfield::full(3));
    }

    #[test]
    fn rejects_wrong_byte_count() {
        assert_eq!(
            Bitfield::from_bytes(9, &[0]),
            Err(BitfieldError::ByteLength {
                bits: 9,
                expected: 2,
                got: 1
            })
        );
        assert!(Bitfield::from_bytes(0, &[0]).is_err());
    }

    #[test]
    fn rejects_spare_bits() {
        assert_eq!(
            Bitfield::from_bytes(9, &[0, 0x40]),
            Err(BitfieldError::SpareBits { bits: 9 })
        );
    }

    #[test]
    fn check_len_compares_with_the_torrent() {
        assert!(Bitfield::empty(4).check_len(4).is_ok());
        assert_eq!(
            Bitfield::empty(4).check_len(5),
            Err(BitfieldError::PieceCount {
                expected: 5,
                got: 4
            })
        );
    }

    #[test]
    fn empty_torrent_is_full_and_empty() {
        let b = Bitfield::empty(0);
        assert!(b.is_empty());
        assert!(b.is_full());
        assert_eq!(b.as_bytes(), &[] as &[u8]);
    }

    proptest! {
        #[test]
        fn from_bytes_never_panics(len in 0u32..100, bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let _ = Bitfield::from_bytes(len, &bytes);
        }

        #[test]
        fn round_trips_through_bytes(len in 0u32..200, picks in proptest::collection::vec(any::<u32>(), 0..50)) {
            let mut b = Bitfield::empty(len);
            for p in picks {
                if len > 0 {
                    b.set(PieceIndex(p % len), true);
                }
            }
            prop_assert_eq!(Bitfield::from_bytes(len, b.as_bytes()).unwrap(), b);
        }
    }
}
