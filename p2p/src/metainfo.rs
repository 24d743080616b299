//! What a peer needs to download a blob: its digest, length, piece length and one 32-byte hash
//! per piece, so every piece can be checked the moment it arrives (Kraken uses CRC32, which does
//! not stop a lying peer).
//!
//! # Two piece-hash schemes
//!
//! - **Chained** (version 2; every sha256 blob whose piece length is a multiple of SHA-256's
//!   64-byte block): piece `i`'s hash is SHA-256's internal chaining state after the blob's
//!   bytes up to the end of piece `i`, and the last piece's hash is the blob digest itself.
//!   A piece is checked by running the compression function over its bytes from the state its
//!   predecessor's hash gives (the initial vector for piece 0) and comparing with its own hash;
//!   the last piece is padded with the blob's length and finalized. By induction, a blob whose
//!   every piece passed is exactly the bytes that hash to the digest, whoever wrote the
//!   metainfo: each byte is hashed once, and no second pass over the whole blob is needed
//!   ([`Metainfo::pieces_prove_digest`]). This is SHA-256's Merkle-Damgard structure used as
//!   is; the states are what the compression function outputs, so forging one is forging a
//!   SHA-256 collision.
//! - **Independent** (version 1; sha512 blobs and piece lengths that are not a multiple of 64):
//!   one SHA-256 of each piece's bytes. The whole blob must be hashed again once complete.
//!
//! # Canonical encoding
//!
//! Metainfo travels from origin to tracker to agent, and its hash names the torrent, so it has
//! exactly one byte form (all integers big-endian):
//!
//! | field          | bytes           |
//! |----------------|-----------------|
//! | magic          | `SHOALMI` + version byte: `1` independent, `2` chained (8 bytes) |
//! | digest         | u8 length, then the ASCII digest (`sha256:<hex>`) |
//! | length         | u64, blob bytes |
//! | piece_length   | u64 |
//! | piece count    | u32 |
//! | piece hashes   | 32 bytes each, in piece order |
//!
//! [`Metainfo::decode`] accepts only this form (no trailing bytes, counts consistent; in version
//! 2 a sha256 digest, a piece length that is a multiple of 64, at least one piece, and a last
//! hash equal to the digest), so
//! `decode(encode(m)) == m` and every accepted input re-encodes to itself. A binary form rather
//! than JSON because JSON has many spellings of one value, and the [`InfoHash`] must not change
//! with whitespace or key order.
//!
//! # Hashes known so far (version 3)
//!
//! An origin that is still fetching a blob from its backend knows the chained hashes of the
//! pieces it has written, not the rest, and seeds those pieces at once. It hands out a
//! **prefix**: version 3, the version 2 fields with a u32 `known` after the piece count and only
//! the first `known` hashes (`known` < piece count; the last hash, the digest, is in the header
//! anyway). Pieces below `known` verify as in version 2; the others cannot be verified yet
//! ([`Metainfo::verify_piece`] refuses them), and a peer asks for them only once a longer
//! prefix arrived. Since a chained metainfo's hashes follow from its digest (they are the
//! states of the one byte string that hashes to it), a chained torrent's [`InfoHash`] is taken
//! over its header alone, so a prefix and the complete metainfo name the same torrent.

use std::fmt;
use std::io::Read;
use std::ops::Range;

use sha2::{Digest as _, Sha256};
use shoal_registry::{Algorithm, Digest, Digester};

use crate::error::MetainfoError;
use crate::piece::PieceIndex;

/// Kraken's default piece length, 4 MiB: large enough that per-piece overhead (a request, a
/// hash, a bitfield bit) is small, small enough that a piece is a short transfer.
pub const DEFAULT_PIECE_LENGTH: u64 = 4 << 20;

/// The largest piece length accepted, 64 MiB: the wire's frame cap is derived from the piece
/// length, so this bounds what a peer may make us buffer.
pub const MAX_PIECE_LENGTH: u64 = 64 << 20;

const MAGIC_V1: &[u8; 8] = b"SHOALMI\x01";
const MAGIC_V2: &[u8; 8] = b"SHOALMI\x02";
const MAGIC_V3: &[u8; 8] = b"SHOALMI\x03";

/// SHA-256's block: a chained metainfo's piece length is a multiple of it.
const BLOCK: u64 = 64;

/// One piece's 32-byte hash: its SHA-256 ([`Scheme::Independent`]) or the blob's SHA-256
/// chaining state at its end ([`Scheme::Chained`]).
pub type PieceHash = [u8; 32];

/// How a metainfo's piece hashes are computed (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// Version 1: SHA-256 of each piece on its own.
    Independent,
    /// Version 2: SHA-256 chaining states; the last is the blob digest.
    Chained,
}

/// The name of a torrent: SHA-256 of its metainfo's canonical encoding (of a chained
/// metainfo's header: see the module docs). Two peers with the same info hash agree on every
/// piece boundary and hash, not just on the blob digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InfoHash(pub [u8; 32]);

impl InfoHash {
    /// The info hash of canonical metainfo bytes.
    pub fn of(canonical: &[u8]) -> Self {
        InfoHash(Sha256::digest(canonical).into())
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({self})")
    }
}

/// A blob's torrent description; immutable once built, so its info hash is computed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metainfo {
    digest: Digest,
    length: u64,
    piece_length: u64,
    /// Pieces in the blob.
    piece_count: u32,
    /// The hashes known: all of them, or a prefix of a chained metainfo's (version 3).
    piece_hashes: Vec<PieceHash>,
    scheme: Scheme,
    info_hash: InfoHash,
}

fn piece_count_for(length: u64, piece_length: u64) -> u64 {
    length.div_ceil(piece_length)
}

fn check_piece_length(piece_length: u64) -> Result<(), MetainfoError> {
    if piece_length == 0 || piece_length > MAX_PIECE_LENGTH {
        return Err(MetainfoError::PieceLength(piece_length));
    }
    Ok(())
}

impl Metainfo {
    /// Assembles an independent-scheme metainfo from its parts, checking the hash count fits
    /// the length.
    pub fn new(
        digest: Digest,
        length: u64,
        piece_length: u64,
        piece_hashes: Vec<PieceHash>,
    ) -> Result<Self, MetainfoError> {
        Self::assemble(
            digest,
            length,
            piece_length,
            piece_hashes,
            Scheme::Independent,
        )
    }

    /// Assembles a chained-scheme metainfo: `states` are the SHA-256 chaining states at the end
    /// of each piece, the last one the digest. Refuses what the scheme cannot describe.
    pub fn chained(
        digest: Digest,
        length: u64,
        piece_length: u64,
        states: Vec<PieceHash>,
    ) -> Result<Self, MetainfoError> {
        Self::assemble(digest, length, piece_length, states, Scheme::Chained)
    }

    /// A chained metainfo of which only the first `states.len()` hashes are known, fewer than
    /// the blob's pieces (see the module docs); with all of them, as [`Metainfo::chained`].
    pub fn chained_prefix(
        digest: Digest,
        length: u64,
        piece_length: u64,
        states: Vec<PieceHash>,
    ) -> Result<Self, MetainfoError> {
        let count = piece_count_for(length, piece_length);
        if states.len() as u64 >= count {
            return Self::chained(digest, length, piece_length, states);
        }
        Self::assemble_known(digest, length, piece_length, states, Scheme::Chained, false)
    }

    fn assemble(
        digest: Digest,
        length: u64,
        piece_length: u64,
        piece_hashes: Vec<PieceHash>,
        scheme: Scheme,
    ) -> Result<Self, MetainfoError> {
        Self::assemble_known(digest, length, piece_length, piece_hashes, scheme, true)
    }

    /// Checks and assembles; `complete` says whether `piece_hashes` must be all of them or is
    /// a strict prefix (chained only).
    fn assemble_known(
        digest: Digest,
        length: u64,
        piece_length: u64,
        piece_hashes: Vec<PieceHash>,
        scheme: Scheme,
        complete: bool,
    ) -> Result<Self, MetainfoError> {
        check_piece_length(piece_length)?;
        if scheme == Scheme::Chained {
            if digest.algorithm() != Algorithm::Sha256 {
                return Err(malformed(
                    "digest",
                    "a chained metainfo needs a sha256 digest",
                ));
            }
            if !piece_length.is_multiple_of(BLOCK) {
                return Err(malformed(
                    "piece_length",
                    format!("{piece_length} is not a multiple of {BLOCK}, which chaining needs"),
                ));
            }
            if length == 0 {
                return Err(malformed(
                    "length",
                    "a chained metainfo has at least one piece",
                ));
            }
            if complete && piece_hashes.last().map(hex::encode).as_deref() != Some(digest.hex()) {
                return Err(malformed(
                    "piece hashes",
                    "the last chained hash is not the digest",
                ));
            }
        }
        if !complete && scheme != Scheme::Chained {
            return Err(malformed(
                "piece hashes",
                "only a chained metainfo may list a prefix of its hashes",
            ));
        }
        let expected = piece_count_for(length, piece_length);
        let fits = match complete {
            true => piece_hashes.len() as u64 == expected,
            false => (piece_hashes.len() as u64) < expected,
        };
        if !fits || expected > u64::from(u32::MAX) {
            return Err(MetainfoError::PieceCount {
                got: piece_hashes.len() as u64,
                expected,
                length,
                piece_length,
            });
        }
        let mut m = Metainfo {
            digest,
            length,
            piece_length,
            piece_count: expected as u32,
            piece_hashes,
            scheme,
            info_hash: InfoHash([0; 32]),
        };
        m.info_hash = match scheme {
            Scheme::Independent => InfoHash::of(&m.encode()),
            Scheme::Chained => InfoHash::of(&m.header(MAGIC_V2)),
        };
        Ok(m)
    }

    /// Builds the metainfo of a blob by streaming it once from `reader`, hashing each piece and
    /// the whole blob; fails if the blob does not hash to `expected`, so an origin never
    /// publishes pieces of the wrong content.
    pub fn from_reader<R: Read>(
        mut reader: R,
        expected: &Digest,
        piece_length: u64,
    ) -> Result<Self, MetainfoError> {
        let mut builder = MetainfoBuilder::new(expected.algorithm(), piece_length)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            };
            builder.update(&buf[..n]);
        }
        builder.finish_verified(expected)
    }

    /// The blob's content digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// Blob length in bytes.
    pub fn length(&self) -> u64 {
        self.length
    }

    /// Bytes in every piece but the last.
    pub fn piece_length(&self) -> u64 {
        self.piece_length
    }

    /// Number of pieces; zero for an empty blob.
    pub fn piece_count(&self) -> u32 {
        self.piece_count
    }

    /// The known pieces' hashes, in order (what each is depends on [`Metainfo::scheme`]): all
    /// of them unless this is a prefix.
    pub fn piece_hashes(&self) -> &[PieceHash] {
        &self.piece_hashes
    }

    /// How many pieces' hashes are known (from the first): the pieces that can be verified.
    pub fn known(&self) -> u32 {
        self.piece_hashes.len() as u32
    }

    /// True when every piece's hash is known (not a prefix).
    pub fn is_complete(&self) -> bool {
        self.known() == self.piece_count
    }

    /// True when `other` describes the same torrent and the hashes both know are the same, so
    /// the one that knows more may replace the other.
    pub fn agrees_with(&self, other: &Metainfo) -> bool {
        let n = self.piece_hashes.len().min(other.piece_hashes.len());
        self.info_hash == other.info_hash
            && self.scheme == other.scheme
            && self.piece_hashes[..n] == other.piece_hashes[..n]
    }

    /// How the piece hashes were computed.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// True when pieces that all passed [`Metainfo::verify_piece`] are, together, the blob
    /// that hashes to the digest (the chained scheme, every hash known), so a download needs
    /// no second pass.
    pub fn pieces_prove_digest(&self) -> bool {
        self.scheme == Scheme::Chained && self.is_complete()
    }

    /// The torrent's name on the wire and at the tracker.
    pub fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    /// The byte range of a piece in the blob; the last piece may be short.
    pub fn piece_range(&self, index: PieceIndex) -> Result<Range<u64>, MetainfoError> {
        if index.0 >= self.piece_count() {
            return Err(MetainfoError::NoSuchPiece {
                index,
                count: self.piece_count(),
            });
        }
        let start = u64::from(index.0) * self.piece_length;
        let end = (start + self.piece_length).min(self.length);
        Ok(start..end)
    }

    /// Bytes in a piece.
    pub fn piece_size(&self, index: PieceIndex) -> Result<u64, MetainfoError> {
        self.piece_range(index).map(|r| r.end - r.start)
    }

    /// Checks a received piece: right index, right size, right SHA-256. A failure other than
    /// `NoSuchPiece` means the sender should be blacklisted.
    /// A piece past the known hashes of a prefix fails with `HashUnknown` (not the sender's
    /// fault).
    pub fn verify_piece(&self, index: PieceIndex, bytes: &[u8]) -> Result<(), MetainfoError> {
        let expected = self.piece_size(index)?;
        if index.0 >= self.known() {
            return Err(MetainfoError::HashUnknown {
                index,
                known: self.known(),
            });
        }
        if bytes.len() as u64 != expected {
            return Err(MetainfoError::PieceSize {
                index,
                got: bytes.len() as u64,
                expected,
            });
        }
        let i = index.as_usize();
        let hash: PieceHash = match self.scheme {
            Scheme::Independent => Sha256::digest(bytes).into(),
            Scheme::Chained => {
                let mut chain = match i {
                    0 => Chain::new(),
                    _ => Chain::resume(
                        &self.piece_hashes[i - 1],
                        index.0 as u64 * self.piece_length,
                    ),
                };
                chain.update(bytes);
                if i + 1 == self.piece_count as usize {
                    chain.finalize()
                } else {
                    chain.state()
                }
            }
        };
        if hash != self.piece_hashes[i] {
            return Err(MetainfoError::BadPiece(index));
        }
        Ok(())
    }

    /// The canonical encoding (see the module docs).
    pub fn encode(&self) -> Vec<u8> {
        let magic = match (self.scheme, self.is_complete()) {
            (Scheme::Independent, _) => MAGIC_V1,
            (Scheme::Chained, true) => MAGIC_V2,
            (Scheme::Chained, false) => MAGIC_V3,
        };
        let mut out = self.header(magic);
        if magic == MAGIC_V3 {
            out.extend_from_slice(&self.known().to_be_bytes());
        }
        out.reserve(32 * self.piece_hashes.len());
        for h in &self.piece_hashes {
            out.extend_from_slice(h);
        }
        out
    }

    /// The fields before the hashes, after `magic`.
    fn header(&self, magic: &[u8; 8]) -> Vec<u8> {
        let digest = self.digest.to_string();
        let mut out = Vec::with_capacity(8 + 1 + digest.len() + 24 + 32 * self.piece_hashes.len());
        out.extend_from_slice(magic);
        // Digest strings are at most 135 bytes (sha512), so the length fits a byte.
        out.push(digest.len() as u8);
        out.extend_from_slice(digest.as_bytes());
        out.extend_from_slice(&self.length.to_be_bytes());
        out.extend_from_slice(&self.piece_length.to_be_bytes());
        out.extend_from_slice(&self.piece_count.to_be_bytes());
        out
    }

    /// Parses the canonical encoding, rejecting anything [`Metainfo::encode`] would not produce.
    pub fn decode(bytes: &[u8]) -> Result<Self, MetainfoError> {
        let mut r = Reader { bytes, at: 0 };
        let (scheme, prefix) = match r.take(MAGIC_V1.len(), "magic")? {
            m if m == MAGIC_V1 => (Scheme::Independent, false),
            m if m == MAGIC_V2 => (Scheme::Chained, false),
            m if m == MAGIC_V3 => (Scheme::Chained, true),
            _ => return Err(malformed("magic", "expected SHOALMI version 1, 2 or 3")),
        };
        let digest_len = r.take(1, "digest length")?[0] as usize;
        let digest = std::str::from_utf8(r.take(digest_len, "digest")?)
            .map_err(|_| malformed("digest", "not UTF-8"))?
            .parse::<Digest>()
            .map_err(|e| malformed("digest", e.to_string()))?;
        let length = r.u64("length")?;
        let piece_length = r.u64("piece_length")?;
        check_piece_length(piece_length)?;
        let count = r.u32("piece count")?;
        let expected = piece_count_for(length, piece_length);
        if u64::from(count) != expected {
            return Err(MetainfoError::PieceCount {
                got: count.into(),
                expected,
                length,
                piece_length,
            });
        }
        let known = match prefix {
            true => {
                let known = r.u32("known")?;
                if known >= count {
                    return Err(malformed(
                        "known",
                        format!("{known} of {count} hashes: a prefix lists fewer than all"),
                    ));
                }
                known
            }
            false => count,
        };
        // Check the bytes are all there before allocating for them.
        let hash_bytes = (known as usize)
            .checked_mul(32)
            .ok_or_else(|| malformed("piece hashes", "count overflows"))?;
        let raw = r.take(hash_bytes, "piece hashes")?;
        if r.at != bytes.len() {
            return Err(malformed(
                "end",
                format!("{} bytes after the last piece hash", bytes.len() - r.at),
            ));
        }
        let piece_hashes = raw
            .chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect();
        Metainfo::assemble_known(digest, length, piece_length, piece_hashes, scheme, !prefix)
    }
}

fn malformed(field: &'static str, reason: impl Into<String>) -> MetainfoError {
    MetainfoError::Malformed {
        field,
        reason: reason.into(),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], MetainfoError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| malformed(field, "truncated"))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, MetainfoError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8, field)?);
        Ok(u64::from_be_bytes(b))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, MetainfoError> {
        let mut b = [0u8; 4];
        b.copy_from_slice(self.take(4, field)?);
        Ok(u32::from_be_bytes(b))
    }
}

/// SHA-256 run block by block from a given chaining state, so a piece can be checked from the
/// state its predecessor ends in and a blob's state read at each piece boundary.
#[derive(Clone)]
struct Chain {
    state: [u32; 8],
    /// A partial block waiting for more bytes.
    tail: [u8; BLOCK as usize],
    tail_len: usize,
    /// Bytes hashed since the blob's start, including those before `resume`.
    length: u64,
}

/// SHA-256's initial chaining state.
const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

impl Chain {
    fn new() -> Self {
        Chain {
            state: IV,
            tail: [0; BLOCK as usize],
            tail_len: 0,
            length: 0,
        }
    }

    /// The chain after `length` bytes (a multiple of 64) that ended in `state`.
    fn resume(state: &PieceHash, length: u64) -> Self {
        let mut words = [0u32; 8];
        for (w, b) in words.iter_mut().zip(state.chunks_exact(4)) {
            *w = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        }
        Chain {
            state: words,
            length,
            ..Chain::new()
        }
    }

    fn compress(&mut self, block: &[u8]) {
        use sha2::digest::generic_array::GenericArray;
        sha2::compress256(
            &mut self.state,
            std::slice::from_ref(GenericArray::from_slice(block)),
        );
    }

    fn update(&mut self, mut data: &[u8]) {
        self.length += data.len() as u64;
        if self.tail_len > 0 {
            let n = (BLOCK as usize - self.tail_len).min(data.len());
            self.tail[self.tail_len..self.tail_len + n].copy_from_slice(&data[..n]);
            self.tail_len += n;
            data = &data[n..];
            if self.tail_len < BLOCK as usize {
                return;
            }
            let block = self.tail;
            self.compress(&block);
            self.tail_len = 0;
        }
        let mut blocks = data.chunks_exact(BLOCK as usize);
        for block in &mut blocks {
            self.compress(block);
        }
        let rest = blocks.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    /// The chaining state now; meaningful at a block boundary (every piece boundary but the
    /// blob's end is one).
    fn state(&self) -> PieceHash {
        let mut out = [0u8; 32];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }

    /// The SHA-256 of every byte fed since the blob's start: pads and compresses the tail.
    fn finalize(mut self) -> PieceHash {
        let bits = self.length.wrapping_mul(8);
        let mut pad = [0u8; 2 * BLOCK as usize];
        let n = self.tail_len;
        pad[..n].copy_from_slice(&self.tail[..n]);
        pad[n] = 0x80;
        let total = if n + 1 + 8 <= BLOCK as usize {
            BLOCK as usize
        } else {
            2 * BLOCK as usize
        };
        pad[total - 8..total].copy_from_slice(&bits.to_be_bytes());
        for block in pad[..total].chunks_exact(BLOCK as usize) {
            self.compress(block);
        }
        self.state()
    }
}

/// Builds a metainfo incrementally, for callers that receive a blob in chunks (an upload, a
/// backend stream) and must not hold it whole. Hashes each byte once for a chained metainfo,
/// twice (piece and blob) for an independent one.
pub struct MetainfoBuilder {
    piece_length: u64,
    in_piece: u64,
    length: u64,
    piece_hashes: Vec<PieceHash>,
    hashing: Hashing,
}

enum Hashing {
    /// The blob's SHA-256 chain, its state taken at each piece boundary.
    Chained(Chain),
    /// The blob's digest and the current piece's own SHA-256.
    Independent { blob: Box<Digester>, piece: Sha256 },
}

impl MetainfoBuilder {
    /// A builder for a blob whose digest uses `algorithm`, cut into `piece_length` pieces;
    /// chained when the algorithm is sha256 and the piece length a multiple of 64.
    pub fn new(algorithm: Algorithm, piece_length: u64) -> Result<Self, MetainfoError> {
        check_piece_length(piece_length)?;
        let hashing = if algorithm == Algorithm::Sha256 && piece_length.is_multiple_of(BLOCK) {
            Hashing::Chained(Chain::new())
        } else {
            Hashing::Independent {
                blob: Box::new(Digester::new(algorithm)),
                piece: Sha256::new(),
            }
        };
        Ok(MetainfoBuilder {
            piece_length,
            in_piece: 0,
            length: 0,
            piece_hashes: Vec::new(),
            hashing,
        })
    }

    /// Feeds the next bytes of the blob; chunk boundaries need not match piece boundaries.
    pub fn update(&mut self, mut data: &[u8]) {
        self.length += data.len() as u64;
        if let Hashing::Independent { blob, .. } = &mut self.hashing {
            blob.update(data);
        }
        while !data.is_empty() {
            let room = (self.piece_length - self.in_piece) as usize;
            let n = room.min(data.len());
            match &mut self.hashing {
                Hashing::Chained(chain) => chain.update(&data[..n]),
                Hashing::Independent { piece, .. } => piece.update(&data[..n]),
            }
            self.in_piece += n as u64;
            data = &data[n..];
            if self.in_piece == self.piece_length {
                let hash = match &mut self.hashing {
                    Hashing::Chained(chain) => chain.state(),
                    Hashing::Independent { piece, .. } => std::mem::take(piece).finalize().into(),
                };
                self.piece_hashes.push(hash);
                self.in_piece = 0;
            }
        }
    }

    /// Pieces fed whole so far.
    pub fn pieces_done(&self) -> usize {
        self.piece_hashes.len()
    }

    /// While a chained blob of `length` bytes named `digest` is being fed: the metainfo of the
    /// pieces fed whole so far (a prefix, never its last piece; see the module docs). `None`
    /// for an independent metainfo, or before the first piece is whole.
    pub fn prefix(&self, digest: &Digest, length: u64) -> Option<Metainfo> {
        if !matches!(self.hashing, Hashing::Chained(_)) || digest.algorithm() != Algorithm::Sha256 {
            return None;
        }
        let count = piece_count_for(length, self.piece_length);
        let known = (self.piece_hashes.len() as u64).min(count.saturating_sub(1)) as usize;
        if known == 0 {
            return None;
        }
        Metainfo::chained_prefix(
            digest.clone(),
            length,
            self.piece_length,
            self.piece_hashes[..known].to_vec(),
        )
        .ok()
    }

    /// The metainfo of everything fed, named by the digest the bytes hash to.
    pub fn finish(mut self) -> Result<Metainfo, MetainfoError> {
        match self.hashing {
            Hashing::Chained(chain) => {
                let digest = chain.finalize();
                if self.length == 0 {
                    // No pieces to chain: an empty blob is described by its digest alone.
                    return Metainfo::new(
                        Digest::from_bytes(Algorithm::Sha256, &digest),
                        0,
                        self.piece_length,
                        Vec::new(),
                    );
                }
                // The last piece's hash is the digest, whether it was full or short.
                if self.in_piece == 0 {
                    self.piece_hashes.pop();
                }
                self.piece_hashes.push(digest);
                Metainfo::chained(
                    Digest::from_bytes(Algorithm::Sha256, &digest),
                    self.length,
                    self.piece_length,
                    self.piece_hashes,
                )
            }
            Hashing::Independent { blob, piece } => {
                if self.in_piece > 0 {
                    self.piece_hashes.push(piece.finalize().into());
                }
                Metainfo::new(
                    blob.current(),
                    self.length,
                    self.piece_length,
                    self.piece_hashes,
                )
            }
        }
    }

    /// As [`MetainfoBuilder::finish`], failing if the bytes do not hash to `expected`.
    pub fn finish_verified(self, expected: &Digest) -> Result<Metainfo, MetainfoError> {
        let m = self.finish()?;
        if m.digest() != expected {
            return Err(MetainfoError::DigestMismatch {
                expected: expected.to_string(),
                actual: m.digest().to_string(),
            });
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn blob(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn build(data: &[u8], piece_length: u64) -> Metainfo {
        Metainfo::from_reader(data, &Digest::sha256_of(data), piece_length).unwrap()
    }

    /// The metainfo of `data` fed to a builder in chunks cut at `cuts` (clamped, sorted).
    fn build_in_chunks(data: &[u8], piece_length: u64, cuts: Vec<usize>) -> Metainfo {
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
        cuts.sort_unstable();
        let mut b = MetainfoBuilder::new(Algorithm::Sha256, piece_length).unwrap();
        let mut at = 0;
        for c in cuts.into_iter().chain([data.len()]) {
            b.update(&data[at..c]);
            at = c;
        }
        b.finish().unwrap()
    }

    #[test]
    fn cuts_pieces_with_a_short_last_one() {
        let data = blob(10);
        let m = build(&data, 4);
        assert_eq!(m.piece_count(), 3);
        assert_eq!(m.piece_range(PieceIndex(2)).unwrap(), 8..10);
        assert_eq!(m.piece_size(PieceIndex(0)).unwrap(), 4);
        let h: PieceHash = Sha256::digest(&data[8..10]).into();
        assert_eq!(m.piece_hashes()[2], h);
        assert_eq!(m.digest(), &Digest::sha256_of(&data));
    }

    #[test]
    fn exact_multiple_has_no_empty_last_piece() {
        assert_eq!(build(&blob(8), 4).piece_count(), 2);
    }

    #[test]
    fn empty_blob_has_no_pieces() {
        let m = build(&[], DEFAULT_PIECE_LENGTH);
        assert_eq!(m.piece_count(), 0);
        assert!(matches!(
            m.piece_range(PieceIndex(0)),
            Err(MetainfoError::NoSuchPiece { .. })
        ));
    }

    #[test]
    fn verify_accepts_the_right_piece() {
        let data = blob(10);
        let m = build(&data, 4);
        m.verify_piece(PieceIndex(1), &data[4..8]).unwrap();
        m.verify_piece(PieceIndex(2), &data[8..]).unwrap();
    }

    #[test]
    fn verify_rejects_corrupt_short_and_missing_pieces() {
        let data = blob(10);
        let m = build(&data, 4);
        let mut bad = data[0..4].to_vec();
        bad[0] ^= 1;
        assert!(matches!(
            m.verify_piece(PieceIndex(0), &bad),
            Err(MetainfoError::BadPiece(PieceIndex(0)))
        ));
        assert!(matches!(
            m.verify_piece(PieceIndex(0), &data[0..3]),
            Err(MetainfoError::PieceSize { .. })
        ));
        assert!(matches!(
            m.verify_piece(PieceIndex(3), &[]),
            Err(MetainfoError::NoSuchPiece { .. })
        ));
    }

    #[test]
    fn from_reader_rejects_the_wrong_digest() {
        let err = Metainfo::from_reader(&b"abc"[..], &Digest::sha256_of(b"abd"), 2).unwrap_err();
        assert!(matches!(err, MetainfoError::DigestMismatch { .. }));
    }

    #[test]
    fn sha512_blobs_are_named_by_sha512() {
        let mut b = MetainfoBuilder::new(Algorithm::Sha512, 4).unwrap();
        b.update(b"hello");
        let m = b.finish().unwrap();
        assert_eq!(m.digest().algorithm(), Algorithm::Sha512);
        assert_eq!(Metainfo::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn piece_length_bounds() {
        assert!(matches!(
            MetainfoBuilder::new(Algorithm::Sha256, 0),
            Err(MetainfoError::PieceLength(0))
        ));
        assert!(MetainfoBuilder::new(Algorithm::Sha256, MAX_PIECE_LENGTH + 1).is_err());
        assert!(MetainfoBuilder::new(Algorithm::Sha256, MAX_PIECE_LENGTH).is_ok());
    }

    #[test]
    fn new_rejects_a_hash_count_that_does_not_fit() {
        let err = Metainfo::new(Digest::sha256_of(b""), 10, 4, vec![[0; 32]; 2]).unwrap_err();
        assert!(matches!(err, MetainfoError::PieceCount { expected: 3, .. }));
    }

    #[test]
    fn info_hash_is_the_hash_of_the_encoding_and_tracks_piece_length() {
        let data = blob(100);
        let a = build(&data, 16);
        let b = build(&data, 32);
        assert_eq!(a.info_hash(), InfoHash::of(&a.encode()));
        assert_ne!(a.info_hash(), b.info_hash());
    }

    #[test]
    fn decode_rejects_trailing_bytes_bad_magic_and_wrong_counts() {
        let m = build(&blob(10), 4);
        let mut enc = m.encode();
        enc.push(0);
        assert!(matches!(
            Metainfo::decode(&enc),
            Err(MetainfoError::Malformed { field: "end", .. })
        ));
        let mut enc = m.encode();
        enc[7] = 4;
        assert!(matches!(
            Metainfo::decode(&enc),
            Err(MetainfoError::Malformed { field: "magic", .. })
        ));
        // A count of 2^32-1 with no hashes behind it must fail without allocating 128 GiB.
        let mut enc = m.encode();
        let at = enc.len() - 3 * 32 - 4;
        enc[at..at + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(Metainfo::decode(&enc).is_err());
    }

    #[test]
    fn a_sha256_blob_in_whole_blocks_gets_a_chained_metainfo_ending_in_its_digest() {
        let data = blob(1000);
        let m = build(&data, 128);
        assert_eq!(m.scheme(), Scheme::Chained);
        assert!(m.pieces_prove_digest());
        assert_eq!(m.piece_count(), 8);
        assert_eq!(m.digest(), &Digest::sha256_of(&data));
        assert_eq!(hex::encode(m.piece_hashes()[7]), m.digest().hex());
        assert_eq!(&m.encode()[..8], MAGIC_V2);
        // A whole number of pieces: the last one's hash is still the digest.
        let exact = build(&blob(1024), 128);
        assert_eq!(hex::encode(exact.piece_hashes()[7]), exact.digest().hex());
        // Each state is what SHA-256 reaches after that many bytes: resuming from it and
        // finishing the rest gives the digest.
        let mut c = Chain::resume(&m.piece_hashes()[2], 3 * 128);
        c.update(&data[3 * 128..]);
        assert_eq!(hex::encode(c.finalize()), m.digest().hex());
    }

    #[test]
    fn other_blobs_keep_independent_piece_hashes() {
        assert_eq!(build(&blob(1000), 100).scheme(), Scheme::Independent);
        assert_eq!(build(&[], 128).scheme(), Scheme::Independent);
        let mut b = MetainfoBuilder::new(Algorithm::Sha512, 128).unwrap();
        b.update(&blob(300));
        assert_eq!(b.finish().unwrap().scheme(), Scheme::Independent);
    }

    #[test]
    fn chained_pieces_fail_when_corrupt_or_out_of_place() {
        let data = blob(1000);
        let m = build(&data, 128);
        let piece = |i: usize| &data[i * 128..((i + 1) * 128).min(data.len())];
        for i in 0..8 {
            m.verify_piece(PieceIndex(i as u32), piece(i)).unwrap();
        }
        let mut bad = piece(3).to_vec();
        bad[127] ^= 1;
        assert!(matches!(
            m.verify_piece(PieceIndex(3), &bad),
            Err(MetainfoError::BadPiece(PieceIndex(3)))
        ));
        // The right bytes in the wrong place fail: each piece is checked from its predecessor's state.
        let other = blob(2000);
        assert!(m.verify_piece(PieceIndex(2), &other[..128]).is_err());
        let mut last = piece(7).to_vec();
        last[0] ^= 1;
        assert!(m.verify_piece(PieceIndex(7), &last).is_err());
    }

    /// The metainfo a builder fed the first `fed` bytes of `data` hands out while fetching.
    fn prefix_after(data: &[u8], piece_length: u64, fed: usize) -> Option<Metainfo> {
        let mut b = MetainfoBuilder::new(Algorithm::Sha256, piece_length).unwrap();
        b.update(&data[..fed]);
        b.prefix(&Digest::sha256_of(data), data.len() as u64)
    }

    #[test]
    fn a_prefix_verifies_the_pieces_it_knows_and_names_the_same_torrent() {
        let data = blob(1000);
        let whole = build(&data, 128);
        let piece = |i: usize| &data[i * 128..((i + 1) * 128).min(data.len())];
        // Nothing whole yet: nothing to hand out.
        assert!(prefix_after(&data, 128, 127).is_none());
        let p = prefix_after(&data, 128, 3 * 128 + 5).unwrap();
        assert_eq!((p.known(), p.piece_count()), (3, 8));
        assert!(!p.is_complete() && whole.is_complete());
        assert_eq!(p.info_hash(), whole.info_hash());
        assert!(p.agrees_with(&whole) && whole.agrees_with(&p));
        for i in 0..3 {
            p.verify_piece(PieceIndex(i as u32), piece(i)).unwrap();
        }
        assert!(matches!(
            p.verify_piece(PieceIndex(3), piece(3)),
            Err(MetainfoError::HashUnknown {
                index: PieceIndex(3),
                known: 3
            })
        ));
        // The wire form: version 3, and back.
        let enc = p.encode();
        assert_eq!(&enc[..8], MAGIC_V3);
        assert_eq!(Metainfo::decode(&enc).unwrap(), p);
        // Every whole piece but the last: the last hash is the digest, known once all is fed.
        let most = prefix_after(&data, 128, 1000).unwrap();
        assert_eq!(most.known(), 7);
        assert_eq!(most.piece_hashes(), &whole.piece_hashes()[..7]);
        // A prefix that disagrees with the whole metainfo is another story.
        let mut states = p.piece_hashes().to_vec();
        states[1][0] ^= 1;
        let liar = Metainfo::chained_prefix(whole.digest().clone(), 1000, 128, states).unwrap();
        assert_eq!(liar.info_hash(), whole.info_hash());
        assert!(!liar.agrees_with(&whole));
        // Other blobs have no prefix.
        let mut b = MetainfoBuilder::new(Algorithm::Sha256, 100).unwrap();
        b.update(&data);
        assert!(b.prefix(&Digest::sha256_of(&data), 1000).is_none());
    }

    #[test]
    fn a_prefix_on_the_wire_lists_fewer_hashes_than_pieces() {
        let data = blob(1000);
        let p = prefix_after(&data, 128, 600).unwrap();
        let enc = p.encode();
        // `known` sits after the piece count; claiming all 8 (or more) is version 2's job.
        let at = enc.len() - 32 * p.known() as usize - 4;
        for known in [8u32, 9, 5] {
            let mut bad = enc.clone();
            bad[at..at + 4].copy_from_slice(&known.to_be_bytes());
            assert!(Metainfo::decode(&bad).is_err(), "known = {known}");
        }
        let mut extra = enc.clone();
        extra.push(0);
        assert!(Metainfo::decode(&extra).is_err());
        // An independent metainfo cannot be a prefix.
        let mut v1 = enc.clone();
        v1[7] = 1;
        assert!(Metainfo::decode(&v1).is_err());
    }

    #[test]
    fn a_chained_metainfo_that_could_not_prove_its_digest_is_refused() {
        let data = blob(1000);
        let m = build(&data, 128);
        let states = m.piece_hashes().to_vec();
        // Another digest over the same states: the last state would not be the digest.
        let liar = Metainfo::chained(Digest::sha256_of(b"other"), 1000, 128, states.clone());
        assert!(matches!(
            liar,
            Err(MetainfoError::Malformed {
                field: "piece hashes",
                ..
            })
        ));
        assert!(Metainfo::chained(m.digest().clone(), 1000, 100, states.clone()).is_err());
        assert!(Metainfo::chained(m.digest().clone(), 0, 128, vec![]).is_err());
        // The same refusals on the wire form.
        let mut enc = m.encode();
        let n = enc.len();
        enc[n - 1] ^= 1;
        assert!(Metainfo::decode(&enc).is_err());
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Metainfo::decode(&bytes);
        }

        #[test]
        fn decode_never_panics_on_mutated_valid_input(
            len in 0usize..200, piece in 1u64..64, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)
        ) {
            let mut enc = build(&blob(len), piece).encode();
            for (at, x) in flips {
                let i = at % enc.len();
                enc[i] ^= x;
            }
            if let Ok(m) = Metainfo::decode(&enc) {
                prop_assert_eq!(m.encode(), enc);
            }
        }

        #[test]
        fn encode_decode_round_trips(len in 0usize..500, piece in 1u64..128) {
            let m = build(&blob(len), piece);
            let back = Metainfo::decode(&m.encode()).unwrap();
            prop_assert_eq!(back.info_hash(), m.info_hash());
            prop_assert_eq!(back, m);
        }

        #[test]
        fn chunking_does_not_change_the_metainfo(
            len in 0usize..500, piece in 1u64..64, cuts in proptest::collection::vec(0usize..500, 0..6)
        ) {
            let data = blob(len);
            prop_assert_eq!(build_in_chunks(&data, piece, cuts), build(&data, piece));
        }

        #[test]
        fn every_chained_piece_verifies_and_the_digest_is_the_blobs(
            len in 1usize..2000, blocks in 1u64..8, cuts in proptest::collection::vec(0usize..2000, 0..4)
        ) {
            let data = blob(len);
            let piece = blocks * 64;
            let m = build_in_chunks(&data, piece, cuts);
            prop_assert_eq!(m.scheme(), Scheme::Chained);
            prop_assert_eq!(m.digest(), &Digest::sha256_of(&data));
            prop_assert_eq!(Metainfo::decode(&m.encode()).unwrap(), m.clone());
            for i in 0..m.piece_count() {
                let r = m.piece_range(PieceIndex(i)).unwrap();
                prop_assert!(m.verify_piece(PieceIndex(i), &data[r.start as usize..r.end as usize]).is_ok());
            }
        }

        #[test]
        fn a_prefix_at_any_point_of_a_feed_agrees_with_the_whole_and_round_trips(
            len in 1usize..2000, blocks in 1u64..8, fed in 0usize..2000,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..3)
        ) {
            let data = blob(len);
            let piece = blocks * 64;
            let whole = build(&data, piece);
            let fed = fed.min(len);
            let Some(p) = prefix_after(&data, piece, fed) else {
                // Nothing whole yet, or only the last piece's bytes: nothing to hand out.
                prop_assert!((fed as u64) < piece || whole.piece_count() == 1);
                return Ok(());
            };
            prop_assert!(p.known() >= 1 && p.known() < whole.piece_count());
            prop_assert_eq!(u64::from(p.known()), (fed as u64 / piece).min(u64::from(whole.piece_count()) - 1));
            prop_assert!(p.agrees_with(&whole) && whole.agrees_with(&p));
            prop_assert_eq!(p.info_hash(), whole.info_hash());
            let enc = p.encode();
            prop_assert_eq!(Metainfo::decode(&enc).unwrap(), p.clone());
            for i in 0..p.piece_count() {
                let r = p.piece_range(PieceIndex(i)).unwrap();
                let ok = p.verify_piece(PieceIndex(i), &data[r.start as usize..r.end as usize]).is_ok();
                prop_assert_eq!(ok, i < p.known());
            }
            // A mangled prefix either does not decode, or re-encodes to itself.
            let mut bad = enc.clone();
            for (at, x) in flips {
                let i = at % bad.len();
                bad[i] ^= x;
            }
            if let Ok(m) = Metainfo::decode(&bad) {
                prop_assert_eq!(m.encode(), bad);
            }
        }

        #[test]
        fn every_piece_verifies(len in 1usize..300, piece in 1u64..64) {
            let data = blob(len);
            let m = build(&data, piece);
            for i in 0..m.piece_count() {
                let r = m.piece_range(PieceIndex(i)).unwrap();
                prop_assert!(m.verify_piece(PieceIndex(i), &data[r.start as usize..r.end as usize]).is_ok());
            }
        }
    }
}
