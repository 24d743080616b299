//! shoal's peer-to-peer core: the pieces a blob is cut into and how they are named
//! ([`metainfo`]), the frames peers exchange ([`wire`]), which piece to ask for next
//! ([`picker`]), which origins own a blob ([`ring`]), which peers the tracker hands out
//! ([`peerstore`]), how fast bytes may flow ([`bandwidth`]), and where pieces and blobs live on
//! disk ([`store`]).
//!
//! Everything here is a building block without sockets: the codec parses bytes, the picker is a
//! synchronous state machine fed events, the ring is a pure function of its host list. The
//! sessions, scheduler, tracker service and roles that put them on the network come next.

#![warn(missing_docs)]

pub mod bandwidth;
pub mod bitfield;
pub mod conn;
pub mod error;
pub mod metainfo;
pub mod peer_id;
pub mod peerstore;
pub mod picker;
pub mod piece;
pub mod ring;
pub mod scheduler;
pub mod store;
pub mod wire;

pub use bandwidth::{BandwidthLimiter, TokenBucket};
pub use bitfield::Bitfield;
pub use error::{
    BandwidthError, BitfieldError, ConnError, MetainfoError, PeerStoreError, PickerError,
    RingError, SchedulerError, StoreError, WireError,
};
pub use metainfo::{DEFAULT_PIECE_LENGTH, InfoHash, Metainfo, MetainfoBuilder};
pub use peer_id::PeerId;
pub use peerstore::{InMemoryPeerStore, PeerInfo, PeerSetWindows, PeerStore};
pub use picker::{Blacklist, PickerConfig, PiecePicker, PieceStatus, Verified};
pub use piece::PieceIndex;
pub use ring::HashRing;
pub use scheduler::{Announce, AnnounceReply, Identity, PeerAddr, Scheduler, Tracker};
pub use store::{CleanupReport, CompleteBlob, PartialBlob, PieceStore};
pub use wire::{ErrorCode, Frame, FrameDecoder, Handshake};
