//! shoal's roles as library services: [`origin`], [`agent`], [`build_index`], [`tracker`] and
//! [`proxy`],
//! each a `serve(config, listeners, dependencies, shutdown)` over listeners the caller already
//! bound, storage backends as a [`shoal_storage::NamespaceRouter`] of `Arc<dyn Backend>`, and
//! health policies as [`shoal_p2p::HealthFilter`] trait objects. Nothing here loads plugins or
//! binds a configured address: the `shoal` binary does that, and a test (or a simulator) can
//! run a whole cluster in one process over native backends.
//!
//! Every service owns its background tasks ([`shoal_p2p::Tasks`]): when `serve` returns, or its
//! future is dropped, they stop, peer connections and open HTTP connections included.
//!
//! Shared parts: [`hosts`] (host lists, the announced peer address), [`http`] (the error type,
//! path extractors, percent-encoding, the outbound client, a listener with a connection limit),
//! [`ring`] (an origin's ring with its active health check), [`metrics`], [`ready`] (the
//! checks behind every role's `/ready`).

#![warn(missing_docs)]

pub mod agent;
pub mod build_index;
pub mod error;
pub mod hosts;
pub mod http;
pub mod metrics;
pub mod origin;
mod peer;
pub mod proxy;
pub mod queue;
pub mod ready;
pub mod ring;
pub mod serve;
mod tag_cache;
pub mod tags;
pub mod tracker;

pub use error::RoleError;
