//! The crate's errors, one enum per concept a caller acts on differently: a malformed or lying
//! metainfo, a malformed frame from a peer, a bitfield that does not fit its torrent, a peer
//! store that cannot be reached, a rate that cannot be enforced, a tracker that cannot be
//! served or reached.

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

/// Why a rate limit cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BandwidthError {
    /// A rate of zero would block forever.
    #[error("{direction} rate is 0 bits per second: expected at least 1")]
    ZeroRate {
        /// `egress` or `ingress`.
        direction: &'static str,
    },
    /// A token size of zero has no meaning.
    #[error("token_size is 0 bits: expected at least 1")]
    ZeroTokenSize,
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
