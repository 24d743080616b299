//! Piece-sized buffers, reused. A fan-out agent takes a piece-sized buffer for every piece it
//! receives and every piece it sends; fresh ones come from the kernel as page faults and zeroed
//! pages (on this project's 2-core machines `clear_page` alone was 12 % of an agent's CPU at
//! 800 Mbit/s), and glibc hands large blocks back to the kernel when they are freed. A buffer
//! here goes back to a small process-wide free list when the last [`Bytes`] sharing it drops,
//! and the next piece takes it with its bytes already initialized.

use std::sync::Mutex;

use bytes::Bytes;

/// Buffers kept at most: 32 pieces of the default 4 MiB, 128 MiB.
const KEEP: usize = 32;

/// Smaller buffers are not worth keeping: the allocator serves them without page faults.
pub const MIN_POOLED: usize = 64 * 1024;

static FREE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

/// A buffer of exactly `len` bytes, reused when one big enough is free (its contents are
/// whatever the last user left; callers overwrite all of it).
pub fn take(len: usize) -> Vec<u8> {
    if len >= MIN_POOLED {
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = free.iter().position(|b| b.capacity() >= len) {
            let mut buf = free.swap_remove(at);
            drop(free);
            // Shrinking keeps the bytes; growing within capacity zeroes only the new tail.
            buf.resize(len, 0);
            return buf;
        }
    }
    vec![0; len]
}

/// `buf` as [`Bytes`] that return it to the free list once every clone and slice is gone.
pub fn freeze(buf: Vec<u8>) -> Bytes {
    if buf.capacity() < MIN_POOLED {
        return Bytes::from(buf);
    }
    Bytes::from_owner(Pooled(buf))
}

struct Pooled(Vec<u8>);

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.0);
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        if free.len() < KEEP {
            free.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_buffer_is_taken_again_with_its_bytes() {
        let len = MIN_POOLED * 3 + 17;
        let mut a = take(len);
        a.fill(7);
        let ptr = a.as_ptr();
        let bytes = freeze(a);
        let slice = bytes.slice(10..20);
        drop(bytes);
        // A slice keeps the buffer out of the free list.
        assert_eq!(&slice[..], &[7; 10]);
        drop(slice);
        // Other tests share the free list: look for ours among a few takes.
        let taken: Vec<Vec<u8>> = (0..KEEP).map(|_| take(len - 5)).collect();
        let ours = taken.iter().find(|b| b.as_ptr() == ptr).expect("reused");
        assert_eq!(ours.len(), len - 5);
        assert!(ours.iter().all(|&b| b == 7));
    }

    #[test]
    fn small_buffers_are_plain() {
        let b = freeze(take(10));
        assert_eq!(b.len(), 10);
    }
}
