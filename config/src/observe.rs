//! Logging and metrics, which every role accepts (`log:`, `metrics:`).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `log:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Least severe level printed [info].
    pub level: LogLevel,
}

/// Log severities, from most to least verbose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything, including per-piece events.
    Trace,
    /// Diagnostics for developers.
    Debug,
    /// Normal operation.
    #[default]
    Info,
    /// Something recoverable went wrong.
    Warn,
    /// Something failed.
    Error,
}

impl LogLevel {
    /// The name `tracing`'s filters accept.
    pub const fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

/// `metrics:`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where the Prometheus endpoint listens; unset means no metrics endpoint.
    #[serde(with = "crate::net::listen_addr::option")]
    pub listen: Option<SocketAddr>,
}
