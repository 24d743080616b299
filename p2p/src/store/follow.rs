//! Reading an import while it lands.
//!
//! [`PieceStore::import_followed`](super::PieceStore::import_followed) reports where it stands
//! in an [`ImportProgress`]: the file it writes, how many bytes are in it, and whether they
//! matched the digest. [`follow`] turns that into a body: every byte as it reaches the file but
//! the last, which goes out only once the whole blob verified, so a reader never completes a
//! blob that failed its digest (its body ends in an error instead, and a server cuts the
//! connection). It does not wait for the blob's sync and rename into `cache/`: what the reader
//! has is verified, and a failed rename loses only the cached copy.

use std::io;
use std::path::PathBuf;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;

/// Bytes read from the file per chunk of a follower's body.
const READ_CHUNK: usize = 256 * 1024;

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
}

/// The body of `file`, an import's file opened by a reader, as `progress` says it grows. It ends
/// in an error when the import ends (its sender is dropped) without verifying.
pub fn follow(
    file: tokio::fs::File,
    progress: watch::Receiver<ImportProgress>,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    struct Reader {
        file: tokio::fs::File,
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
                let n = (available - r.pos).min(READ_CHUNK as u64) as usize;
                let mut buf = BytesMut::zeroed(n);
                return match r.file.read_exact(&mut buf).await {
                    Ok(_) => {
                        r.pos += n as u64;
                        Some((Ok(buf.freeze()), r))
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
