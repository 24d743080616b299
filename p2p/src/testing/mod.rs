//! Misbehaving peers as test fixtures, one definition for this crate's tests and for the
//! cluster tests of the roles above it (feature `testing`; no production build enables it).
//!
//! [`CorruptPeer`] is a liar: it claims every piece of a torrent and answers every request with
//! bytes of the right length that fail the piece hash. What it counts (connections, who dialed
//! it, pieces served) is what a test asserts blacklisting through, from outside the schedulers
//! under test.
//!
//! [`GatedPeer`] is honest but held back: it serves the right bytes, but only of the pieces the
//! test has opened so far, and keeps every other request waiting until they are opened; what a
//! test of a download read while it lands needs to see the front arrive before the rest.
//!
//! [`TestCa`] makes certificates for TLS tests with the `openssl` command.
//!
//! [`daemon_port`] is the port for a daemon a test starts (Redis, docker-registry, moto).

mod ports;

pub use ports::daemon_port;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::Bitfield;
use crate::metainfo::Metainfo;
use crate::peer_id::PeerId;
use crate::piece::PieceIndex;
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
        complete_peer(self.peer_id, self.addr)
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

/// A fixture as a tracker lists it: a complete agent.
fn complete_peer(peer_id: PeerId, addr: SocketAddr) -> PeerAddr {
    PeerAddr {
        peer_id,
        addr,
        complete: true,
        origin: false,
    }
}

/// What a fixture answers a handshake with: the same torrent, its own id, every piece.
fn answer(theirs: Handshake, id: PeerId, m: &Metainfo) -> Frame {
    Frame::Handshake(Handshake {
        peer_id: id,
        bitfield: Bitfield::full(m.piece_count()),
        ..theirs
    })
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
                    answer(h, id, &m)
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

/// A complete peer for one torrent that serves the true bytes of the pieces below its gate and
/// answers requests for the others only once [`GatedPeer::open`] lets them through. It listens
/// until dropped; it never dials and never announces (list it with [`GatedPeer::as_peer`] or
/// [`GatedPeer::as_origin`]). It keeps the pieces its peers announced to it.
#[derive(Debug)]
pub struct GatedPeer {
    addr: SocketAddr,
    peer_id: PeerId,
    gate: watch::Sender<u32>,
    announced: watch::Sender<BTreeSet<PieceIndex>>,
    _tasks: StopOnDrop,
}

impl GatedPeer {
    /// Starts it on `ip`, port 0, for `metainfo`'s torrent of `blob`, serving pieces below
    /// `open` at once.
    pub async fn start(
        ip: IpAddr,
        metainfo: Metainfo,
        blob: Bytes,
        open: u32,
    ) -> std::io::Result<GatedPeer> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let (gate, _) = watch::channel(open);
        let peer = GatedPeer {
            addr: listener.local_addr()?,
            peer_id: PeerId::random(),
            gate,
            announced: watch::Sender::new(BTreeSet::new()),
            _tasks: StopOnDrop(Tasks::new()),
        };
        let tasks = peer._tasks.0.clone();
        let (id, gate, announced) = (peer.peer_id, peer.gate.clone(), peer.announced.clone());
        let metainfo = Arc::new(metainfo);
        peer._tasks.0.spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (m, blob) = (metainfo.clone(), blob.clone());
                tasks.spawn(serve_gated(
                    stream,
                    Gated {
                        id,
                        m,
                        blob,
                        gate: gate.subscribe(),
                        announced: announced.clone(),
                    },
                    tasks.clone(),
                ));
            }
        });
        Ok(peer)
    }

    /// Serves every piece below `pieces` from now on, the waiting requests included.
    pub fn open(&self, pieces: u32) {
        self.gate.send_replace(pieces);
    }

    /// How a tracker lists it: a complete peer.
    pub fn as_peer(&self) -> PeerAddr {
        complete_peer(self.peer_id, self.addr)
    }

    /// How a tracker lists it as an origin.
    pub fn as_origin(&self) -> PeerAddr {
        PeerAddr {
            origin: true,
            ..self.as_peer()
        }
    }

    /// The pieces its peers announced to it so far, as they come.
    pub fn announced(&self) -> watch::Receiver<BTreeSet<PieceIndex>> {
        self.announced.subscribe()
    }
}

/// What one connection of a [`GatedPeer`] serves and reports.
struct Gated {
    id: PeerId,
    m: Arc<Metainfo>,
    blob: Bytes,
    gate: watch::Receiver<u32>,
    announced: watch::Sender<BTreeSet<PieceIndex>>,
}

/// One connection of a [`GatedPeer`]: a full bitfield, then each request answered once the gate
/// is past its piece.
async fn serve_gated(stream: TcpStream, g: Gated, tasks: Tasks) {
    let Gated {
        id,
        m,
        blob,
        gate,
        announced,
    } = g;
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    tasks.spawn(async move {
        let mut out = BytesMut::new();
        while let Some(frame) = rx.recv().await {
            out.clear();
            if encode(&frame, &mut out).is_err() || wr.write_all(&out).await.is_err() {
                return;
            }
        }
    });
    let decoder = FrameDecoder::for_torrent(&m);
    let mut buf = BytesMut::new();
    loop {
        while let Ok(Some((frame, used))) = decoder.decode(&buf) {
            let _ = buf.split_to(used);
            match frame {
                Frame::Handshake(h) => {
                    let _ = tx.send(answer(h, id, &m));
                }
                Frame::PieceRequest { index } => {
                    let Ok(range) = m.piece_range(index) else {
                        return;
                    };
                    let data = blob.slice(range.start as usize..range.end as usize);
                    let (tx, mut gate) = (tx.clone(), gate.clone());
                    tasks.spawn(async move {
                        if gate.wait_for(|open| index.0 < *open).await.is_ok() {
                            let _ = tx.send(Frame::PiecePayload { index, data });
                        }
                    });
                }
                Frame::AnnouncePiece { index } => {
                    announced.send_modify(|a| {
                        a.insert(index);
                    });
                }
                _ => {}
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}
