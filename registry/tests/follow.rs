//! A pull-through miss streamed while it is fetched: clients get the first bytes before the
//! backing has sent the whole blob, every client of the same miss follows the one fetch, the
//! last byte waits for the digest, and a fetch that fails verification completes no client.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use bytes::Bytes;
use common::backed;
use http_body_util::BodyExt;
use shoal_registry::error::ApiResult;
use shoal_registry::store::direct;
use shoal_registry::{Backing, BodyStream, Digest, RepoName, Tag};
use tokio::sync::Notify;
use tower::ServiceExt;

/// A backing holding one blob, which it sends in two halves: the second only once `release`
/// is notified, or at once when `open`. It says the length up front.
struct Gated {
    data: Vec<u8>,
    release: Arc<Notify>,
    open: Arc<AtomicBool>,
    fetches: AtomicUsize,
    corrupt: AtomicBool,
}

impl Gated {
    fn new(data: Vec<u8>) -> Arc<Gated> {
        Arc::new(Gated {
            data,
            release: Arc::new(Notify::new()),
            open: Arc::new(AtomicBool::new(false)),
            fetches: AtomicUsize::new(0),
            corrupt: AtomicBool::new(false),
        })
    }
}

#[async_trait::async_trait]
impl Backing for Gated {
    async fn put_blob(&self, _: &RepoName, _: &Digest, _: &Path, _: u64) -> ApiResult<()> {
        Ok(())
    }

    async fn get_blob(&self, repo: &RepoName, d: &Digest) -> ApiResult<Option<BodyStream>> {
        Ok(self.get_blob_sized(repo, d).await?.map(|(_, body)| body))
    }

    async fn get_blob_sized(
        &self,
        _: &RepoName,
        _: &Digest,
    ) -> ApiResult<Option<(Option<u64>, BodyStream)>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let mut data = self.data.clone();
        if self.corrupt.load(Ordering::SeqCst) {
            let last = data.len() - 1;
            data[last] ^= 0xff;
        }
        let (first, second) = data.split_at(data.len() / 2);
        let (first, second) = (
            Bytes::copy_from_slice(first),
            Bytes::copy_from_slice(second),
        );
        let (release, open) = (self.release.clone(), self.open.clone());
        let body = futures_util::stream::unfold(0, move |step| {
            let (first, second) = (first.clone(), second.clone());
            let (release, open) = (release.clone(), open.clone());
            async move {
                match step {
                    0 => Some((Ok(first), 1)),
                    1 => {
                        if !open.load(Ordering::SeqCst) {
                            release.notified().await;
                        }
                        Some((Ok(second), 2))
                    }
                    _ => None,
                }
            }
        });
        Ok(Some((Some(self.data.len() as u64), Box::pin(body))))
    }

    async fn put_tag(&self, _: &RepoName, _: &Tag, _: &Digest) -> ApiResult<()> {
        Ok(())
    }

    async fn get_tag(&self, _: &RepoName, _: &Tag) -> ApiResult<Option<Digest>> {
        Ok(None)
    }

    async fn delete_tag(&self, _: &RepoName, _: &Tag) -> ApiResult<()> {
        Ok(())
    }
}

/// The first `want` bytes of a streaming body, read as they come.
async fn read_at_least(body: &mut Body, want: usize) -> Vec<u8> {
    let mut got = Vec::new();
    while got.len() < want {
        let frame = body
            .frame()
            .await
            .expect("body ended early")
            .expect("body failed");
        if let Ok(data) = frame.into_data() {
            got.extend_from_slice(&data);
        }
    }
    got
}

/// The rest of a body: its bytes, or `Err` when it broke off.
async fn read_rest(mut body: Body, mut got: Vec<u8>) -> Result<Vec<u8>, String> {
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    got.extend_from_slice(&data);
                }
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(got)
}

fn blob(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 977) as u8).collect()
}

async fn start_get(app: &axum::Router, uri: &str) -> (StatusCode, String, Body) {
    let resp = app
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let length = resp.headers()["content-length"]
        .to_str()
        .unwrap()
        .to_owned();
    (resp.status(), length, resp.into_body())
}

/// Two clients of one miss: the first reads `head` bytes (what the backing sends before it
/// waits for `release`), a second joins and reads 1 MiB, then `release` lets the rest come
/// and both get `data` whole.
async fn two_clients_share_one_miss(
    app: &axum::Router,
    uri: &str,
    data: &[u8],
    head: usize,
    release: &Notify,
) {
    let (status, length, mut first) = start_get(app, uri).await;
    assert_eq!((status, length), (StatusCode::OK, data.len().to_string()));
    let head = read_at_least(&mut first, head).await;
    assert!(
        head[..] == data[..head.len()],
        "the first client's start differs"
    );
    let (status, _, mut second) = start_get(app, uri).await;
    assert_eq!(status, StatusCode::OK);
    let head2 = read_at_least(&mut second, 1 << 20).await;
    assert!(
        head2[..] == data[..head2.len()],
        "the second client's start differs"
    );

    release.notify_one();
    let (a, b) = tokio::join!(read_rest(first, head), read_rest(second, head2));
    assert!(a.unwrap() == data, "first client's bytes differ");
    assert!(b.unwrap() == data, "second client's bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_cold_blob_get_bytes_before_the_fetch_ends_and_share_it() {
    let data = blob(3 << 20);
    let d = Digest::sha256_of(&data);
    let backing = Gated::new(data.clone());
    let reg = backed(backing.clone()).await;
    let uri = format!("/v2/team/app/blobs/{d}");

    // The first half arrives while the backing holds back the second.
    two_clients_share_one_miss(&reg.app, &uri, &data, 1 << 20, &backing.release).await;
    assert_eq!(
        backing.fetches.load(Ordering::SeqCst),
        1,
        "one fetch for both"
    );

    // Committed: the next GET is served locally.
    let again = reg.get(&uri).await;
    assert_eq!((again.status, again.body == data), (StatusCode::OK, true));
    assert_eq!(backing.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_that_fails_its_digest_completes_no_client_and_is_not_kept() {
    let data = blob(2 << 20);
    let d = Digest::sha256_of(&data);
    let backing = Gated::new(data.clone());
    backing.corrupt.store(true, Ordering::SeqCst);
    let reg = backed(backing.clone()).await;
    let uri = format!("/v2/team/app/blobs/{d}");

    let (status, _, mut body) = start_get(&reg.app, &uri).await;
    assert_eq!(status, StatusCode::OK);
    let head = read_at_least(&mut body, 1 << 20).await;
    backing.release.notify_one();
    let rest = read_rest(body, head).await;
    match rest {
        Err(_) => {}
        Ok(got) => assert!(
            got.len() < data.len(),
            "a corrupt blob reached the client whole"
        ),
    }
    // Nothing was kept: once the backing is right again, the blob is fetched anew.
    backing.corrupt.store(false, Ordering::SeqCst);
    backing.open.store(true, Ordering::SeqCst);
    let r = reg.get(&uri).await;
    assert_eq!((r.status, r.body == data), (StatusCode::OK, true));
    assert_eq!(backing.fetches.load(Ordering::SeqCst), 2);
}

/// A client that joins after more than the fetch keeps in memory was written reads the start
/// from the scratch file, then catches up with the newest bytes kept in memory: the same
/// bytes either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_joins_late_reads_the_file_then_memory_and_gets_the_same_bytes() {
    let data = blob(3 * shoal_registry::store::RECENT_BYTES as usize);
    let d = Digest::sha256_of(&data);
    let backing = Gated::new(data.clone());
    let reg = backed(backing.clone()).await;
    let uri = format!("/v2/team/app/blobs/{d}");

    // The first half (1.5x what is kept in memory) is written before the second client asks.
    let (status, _, mut first) = start_get(&reg.app, &uri).await;
    assert_eq!(status, StatusCode::OK);
    let head = read_at_least(&mut first, data.len() / 2).await;
    let (status, length, mut late) = start_get(&reg.app, &uri).await;
    assert_eq!((status, length), (StatusCode::OK, data.len().to_string()));
    let late_head = read_at_least(&mut late, data.len() / 2).await;
    assert!(
        late_head[..] == data[..late_head.len()],
        "the late client's start differs"
    );

    backing.release.notify_one();
    let (a, b) = tokio::join!(read_rest(first, head), read_rest(late, late_head));
    assert!(a.unwrap() == data, "first client's bytes differ");
    assert!(b.unwrap() == data, "late client's bytes differ");
    assert_eq!(backing.fetches.load(Ordering::SeqCst), 1);
}

/// A backing whose blob lands in a file of its own (as the agent's P2P download does): the
/// first half is in the file at once, the second only once `release` is notified; then the
/// file is moved (as the piece store moves a finished download into its cache) and returned,
/// or the landing fails when `fail` is set. It has no other way to fetch.
struct Landed {
    data: Vec<u8>,
    dir: tempfile::TempDir,
    release: Arc<Notify>,
    fail: AtomicBool,
    landings: AtomicUsize,
    /// Written around the page cache, as the agent's piece store writes.
    direct: bool,
}

#[async_trait::async_trait]
impl Backing for Landed {
    async fn put_blob(&self, _: &RepoName, _: &Digest, _: &Path, _: u64) -> ApiResult<()> {
        Ok(())
    }

    async fn get_blob(&self, _: &RepoName, _: &Digest) -> ApiResult<Option<BodyStream>> {
        panic!("a landing blob is not fetched as a stream")
    }

    async fn get_blob_landing(
        &self,
        _: &RepoName,
        _: &Digest,
    ) -> ApiResult<Option<shoal_registry::Landing>> {
        let n = self.landings.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.path().join(format!("landing{n}"));
        let half = self.front();
        let file = std::fs::File::create(&path).unwrap();
        let direct = self.direct;
        let write = move |file: &std::fs::File, data: &[u8], at: usize| match direct {
            true => {
                let d = direct::open(&path_of(file), true).unwrap().unwrap();
                direct::write_at(&d, file, data, at as u64).unwrap();
            }
            false => std::os::unix::fs::FileExt::write_all_at(file, data, at as u64).unwrap(),
        };
        write(&file, &self.data[..half], 0);
        let (tx, landed) = tokio::sync::watch::channel(half as u64);
        let (release, data) = (self.release.clone(), self.data.clone());
        let (done_path, fail) = (
            self.dir.path().join(format!("done{n}")),
            self.fail.load(Ordering::SeqCst),
        );
        let landing_path = path.clone();
        let done = async move {
            release.notified().await;
            if fail {
                drop(tx);
                return Err(shoal_registry::RegistryError::new(
                    shoal_registry::ErrorCode::Unavailable,
                    "a piece never came",
                ));
            }
            write(&file, &data[half..], half);
            tx.send_replace(data.len() as u64);
            std::fs::rename(&landing_path, &done_path).unwrap();
            Ok(done_path)
        };
        Ok(Some(shoal_registry::Landing {
            length: self.data.len() as u64,
            path,
            landed,
            direct: self.direct,
            done: Box::pin(done),
        }))
    }

    async fn put_tag(&self, _: &RepoName, _: &Tag, _: &Digest) -> ApiResult<()> {
        Ok(())
    }

    async fn get_tag(&self, _: &RepoName, _: &Tag) -> ApiResult<Option<Digest>> {
        Ok(None)
    }

    async fn delete_tag(&self, _: &RepoName, _: &Tag) -> ApiResult<()> {
        Ok(())
    }
}

impl Landed {
    /// The bytes landed before `release`: half, on a page boundary when written direct.
    fn front(&self) -> usize {
        match self.direct {
            true => self.data.len() / 2 / direct::ALIGN * direct::ALIGN,
            false => self.data.len() / 2,
        }
    }
}

/// The path an open file was opened at (Linux).
fn path_of(file: &std::fs::File) -> std::path::PathBuf {
    use std::os::fd::AsRawFd;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap()
}

/// Bytes of the file at `path` in the page cache, as util-linux's `fincore` counts them.
fn resident(path: &Path) -> u64 {
    let out = std::process::Command::new("fincore")
        .args(["--bytes", "--noheadings", "--output", "RES"])
        .arg(path)
        .output()
        .expect("fincore (util-linux-extra; scripts/install-test-deps installs it)");
    assert!(out.status.success(), "fincore: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn landed(data: Vec<u8>) -> Arc<Landed> {
    Arc::new(Landed {
        data,
        dir: tempfile::tempdir().unwrap(),
        release: Arc::new(Notify::new()),
        fail: AtomicBool::new(false),
        landings: AtomicUsize::new(0),
        direct: false,
    })
}

/// Clients of a blob that lands in the backing's file read its landed front before the rest
/// exists, share the one landing, and the finished file is linked into the store, not copied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_follow_a_blob_landing_in_the_backings_file_and_it_is_linked_in() {
    let data = blob(3 << 20);
    let d = Digest::sha256_of(&data);
    let backing = landed(data.clone());
    let reg = backed(backing.clone()).await;
    let uri = format!("/v2/team/app/blobs/{d}");

    two_clients_share_one_miss(&reg.app, &uri, &data, data.len() / 2, &backing.release).await;
    assert_eq!(
        backing.landings.load(Ordering::SeqCst),
        1,
        "one landing for both"
    );

    // The moved file is the store's copy too (a hard link), and later GETs are local.
    let again = reg.get(&uri).await;
    assert_eq!((again.status, again.body == data), (StatusCode::OK, true));
    let done = std::fs::metadata(backing.dir.path().join("done0")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::nlink(&done), 2);
    assert_eq!(backing.landings.load(Ordering::SeqCst), 1);
}

/// A landing written around the page cache (the agent's piece store writes its downloads so):
/// its first client reads it around the page cache too and gets every byte, and the file is
/// not in the page cache after it but for the page of its unaligned end, which is written
/// through it. Two clients of one landing share maps of the page cache: the second fills it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_client_of_a_landing_written_direct_reads_it_around_the_page_cache() {
    let data = blob((3 << 20) + 777);
    let d = Digest::sha256_of(&data);
    let uri = format!("/v2/team/app/blobs/{d}");
    let direct_landing = || {
        let mut backing = landed(data.clone());
        Arc::get_mut(&mut backing).unwrap().direct = true;
        backing
    };

    let backing = direct_landing();
    let reg = backed(backing.clone()).await;
    let (status, _, mut body) = start_get(&reg.app, &uri).await;
    assert_eq!(status, StatusCode::OK);
    let head = read_at_least(&mut body, backing.front()).await;
    backing.release.notify_one();
    assert!(
        read_rest(body, head).await.unwrap() == data,
        "the client's bytes differ"
    );
    let cached = resident(&backing.dir.path().join("done0"));
    assert!(
        cached <= direct::ALIGN as u64,
        "{cached} bytes of the landed file are in the page cache"
    );

    let backing = direct_landing();
    let reg = backed(backing.clone()).await;
    two_clients_share_one_miss(&reg.app, &uri, &data, backing.front(), &backing.release).await;
    assert!(resident(&backing.dir.path().join("done0")) >= data.len() as u64);
}

/// A landing that fails completes no client and leaves nothing in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_landing_that_fails_completes_no_client_and_is_not_kept() {
    let data = blob(2 << 20);
    let d = Digest::sha256_of(&data);
    let backing = landed(data.clone());
    backing.fail.store(true, Ordering::SeqCst);
    let reg = backed(backing.clone()).await;
    let uri = format!("/v2/team/app/blobs/{d}");

    let (status, _, mut body) = start_get(&reg.app, &uri).await;
    assert_eq!(status, StatusCode::OK);
    let head = read_at_least(&mut body, 1 << 20).await;
    backing.release.notify_one();
    let rest = read_rest(body, head).await;
    assert!(rest.is_err(), "the body of a failed landing ended cleanly");

    // Nothing was kept: the next GET lands it again.
    backing.fail.store(false, Ordering::SeqCst);
    let (status, _, body) = start_get(&reg.app, &uri).await;
    assert_eq!(status, StatusCode::OK);
    backing.release.notify_one();
    assert!(read_rest(body, Vec::new()).await.unwrap() == data);
    assert_eq!(backing.landings.load(Ordering::SeqCst), 2);
}
