//! How agents and origins reach the tracker ring, with the passive health check piggybacked on
//! real requests (`tracker.cluster.healthcheck`).
//!
//! Each call ranks the trackers by rendezvous hash of the blob's digest, so one blob's announces
//! and metainfo requests keep going to the same tracker while it is up (its in-memory store
//! then sees every peer of the torrent). Trackers the [`HealthFilter`] calls unhealthy are left
//! out; if it calls every one unhealthy, all are tried in rank order anyway, since a ring with
//! no tracker to ask helps nobody and the filter's verdict may be stale.
//!
//! What counts as a failure for the filter: a connection error, a timeout, or a body cut off
//! (the network, as the seed's "fail with network error"). Any HTTP answer counts as success.
//! A 5xx answer still moves the call on to the next tracker (another may have a working peer
//! store or origin), a 4xx is returned at once (the request is wrong everywhere).

use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use shoal_config::{HostPort, Hosts, TrackerClientConfig};
use shoal_registry::Digest;

use super::proto::{
    AnnounceRequest, AnnounceResponse, ErrorBody, MAX_JSON_BYTES, MAX_METAINFO_BYTES,
    check_namespace,
};
use super::{MAX_METAINFO_WAIT, metainfo_url, read_capped, url};
use crate::error::TrackerError;
use crate::health::HealthFilter;
use crate::metainfo::{InfoHash, Metainfo};
use crate::peerstore::{Clock, SystemClock};
use crate::ring::HashRing;
use crate::tls::{ClusterHttp, ClusterTls};

/// Most time one request to one tracker may take, connect included, when the config does not
/// say otherwise. Announces are small and the tracker answers metainfo with 202 while the
/// origin fetches, so a tracker slower than this is treated as down.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// The answer to a metainfo request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetainfoReply {
    /// The metainfo, parsed and checked to describe the blob asked for.
    Ready(Metainfo),
    /// The origin is still fetching the blob from its backend; ask again later.
    Pending,
}

/// A client of the tracker ring.
pub struct TrackerClient {
    trackers: HashRing,
    health: Arc<dyn HealthFilter>,
    /// The longest a metainfo request is asked to be held (see [`TrackerClient::hold`]).
    hold: Duration,
    clock: Arc<dyn Clock>,
    http: ClusterHttp,
}

impl std::fmt::Debug for TrackerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackerClient")
            .field("trackers", &self.trackers)
            .finish_non_exhaustive()
    }
}

/// A tracker's answer to one request: who gave it, the status and the body.
struct Answer {
    tracker: HostPort,
    status: StatusCode,
    body: Vec<u8>,
}

impl TrackerClient {
    /// A client of `trackers`, judged by `health`, with `timeout` on every request, reaching
    /// them over HTTPS when `tls` says so.
    pub fn new(
        trackers: impl IntoIterator<Item = HostPort>,
        health: Arc<dyn HealthFilter>,
        timeout: Duration,
        tls: &ClusterTls,
    ) -> Result<Self, TrackerError> {
        Ok(TrackerClient {
            trackers: HashRing::new(trackers)?,
            health,
            hold: (timeout / 2).min(MAX_METAINFO_WAIT),
            clock: Arc::new(SystemClock),
            http: tls
                .http(Some(timeout))
                .map_err(|e| TrackerError::Config(format!("building the HTTP client: {e}")))?,
        })
    }

    /// A client of the `tracker:` section's static hosts with [`DEFAULT_TIMEOUT`]. The
    /// `cluster.healthcheck` settings belong to `health`, which the caller builds from them. A
    /// `dns:` name is refused until re-resolution lands.
    pub fn from_config(
        config: &TrackerClientConfig,
        health: Arc<dyn HealthFilter>,
        tls: &ClusterTls,
    ) -> Result<Self, TrackerError> {
        match &config.hosts {
            Some(Hosts::Static(hosts)) => {
                Self::new(hosts.iter().cloned(), health, DEFAULT_TIMEOUT, tls)
            }
            Some(Hosts::Dns(name)) => Err(TrackerError::Config(format!(
                "tracker.hosts.dns ({name}) is not supported yet: list the trackers under tracker.hosts.static"
            ))),
            None => Err(TrackerError::Config(
                "tracker.hosts is not set: expected static: [host:port, ...]".to_owned(),
            )),
        }
    }

    /// The same client reading time from `clock`, which is what the health filter is told.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Announces `request.peer` for `info_hash` and returns the hand-out and the interval until
    /// the next announce. The request is checked before it is sent.
    pub async fn announce(
        &self,
        info_hash: InfoHash,
        request: &AnnounceRequest,
    ) -> Result<AnnounceResponse, TrackerError> {
        let announce = request
            .validate(&info_hash.to_string())
            .map_err(TrackerError::InvalidRequest)?;
        let body = serde_json::to_vec(request).map_err(|e| {
            TrackerError::InvalidRequest(ErrorBody::message(format!("encoding: {e}")))
        })?;
        let hash = info_hash.to_string();
        let answer = self
            .call(&announce.digest, MAX_JSON_BYTES, |host| {
                Ok(self
                    .http
                    .post(url(&self.http, host, &["announce", &hash])?)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.clone()))
            })
            .await?;
        if answer.status != StatusCode::OK {
            return Err(rejected(answer));
        }
        serde_json::from_slice(&answer.body).map_err(|e| TrackerError::BadResponse {
            tracker: answer.tracker.to_string(),
            reason: format!("announce answer is not JSON of the expected shape: {e}"),
        })
    }

    /// The metainfo of `digest` in `namespace`: ready, pending while the origin fetches, or
    /// [`TrackerError::BlobUnknown`].
    pub async fn metainfo(
        &self,
        namespace: &str,
        digest: &Digest,
    ) -> Result<MetainfoReply, TrackerError> {
        self.metainfo_within(namespace, digest, Duration::ZERO)
            .await
    }

    /// The longest this client asks a metainfo request to be held ([`metainfo_within`]): half
    /// its timeout, at most [`MAX_METAINFO_WAIT`].
    ///
    /// [`metainfo_within`]: TrackerClient::metainfo_within
    pub fn hold(&self) -> Duration {
        self.hold
    }

    /// As [`metainfo`](TrackerClient::metainfo), but while the origin fetches the blob the
    /// answer waits up to `wait` (`?wait_ms=`, see [`MetainfoWait`](super::MetainfoWait)) for the fetch to end.
    /// Keep `wait` under the client's timeout: [`hold`](TrackerClient::hold) is.
    pub async fn metainfo_within(
        &self,
        namespace: &str,
        digest: &Digest,
        wait: Duration,
    ) -> Result<MetainfoReply, TrackerError> {
        self.metainfo_beyond(namespace, digest, None, wait).await
    }

    /// As [`metainfo_within`](TrackerClient::metainfo_within), for a download that knows
    /// `known` hashes of a metainfo prefix: a prefix knowing no more counts as pending
    /// (`?known=`, see [`MetainfoWait`](super::MetainfoWait)).
    pub async fn metainfo_beyond(
        &self,
        namespace: &str,
        digest: &Digest,
        known: Option<u32>,
        wait: Duration,
    ) -> Result<MetainfoReply, TrackerError> {
        check_namespace(namespace, "namespace").map_err(TrackerError::InvalidRequest)?;
        let answer = self
            .call(digest, MAX_METAINFO_BYTES, |host| {
                Ok(self.http.get(metainfo_url(
                    &self.http, host, namespace, digest, wait, known,
                )?))
            })
            .await?;
        match answer.status {
            StatusCode::OK => {
                let bad = |reason: String| TrackerError::BadResponse {
                    tracker: answer.tracker.to_string(),
                    reason,
                };
                let metainfo = Metainfo::decode(&answer.body).map_err(|e| bad(e.to_string()))?;
                if metainfo.digest() != digest {
                    return Err(bad(format!(
                        "metainfo is for {}, asked for {digest}",
                        metainfo.digest()
                    )));
                }
                Ok(MetainfoReply::Ready(metainfo))
            }
            StatusCode::ACCEPTED => Ok(MetainfoReply::Pending),
            StatusCode::NOT_FOUND => Err(TrackerError::BlobUnknown {
                namespace: namespace.to_owned(),
                digest: digest.to_string(),
            }),
            _ => Err(rejected(answer)),
        }
    }

    /// The trackers to try for `digest`, best first: the healthy ones in rank order, or all of
    /// them if none is healthy.
    async fn candidates(&self, digest: &Digest) -> Vec<&HostPort> {
        let now = self.clock.now();
        let ranked = self.trackers.ranked(digest);
        let mut healthy = Vec::with_capacity(ranked.len());
        for host in &ranked {
            if self.health.healthy(&host.to_string(), now).await {
                healthy.push(*host);
            }
        }
        if healthy.is_empty() { ranked } else { healthy }
    }

    /// Sends the request `build` makes for each candidate until one answers below 500, telling
    /// the health filter how each went.
    async fn call(
        &self,
        digest: &Digest,
        cap: usize,
        build: impl Fn(&HostPort) -> Result<reqwest::RequestBuilder, String>,
    ) -> Result<Answer, TrackerError> {
        let candidates = self.candidates(digest).await;
        let tried = candidates.len();
        let mut last = String::new();
        for host in candidates {
            let name = host.to_string();
            let request = build(host).map_err(TrackerError::Config)?;
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    read_capped(response, cap).await.map(|body| (status, body))
                }
                Err(e) => Err(crate::with_causes(&e)),
            };
            self.health
                .observe(&name, outcome.is_ok(), self.clock.now())
                .await;
            match outcome {
                Ok((status, body)) if !status.is_server_error() => {
                    return Ok(Answer {
                        tracker: host.clone(),
                        status,
                        body,
                    });
                }
                Ok((status, body)) => {
                    last = format!("{name} answered {status}: {}", message_of(&body));
                }
                Err(reason) => {
                    tracing::debug!(tracker = %name, %reason, "tracker failed, trying the next");
                    last = format!("{name}: {reason}");
                }
            }
        }
        Err(TrackerError::Unavailable { tried, last })
    }
}

/// A tracker's refusal as an error.
fn rejected(answer: Answer) -> TrackerError {
    TrackerError::Rejected {
        tracker: answer.tracker.to_string(),
        status: answer.status.as_u16(),
        message: message_of(&answer.body),
    }
}

/// The message of an error body: the [`ErrorBody`] if it is one, else the text, clipped.
fn message_of(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody {
            field: Some(field),
            message,
        }) => format!("{field}: {message}"),
        Ok(ErrorBody { message, .. }) => message,
        Err(_) => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
    }
}
