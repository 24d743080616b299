//! Copies of tags to the remote build-indexes of `cluster:` (other clusters, each with its own
//! backend), as jobs of a [`Queue`](crate::queue::Queue) in `<data_dir>/queue/`: a tag PUT is
//! acknowledged once the tag is in the backend and one job per remote is on disk. A copy is
//! `PUT /tags/{repo:tag}/digest/{digest}?replica=true`, which the remote stores without
//! copying further. One job per tag and remote: a newer digest pushed while an older one waits
//! replaces it, so a remote ends with the newest.

use shoal_p2p::with_causes;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_config::{HostPort, Hosts};
use shoal_p2p::tls::ClusterHttp;
use shoal_registry::{Digest, TagKey};

use crate::http::segment;
use crate::queue::{Job, Outcome, Runner};

/// How long one copy may take.
pub(crate) const COPY_TIMEOUT: Duration = Duration::from_secs(30);

/// Copy `tag` → `digest` to the remote build-index `to`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TagCopy {
    /// The tag.
    pub tag: TagKey,
    /// What it points at.
    pub digest: Digest,
    /// The remote build-index, as `cluster.hosts` names it.
    pub to: HostPort,
}

impl fmt::Display for TagCopy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "copy of tag {} ({}) to {}",
            self.tag, self.digest, self.to
        )
    }
}

impl Job for TagCopy {
    const KINDS: &'static [&'static str] = &["replicate"];

    fn kind(&self) -> &'static str {
        "replicate"
    }

    fn key(&self) -> String {
        format!("tag {} {}", self.tag, self.to)
    }
}

/// The remote build-indexes of `cluster.hosts`: each listed host, or the one DNS name (a
/// remote cluster behind one name, whichever member answers).
pub(crate) fn remotes(hosts: &Option<Hosts>) -> Vec<HostPort> {
    match hosts {
        None => Vec::new(),
        Some(Hosts::Static(list)) => list.clone(),
        Some(Hosts::Dns(name)) => vec![name.clone()],
    }
}

/// Sends tag copies.
pub(crate) struct Sender {
    pub http: ClusterHttp,
}

#[async_trait::async_trait]
impl Runner<TagCopy> for Sender {
    async fn run(&self, job: &TagCopy) -> Outcome {
        let path = format!(
            "/tags/{}/digest/{}?replica=true",
            segment(&job.tag.to_string()),
            job.digest
        );
        let url = self.http.url(&job.to, &path);
        match self.http.put(&url).send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(tag = %job.tag, digest = %job.digest, to = %job.to, "tag replicated");
                Outcome::Done
            }
            Ok(r) => {
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                Outcome::Retry(format!("{} answered {status}: {body}", job.to))
            }
            Err(e) => Outcome::Retry(format!("sending to {}: {}", job.to, with_causes(&e))),
        }
    }
}

#[cfg(test)]
mod remote_tests {
    use super::*;

    /// `cluster.hosts.dns` on a build-index names one remote cluster behind one name: a tag is
    /// copied once to whichever member answers, where `cluster.hosts.static` copies it to
    /// each host listed.
    #[test]
    fn a_dns_name_is_one_remote_and_a_static_list_is_each_host() {
        let hosts: Hosts = serde_yaml_ng::from_str("dns: remote.example:15004").unwrap();
        assert_eq!(
            remotes(&Some(hosts)),
            vec![HostPort::new("remote.example", 15004)]
        );
        let hosts: Hosts = serde_yaml_ng::from_str("static: [a:1, b:2]").unwrap();
        assert_eq!(
            remotes(&Some(hosts)),
            vec![HostPort::new("a", 1), HostPort::new("b", 2)]
        );
        assert!(remotes(&None).is_empty());
    }
}
