//! What an origin promises after it acknowledged a push or fetched a blob, as jobs of its
//! [`Queue`](crate::queue::Queue) under `<store.root>/queue/`: the write-back of a pushed blob
//! to the backend its namespace routes to, and a copy to every other member of the blob's
//! replica set. Both read the blob from the piece store, which keeps it while they exist.
//!
//! A copy for a member the ring's active check calls unhealthy waits (no attempt counted) until
//! it is healthy again, so an origin that was down receives what it missed; a copy for a member
//! that left the replica set (the ring changed) is dropped.

use shoal_p2p::with_causes;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_config::HostPort;
use shoal_p2p::store::{PieceStore, complete_body};
use shoal_registry::{Backing, Digest, RepoName};
use shoal_storage::StorageBacking;

use crate::http::segment;
use crate::queue::{Job, Outcome, Runner};
use crate::ring::Ring;
use shoal_p2p::tls::ClusterHttp;

/// Time a copy may take on top of its bytes at [`COPY_FLOOR_RATE`].
const COPY_BASE: Duration = Duration::from_secs(30);
/// The slowest rate a copy may go before it counts as hung (1 MiB/s).
const COPY_FLOOR_RATE: u64 = 1 << 20;
/// Timeout of the check whether a member holds a blob already.
const STAT_TIMEOUT: Duration = Duration::from_secs(10);

/// One job of an origin's queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum OriginJob {
    /// Upload a pushed blob to the backend `namespace` routes to.
    Writeback {
        /// The namespace (repository) it was pushed to.
        namespace: RepoName,
        /// The blob.
        digest: Digest,
    },
    /// Copy a blob to ring member `to`.
    Replicate {
        /// The namespace it was pushed to or fetched for.
        namespace: RepoName,
        /// The blob.
        digest: Digest,
        /// The member of its replica set that should hold it.
        to: HostPort,
    },
}

impl fmt::Display for OriginJob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OriginJob::Writeback { namespace, digest } => {
                write!(f, "write-back of {digest} ({namespace})")
            }
            OriginJob::Replicate {
                namespace,
                digest,
                to,
            } => write!(f, "copy of {digest} ({namespace}) to {to}"),
        }
    }
}

impl Job for OriginJob {
    const KINDS: &'static [&'static str] = &["writeback", "replicate"];

    fn kind(&self) -> &'static str {
        match self {
            OriginJob::Writeback { .. } => "writeback",
            OriginJob::Replicate { .. } => "replicate",
        }
    }

    fn key(&self) -> String {
        match self {
            // Each namespace may route to another backend.
            OriginJob::Writeback { namespace, digest } => format!("writeback {namespace} {digest}"),
            // A member holds a blob by digest, whatever the namespace.
            OriginJob::Replicate { digest, to, .. } => format!("replicate {digest} {to}"),
        }
    }

    fn pins(&self) -> Option<&Digest> {
        match self {
            OriginJob::Writeback { digest, .. } | OriginJob::Replicate { digest, .. } => {
                Some(digest)
            }
        }
    }
}

/// The jobs that follow a blob into this origin: its write-back when it was pushed, and a copy
/// for each other member of its replica set.
pub(crate) fn jobs_for(
    ring: &Ring,
    namespace: &RepoName,
    digest: &Digest,
    pushed: bool,
) -> Vec<OriginJob> {
    let writeback = pushed.then(|| OriginJob::Writeback {
        namespace: namespace.clone(),
        digest: digest.clone(),
    });
    let copies = ring
        .replica_set(digest)
        .into_iter()
        .filter(|h| Some(h) != ring.me())
        .map(|to| OriginJob::Replicate {
            namespace: namespace.clone(),
            digest: digest.clone(),
            to,
        });
    writeback.into_iter().chain(copies).collect()
}

/// Runs an origin's jobs.
pub(crate) struct Worker {
    pub backing: StorageBacking,
    pub store: PieceStore,
    pub ring: Arc<Ring>,
    pub http: ClusterHttp,
}

#[async_trait::async_trait]
impl Runner<OriginJob> for Worker {
    async fn run(&self, job: &OriginJob) -> Outcome {
        match job {
            OriginJob::Writeback { namespace, digest } => self.write_back(namespace, digest).await,
            OriginJob::Replicate {
                namespace,
                digest,
                to,
            } => self.replicate(namespace, digest, to).await,
        }
    }
}

impl Worker {
    async fn write_back(&self, namespace: &RepoName, d: &Digest) -> Outcome {
        let blob = match self.store.complete(d).await {
            Ok(Some(blob)) => blob,
            Ok(None) => return Outcome::Retry(format!("{d} is no longer in the piece store")),
            Err(e) => return Outcome::Retry(format!("reading {d} from the piece store: {e}")),
        };
        match self
            .backing
            .put_blob(namespace, d, blob.path(), blob.len())
            .await
        {
            Ok(()) => {
                tracing::info!(%d, %namespace, "written back to the storage backend");
                Outcome::Done
            }
            Err(e) => Outcome::Retry(e.message),
        }
    }

    async fn replicate(&self, namespace: &RepoName, d: &Digest, to: &HostPort) -> Outcome {
        if !self.ring.replica_set(d).contains(to) {
            return Outcome::Obsolete(format!("{to} is no longer in the replica set of {d}"));
        }
        if !self.ring.is_healthy(to) {
            return Outcome::Wait(format!("{to} is unhealthy"));
        }
        let blob = match self.store.complete(d).await {
            Ok(Some(blob)) => blob,
            Ok(None) => return Outcome::Retry(format!("{d} is no longer in the piece store")),
            Err(e) => return Outcome::Retry(format!("reading {d} from the piece store: {e}")),
        };
        let path = format!("/namespace/{}/blobs/{d}", segment(namespace.as_str()));
        let url = self.http.url(to, &path);
        // A member that fetched the blob itself meanwhile needs no copy. `?local=true`: its
        // piece store, not the backend it would fetch from.
        let held = self
            .http
            .head(format!("{url}?local=true"))
            .timeout(STAT_TIMEOUT)
            .send()
            .await;
        if held.is_ok_and(|r| r.status().is_success()) {
            tracing::debug!(%d, %to, "the member holds the blob already");
            return Outcome::Done;
        }
        let file = match tokio::fs::File::open(blob.path()).await {
            Ok(f) => f.into_std().await,
            Err(e) => return Outcome::Retry(format!("opening {d}: {e}")),
        };
        // Read-only maps of the cached file, as the origin's blob GETs are sent.
        let body = reqwest::Body::wrap_stream(complete_body(file, blob.len()));
        let timeout = COPY_BASE + Duration::from_secs(blob.len() / COPY_FLOOR_RATE);
        let sent = self
            .http
            .put(format!("{url}?replica=true"))
            .header(reqwest::header::CONTENT_LENGTH, blob.len())
            .body(body)
            .timeout(timeout)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                tracing::info!(%d, %to, "replicated");
                Outcome::Done
            }
            Ok(r) => Outcome::Retry(format!("{to} answered {}", r.status())),
            Err(e) => Outcome::Retry(format!("sending to {to}: {}", with_causes(&e))),
        }
    }
}
