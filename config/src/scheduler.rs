//! The P2P scheduler's knobs, shared by agents and origins (`scheduler:`).

use serde::{Deserialize, Serialize};

use crate::bandwidth::BandwidthConfig;
use crate::duration::Duration;
use crate::keypath::KeyPath;
use crate::validate::{Problems, Validate};

/// How torrents are downloaded and seeded: idle timeouts, connection limits, pipelining.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerConfig {
    /// How long a completed torrent stays in memory without being read [5m].
    pub seeder_tti: Duration,
    /// How long an incomplete torrent may make no progress before it is dropped [5m].
    pub leecher_tti: Duration,
    /// Per-connection settings.
    pub conn: ConnConfig,
    /// Connection-count limits.
    pub connstate: ConnStateConfig,
    /// Piece-request settings.
    pub dispatch: DispatchConfig,
    /// How long to wait before announcing a torrent again when the tracker's reply names no
    /// interval, or the announce failed [3s]. The tracker's own `announce_interval`, sent in
    /// every reply, wins; announces are checked on a half-second tick, so shorter values act
    /// as 500ms.
    pub announce_interval: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            seeder_tti: Duration::from_mins(5),
            leecher_tti: Duration::from_mins(5),
            conn: ConnConfig::default(),
            connstate: ConnStateConfig::default(),
            dispatch: DispatchConfig::default(),
            announce_interval: Duration::from_secs(3),
        }
    }
}

/// One peer connection: idle timeout and rate limits (`scheduler.conn`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnConfig {
    /// How long a connection may carry no traffic before it is closed [5m].
    pub tti: Duration,
    /// Upload and download limits for all connections of this peer.
    pub bandwidth: BandwidthConfig,
}

impl Default for ConnConfig {
    fn default() -> Self {
        ConnConfig {
            tti: Duration::from_mins(5),
            bandwidth: BandwidthConfig::default(),
        }
    }
}

/// Connection bookkeeping (`scheduler.connstate`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConnStateConfig {
    /// Open connections allowed per torrent [10].
    pub max_open_conn: u32,
    /// How long a peer that failed us is not dialled again [30s].
    pub blacklist_duration: Duration,
}

impl Default for ConnStateConfig {
    fn default() -> Self {
        ConnStateConfig {
            max_open_conn: 10,
            blacklist_duration: Duration::from_secs(30),
        }
    }
}

/// Piece requests (`scheduler.dispatch`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatchConfig {
    /// Piece requests outstanding per peer at once [3].
    pub pipeline_limit: u32,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        DispatchConfig { pipeline_limit: 3 }
    }
}

impl Validate for SchedulerConfig {
    fn validate(&self, at: &KeyPath, problems: &mut Problems) {
        self.conn
            .bandwidth
            .validate(&at.key("conn").key("bandwidth"), problems);
        let connstate = at.key("connstate");
        problems.at_least_one(
            self.connstate.max_open_conn.into(),
            &connstate.key("max_open_conn"),
        );
        let pipeline = at.key("dispatch").key("pipeline_limit");
        problems.at_least_one(self.dispatch.pipeline_limit.into(), &pipeline);
        problems.require(
            !self.announce_interval.is_zero(),
            &at.key("announce_interval"),
            "must be longer than 0s",
            "a duration like 3s",
        );
    }
}
