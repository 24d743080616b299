//! Piece indices: a blob is cut into fixed-length pieces, the unit that is requested, verified
//! and announced between peers.

use std::fmt;

/// The position of a piece in its blob, counted from zero.
///
/// A newtype so a piece index is never confused with a byte offset or a count; `u32` because the
/// wire carries it in four bytes (4 MiB pieces x 2^32 is far beyond any blob).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PieceIndex(pub u32);

impl PieceIndex {
    /// The index as a `usize`, for indexing per-piece tables.
    pub fn as_usize(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for PieceIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<u32> for PieceIndex {
    fn from(i: u32) -> Self {
        PieceIndex(i)
    }
}
