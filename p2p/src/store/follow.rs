//! Reading an import while it lands.
//!
//! [`PieceStore::import_followed`](super::PieceStore::import_followed) reports where it stands
//! in an [`ImportProgress`]: the file it writes, how many bytes are in it, and whether they
//! matched the digest. [`follow`] turns that into a body: every byte as it reaches the file but
//! the last, which goes out only once the whole blob verified, so a reader never completes a
//! blob that failed its digest (its body ends in an error instead, and a server cuts the
//! connection). It does not wait for the blob's sync and rename into `cache/`: what the reader
//! has is verified, and a failed rename loses only the cached copy.
//!
//! The body is read-only maps of the file, a window at a time (the registry's
//! [`SEND_CHUNK`]), not reads into buffers: the bytes go from the page cache to the socket with
//! no copy in between, and the resident size stays one window per reader. [`complete_body`]
//! sends a complete blob the same way.

use std::io;
use std::path::PathBuf;

use bytes::Bytes;
use futures_util::Stream;
use shoal_registry::store::{SEND_CHUNK, map_window};
use tokio::sync::watch;

/// Where an import stands.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportProgress {
    /// The file the bytes land in, once it exists (in `download/`, renamed into `cache/` once
    /// verified: an open handle keeps reading it).
    pub file: Option<PathBuf>,
    /// The blob's length, when its source said it (set by whoever starts the import).
    pub length: Option<u64>,
    /// Bytes written to `file` so far.
    pub bytes: u64,
    /// Whether all of them are there and matched the digest.
    pub verified: bool,
    /// The metainfo of the pieces in `file` so far, once a first one is whole (a chained
    /// blob whose `length` is known: see [`crate::metainfo`]'s hashes known so far), for an
    /// origin that seeds them while it fetches the rest.
    pub hashes: Option<std::sync::Arc<crate::metainfo::Metainfo>>,
}

/// The body of a complete blob's `file` (in `cache/`), `len` bytes.
pub fn complete_body(
    file: std::fs::File,
    len: u64,
) -> impl Stream<Item = io::Result<Bytes>> + Send {
    let done = ImportProgress {
        bytes: len,
        verified: true,
        ..ImportProgress::default()
    };
    follow(file, watch::channel(done).1)
}

/// The body of `file`, an import's file opened by a reader, as `progress` says it grows. It ends
/// in an error when the import ends (its sender is dropped) without verifying.
pub fn follow(
    file: std::fs::File,
    progress: watch::Receiver<ImportProgress>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    struct Reader {
        file: std::fs::File,
        pos: u64,
        progress: watch::Receiver<ImportProgress>,
        done: bool,
    }
    let reader = Reader {
        file,
        pos: 0,
        progress,
        done: false,
    };
    futures_util::stream::unfold(reader, |mut r| async move {
        if r.done {
            return None;
        }
        loop {
            let (bytes, verified) = {
                let p = r.progress.borrow_and_update();
                (p.bytes, p.verified)
            };
            let available = match verified {
                true => bytes,
                false => bytes.saturating_sub(1),
            };
            if r.pos < available {
                let n = (available - r.pos).min(SEND_CHUNK);
                // SAFETY: a complete blob in `cache/` is never opened for writing again; an
                // import writes its file in `download/` front to back, each byte once, and
                // `available` never passes the bytes its progress reported written.
                #[allow(unsafe_code)]
                let mapped = unsafe { map_window(&r.file, r.pos, n) };
                return match mapped {
                    Ok(map) => {
                        r.pos += n;
                        Some((Ok(Bytes::from_owner(map)), r))
                    }
                    Err(e) => {
                        r.done = true;
                        Some((Err(e), r))
                    }
                };
            }
            if verified {
                return None;
            }
            if r.progress.changed().await.is_err() {
                // The import is over; a last look tells whether it verified.
                if r.progress.borrow().verified {
                    continue;
                }
                r.done = true;
                let e = io::Error::other("the blob failed to arrive whole and verified");
                return Some((Err(e), r));
            }
        }
    })
}
