//! Piece-sized buffers, reused. A fan-out agent takes a piece-sized buffer for every piece it
//! receives (pieces it sends go out as maps of the piece file); fresh ones come from the kernel as page faults and zeroed
//! pages (on this project's 2-core machines `clear_page` alone was 12 % of an agent's CPU at
//! 800 Mbit/s), and glibc hands large blocks back to the kernel when they are freed. A buffer
//! here goes back to a small process-wide free list when the last [`Bytes`] sharing it drops,
//! and the next piece takes it with its bytes already initialized. The list holds at most
//! [`KEEP_BYTES`], so an idle process keeps little: 16 buffers of the default 4 MiB piece.

use std::sync::Mutex;

use bytes::Bytes;

/// Bytes the free list keeps at most.
pub const KEEP_BYTES: usize = 64 << 20;

/// Smaller buffers are not worth keeping: the allocator serves them without page faults.
pub const MIN_POOLED: usize = 64 * 1024;

/// A free list of buffers.
struct Pool {
    free: Mutex<Vec<Vec<u8>>>,
    keep_bytes: usize,
}

static POOL: Pool = Pool::new(KEEP_BYTES);

impl Pool {
    const fn new(keep_bytes: usize) -> Self {
        Pool {
            free: Mutex::new(Vec::new()),
            keep_bytes,
        }
    }

    fn take(&self, len: usize) -> Vec<u8> {
        if len >= MIN_POOLED {
            let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
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

    fn give_back(&self, buf: Vec<u8>) {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        let kept: usize = free.iter().map(Vec::capacity).sum();
        if kept + buf.capacity() <= self.keep_bytes {
            free.push(buf);
        }
    }

    fn freeze(&'static self, buf: Vec<u8>) -> Bytes {
        if buf.capacity() < MIN_POOLED {
            return Bytes::from(buf);
        }
        Bytes::from_owner(Pooled { buf, pool: self })
    }
}

/// A buffer of exactly `len` bytes, reused when one big enough is free (its contents are
/// whatever the last user left; callers overwrite all of it).
pub fn take(len: usize) -> Vec<u8> {
    POOL.take(len)
}

/// `buf` as [`Bytes`] that return it to the free list once every clone and slice is gone.
pub fn freeze(buf: Vec<u8>) -> Bytes {
    POOL.freeze(buf)
}

struct Pooled {
    buf: Vec<u8>,
    pool: &'static Pool,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(keep_bytes: usize) -> &'static Pool {
        Box::leak(Box::new(Pool::new(keep_bytes)))
    }

    #[test]
    fn a_dropped_buffer_is_taken_again_with_its_bytes() {
        let p = pool(KEEP_BYTES);
        let len = MIN_POOLED * 3 + 17;
        let mut a = p.take(len);
        a.fill(7);
        let ptr = a.as_ptr();
        let bytes = p.freeze(a);
        let slice = bytes.slice(10..20);
        drop(bytes);
        // A live slice keeps the buffer out of the free list.
        assert_eq!(&slice[..], &[7; 10]);
        let other = p.take(len);
        assert_ne!(other.as_ptr(), ptr);
        drop(other);
        drop(slice);
        let again = p.take(len - 5);
        assert_eq!(again.as_ptr(), ptr);
        assert_eq!(again.len(), len - 5);
        assert!(again.iter().all(|&b| b == 7));
    }

    #[test]
    fn the_free_list_keeps_at_most_its_bytes() {
        let p = pool(4 * MIN_POOLED);
        let held: Vec<Bytes> = (0..6).map(|_| p.freeze(p.take(MIN_POOLED))).collect();
        drop(held);
        let kept = p.free.lock().unwrap();
        assert_eq!(kept.len(), 4);
        assert!(kept.iter().map(Vec::capacity).sum::<usize>() <= 4 * MIN_POOLED);
    }

    #[test]
    fn small_buffers_are_plain() {
        let b = freeze(take(10));
        assert_eq!(b.len(), 10);
    }
}
