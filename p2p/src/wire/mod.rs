//! The peer protocol's frames and their byte form. No I/O: [`FrameDecoder::decode`] parses a
//! borrowed buffer into a typed [`Frame`], says it needs more bytes, or names what is wrong;
//! [`encode`] appends a frame to a buffer. The session that owns the socket does the reading.
//!
//! # Frame layout
//!
//! Every frame is `u32 length` (big-endian, bytes after the length field), `u8 type`, then the
//! body for that type (integers big-endian):
//!
//! | type | frame          | body |
//! |------|----------------|------|
//! | 1    | Handshake      | u8 version, 20-byte peer id, 32-byte info hash, u8 + digest, u16 + namespace, u32 piece count + bitfield bytes |
//! | 2    | PieceRequest   | u32 index |
//! | 3    | PiecePayload   | u32 index, the piece's bytes (the rest of the frame) |
//! | 4    | AnnouncePiece  | u32 index |
//! | 5    | CancelPiece    | u32 index |
//! | 6    | Error          | u32 index, u8 code, u16 + UTF-8 message |
//! | 7    | Complete       | empty |
//!
//! The length is checked against a cap before any body bytes are awaited, so a peer cannot make
//! us buffer more than one piece plus [`FRAME_HEADROOM`].

use bytes::{BufMut, Bytes, BytesMut};
use shoal_registry::Digest;

use crate::bitfield::Bitfield;
use crate::error::WireError;
use crate::metainfo::{DEFAULT_PIECE_LENGTH, InfoHash, Metainfo};
use crate::peer_id::PeerId;
use crate::piece::PieceIndex;

/// The protocol version this build speaks, sent in every handshake.
pub const PROTOCOL_VERSION: u8 = 1;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// Bytes of a piece payload frame before its data: length prefix, type, piece index.
pub const PAYLOAD_HEAD: usize = LENGTH_PREFIX + 1 + 4;

/// The largest first frame an incoming connection may send: a handshake with a bitfield of up
/// to 256 KiB (two million pieces).
pub const HANDSHAKE_FRAME_MAX: u64 = (256 << 10) + FRAME_HEADROOM;

/// Room above one piece that the frame cap allows: the largest handshake or error frame with an
/// empty bitfield (type, version, peer id, info hash, longest digest and namespace, piece count),
/// which also covers a payload's type and index.
pub const FRAME_HEADROOM: u64 =
    1 + 1 + PeerId::LEN as u64 + 32 + (1 + 255) + (2 + u16::MAX as u64) + 4;

const HANDSHAKE: u8 = 1;
const PIECE_REQUEST: u8 = 2;
const PIECE_PAYLOAD: u8 = 3;
const ANNOUNCE_PIECE: u8 = 4;
const CANCEL_PIECE: u8 = 5;
const ERROR: u8 = 6;
const COMPLETE: u8 = 7;

/// The first frame each side sends: who it is, which torrent, and which pieces it has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handshake {
    /// The sender's identity.
    pub peer_id: PeerId,
    /// The torrent the connection is for.
    pub info_hash: InfoHash,
    /// The blob, so a seeder can find it in its store (or fetch it) before it knows the torrent.
    pub digest: Digest,
    /// The repository namespace, which selects the origin's storage backend.
    pub namespace: String,
    /// The pieces the sender has.
    pub bitfield: Bitfield,
}

/// Why a peer answered a request with an error instead of a piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The sender does not have the piece (yet).
    PieceUnavailable,
    /// The sender has the piece but could not read it.
    StorageFailure,
    /// The request made no sense to the sender (e.g. an index past the end).
    BadRequest,
}

impl ErrorCode {
    fn to_u8(self) -> u8 {
        match self {
            ErrorCode::PieceUnavailable => 1,
            ErrorCode::StorageFailure => 2,
            ErrorCode::BadRequest => 3,
        }
    }

    fn from_u8(b: u8) -> Result<Self, WireError> {
        match b {
            1 => Ok(ErrorCode::PieceUnavailable),
            2 => Ok(ErrorCode::StorageFailure),
            3 => Ok(ErrorCode::BadRequest),
            other => Err(WireError::UnknownErrorCode(other)),
        }
    }
}

/// One message between peers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Opens a connection; see [`Handshake`].
    Handshake(Handshake),
    /// Asks for one piece.
    PieceRequest {
        /// The piece wanted.
        index: PieceIndex,
    },
    /// Carries one piece's bytes.
    PiecePayload {
        /// The piece sent.
        index: PieceIndex,
        /// Its bytes, verified by the receiver against the metainfo.
        data: Bytes,
    },
    /// Tells a peer the sender now has a piece, so the peer's picker counts it.
    AnnouncePiece {
        /// The piece now held.
        index: PieceIndex,
    },
    /// Withdraws a request, sent in endgame when another peer delivered the piece first.
    CancelPiece {
        /// The piece no longer wanted.
        index: PieceIndex,
    },
    /// Refuses a request.
    Error {
        /// The piece the error is about.
        index: PieceIndex,
        /// What went wrong.
        code: ErrorCode,
        /// Text for the receiver's logs.
        message: String,
    },
    /// The sender has every piece; a seeder may close idle connections to it.
    Complete,
}

impl Frame {
    /// The frame's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Handshake(_) => "handshake",
            Frame::PieceRequest { .. } => "piece request",
            Frame::PiecePayload { .. } => "piece payload",
            Frame::AnnouncePiece { .. } => "announce piece",
            Frame::CancelPiece { .. } => "cancel piece",
            Frame::Error { .. } => "error",
            Frame::Complete => "complete",
        }
    }
}

/// What the decoder knows about the torrent once the handshake has named it.
#[derive(Clone, Copy, Debug)]
struct TorrentShape {
    piece_count: u32,
    piece_length: u64,
    length: u64,
}

impl TorrentShape {
    fn piece_size(&self, index: PieceIndex) -> u64 {
        let start = u64::from(index.0) * self.piece_length;
        self.piece_length.min(self.length - start)
    }
}

/// Parses frames with the limits of one connection: before the handshake only a size cap, after
/// it also the torrent's piece count and piece sizes.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    max_frame_len: u64,
    max_piece_length: u64,
    torrent: Option<TorrentShape>,
}

impl Default for FrameDecoder {
    /// A decoder for an incoming connection whose torrent is not yet known, with pieces up to
    /// the default 4 MiB.
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_PIECE_LENGTH)
    }
}

impl FrameDecoder {
    /// A decoder for a connection whose torrent is not known yet: frames up to
    /// `max_piece_length + FRAME_HEADROOM` bytes, handshake bitfields up to that size.
    pub fn new(max_piece_length: u64) -> Self {
        FrameDecoder {
            max_frame_len: max_piece_length.saturating_add(FRAME_HEADROOM),
            max_piece_length,
            torrent: None,
        }
    }

    /// A decoder for the first frame of an incoming connection, before anything is known of
    /// its torrent: frames up to [`HANDSHAKE_FRAME_MAX`] bytes (bitfields of two million
    /// pieces), so a stranger that has not said who it is cannot make the host buffer a
    /// piece-sized frame.
    pub fn for_handshake() -> Self {
        FrameDecoder {
            max_frame_len: HANDSHAKE_FRAME_MAX,
            max_piece_length: HANDSHAKE_FRAME_MAX,
            torrent: None,
        }
    }

    /// A decoder for one torrent: bitfields must cover exactly its pieces, indices must exist,
    /// payloads must have their piece's exact size.
    pub fn for_torrent(metainfo: &Metainfo) -> Self {
        let bitfield_bytes = u64::from(metainfo.piece_count()).div_ceil(8);
        let largest = metainfo.piece_length().max(bitfield_bytes);
        FrameDecoder {
            max_frame_len: largest.saturating_add(FRAME_HEADROOM),
            max_piece_length: metainfo.piece_length(),
            torrent: Some(TorrentShape {
                piece_count: metainfo.piece_count(),
                piece_length: metainfo.piece_length(),
                length: metainfo.length(),
            }),
        }
    }

    /// The largest frame (after the length prefix) this decoder accepts.
    pub fn max_frame_len(&self) -> u64 {
        self.max_frame_len
    }

    /// Parses one frame from the front of `buf`: `Ok(None)` when more bytes are needed,
    /// `Ok(Some((frame, consumed)))` when a whole frame was read, or why the bytes are bad.
    pub fn decode(&self, buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
        Ok(self.decode_parts(buf)?.map(|(mut frame, end, payload)| {
            if let (Frame::PiecePayload { data, .. }, Some(at)) = (&mut frame, payload) {
                *data = Bytes::copy_from_slice(&buf[at..end]);
            }
            (frame, end)
        }))
    }

    /// [`FrameDecoder::decode`] that takes the frame's bytes off the front of `buf`; a piece
    /// payload shares `buf`'s memory instead of being copied out of it.
    pub fn decode_split(&self, buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        let Some((mut frame, end, payload)) = self.decode_parts(buf)? else {
            return Ok(None);
        };
        let bytes = buf.split_to(end);
        if let (Frame::PiecePayload { data, .. }, Some(at)) = (&mut frame, payload) {
            *data = bytes.freeze().slice(at..);
        }
        Ok(Some(frame))
    }

    /// Parses `frame`, which must be exactly one whole frame (length prefix included); a piece
    /// payload is a slice of `frame`, not a copy.
    pub fn decode_frame(&self, frame: Bytes) -> Result<Frame, WireError> {
        match self.decode_parts(&frame)? {
            Some((mut f, end, payload)) if end == frame.len() => {
                if let (Frame::PiecePayload { data, .. }, Some(at)) = (&mut f, payload) {
                    *data = frame.slice(at..end);
                }
                Ok(f)
            }
            _ => Err(WireError::Truncated {
                frame: "frame",
                field: "length",
            }),
        }
    }

    /// Bytes the frame at the front of `buf` needs in all (prefix included), once its length
    /// prefix is there and within bounds: lets a reader make room for a whole piece at once.
    pub fn frame_len(&self, buf: &[u8]) -> Option<usize> {
        let prefix = buf.first_chunk::<LENGTH_PREFIX>()?;
        let len = u64::from(u32::from_be_bytes(*prefix));
        (len <= self.max_frame_len).then(|| LENGTH_PREFIX + len as usize)
    }

    /// Parses one frame; a piece payload comes back empty with the offset in `buf` where its
    /// bytes start (they run to the frame's end).
    fn decode_parts(&self, buf: &[u8]) -> Result<Option<(Frame, usize, Option<usize>)>, WireError> {
        let Some(prefix) = buf.first_chunk::<LENGTH_PREFIX>() else {
            return Ok(None);
        };
        let len = u64::from(u32::from_be_bytes(*prefix));
        if len == 0 {
            return Err(WireError::EmptyFrame);
        }
        if len > self.max_frame_len {
            return Err(WireError::FrameTooLong {
                len,
                max: self.max_frame_len,
            });
        }
        // len <= max_frame_len, which is far below usize::MAX on any supported target.
        let end = LENGTH_PREFIX + len as usize;
        let Some(body) = buf.get(LENGTH_PREFIX..end) else {
            return Ok(None);
        };
        let frame = self.parse_body(body)?;
        // A payload's bytes follow the kind byte and the u32 index.
        let payload = matches!(frame, Frame::PiecePayload { .. }).then_some(LENGTH_PREFIX + 5);
        Ok(Some((frame, end, payload)))
    }

    fn check_index(&self, index: PieceIndex) -> Result<(), WireError> {
        match self.torrent {
            Some(t) if index.0 >= t.piece_count => Err(WireError::PieceOutOfRange {
                index,
                count: t.piece_count,
            }),
            _ => Ok(()),
        }
    }

    fn parse_body(&self, body: &[u8]) -> Result<Frame, WireError> {
        let (&kind, rest) = body.split_first().ok_or(WireError::EmptyFrame)?;
        let name = match kind {
            HANDSHAKE => "handshake",
            PIECE_REQUEST => "piece request",
            PIECE_PAYLOAD => "piece payload",
            ANNOUNCE_PIECE => "announce piece",
            CANCEL_PIECE => "cancel piece",
            ERROR => "error",
            COMPLETE => "complete",
            other => return Err(WireError::UnknownFrameType(other)),
        };
        let mut r = Fields {
            frame: name,
            bytes: rest,
        };
        let frame = match kind {
            HANDSHAKE => Frame::Handshake(self.parse_handshake(&mut r)?),
            PIECE_REQUEST => {
                let index = r.index()?;
                self.check_index(index)?;
                Frame::PieceRequest { index }
            }
            ANNOUNCE_PIECE => {
                let index = r.index()?;
                self.check_index(index)?;
                Frame::AnnouncePiece { index }
            }
            CANCEL_PIECE => {
                let index = r.index()?;
                self.check_index(index)?;
                Frame::CancelPiece { index }
            }
            PIECE_PAYLOAD => {
                let index = r.index()?;
                self.check_index(index)?;
                let data = r.take(r.bytes.len(), "data")?;
                let got = data.len() as u64;
                let expected = match self.torrent {
                    Some(t) => Some(t.piece_size(index)),
                    None if got > self.max_piece_length => Some(self.max_piece_length),
                    None => None,
                };
                if let Some(expected) = expected.filter(|&e| e != got) {
                    return Err(WireError::PayloadSize {
                        index,
                        got,
                        expected,
                    });
                }
                // The caller fills in the bytes: copied or shared.
                Frame::PiecePayload {
                    index,
                    data: Bytes::new(),
                }
            }
            ERROR => {
                let index = r.index()?;
                let code = ErrorCode::from_u8(r.u8("code")?)?;
                let len = r.u16("message length")?;
                let message = r.utf8(len.into(), "message")?;
                Frame::Error {
                    index,
                    code,
                    message,
                }
            }
            _ => Frame::Complete,
        };
        if !r.bytes.is_empty() {
            return Err(WireError::TrailingBytes {
                frame: name,
                extra: r.bytes.len(),
            });
        }
        Ok(frame)
    }

    fn parse_handshake(&self, r: &mut Fields<'_>) -> Result<Handshake, WireError> {
        let version = r.u8("version")?;
        if version != PROTOCOL_VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        let peer_id = PeerId(r.array("peer id")?);
        let info_hash = InfoHash(r.array("info hash")?);
        let digest_len = r.u8("digest length")?;
        let digest = r
            .utf8(digest_len.into(), "digest")?
            .parse::<Digest>()
            .map_err(|e| r.invalid("digest", e.to_string()))?;
        let namespace_len = r.u16("namespace length")?;
        let namespace = r.utf8(namespace_len.into(), "namespace")?;
        let bits = r.u32("piece count")?;
        if let Some(t) = self.torrent {
            Bitfield::empty(bits).check_len(t.piece_count)?;
        }
        let bytes = r.take((bits as usize).div_ceil(8), "bitfield")?;
        let bitfield = Bitfield::from_bytes(bits, bytes)?;
        Ok(Handshake {
            peer_id,
            info_hash,
            digest,
            namespace,
            bitfield,
        })
    }
}

/// Parses one frame with the default limits (no torrent known, pieces up to 4 MiB).
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, WireError> {
    FrameDecoder::default().decode(buf)
}

/// A cursor over a frame body that names the field it was reading when the body ran out.
struct Fields<'a> {
    frame: &'static str,
    bytes: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < n {
            return Err(WireError::Truncated {
                frame: self.frame,
                field,
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn index(&mut self) -> Result<PieceIndex, WireError> {
        self.u32("index").map(PieceIndex)
    }

    fn utf8(&mut self, n: usize, field: &'static str) -> Result<String, WireError> {
        let raw = self.take(n, field)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| self.invalid(field, "not UTF-8".to_owned()))
    }

    fn invalid(&self, field: &'static str, reason: String) -> WireError {
        WireError::InvalidField {
            frame: self.frame,
            field,
            reason,
        }
    }
}

fn field_len(field: &'static str, len: usize, max: usize) -> Result<(), WireError> {
    if len > max {
        return Err(WireError::FieldTooLong { field, len, max });
    }
    Ok(())
}

/// Appends a frame to `dst`. Fails, leaving `dst` as it was, only when a field is too long for
/// its length prefix (a namespace or message over 65535 bytes, a payload over 4 GiB).
pub fn encode(frame: &Frame, dst: &mut BytesMut) -> Result<(), WireError> {
    let start = dst.len();
    dst.put_u32(0);
    let result = encode_body(frame, dst);
    if let Err(e) = result {
        dst.truncate(start);
        return Err(e);
    }
    let len = dst.len() - start - LENGTH_PREFIX;
    if let Err(e) = field_len("frame", len, u32::MAX as usize) {
        dst.truncate(start);
        return Err(e);
    }
    dst[start..start + LENGTH_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Appends what goes before a piece payload's bytes (length prefix, kind, index), for a
/// writer that sends the bytes from where they are instead of copying them behind it.
pub fn encode_payload_head(
    index: PieceIndex,
    len: usize,
    dst: &mut BytesMut,
) -> Result<(), WireError> {
    field_len("frame", len, u32::MAX as usize - 5)?;
    dst.put_u32((len + 5) as u32);
    dst.put_u8(PIECE_PAYLOAD);
    dst.put_u32(index.0);
    Ok(())
}

fn encode_body(frame: &Frame, dst: &mut BytesMut) -> Result<(), WireError> {
    match frame {
        Frame::Handshake(h) => {
            let digest = h.digest.to_string();
            field_len("digest", digest.len(), u8::MAX.into())?;
            field_len("namespace", h.namespace.len(), u16::MAX.into())?;
            dst.put_u8(HANDSHAKE);
            dst.put_u8(PROTOCOL_VERSION);
            dst.put_slice(&h.peer_id.0);
            dst.put_slice(&h.info_hash.0);
            dst.put_u8(digest.len() as u8);
            dst.put_slice(digest.as_bytes());
            dst.put_u16(h.namespace.len() as u16);
            dst.put_slice(h.namespace.as_bytes());
            dst.put_u32(h.bitfield.len());
            dst.put_slice(h.bitfield.as_bytes());
        }
        Frame::PieceRequest { index } => {
            dst.put_u8(PIECE_REQUEST);
            dst.put_u32(index.0);
        }
        Frame::PiecePayload { index, data } => {
            dst.put_u8(PIECE_PAYLOAD);
            dst.put_u32(index.0);
            dst.put_slice(data);
        }
        Frame::AnnouncePiece { index } => {
            dst.put_u8(ANNOUNCE_PIECE);
            dst.put_u32(index.0);
        }
        Frame::CancelPiece { index } => {
            dst.put_u8(CANCEL_PIECE);
            dst.put_u32(index.0);
        }
        Frame::Error {
            index,
            code,
            message,
        } => {
            field_len("message", message.len(), u16::MAX.into())?;
            dst.put_u8(ERROR);
            dst.put_u32(index.0);
            dst.put_u8(code.to_u8());
            dst.put_u16(message.len() as u16);
            dst.put_slice(message.as_bytes());
        }
        Frame::Complete => dst.put_u8(COMPLETE),
    }
    Ok(())
}

#[cfg(test)]
mod tests;
