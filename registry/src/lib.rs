//! shoal's registry core: the OCI Distribution Spec v1.1 API, its error codes, parsed digests,
//! names and references, manifest validation, and the content-addressed local store.
//!
//! The agent, proxy and `shoal dev` all serve this one router; what differs is the store
//! behind it.

pub mod access;
pub mod api;
pub mod backing;
pub mod digest;
pub mod error;
mod follow;
pub mod image_ref;
pub mod manifest;
pub mod mirror;
pub mod name;
mod prefetch;
pub mod range;
pub mod referrers;
pub mod store;
mod tag_authority;

pub use access::{Access, AccessError, hash_password, htpasswd_line, protect};
pub use api::{CacheStats, Registry, router};
pub use backing::{Backing, BlobStat, BodyStream, Landing};
pub use digest::{Algorithm, Digest, Digester};
pub use error::{ApiResult, ErrorCode, RegistryError};
pub use image_ref::{ImageRef, ImageRefError};
pub use name::{Reference, RepoName, Tag, TagKey};
pub use prefetch::BlobPull;
pub use store::gc::{GcPolicy, GcReport};
pub use store::{LocalStore, StoredManifest};
