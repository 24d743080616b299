//! The tracker: an HTTP service that remembers who announced which torrent and hands out peers
//! ([`service`]), the client agents and origins use to reach a ring of them ([`client`]), and
//! the JSON and paths both sides agree on ([`proto`]).

pub mod client;
pub mod proto;
pub mod service;

#[cfg(test)]
mod tests;

use std::time::Duration;

use shoal_config::HostPort;
use shoal_registry::Digest;

use crate::tls::ClusterHttp;

pub use client::{MetainfoReply, TrackerClient};
pub use proto::{AnnounceRequest, AnnounceResponse, ErrorBody, PeerJson};
pub use service::{OriginHealth, TrackerState, app, router, run, run_with_origin_health};

/// `{scheme}://{host}/{segments...}`, each segment percent-encoded (a namespace like
/// `library/alpine` travels as one segment, `library%2Falpine`).
fn url(http: &ClusterHttp, host: &HostPort, segments: &[&str]) -> Result<reqwest::Url, String> {
    let mut url = http.base(host)?;
    url.path_segments_mut()
        .map_err(|()| format!("{host} does not make a URL with a path"))?
        .clear()
        .extend(segments);
    Ok(url)
}

/// The longest a tracker or an origin holds a metainfo request while the origin fetches the
/// blob (`?wait_ms=`), answering as soon as the fetch ends; a longer wait asked for is cut to
/// this. Well under the tracker's own timeout for origins and the clients' default.
pub const MAX_METAINFO_WAIT: Duration = Duration::from_secs(2);

/// `?wait_ms=N` on a metainfo request: while the origin is still fetching the blob, answer
/// when the fetch ends or after N milliseconds (at most [`MAX_METAINFO_WAIT`]), whichever
/// comes first, instead of 202 at once. An agent polling a cold blob learns its metainfo the
/// moment the origin has it rather than at its next poll.
///
/// With `?known=K` as well (a download that knows `K` hashes of a metainfo prefix, asking for
/// more): a prefix that knows no more than `K` counts as pending too, so the answer waits for
/// more hashes (or the fetch's end) as it would for the first ones.
#[derive(Clone, Copy, Debug, Default, serde::Deserialize)]
pub struct MetainfoWait {
    /// Milliseconds; none or 0: answer at once.
    #[serde(default)]
    pub wait_ms: u64,
    /// Hashes the asker knows already (see above).
    #[serde(default)]
    pub known: Option<u32>,
}

impl MetainfoWait {
    /// How long to hold the request, capped.
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.wait_ms).min(MAX_METAINFO_WAIT)
    }
}

/// Where `host` (a tracker or an origin) serves the metainfo of `digest`, asked to hold a
/// pending answer up to `wait` (none when zero), for an asker that knows `known` hashes.
fn metainfo_url(
    http: &ClusterHttp,
    host: &HostPort,
    ns: &str,
    digest: &Digest,
    wait: Duration,
    known: Option<u32>,
) -> Result<reqwest::Url, String> {
    let digest = digest.to_string();
    let mut url = url(http, host, &["namespace", ns, "blobs", &digest, "metainfo"])?;
    if !wait.is_zero() {
        url.query_pairs_mut()
            .append_pair("wait_ms", &wait.as_millis().to_string());
    }
    if let Some(known) = known {
        url.query_pairs_mut()
            .append_pair("known", &known.to_string());
    }
    Ok(url)
}

/// Reads a response body of at most `cap` bytes; a longer one is an error, not truncated.
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    let too_long = || format!("answer is longer than {cap} bytes");
    if response
        .content_length()
        .is_some_and(|len| len > cap as u64)
    {
        return Err(too_long());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > cap {
            return Err(too_long());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
