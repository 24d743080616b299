//! Misbehaving peers as test fixtures, one definition for this crate's tests and for the
//! cluster tests of the roles above it (feature `testing`; no production build enables it).
//!
//! [`CorruptPeer`] is a liar: it claims every piece of a torrent and answers every request with
//! bytes of the right length that fail the piece hash. What it counts (connections, who dialed
//! it, pieces served) is what a test asserts blacklisting through, from outside the schedulers
//! under test.
//!
//! [`TestCa`] makes certificates for TLS tests with the `openssl` command.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::Bitfield;
use crate::metainfo::Metainfo;
use crate::peer_id::PeerId;
use crate::scheduler::PeerAddr;
use crate::tasks::{StopOnDrop, Tasks};
use crate::wire::{Frame, FrameDecoder, Handshake, encode};

mod certs;

pub use certs::TestCa;

/// The byte every corrupt piece is filled with.
const GARBAGE: u8 = 0x5A;

/// A peer that handshakes with a full bitfield for one torrent and serves only corrupt pieces.
/// It listens until dropped; it never dials and never announces (the test lists it at the
/// tracker, see [`CorruptPeer::as_peer`]).
#[derive(Debug)]
pub struct CorruptPeer {
    addr: SocketAddr,
    peer_id: PeerId,
    seen: Arc<Mutex<Seen>>,
    _tasks: StopOnDrop,
}

/// What the liar has seen so far.
#[derive(Debug, Default)]
struct Seen {
    connections: usize,
    dials: HashMap<PeerId, usize>,
    pieces: usize,
}

impl CorruptPeer {
    /// Starts the liar for `metainfo`'s torrent on `ip`, port 0.
    pub async fn start(ip: IpAddr, metainfo: Metainfo) -> std::io::Result<CorruptPeer> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let peer = CorruptPeer {
            addr: listener.local_addr()?,
            peer_id: PeerId::random(),
            seen: Arc::default(),
            _tasks: StopOnDrop(Tasks::new()),
        };
        let (tasks, seen, id) = (peer._tasks.0.clone(), peer.seen.clone(), peer.peer_id);
        let metainfo = Arc::new(metainfo);
        peer._tasks.0.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                seen.lock().unwrap().connections += 1;
                let (seen, metainfo) = (seen.clone(), metainfo.clone());
                tasks.spawn(lie(stream, id, metainfo, seen));
            }
        });
        Ok(peer)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The id it handshakes with.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// How a tracker lists it: a complete peer, so leechers dial it first.
    pub fn as_peer(&self) -> PeerAddr {
        PeerAddr {
            peer_id: self.peer_id,
            addr: self.addr,
            complete: true,
            origin: false,
        }
    }

    /// Connections accepted so far, handshaken or not.
    pub fn connections(&self) -> usize {
        self.seen.lock().unwrap().connections
    }

    /// Handshakes received so far, per peer id of the peer that sent them.
    pub fn dials(&self) -> HashMap<PeerId, usize> {
        self.seen.lock().unwrap().dials.clone()
    }

    /// Corrupt pieces sent so far.
    pub fn pieces_served(&self) -> usize {
        self.seen.lock().unwrap().pieces
    }
}

/// One connection: answer the handshake with a full bitfield, every request with garbage.
async fn lie(mut stream: TcpStream, id: PeerId, m: Arc<Metainfo>, seen: Arc<Mutex<Seen>>) {
    let decoder = FrameDecoder::for_torrent(&m);
    let (mut buf, mut out) = (BytesMut::new(), BytesMut::new());
    loop {
        while let Ok(Some((frame, used))) = decoder.decode(&buf) {
            let _ = buf.split_to(used);
            out.clear();
            let reply = match frame {
                Frame::Handshake(h) => {
                    *seen.lock().unwrap().dials.entry(h.peer_id).or_default() += 1;
                    Frame::Handshake(Handshake {
                        peer_id: id,
                        bitfield: Bitfield::full(m.piece_count()),
                        ..h
                    })
                }
                Frame::PieceRequest { index } => {
                    let Ok(size) = m.piece_size(index) else {
                        return;
                    };
                    seen.lock().unwrap().pieces += 1;
                    let data = Bytes::from(vec![GARBAGE; size as usize]);
                    Frame::PiecePayload { index, data }
                }
                _ => continue,
            };
            if encode(&reply, &mut out).is_err() || stream.write_all(&out).await.is_err() {
                return;
            }
        }
        match stream.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
