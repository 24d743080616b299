//! An origin seeds a blob while it is still fetching it from its backend: peers download the
//! pieces written so far against the hashes known so far (metainfo version 3), and the rest
//! once the fetch has written them.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use common::{FakeTracker, NS, blob, config, digest_of, read_all};
use shoal_p2p::error::SchedulerError;
use shoal_p2p::metainfo::Metainfo;
use shoal_p2p::store::ImportProgress;
use shoal_p2p::{Announce, AnnounceReply, Scheduler, Tracker};
use shoal_registry::Digest;
use tokio::sync::{mpsc, watch};

const PIECE: u64 = 64 * 1024;
const PIECES: u64 = 10;
const WAIT: Duration = Duration::from_secs(30);

/// A tracker whose metainfo is what the origin's import says: the hashes known so far while
/// it runs, the whole metainfo once the test records it, an error once it failed.
struct ImportTracker {
    peers: FakeTracker,
    progress: watch::Receiver<ImportProgress>,
    done: Mutex<Option<Result<Metainfo, String>>>,
}

#[async_trait]
impl Tracker for ImportTracker {
    async fn announce(&self, a: &Announce) -> Result<AnnounceReply, SchedulerError> {
        self.peers.announce(a).await
    }

    async fn metainfo(
        &self,
        _namespace: &str,
        _digest: &Digest,
    ) -> Result<Option<Metainfo>, SchedulerError> {
        match &*self.done.lock().unwrap() {
            Some(Ok(m)) => return Ok(Some(m.clone())),
            Some(Err(why)) => return Err(SchedulerError::Download(why.clone())),
            None => {}
        }
        Ok(self.progress.borrow().hashes.as_deref().cloned())
    }
}

/// An origin importing a blob whose body the test feeds, and an agent.
struct Fetching {
    origin: Scheduler,
    agent: Scheduler,
    tracker: Arc<ImportTracker>,
    body: mpsc::Sender<std::io::Result<Bytes>>,
    import: tokio::task::JoinHandle<()>,
}

/// Starts the import of a blob of `len` bytes named `digest` on an origin that seeds it as
/// it lands; `leecher_tti` is the agent's.
async fn fetching(
    dir: &std::path::Path,
    digest: Digest,
    len: u64,
    leecher_tti: Duration,
) -> Fetching {
    let (progress_tx, progress) = watch::channel(ImportProgress {
        length: Some(len),
        ..ImportProgress::default()
    });
    let tracker = Arc::new(ImportTracker {
        peers: FakeTracker::default(),
        progress,
        done: Mutex::new(None),
    });
    let origin = node_with(dir, "origin", &tracker, config(), true).await;
    let agent_config = shoal_config::SchedulerConfig {
        leecher_tti: shoal_config::Duration::from_millis(leecher_tti.as_millis() as u64),
        ..config()
    };
    let agent = node_with(dir, "agent", &tracker, agent_config, false).await;
    origin.seed_while_importing(NS, progress_tx.subscribe());
    let (body, rx) = mpsc::channel(64);
    let import = {
        let (origin, tracker) = (origin.clone(), tracker.clone());
        tokio::spawn(async move {
            let body = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|chunk| (chunk, rx))
            });
            let imported = origin
                .store()
                .import_followed(&digest, PIECE, Box::pin(body), Some(&progress_tx))
                .await;
            match imported {
                Ok(blob) => {
                    *tracker.done.lock().unwrap() = Some(Ok((**blob.metainfo()).clone()));
                    origin.seed(NS, blob);
                }
                Err(e) => *tracker.done.lock().unwrap() = Some(Err(e.to_string())),
            }
            drop(progress_tx);
        })
    };
    Fetching {
        origin,
        agent,
        tracker,
        body,
        import,
    }
}

async fn node_with(
    dir: &std::path::Path,
    name: &str,
    tracker: &Arc<ImportTracker>,
    config: shoal_config::SchedulerConfig,
    origin: bool,
) -> Scheduler {
    common::node_on(dir, name, tracker.clone(), config, origin).await
}

async fn feed(body: &mpsc::Sender<std::io::Result<Bytes>>, bytes: &[u8]) {
    for chunk in bytes.chunks(20_000) {
        body.send(Ok(Bytes::copy_from_slice(chunk))).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_gets_the_pieces_an_origin_has_fetched_while_it_fetches_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = blob((PIECES * PIECE - 1000) as usize, 3);
    let digest = digest_of(&bytes);
    let f = fetching(dir.path(), digest.clone(), bytes.len() as u64, WAIT).await;

    // Six pieces and a bit reach the origin; the rest is held back.
    let front = (6 * PIECE + 100) as usize;
    feed(&f.body, &bytes[..front]).await;
    let landing = f.agent.landing(NS, &digest).await.unwrap();
    let mut landed = landing.landed();
    let got = tokio::time::timeout(WAIT, landed.wait_for(|&n| n >= 6 * PIECE))
        .await
        .expect("the pieces the origin had fetched did not reach the agent")
        .map(|n| *n)
        .unwrap();
    assert_eq!(got, 6 * PIECE);
    let file = std::fs::File::open(landing.path()).unwrap();
    let mut head = vec![0u8; got as usize];
    std::os::unix::fs::FileExt::read_exact_at(&file, &mut head, 0).unwrap();
    assert_eq!(head, bytes[..head.len()]);
    assert!(
        f.tracker.done.lock().unwrap().is_none(),
        "the fetch is still running"
    );

    feed(&f.body, &bytes[front..]).await;
    drop(f.body);
    let blob = tokio::time::timeout(WAIT, landing.finished())
        .await
        .expect("the download did not finish after the fetch did")
        .unwrap();
    assert_eq!(read_all(&blob).await, bytes);
    assert!(blob.metainfo().is_complete());
    f.import.await.unwrap();
    // Every piece came from the origin once.
    let (sent, _) = f.origin.traffic();
    assert_eq!(sent, bytes.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_that_fails_its_digest_fails_the_downloads_that_followed_it() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = blob((PIECES * PIECE) as usize, 4);
    // The backend sends other bytes than the digest names.
    let mut wrong = bytes.clone();
    wrong[(8 * PIECE) as usize] ^= 1;
    let digest = digest_of(&bytes);
    let f = fetching(
        dir.path(),
        digest.clone(),
        bytes.len() as u64,
        Duration::from_secs(2),
    )
    .await;

    feed(&f.body, &wrong[..(5 * PIECE) as usize]).await;
    let landing = f.agent.landing(NS, &digest).await.unwrap();
    let mut landed = landing.landed();
    tokio::time::timeout(WAIT, landed.wait_for(|&n| n >= 5 * PIECE))
        .await
        .expect("the first pieces did not arrive")
        .unwrap();
    feed(&f.body, &wrong[(5 * PIECE) as usize..]).await;
    drop(f.body);
    f.import.await.unwrap();
    assert!(matches!(&*f.tracker.done.lock().unwrap(), Some(Err(_))));
    let failed = tokio::time::timeout(WAIT, landing.finished())
        .await
        .expect("the download did not end after its origin's fetch failed");
    assert!(
        failed.is_err(),
        "a blob that failed its digest was completed"
    );
    assert!(f.agent.store().complete(&digest).await.unwrap().is_none());
}
