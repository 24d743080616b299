//! The bytes of pieces a scheduler has read for peers and not yet written to their sockets,
//! bounded over every peer and torrent. [`UPLOADS_PER_PEER`](super::UPLOADS_PER_PEER) bounds
//! one peer; a torrent takes up to `max_open_conn` peers and a host many torrents, so peers
//! that ask and do not read could otherwise make a host hold 64 MiB each (16 pieces of 4 MiB).
//!
//! A piece's read waits for room in the budget; its bytes give the room back once sent. A
//! peer with no piece buffered proceeds without room, decided when the read is about to
//! start: peers that pin the budget by not reading cannot starve one that reads (a FIFO
//! queue of reads gave each room freed to the next queued read, mostly for peers that read
//! nothing). A host holds at most the budget plus one piece per connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Bytes of pieces read for peers and not yet sent, at most, per scheduler, besides one
/// piece per peer.
pub const UPLOAD_BUFFER_BYTES: u64 = 256 << 20;

/// Room for upload buffers, counted in KiB.
#[derive(Clone, Debug)]
pub(crate) struct UploadBudget {
    kib: u32,
    room: Arc<Semaphore>,
    /// Signalled whenever a buffered piece goes (room freed, or a peer's count fell).
    freed: Arc<Notify>,
}

/// One peer's pieces buffered now (read, or being read, and not yet sent).
pub(crate) type Buffered = Arc<AtomicUsize>;

/// A piece's place in the budget while its bytes are buffered; gives it back when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    room: Option<OwnedSemaphorePermit>,
    buffered: Buffered,
    freed: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.room.take());
        self.buffered.fetch_sub(1, Ordering::AcqRel);
        self.freed.notify_waiters();
    }
}

impl UploadBudget {
    /// Room for `bytes` (at least 1 KiB).
    pub(crate) fn new(bytes: u64) -> Self {
        let kib = (bytes / 1024).clamp(1, u64::from(u32::MAX >> 3)) as u32;
        UploadBudget {
            kib,
            room: Arc::new(Semaphore::new(kib as usize)),
            freed: Arc::new(Notify::new()),
        }
    }

    /// Waits until a piece of `bytes` for the peer whose count is `buffered` may be read: at
    /// once when the peer has none buffered, else when there is room (a piece larger than
    /// the whole budget waits for all of it).
    pub(crate) async fn take(&self, bytes: u64, buffered: &Buffered) -> Slot {
        let want = bytes.div_ceil(1024).clamp(1, u64::from(self.kib)) as u32;
        loop {
            // Registered before the checks, so a piece sent meanwhile is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let room = if buffered
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                None
            } else if let Ok(permit) = self.room.clone().try_acquire_many_owned(want) {
                buffered.fetch_add(1, Ordering::AcqRel);
                Some(permit)
            } else {
                freed.await;
                continue;
            };
            return Slot {
                room,
                buffered: buffered.clone(),
                freed: self.freed.clone(),
            };
        }
    }

    /// Bytes of room held now (pieces beyond each peer's first).
    pub(crate) fn held(&self) -> u64 {
        u64::from(self.kib).saturating_sub(self.room.available_permits() as u64) * 1024
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_peer_with_a_piece_buffered_waits_for_room_and_one_with_none_does_not() {
        let budget = UploadBudget::new(8 << 20);
        let (a, b) = (Buffered::default(), Buffered::default());
        // a's first piece takes no room; its next two take all of it.
        let a1 = budget.take(4 << 20, &a).await;
        let a2 = budget.take(4 << 20, &a).await;
        let _a3 = budget.take(4 << 20, &a).await;
        assert_eq!(budget.held(), 8 << 20);
        assert_eq!(a.load(Ordering::Acquire), 3);
        // b has nothing buffered: it proceeds though the budget is full.
        let b1 = budget.take(4 << 20, &b).await;
        // Its second piece waits, until a piece with room is sent.
        let waiting = tokio::spawn({
            let (budget, b) = (budget.clone(), b.clone());
            async move { budget.take(4 << 20, &b).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a1); // a's first piece: no room given back
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(a2);
        let _b2 = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("room given back")
            .unwrap();
        assert_eq!(budget.held(), 8 << 20);
        // Once b has nothing buffered it proceeds again without room.
        drop(b1);
        drop(_b2);
        let _b3 = tokio::time::timeout(Duration::from_secs(10), budget.take(4 << 20, &b))
            .await
            .expect("a peer with nothing buffered proceeds");
    }

    #[tokio::test]
    async fn a_piece_larger_than_the_budget_takes_all_of_it() {
        let budget = UploadBudget::new(1 << 20);
        let peer = Buffered::default();
        let _first = budget.take(16 << 20, &peer).await;
        let p = budget.take(16 << 20, &peer).await;
        assert_eq!(budget.held(), 1 << 20);
        drop(p);
        assert_eq!(budget.held(), 0);
        assert_eq!(peer.load(Ordering::Acquire), 1);
    }
}
