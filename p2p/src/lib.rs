//! shoal's peer-to-peer core.
#![warn(missing_docs)]
