//! Upload sessions under stress: lying `Content-Range` headers, chunks that fail or are
//! dropped midway, a full disk, and sessions abandoned for longer than the purge age.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use bytes::Bytes;
use common::{Fixture, fixture};
use shoal_registry::Registry;
use shoal_registry::{Digest, LocalStore};
use tower::ServiceExt;

/// The `data` file of the session at `loc` (`/v2/<name>/blobs/uploads/<id>`).
fn data_file(root: &Path, loc: &str) -> PathBuf {
    let id = loc.rsplit('/').next().unwrap();
    root.join("uploads").join(id).join("data")
}

async fn start(f: &Fixture, repo: &str) -> String {
    let r = f
        .call(
            Method::POST,
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    r.header("location").to_owned()
}

/// Polls `done` every 10 ms until it holds, failing after 10 s.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A request body fed through a channel, so a test decides when it ends.
fn receiver_stream(
    mut rx: tokio::sync::mpsc::Receiver<Result<Bytes, std::io::Error>>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(u64::MAX)
}

#[tokio::test]
async fn content_range_past_u64_is_a_416_not_an_overflow() {
    let f = fixture().await;
    let loc = start(&f, "a").await;
    for range in ["0-18446744073709551615", "bytes=0-18446744073709551615"] {
        let r = f
            .call(
                Method::PATCH,
                &loc,
                &[("content-range", range), ("content-length", "3")],
                b"abc".to_vec(),
            )
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
            "{range}"
        );
    }
    assert_eq!(f.get(&loc).await.header("range"), "0-0");
}

#[tokio::test]
async fn a_chunk_shorter_than_its_content_range_is_refused_and_leaves_nothing() {
    let f = fixture().await;
    let loc = start(&f, "a").await;
    // No Content-Length, as with a chunked body: only the body can disagree with the range.
    for body in [&b""[..], b"ab"] {
        let r = f
            .call(
                Method::PATCH,
                &loc,
                &[("content-range", "0-99")],
                body.to_vec(),
            )
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::RANGE_NOT_SATISFIABLE, "BLOB_UPLOAD_INVALID"),
            "{} bytes",
            body.len()
        );
        assert_eq!(f.get(&loc).await.header("range"), "0-0");
        assert_eq!(len(&data_file(f.dir.path(), &loc)), 0);
    }
    // The same range with its bytes is taken.
    let r = f
        .call(
            Method::PATCH,
            &loc,
            &[("content-range", "0-99")],
            vec![7u8; 100],
        )
        .await;
    assert_eq!(
        (r.status, r.header("range")),
        (StatusCode::ACCEPTED, "0-99")
    );
}

#[tokio::test]
async fn a_chunk_that_fails_midway_is_cut_off_and_the_upload_resumes() {
    let f = fixture().await;
    let loc = start(&f, "a").await;
    let data = data_file(f.dir.path(), &loc);
    let good = vec![1u8; 3000];
    let r = f.call(Method::PATCH, &loc, &[], good.clone()).await;
    assert_eq!(r.header("range"), "0-2999");
    // 3 MiB arrive, then the body breaks (the client went away).
    let pieces: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from(vec![2u8; 3 << 20])),
        Err(std::io::Error::other("connection reset")),
    ];
    let req = Request::builder()
        .method(Method::PATCH)
        .uri(&loc)
        .body(Body::from_stream(futures_util::stream::iter(pieces)))
        .unwrap();
    let resp = f.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(len(&data), 3000, "the broken chunk's bytes are freed");
    assert_eq!(f.get(&loc).await.header("range"), "0-2999");
    // The client resumes from the last good offset and the blob is whole.
    let rest = b"the rest".to_vec();
    let mut all = good;
    all.extend_from_slice(&rest);
    let d = Digest::sha256_of(&all);
    let r = f
        .call(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[("content-range", "3000-3007")],
            rest,
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(f.get(&format!("/v2/a/blobs/{d}")).await.body, all);
}

#[tokio::test]
async fn a_request_dropped_mid_chunk_frees_its_bytes() {
    let f = fixture().await;
    let loc = start(&f, "a").await;
    let data = data_file(f.dir.path(), &loc);
    // A body that sends 4 MiB and then hangs, like a client that stopped sending.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(8);
    for _ in 0..4 {
        tx.send(Ok(Bytes::from(vec![3u8; 1 << 20]))).await.unwrap();
    }
    let body = Body::from_stream(receiver_stream(rx));
    let req = Request::builder()
        .method(Method::PATCH)
        .uri(&loc)
        .body(body)
        .unwrap();
    let app = f.app.clone();
    let request = tokio::spawn(async move { app.oneshot(req).await });
    eventually("the chunk's bytes reach the disk", || len(&data) >= 1 << 20).await;
    // The connection goes away: hyper drops the handler's future.
    request.abort();
    eventually("the dropped chunk is cut off", || len(&data) == 0).await;
    drop(tx);
    assert_eq!(f.get(&loc).await.header("range"), "0-0");
    let d = Digest::sha256_of(b"fresh");
    let r = f
        .call(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[],
            b"fresh".to_vec(),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

#[tokio::test]
async fn idle_sessions_older_than_the_age_are_purged_busy_and_young_ones_stay() {
    let f = fixture().await;
    let store = &f.registry.store;
    let old = start(&f, "a").await;
    let young = start(&f, "a").await;
    let busy = start(&f, "a").await;
    for loc in [&old, &young, &busy] {
        f.call(Method::PATCH, loc, &[], vec![5u8; 1000]).await;
    }
    let age = |loc: &str| {
        std::fs::File::options()
            .write(true)
            .open(data_file(f.dir.path(), loc))
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(25 * 3600))
            .unwrap();
    };
    age(&old);
    // `busy` has a request writing to it: a body that has not ended yet.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    let req = Request::builder()
        .method(Method::PATCH)
        .uri(&busy)
        .body(Body::from_stream(receiver_stream(rx)))
        .unwrap();
    let app = f.app.clone();
    let writing = tokio::spawn(async move { app.oneshot(req).await.unwrap().status() });
    // With room for one item, the second send returns once the handler took the first: it
    // holds the session from then on.
    tx.send(Ok(Bytes::from_static(b"x"))).await.unwrap();
    tx.send(Ok(Bytes::from_static(b"y"))).await.unwrap();
    // Idle for a day by its file, yet a request is in the middle of a chunk.
    age(&busy);
    let report = store
        .purge_uploads(Duration::from_secs(24 * 3600))
        .await
        .unwrap();
    assert_eq!((report.purged, report.kept_busy), (1, 1), "{report:?}");
    assert_eq!(report.bytes_freed, 1000);
    assert!(!data_file(f.dir.path(), &old).exists());
    assert_eq!(f.get(&old).await.code(), "BLOB_UPLOAD_UNKNOWN");
    assert_eq!(f.get(&young).await.header("range"), "0-999");
    drop(tx);
    assert_eq!(writing.await.unwrap(), StatusCode::ACCEPTED);
    assert_eq!(f.get(&busy).await.header("range"), "0-1001");
}

#[tokio::test]
async fn sessions_left_by_a_crash_are_purged_after_a_restart() {
    let f = fixture().await;
    let loc = start(&f, "a").await;
    f.call(Method::PATCH, &loc, &[], vec![9u8; 500]).await;
    let data = data_file(f.dir.path(), &loc);
    std::fs::File::options()
        .write(true)
        .open(&data)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    // A new process over the same folder knows nothing of the session but its files.
    let reopened = LocalStore::open(f.dir.path()).await.unwrap();
    let report = reopened
        .purge_uploads(Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!((report.purged, report.bytes_freed), (1, 500));
    assert!(!data.parent().unwrap().exists());
}

#[tokio::test]
async fn manifest_reads_by_a_malformed_reference_are_unknown_writes_invalid() {
    let f = fixture().await;
    for reference in ["-bad", "sha256:nothex", "a%20b"] {
        let uri = format!("/v2/m/manifests/{reference}");
        for method in [Method::GET, Method::HEAD] {
            let r = f.call(method.clone(), &uri, &[], vec![]).await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {uri}");
            if method == Method::GET {
                assert_eq!(r.code(), "MANIFEST_UNKNOWN", "{uri}");
            }
        }
        let r = f.call(Method::PUT, &uri, &[], b"{}".to_vec()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "PUT {uri}");
        assert!(
            ["MANIFEST_INVALID", "DIGEST_INVALID", "TAG_INVALID"].contains(&r.code().as_str()),
            "{}",
            r.code()
        );
    }
}

/// A 2 MiB tmpfs, unmounted on drop: a disk that fills up. `None` (the test skips) unless the
/// tests run as root; with `SHOAL_REQUIRE_PEERS=1` (CI runs as root) not being root fails.
struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount() -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(SmallDisk(dir));
        }
        if std::env::var("SHOAL_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("mounting a 2 MiB tmpfs needs root and SHOAL_REQUIRE_PEERS=1 is set");
        }
        eprintln!("skipping: mounting a 2 MiB tmpfs needs root");
        None
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_is_reported_as_such_and_pushes_work_again_after() {
    let Some(disk) = SmallDisk::mount() else {
        return;
    };
    let store = LocalStore::open(disk.0.path()).await.unwrap();
    let registry = std::sync::Arc::new(Registry::new(store));
    let f = Fixture {
        app: shoal_registry::router(registry.clone()),
        registry,
        dir: tempfile::tempdir().unwrap(),
    };
    let full = |r: &common::Resp| {
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::INSUFFICIENT_STORAGE, "UNKNOWN"),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        let message = r.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains("disk is full"), "{message}");
    };
    let big = vec![4u8; 3 << 20];
    let d = Digest::sha256_of(&big);
    // Monolithic.
    let r = f
        .call(
            Method::POST,
            &format!("/v2/a/blobs/uploads/?digest={d}"),
            &[],
            big.clone(),
        )
        .await;
    full(&r);
    // Chunked: the session keeps its last good offset and the chunk's bytes are freed.
    let loc = start(&f, "a").await;
    let r = f.call(Method::PATCH, &loc, &[], b"good".to_vec()).await;
    assert_eq!(r.header("range"), "0-3");
    let r = f.call(Method::PATCH, &loc, &[], big.clone()).await;
    full(&r);
    assert_eq!(f.get(&loc).await.header("range"), "0-3");
    assert_eq!(
        len(&f
            .registry
            .store
            .root()
            .join("uploads")
            .join(loc.rsplit('/').next().unwrap())
            .join("data")),
        4
    );
    // Nothing the failures wrote is left taking space: a blob that fits goes in, and the
    // session resumes.
    let fits = vec![6u8; 1 << 20];
    let fd = f.push_blob("a", &fits).await;
    assert_eq!(f.get(&format!("/v2/a/blobs/{fd}")).await.body, fits);
    let d = Digest::sha256_of(b"good end");
    let r = f
        .call(
            Method::PUT,
            &format!("{loc}?digest={d}"),
            &[],
            b" end".to_vec(),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

#[tokio::test]
async fn ambiguous_body_framing_is_refused() {
    let f = fixture().await;
    let loc = start(&f, "a").await;
    for headers in [
        &[("content-length", "3"), ("transfer-encoding", "chunked")][..],
        &[("transfer-encoding", "gzip, chunked")][..],
        &[
            ("transfer-encoding", "chunked"),
            ("transfer-encoding", "chunked"),
        ][..],
    ] {
        let r = f.call(Method::PATCH, &loc, headers, b"abc".to_vec()).await;
        assert_eq!(
            (r.status, r.code().as_str(), r.header("connection")),
            (StatusCode::BAD_REQUEST, "SIZE_INVALID", "close"),
            "{headers:?}"
        );
    }
    assert_eq!(f.get(&loc).await.header("range"), "0-0");
    let r = f
        .call(
            Method::PATCH,
            &loc,
            &[("transfer-encoding", "chunked")],
            b"abc".to_vec(),
        )
        .await;
    assert_eq!((r.status, r.header("range")), (StatusCode::ACCEPTED, "0-2"));
}
