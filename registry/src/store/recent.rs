//! The newest bytes of a followed fetch, kept in memory for its followers.
//!
//! A pull-through miss is written to a scratch file while clients follow it
//! ([`crate::follow`]). A follower that keeps up with the fetch wants the bytes that were
//! written a moment ago: reading them back from the file costs a copy out of the page cache
//! into a fresh buffer for every client. [`Recent`] keeps the last [`RECENT_BYTES`] of chunks
//! the writer has written (the same reference-counted chunks it wrote and hashed, not copies),
//! so such a follower is sent a slice of one of them; one that fell further behind reads the
//! file, which holds everything.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// Bytes of the newest chunks kept: a few of the writer's progress steps (1 MiB each).
pub const RECENT_BYTES: u64 = 4 * 1024 * 1024;

/// The newest chunks written to a scratch file, each with its offset. Cloning shares them.
#[derive(Clone, Debug, Default)]
pub struct Recent(Arc<Mutex<Kept>>);

#[derive(Debug, Default)]
struct Kept {
    /// Contiguous chunks, oldest first.
    chunks: VecDeque<(u64, Bytes)>,
    /// Their total length.
    bytes: u64,
}

impl Recent {
    /// Records that `chunk` was written at `offset`, the byte after the previous chunk, and
    /// drops the oldest chunks beyond [`RECENT_BYTES`] (the newest one is always kept).
    pub fn push(&self, offset: u64, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((last, c)) = kept.chunks.back()
            && last + c.len() as u64 != offset
        {
            // Not contiguous with what is kept (a writer that skipped or rewound): start over,
            // so what is kept is always one run of the file.
            kept.chunks.clear();
            kept.bytes = 0;
        }
        kept.bytes += chunk.len() as u64;
        kept.chunks.push_back((offset, chunk));
        while kept.bytes > RECENT_BYTES && kept.chunks.len() > 1 {
            if let Some((_, c)) = kept.chunks.pop_front() {
                kept.bytes -= c.len() as u64;
            }
        }
    }

    /// The bytes from `pos` up to `end` (exclusive) or the end of the chunk that holds `pos`,
    /// whichever comes first; `None` when no kept chunk holds `pos` or `pos >= end`.
    pub fn get(&self, pos: u64, end: u64) -> Option<Bytes> {
        if pos >= end {
            return None;
        }
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // The first chunk that ends after `pos`: it holds `pos` unless `pos` is before them all.
        let i = kept
            .chunks
            .partition_point(|(offset, c)| offset + c.len() as u64 <= pos);
        let (offset, chunk) = kept.chunks.get(i)?;
        if *offset > pos {
            return None;
        }
        let from = (pos - offset) as usize;
        let to = (end.min(offset + chunk.len() as u64) - offset) as usize;
        Some(chunk.slice(from..to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    #[test]
    fn a_kept_chunk_is_sliced_from_pos_to_the_first_end() {
        let r = Recent::default();
        r.push(0, chunk(10, 1));
        r.push(10, chunk(10, 2));
        assert_eq!(r.get(3, 100).unwrap(), chunk(7, 1));
        assert_eq!(r.get(12, 15).unwrap(), chunk(3, 2));
        assert_eq!(r.get(10, 20).unwrap(), chunk(10, 2));
        assert_eq!(r.get(20, 30), None, "past the newest chunk");
        assert_eq!(r.get(5, 5), None, "nothing available");
    }

    #[test]
    fn old_chunks_go_once_more_than_recent_bytes_are_kept() {
        let r = Recent::default();
        let len = (RECENT_BYTES / 4) as usize;
        for i in 0..6u64 {
            r.push(i * len as u64, chunk(len, i as u8));
        }
        assert_eq!(r.get(0, u64::MAX), None, "the oldest chunk was dropped");
        assert_eq!(r.get(len as u64, u64::MAX), None);
        assert_eq!(r.get(2 * len as u64, u64::MAX).unwrap()[0], 2);
        assert_eq!(r.get(5 * len as u64 + 1, u64::MAX).unwrap().len(), len - 1);
    }

    #[test]
    fn a_chunk_larger_than_the_budget_is_still_kept_alone() {
        let r = Recent::default();
        r.push(0, chunk(8, 0));
        let big = RECENT_BYTES as usize + 1;
        r.push(8, chunk(big, 9));
        assert_eq!(r.get(0, u64::MAX), None);
        assert_eq!(r.get(8, u64::MAX).unwrap().len(), big);
    }

    #[test]
    fn a_gap_starts_over() {
        let r = Recent::default();
        r.push(0, chunk(10, 1));
        r.push(50, chunk(10, 2));
        assert_eq!(r.get(0, 100), None);
        assert_eq!(r.get(55, 100).unwrap(), chunk(5, 2));
    }
}
