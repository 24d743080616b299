//! Storage behind the registry: the seed's `backends:` list as running plugins, routed by
//! namespace, paced by each entry's `bandwidth:`, and presented to the registry as its
//! [`shoal_registry::Backing`].
//!
//! Layout: `router` (first matching regex wins), `rate` (token buckets in bits per second),
//! `backing` (naming and error mapping between the registry and the plugins).

mod backing;
mod rate;
mod router;

pub use backing::PluginBacking;
pub use rate::RateLimit;
pub use router::{Content, Holds, NamespaceRouter, Route};
