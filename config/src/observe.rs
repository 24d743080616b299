//! Metrics, which every role accepts (`metrics:`); logging is [`crate::log`].

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `metrics:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where the Prometheus endpoint listens; unset means no metrics endpoint.
    #[serde(with = "crate::net::listen_addr::option")]
    pub listen: Option<SocketAddr>,
}
