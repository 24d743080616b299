//! The tracker: an HTTP service that remembers who announced which torrent and hands out peers
//! ([`service`]), the client agents and origins use to reach a ring of them ([`client`]), and
//! the JSON and paths both sides agree on ([`proto`]).

pub mod client;
pub mod proto;
pub mod service;

#[cfg(test)]
mod tests;

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

/// Where `host` (a tracker or an origin) serves the metainfo of `digest`.
fn metainfo_url(
    http: &ClusterHttp,
    host: &HostPort,
    ns: &str,
    digest: &Digest,
) -> Result<reqwest::Url, String> {
    let digest = digest.to_string();
    url(http, host, &["namespace", ns, "blobs", &digest, "metainfo"])
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
