//! One peer connection of one torrent, after the handshake: a reader task that parses frames
//! with the torrent's [`FrameDecoder`], checks every payload against the metainfo and hands
//! events to the torrent's owner; a writer task that sends what the owner queues, paced by the
//! host's egress bucket. Either side idle for the connection TTI closes it.
//!
//! The owner never touches the socket: it holds a [`ConnHandle`] (a bounded queue into the
//! writer) and receives [`ConnEvent`]s on one channel shared by all its connections, so a slow
//! or hostile peer can only fill its own queue.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, mpsc, watch};

use crate::bandwidth::BandwidthLimiter;
use crate::error::ConnError;
use crate::metainfo::Metainfo;
use crate::peer_id::PeerId;
use crate::piece::PieceIndex;
use crate::tls::{PeerStream, PeerTls};
use crate::wire::{Frame, FrameDecoder, Handshake, encode, encode_payload_head};
use shoal_registry::store::direct;

/// Frames the owner may queue to one peer before [`ConnHandle::send`] reports it full.
pub const SEND_QUEUE: usize = 64;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 256 * 1024;

/// What a connection tells its torrent's owner.
#[derive(Debug)]
pub enum ConnEvent {
    /// A frame other than a payload (requests, announces, cancels, errors, complete).
    Frame {
        /// The sender.
        peer: PeerId,
        /// What it sent.
        frame: Frame,
    },
    /// A piece payload, already checked against the metainfo's hash.
    Piece {
        /// The sender.
        peer: PeerId,
        /// Which piece.
        index: PieceIndex,
        /// Its bytes (only meaningful when `verified`).
        data: Bytes,
        /// Whether the bytes hash to the metainfo's piece hash.
        verified: bool,
    },
    /// The connection ended; the owner drops its handle and releases the peer's requests.
    Closed {
        /// The peer.
        peer: PeerId,
        /// Why, for logs and for deciding whether to blacklist.
        reason: ConnError,
    },
}

/// The owner's side of one connection.
#[derive(Clone, Debug)]
pub struct ConnHandle {
    /// The remote peer.
    pub peer: PeerId,
    /// Its address.
    pub addr: SocketAddr,
    tx: mpsc::Sender<Frame>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    closed: AtomicBool,
    close: Notify,
    /// Milliseconds since `epoch` of the last frame sent or received.
    last_active_ms: AtomicU64,
    epoch: Instant,
}

impl Shared {
    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_active_ms.load(Ordering::Relaxed)))
    }

    fn shut(&self) {
        self.closed.store(true, Ordering::Release);
        self.close.notify_waiters();
        self.close.notify_one();
    }
}

impl ConnHandle {
    /// Queues `frame`; false when the peer's queue is full or the connection is gone (the
    /// caller treats the frame as not sent).
    pub fn send(&self, frame: Frame) -> bool {
        !self.is_closed() && self.tx.try_send(frame).is_ok()
    }

    /// Queues `frame`, waiting for room; false when the connection is gone.
    pub async fn send_wait(&self, frame: Frame) -> bool {
        !self.is_closed() && self.tx.send(frame).await.is_ok()
    }

    /// Closes the connection; its reader reports [`ConnEvent::Closed`] once.
    pub fn close(&self) {
        self.shared.shut();
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

/// Writes one frame straight to `stream` (handshakes, before the tasks exist).
pub async fn write_frame(stream: &mut PeerStream, frame: &Frame) -> Result<(), ConnError> {
    let mut buf = BytesMut::new();
    encode(frame, &mut buf)?;
    stream.write_all(&buf).await?;
    Ok(())
}

/// Reads the peer's handshake within `timeout`. Bytes read past it stay in `buf` for the
/// connection's reader.
pub async fn read_handshake(
    stream: &mut PeerStream,
    buf: &mut BytesMut,
    decoder: &FrameDecoder,
    timeout: Duration,
) -> Result<Handshake, ConnError> {
    let read = async {
        loop {
            if let Some((frame, used)) = decoder.decode(buf)? {
                let _ = buf.split_to(used);
                return match frame {
                    Frame::Handshake(h) => Ok(h),
                    other => Err(ConnError::Protocol(format!(
                        "expected a handshake, got a {} frame",
                        other.name()
                    ))),
                };
            }
            buf.reserve(4096);
            if stream.read_buf(buf).await? == 0 {
                return Err(ConnError::Eof);
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| ConnError::HandshakeTimeout(timeout))?
}

/// Settings of one connection.
#[derive(Clone, Debug)]
pub struct ConnSettings {
    /// Idle time (nothing sent or received) after which the connection closes.
    pub tti: Duration,
    /// The host's bandwidth buckets, shared by every connection.
    pub bandwidth: BandwidthLimiter,
    /// Piece bytes sent and received, summed over every connection of the host.
    pub traffic: Arc<Traffic>,
    /// The host's tasks: a connection's reader and writer stop with the host.
    pub tasks: crate::Tasks,
    /// TLS on the peer port, both ways (`peer.tls`); `None` speaks plain TCP.
    pub tls: Option<PeerTls>,
}

/// Piece payload bytes moved by a host's connections (metrics, tests, benchmarks).
#[derive(Debug, Default)]
pub struct Traffic {
    /// Payload bytes sent to peers.
    pub sent: AtomicU64,
    /// Payload bytes received from peers (verified or not).
    pub received: AtomicU64,
    /// Pieces sent to peers.
    pub pieces_sent: AtomicU64,
}

/// Starts the reader and writer tasks of a connection whose handshakes are done. `leftover`
/// holds bytes already read past the peer's handshake. Payloads are checked against the
/// metainfo `metainfo` holds when they arrive (the torrent's owner replaces it as a prefix
/// of hashes grows).
pub fn start(
    stream: PeerStream,
    leftover: BytesMut,
    peer: PeerId,
    metainfo: watch::Receiver<Arc<Metainfo>>,
    settings: ConnSettings,
    events: mpsc::Sender<ConnEvent>,
) -> ConnHandle {
    let addr = stream
        .tcp()
        .peer_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let _ = stream.tcp().set_nodelay(true);
    let (read, write): (ReadHalf, WriteHalf) = match stream {
        // Plain TCP splits without a lock between the halves.
        PeerStream::Plain(tcp) => {
            let (read, write) = tcp.into_split();
            (Box::new(read), Box::new(write))
        }
        tls @ PeerStream::Tls(_) => {
            let (read, write) = tokio::io::split(tls);
            (Box::new(read), Box::new(write))
        }
    };
    let (tx, rx) = mpsc::channel(SEND_QUEUE);
    let shared = Arc::new(Shared {
        closed: AtomicBool::new(false),
        close: Notify::new(),
        last_active_ms: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    shared.touch();
    let tasks = settings.tasks.clone();
    tasks.spawn(writer(write, rx, settings.clone(), shared.clone()));
    let decoder = FrameDecoder::for_torrent(&metainfo.borrow());
    let reader = Reader {
        read,
        buf: leftover,
        decoder,
        metainfo,
        peer,
        settings,
        shared: shared.clone(),
    };
    tasks.spawn(reader.run(events));
    ConnHandle {
        peer,
        addr,
        tx,
        shared,
    }
}

/// The receiving half of a connection.
type ReadHalf = Box<dyn AsyncRead + Send + Unpin>;

/// The sending half of a connection.
type WriteHalf = Box<dyn AsyncWrite + Send + Unpin>;

struct Reader {
    read: ReadHalf,
    buf: BytesMut,
    decoder: FrameDecoder,
    metainfo: watch::Receiver<Arc<Metainfo>>,
    peer: PeerId,
    settings: ConnSettings,
    shared: Arc<Shared>,
}

impl Reader {
    async fn run(mut self, events: mpsc::Sender<ConnEvent>) {
        let reason = self.pump(&events).await;
        self.shared.shut();
        let _ = events
            .send(ConnEvent::Closed {
                peer: self.peer,
                reason,
            })
            .await;
    }

    /// Reads frames until the connection ends; returns why.
    async fn pump(&mut self, events: &mpsc::Sender<ConnEvent>) -> ConnError {
        loop {
            loop {
                match self.decoder.decode_split(&mut self.buf) {
                    Ok(Some(frame)) => {
                        self.shared.touch();
                        if let Err(e) = self.deliver(frame, events).await {
                            return e;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return ConnError::Wire(e),
                }
            }
            // A piece-sized frame is read straight into a reused buffer that its payload then
            // shares: no fresh memory per piece, and no copy out of the read buffer.
            if let Some(len) = self.decoder.frame_len(&self.buf)
                && len >= direct::MIN_POOLED
            {
                match self.read_frame(len).await {
                    Ok(frame) => {
                        self.shared.touch();
                        if let Err(e) = self.deliver(frame, events).await {
                            return e;
                        }
                        continue;
                    }
                    Err(e) => return e,
                }
            }
            if let Err(e) = self.fill().await {
                return e;
            }
        }
    }

    /// Reads the rest of the `len`-byte frame whose start is in `buf` (all of `buf`, since
    /// every whole frame before it was taken) into a pooled buffer, and parses it.
    ///
    /// The frame is placed so that a piece payload's data starts on a page boundary: the piece
    /// store writes it to disk from there without copying it into an aligned buffer first
    /// ([`shoal_registry::store::direct`]).
    async fn read_frame(&mut self, len: usize) -> Result<Frame, ConnError> {
        // The buffer starts on a boundary; the frame starts its head's length before the next.
        let start = direct::ALIGN - crate::wire::PAYLOAD_HEAD;
        let mut buf = direct::take(start + len);
        let frame = &mut buf.as_mut()[start..];
        let have = self.buf.len();
        frame[..have].copy_from_slice(&self.buf);
        self.buf.clear();
        let mut at = have;
        while at < len {
            at += self.read_into(&mut buf.as_mut()[start + at..]).await?;
        }
        let frame = buf.freeze().slice(start..);
        self.decoder.decode_frame(frame).map_err(ConnError::Wire)
    }

    /// Reads more bytes, giving up when closed or idle past the TTI.
    async fn fill(&mut self) -> Result<(), ConnError> {
        // Room for the whole (small) frame being read, so it is never regrown and copied on
        // the way; piece-sized frames go through `read_frame`.
        let want = self
            .decoder
            .frame_len(&self.buf)
            .map_or(0, |n| n.saturating_sub(self.buf.len()));
        self.buf.reserve(want.max(READ_CHUNK));
        let tti = self.settings.tti;
        read_some(
            &mut self.read,
            &self.shared,
            tti,
            Target::Buf(&mut self.buf),
        )
        .await?;
        Ok(())
    }

    /// Reads some bytes into `dst`, giving up when closed or idle past the TTI.
    async fn read_into(&mut self, dst: &mut [u8]) -> Result<usize, ConnError> {
        let tti = self.settings.tti;
        read_some(&mut self.read, &self.shared, tti, Target::Slice(dst)).await
    }

    async fn deliver(
        &mut self,
        frame: Frame,
        events: &mpsc::Sender<ConnEvent>,
    ) -> Result<(), ConnError> {
        let event = match frame {
            Frame::Handshake(_) => {
                return Err(ConnError::Protocol("a second handshake".into()));
            }
            Frame::PiecePayload { index, data } => {
                self.settings
                    .bandwidth
                    .reserve_ingress(data.len() as u64)
                    .await;
                self.settings
                    .traffic
                    .received
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                // Not borrowed across the hash: the owner may replace it meanwhile.
                let metainfo = self.metainfo.borrow().clone();
                let verified = metainfo.verify_piece(index, &data).is_ok();
                ConnEvent::Piece {
                    peer: self.peer,
                    index,
                    data,
                    verified,
                }
            }
            frame => ConnEvent::Frame {
                peer: self.peer,
                frame,
            },
        };
        events.send(event).await.map_err(|_| ConnError::Closed)
    }
}

/// Where [`read_some`] puts what it reads.
enum Target<'a> {
    /// Appended to the reader's buffer.
    Buf(&'a mut BytesMut),
    /// Into the front of a slice.
    Slice(&'a mut [u8]),
}

/// One read of at least a byte, given up when the connection closes or has been idle past
/// `tti`. Reading is not activity: idle counts from the last whole frame, so a peer trickling
/// one byte at a time is still cut at the TTI.
async fn read_some(
    read: &mut ReadHalf,
    shared: &Shared,
    tti: Duration,
    mut target: Target<'_>,
) -> Result<usize, ConnError> {
    loop {
        if shared.closed.load(Ordering::Acquire) {
            return Err(ConnError::Closed);
        }
        let idle = shared.idle_for();
        if idle >= tti {
            return Err(ConnError::Idle(tti));
        }
        let once = async {
            match &mut target {
                Target::Buf(buf) => read.read_buf(*buf).await,
                Target::Slice(dst) => read.read(dst).await,
            }
        };
        tokio::select! {
            n = once => {
                return match n {
                    Ok(0) => Err(ConnError::Eof),
                    Ok(n) => Ok(n),
                    Err(e) => Err(ConnError::Io(e)),
                };
            }
            _ = shared.close.notified() => return Err(ConnError::Closed),
            _ = tokio::time::sleep(tti - idle) => {}
        }
    }
}

async fn writer(
    mut write: WriteHalf,
    mut rx: mpsc::Receiver<Frame>,
    settings: ConnSettings,
    shared: Arc<Shared>,
) {
    let mut buf = BytesMut::new();
    loop {
        let frame = tokio::select! {
            f = rx.recv() => f,
            _ = shared.close.notified() => None,
        };
        let Some(frame) = frame else { break };
        let payload = match &frame {
            Frame::PiecePayload { data, .. } => data.len() as u64,
            _ => 0,
        };
        if payload > 0 {
            settings.bandwidth.reserve_egress(payload).await;
        }
        buf.clear();
        let sent = match &frame {
            // The piece's bytes go out from where they are: no copy behind the header.
            Frame::PiecePayload { index, data } => {
                if encode_payload_head(*index, data.len(), &mut buf).is_err() {
                    break;
                }
                let mut both = Buf::chain(&buf[..], &data[..]);
                write.write_all_buf(&mut both).await
            }
            frame => {
                if encode(frame, &mut buf).is_err() {
                    break;
                }
                write.write_all(&buf).await
            }
        };
        if sent.is_err() {
            break;
        }
        settings.traffic.sent.fetch_add(payload, Ordering::Relaxed);
        if payload > 0 {
            settings.traffic.pieces_sent.fetch_add(1, Ordering::Relaxed);
        }
        shared.touch();
    }
    shared.shut();
    let _ = write.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::Metainfo;
    use shoal_registry::Digest;
    use tokio::net::{TcpListener, TcpStream};

    const PIECE: usize = 256 * 1024;

    /// A connection's reader and writer over loopback: our end is started with `conn::start`,
    /// the test holds the raw socket of the other end.
    async fn pair(
        data: &[u8],
        tti: Duration,
    ) -> (ConnHandle, mpsc::Receiver<ConnEvent>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let raw = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (ours, _) = listener.accept().await.unwrap();
        let metainfo =
            Arc::new(Metainfo::from_reader(data, &Digest::sha256_of(data), PIECE as u64).unwrap());
        let settings = ConnSettings {
            tti,
            bandwidth: BandwidthLimiter::unlimited(),
            traffic: Arc::new(Traffic::default()),
            tasks: crate::Tasks::new(),
            tls: None,
        };
        let (tx, rx) = mpsc::channel(8);
        let handle = start(
            PeerStream::Plain(ours),
            BytesMut::new(),
            PeerId([1; 20]),
            watch::channel(metainfo).1,
            settings,
            tx,
        );
        (handle, rx, raw)
    }

    fn payload(index: u32, data: &[u8]) -> Vec<u8> {
        let mut b = BytesMut::new();
        encode_payload_head(PieceIndex(index), data.len(), &mut b).unwrap();
        b.extend_from_slice(data);
        b.to_vec()
    }

    async fn next(rx: &mut mpsc::Receiver<ConnEvent>) -> ConnEvent {
        tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .expect("an event within 30 s")
            .expect("the connection reports before it goes")
    }

    #[tokio::test]
    async fn piece_frames_read_in_pieces_verify_and_corrupt_ones_do_not() {
        let data: Vec<u8> = (0..3 * PIECE).map(|i| (i * 31 % 251) as u8).collect();
        let (_h, mut rx, mut raw) = pair(&data, Duration::from_secs(60)).await;
        // Piece 1 in odd-sized writes, a small frame between, then a corrupt piece 2.
        let mut bytes = payload(1, &data[PIECE..2 * PIECE]);
        bytes.extend_from_slice(&{
            let mut b = BytesMut::new();
            encode(
                &Frame::AnnouncePiece {
                    index: PieceIndex(0),
                },
                &mut b,
            )
            .unwrap();
            b.to_vec()
        });
        let mut bad = data[2 * PIECE..].to_vec();
        bad[PIECE / 2] ^= 1;
        bytes.extend_from_slice(&payload(2, &bad));
        let writer = tokio::spawn(async move {
            for chunk in bytes.chunks(70_001) {
                raw.write_all(chunk).await.unwrap();
            }
            raw
        });
        match next(&mut rx).await {
            ConnEvent::Piece {
                index,
                data: got,
                verified,
                ..
            } => {
                assert_eq!(index, PieceIndex(1));
                assert!(verified);
                assert_eq!(&got[..], &data[PIECE..2 * PIECE]);
                // Where the piece store can write it to disk without a copy (`read_frame`).
                assert_eq!(
                    got.as_ptr().align_offset(4096),
                    0,
                    "payload not page-aligned"
                );
            }
            other => panic!("expected piece 1, got {other:?}"),
        }
        assert!(matches!(
            next(&mut rx).await,
            ConnEvent::Frame {
                frame: Frame::AnnouncePiece {
                    index: PieceIndex(0)
                },
                ..
            }
        ));
        assert!(matches!(
            next(&mut rx).await,
            ConnEvent::Piece {
                index: PieceIndex(2),
                verified: false,
                ..
            }
        ));
        let _raw = writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_peer_trickling_a_piece_is_cut_at_the_tti() {
        let data: Vec<u8> = vec![5; 2 * PIECE];
        let (_h, mut rx, mut raw) = pair(&data, Duration::from_millis(300)).await;
        let frame = payload(0, &data[..PIECE]);
        // The header and a few bytes, then a byte at a time, faster than the TTI but never
        // finishing the frame: reading is not activity, only whole frames are.
        let trickle = tokio::spawn(async move {
            raw.write_all(&frame[..100]).await.unwrap();
            for b in &frame[100..] {
                if raw.write_all(std::slice::from_ref(b)).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        match next(&mut rx).await {
            ConnEvent::Closed {
                reason: ConnError::Idle(_),
                ..
            } => {}
            other => panic!("expected the TTI to close it, got {other:?}"),
        }
        trickle.abort();
    }
}
