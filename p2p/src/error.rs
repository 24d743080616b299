//! The crate's errors, one enum per concept a caller acts on differently: a malformed or lying
//! metainfo, a malformed frame from a peer, a bitfield that does not fit its torrent, a peer
//! store that cannot be reached, a rate that cannot be enforced, a piece store that refuses a
//! piece or cannot reach its disk, a peer connection that breaks, a tracker that cannot be
//! served or reached.

use std::path::PathBuf;

use crate::peer_id::PeerId;
use crate::piece::PieceIndex;

/// Why a metainfo could not be built, decoded, or why a piece failed verification.
#[derive(Debug, thiserror::Error)]
pub enum MetainfoError {
    /// The piece length is zero or above [`crate::metainfo::MAX_PIECE_LENGTH`].
    #[error("piece length {0} is out of range: expected 1 to {max} bytes", max = crate::metainfo::MAX_PIECE_LENGTH)]
    PieceLength(u64),
    /// The number of piece hashes does not match `ceil(length / piece_length)`.
    #[error(
        "metainfo lists {got} piece hashes for {length} bytes in pieces of {piece_length}: expected {expected}"
    )]
    PieceCount {
        /// Hashes given.
        got: u64,
        /// Hashes the length implies.
        expected: u64,
        /// Blob length.
        length: u64,
        /// Piece length.
        piece_length: u64,
    },
    /// The blob hashed while building does not match the digest it was published under.
    #[error("blob hashes to {actual}, expected {expected}")]
    DigestMismatch {
        /// The digest the caller expected.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// Reading the blob failed.
    #[error("reading the blob: {0}")]
    Io(#[from] std::io::Error),
    /// The canonical encoding is malformed; the message names the field.
    #[error("metainfo encoding is malformed at {field}: {reason}")]
    Malformed {
        /// The field being decoded.
        field: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// A piece index past the last piece.
    #[error("piece {index} does not exist: the blob has {count} pieces")]
    NoSuchPiece {
        /// The index asked for.
        index: PieceIndex,
        /// Pieces in the blob.
        count: u32,
    },
    /// A piece has the wrong number of bytes.
    #[error("piece {index} is {got} bytes, expected {expected}")]
    PieceSize {
        /// The piece.
        index: PieceIndex,
        /// Bytes received.
        got: u64,
        /// Bytes the metainfo says it has.
        expected: u64,
    },
    /// A piece's bytes do not hash to the metainfo's piece hash: the sender lied or corrupted it.
    #[error("piece {0} does not match its SHA-256 hash")]
    BadPiece(PieceIndex),
    /// A piece past the hashes a prefix metainfo knows: it cannot be checked yet.
    #[error("piece {index} cannot be checked yet: the hashes of only {known} pieces are known")]
    HashUnknown {
        /// The piece.
        index: PieceIndex,
        /// Hashes known.
        known: u32,
    },
}

/// Why a bitfield does not fit the torrent it claims to describe.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BitfieldError {
    /// The byte count is not `ceil(bits / 8)`.
    #[error("bitfield of {bits} pieces needs {expected} bytes, got {got}")]
    ByteLength {
        /// Pieces the bitfield claims to cover.
        bits: u32,
        /// Bytes that many pieces need.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// Bits past the last piece are set, which a correct peer never sends.
    #[error("bitfield of {bits} pieces has bits set past the last piece")]
    SpareBits {
        /// Pieces the bitfield covers.
        bits: u32,
    },
    /// The bitfield covers a different number of pieces than the torrent has.
    #[error("bitfield covers {got} pieces, the torrent has {expected}")]
    PieceCount {
        /// Pieces in the torrent.
        expected: u32,
        /// Pieces in the bitfield.
        got: u32,
    },
}

/// Why bytes from a peer are not a valid frame. Every variant means the connection should be
/// closed: the stream cannot be resynchronised after a bad frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The length prefix is above the cap for this connection.
    #[error("frame of {len} bytes exceeds the {max}-byte cap")]
    FrameTooLong {
        /// Declared length.
        len: u64,
        /// The cap.
        max: u64,
    },
    /// A zero-length frame has no type byte.
    #[error("empty frame: expected at least a type byte")]
    EmptyFrame,
    /// A type byte this version does not know.
    #[error("unknown frame type {0:#04x}")]
    UnknownFrameType(u8),
    /// A handshake from a protocol version this build does not speak.
    #[error("protocol version {0} is not supported: expected {expected}", expected = crate::wire::PROTOCOL_VERSION)]
    UnsupportedVersion(u8),
    /// An error frame with a code this version does not know.
    #[error("unknown error code {0}")]
    UnknownErrorCode(u8),
    /// The frame ends before a field is complete.
    #[error("{frame} frame is truncated in field {field}")]
    Truncated {
        /// Frame kind.
        frame: &'static str,
        /// The field cut short.
        field: &'static str,
    },
    /// The frame carries bytes after its last field.
    #[error("{frame} frame has {extra} bytes after its last field")]
    TrailingBytes {
        /// Frame kind.
        frame: &'static str,
        /// Bytes left over.
        extra: usize,
    },
    /// A text field is not UTF-8, or a digest field is not a digest.
    #[error("{frame} frame field {field} is invalid: {reason}")]
    InvalidField {
        /// Frame kind.
        frame: &'static str,
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// A piece index past the torrent's last piece.
    #[error("piece {index} is out of range: the torrent has {count} pieces")]
    PieceOutOfRange {
        /// Index received.
        index: PieceIndex,
        /// Pieces in the torrent.
        count: u32,
    },
    /// A piece payload of the wrong size for its index.
    #[error("payload for piece {index} is {got} bytes, expected {expected}")]
    PayloadSize {
        /// The piece.
        index: PieceIndex,
        /// Bytes received.
        got: u64,
        /// Bytes the piece has.
        expected: u64,
    },
    /// The handshake bitfield does not fit the torrent.
    #[error("handshake bitfield: {0}")]
    Bitfield(#[from] BitfieldError),
    /// A field too long for its length prefix; raised when encoding, never sent.
    #[error("field {field} is {len} bytes, the most it can hold is {max}")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The most its prefix can express.
        max: usize,
    },
}

/// Why the picker refused an event; the owner drops the peer's connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickerError {
    /// A peer's bitfield does not match the torrent.
    #[error(transparent)]
    Bitfield(#[from] BitfieldError),
    /// A piece index past the last piece.
    #[error("piece {index} is out of range: the torrent has {count} pieces")]
    PieceOutOfRange {
        /// Index received.
        index: PieceIndex,
        /// Pieces in the torrent.
        count: u32,
    },
    /// An event for a peer that was never added (or already removed).
    #[error("peer {0} is not connected to this torrent")]
    UnknownPeer(PeerId),
}

/// Why a hash ring cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// A ring needs at least one host to name an owner.
    #[error("the hash ring has no hosts: expected at least one host:port")]
    NoHosts,
}

/// Why the peer store failed; the tracker answers the announce with a server error.
#[derive(Debug, thiserror::Error)]
pub enum PeerStoreError {
    /// The store behind the trait (e.g. Redis) failed.
    #[error("peer store backend: {0}")]
    Backend(String),
    /// The store's settings cannot work (zero window size or window count).
    #[error("peer store settings: {0}")]
    Settings(&'static str),
}

pub use shoal_storage::BandwidthError;

/// Why the piece store refused or failed an operation.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system failed; the path says which file or folder.
    #[error("store I/O on {path}: {source}")]
    Io {
        /// The file or folder being read, written, renamed or removed.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The body being imported failed mid-stream (the backend, not the disk); nothing was kept.
    #[error("reading the blob body: {0}")]
    Body(#[source] std::io::Error),
    /// A piece failed verification against the metainfo (wrong size or SHA-256); nothing was
    /// written, and the sender should be blacklisted.
    #[error("piece {index} was refused: {source}")]
    BadPiece {
        /// The piece.
        index: PieceIndex,
        /// Which check failed.
        source: MetainfoError,
    },
    /// A piece index past the blob's last piece.
    #[error("piece {index} does not exist: the blob has {count} pieces")]
    NoSuchPiece {
        /// The index asked for.
        index: PieceIndex,
        /// Pieces in the blob.
        count: u32,
    },
    /// A read of a piece this partial download does not have yet.
    #[error("piece {0} is not downloaded yet")]
    MissingPiece(PieceIndex),
    /// `finish` before every piece is present.
    #[error("download is incomplete: {missing} of {count} pieces missing")]
    Incomplete {
        /// Pieces still missing.
        missing: u32,
        /// Pieces in the blob.
        count: u32,
    },
    /// The whole blob does not hash to its digest; the download or import was discarded.
    #[error("blob hashes to {actual}, expected {expected}")]
    DigestMismatch {
        /// The digest the blob was asked for under.
        expected: String,
        /// What the bytes hash to.
        actual: String,
    },
    /// `download` with a metainfo other than the one the live download of this digest has.
    #[error("a download of {digest} is in progress with a different metainfo")]
    MetainfoConflict {
        /// The blob.
        digest: String,
    },
    /// The download behind this handle was removed or discarded; start a new one.
    #[error("the download of {digest} was discarded")]
    Discarded {
        /// The blob.
        digest: String,
    },
    /// A read past the end of the blob.
    #[error("range {offset}+{len} is past the end of a {length}-byte blob")]
    OutOfRange {
        /// Start of the range.
        offset: u64,
        /// Bytes asked for.
        len: u64,
        /// Blob length.
        length: u64,
    },
    /// A single read larger than the store hands out at once; read in smaller ranges.
    #[error("a read of {len} bytes is larger than the {max}-byte cap")]
    ReadTooLong {
        /// Bytes asked for.
        len: u64,
        /// The cap ([`crate::metainfo::MAX_PIECE_LENGTH`]).
        max: u64,
    },
    /// The metainfo could not be built (e.g. a piece length out of range).
    #[error(transparent)]
    Metainfo(MetainfoError),
    /// The runtime is shutting down and the blocking file task was cancelled.
    #[error("the store's file task was cancelled: the runtime is shutting down")]
    Shutdown,
}

/// Why a peer connection ended or could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The peer sent a malformed frame.
    #[error("malformed frame: {0}")]
    Wire(#[from] WireError),
    /// The peer sent a well-formed frame that breaks the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The handshake named another torrent, peer or shape than expected.
    #[error("handshake refused: {0}")]
    Handshake(String),
    /// No handshake within the limit.
    #[error("no handshake within {0:?}")]
    HandshakeTimeout(std::time::Duration),
    /// Nothing sent or received for the connection TTI.
    #[error("idle for {0:?}")]
    Idle(std::time::Duration),
    /// The peer closed the connection.
    #[error("closed by the peer")]
    Eof,
    /// Closed by this side.
    #[error("closed")]
    Closed,
    /// The socket failed.
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Why the scheduler could not get or serve a blob.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// The piece store failed.
    #[error("piece store: {0}")]
    Store(#[from] StoreError),
    /// The configured bandwidth cannot be enforced.
    #[error(transparent)]
    Bandwidth(#[from] BandwidthError),
    /// A peer connection failed.
    #[error("peer connection: {0}")]
    Conn(#[from] ConnError),
    /// The tracker could not be reached or answered nonsense.
    #[error("tracker: {0}")]
    Tracker(String),
    /// The origins do not hold the blob in the namespace asked for (the tracker's 404).
    #[error("unknown blob: {0}")]
    UnknownBlob(String),
    /// A peer asked for a torrent this host neither runs nor holds.
    #[error("no torrent {0}")]
    UnknownTorrent(crate::metainfo::InfoHash),
    /// The download failed; the text says why.
    #[error("download failed: {0}")]
    Download(String),
    /// The scheduler or the torrent is shutting down.
    #[error("the scheduler is stopping")]
    Stopped,
}

/// Why the tracker service could not run, or a tracker request gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    /// The configuration cannot work (a `dns:` host list, no hosts); the message names the key.
    #[error("tracker configuration: {0}")]
    Config(String),
    /// The peer store could not be built or reached at start.
    #[error(transparent)]
    PeerStore(#[from] PeerStoreError),
    /// A host list with no hosts.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// The listener failed while serving.
    #[error("serving the tracker: {0}")]
    Serve(#[source] std::io::Error),
    /// The caller's request is invalid; nothing was sent. The body names the field.
    #[error("invalid tracker request: {}", describe(.0))]
    InvalidRequest(crate::tracker::ErrorBody),
    /// No tracker gave an answer: each was unreachable, timed out or failed (5xx).
    #[error("no tracker answered ({tried} tried); last: {last}")]
    Unavailable {
        /// Trackers tried.
        tried: usize,
        /// What went wrong with the last one.
        last: String,
    },
    /// A tracker refused the request (4xx, or a status this client does not expect).
    #[error("tracker {tracker} answered {status}: {message}")]
    Rejected {
        /// The tracker.
        tracker: String,
        /// The HTTP status.
        status: u16,
        /// Its error message, naming the field for a 400.
        message: String,
    },
    /// A tracker answered 200 with a body that is not what was asked for.
    #[error("tracker {tracker} sent a bad answer: {reason}")]
    BadResponse {
        /// The tracker.
        tracker: String,
        /// What was wrong with it.
        reason: String,
    },
    /// No origin has the blob (404).
    #[error("blob {digest} is unknown in namespace {namespace}")]
    BlobUnknown {
        /// The namespace asked in.
        namespace: String,
        /// The blob.
        digest: String,
    },
}

fn describe(body: &crate::tracker::ErrorBody) -> String {
    match &body.field {
        Some(field) => format!("{field} {}", body.message),
        None => body.message.clone(),
    }
}

/// A certificate, key or CA file of a `tls` block that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {why}", path.display())]
pub struct TlsError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub why: String,
}

/// `e` and every error under it, `: `-separated, each cause once: reqwest's and hyper's own
/// messages hide the cause ("error sending request for url (...)"); the sources say
/// "tcp connect error: Connection refused (os error 111)".
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod cause_tests {
    #[tokio::test]
    async fn a_refused_connection_says_so_and_names_the_address() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let e = reqwest::get(format!("http://{addr}/x")).await.unwrap_err();
        let text = super::with_causes(&e);
        assert!(text.contains(&addr.to_string()), "{text}");
        assert!(text.to_lowercase().contains("connection refused"), "{text}");
    }
}
