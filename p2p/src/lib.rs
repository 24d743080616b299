//! shoal's peer-to-peer core: the pieces a blob is cut into and how they are named
//! ([`metainfo`]), the frames peers exchange ([`wire`]), which piece to ask for next
//! ([`picker`]), which origins own a blob ([`ring`]), which peers the tracker hands out
//! ([`peerstore`]), how fast bytes may flow ([`bandwidth`], shared with the storage backends), and where pieces and blobs live on
//! disk ([`store`]); the [`tracker`] service and client put the peer store and the ring on the
//! network, judging hosts through a [`health::HealthFilter`]; [`conn`] and [`scheduler`] move
//! pieces between peers.
//!
//! The building blocks have no sockets: the codec parses bytes, the picker is a synchronous
//! state machine fed events, the ring is a pure function of its host list. The network is in
//! [`conn`], [`scheduler`] and [`tracker`]; the roles that run them live in `shoal-roles`.
//!
//! Feature `testing` adds the module `testing`: misbehaving peers as fixtures for this crate's tests and
//! the roles' cluster tests.

#![warn(missing_docs)]

pub mod bitfield;
pub mod conn;
pub mod counted;
pub mod error;
pub mod health;
pub mod metainfo;
pub mod peer_id;
pub mod peerstore;
pub mod picker;
pub mod piece;
pub mod ring;
pub mod scheduler;
pub mod store;
pub mod tasks;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
pub mod tracker;
pub mod wire;

pub use bitfield::Bitfield;
pub use counted::Counted;
pub use error::{
    BandwidthError, BitfieldError, ConnError, MetainfoError, PeerStoreError, PickerError,
    RingError, SchedulerError, StoreError, TlsError, TrackerError, WireError, with_causes,
};
pub use health::HealthFilter;
pub use metainfo::{DEFAULT_PIECE_LENGTH, InfoHash, Metainfo, MetainfoBuilder};
pub use peer_id::PeerId;
pub use peerstore::{InMemoryPeerStore, PeerInfo, PeerSetWindows, PeerStore};
pub use picker::{Blacklist, PickerConfig, PiecePicker, PieceStatus, Verified};
pub use piece::PieceIndex;
pub use ring::HashRing;
pub use scheduler::{Announce, AnnounceReply, Identity, Landing, PeerAddr, Scheduler, Tracker};
pub use shoal_storage::bandwidth::{self, BandwidthLimiter, TokenBucket};
pub use store::{CleanupReport, CompleteBlob, PartialBlob, PieceStore};
pub use tasks::{StopOnDrop, Tasks};
pub use tracker::{AnnounceRequest, AnnounceResponse, MetainfoReply, TrackerClient, TrackerState};
pub use wire::{ErrorCode, Frame, FrameDecoder, Handshake};
