//! Store behaviour that the HTTP surface cannot show directly: crash and restart safety, and
//! rollback of a chunk whose body fails half way.

use bytes::Bytes;
use shoal_registry::store::ChunkRange;
use shoal_registry::{Digest, LocalStore, RepoName};

fn repo(s: &str) -> RepoName {
    s.parse().unwrap()
}

type Chunk = Result<Bytes, std::io::Error>;

fn ok_stream(parts: &[&'static [u8]]) -> impl futures_util::Stream<Item = Chunk> + Unpin {
    futures_util::stream::iter(
        parts
            .iter()
            .map(|p| Ok(Bytes::from_static(p)))
            .collect::<Vec<_>>(),
    )
}

#[tokio::test]
async fn upload_in_progress_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let r = repo("a/b");
    let id = {
        let store = LocalStore::open(dir.path()).await.unwrap();
        let s = store.start_upload(&r).await.unwrap();
        store
            .append_upload(&r, &s.id.to_string(), None, ok_stream(&[b"hello "]))
            .await
            .unwrap();
        s.id.to_string()
    };
    let store = LocalStore::open(dir.path()).await.unwrap();
    assert_eq!(store.upload_status(&r, &id).await.unwrap().offset, 6);
    let d = Digest::sha256_of(b"hello world");
    store
        .finish_upload(
            &r,
            &id,
            &d,
            Some(ChunkRange { start: 6, len: 5 }),
            ok_stream(&[b"world"]),
        )
        .await
        .unwrap();
    assert!(store.repo_has_blob(&r, &d).await.unwrap());
}

#[tokio::test]
async fn a_failed_chunk_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).await.unwrap();
    let r = repo("x");
    let s = store.start_upload(&r).await.unwrap();
    let id = s.id.to_string();
    store
        .append_upload(&r, &id, None, ok_stream(&[b"abc"]))
        .await
        .unwrap();
    let failing = futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(std::io::Error::other("client went away")),
    ]);
    assert!(store.append_upload(&r, &id, None, failing).await.is_err());
    assert_eq!(store.upload_status(&r, &id).await.unwrap().offset, 3);
    let d = Digest::sha256_of(b"abcdef");
    store
        .finish_upload(&r, &id, &d, None, ok_stream(&[b"def"]))
        .await
        .unwrap();
    assert!(store.repo_has_blob(&r, &d).await.unwrap());
}

#[tokio::test]
async fn an_interrupted_monolithic_upload_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).await.unwrap();
    let r = repo("x");
    let d = Digest::sha256_of(b"full content");
    let failing = futures_util::stream::iter(vec![
        Ok(Bytes::from_static(b"full ")),
        Err(std::io::Error::other("reset")),
    ]);
    assert!(store.put_blob(&r, &d, failing).await.is_err());
    assert_eq!(store.blob_size(&d).await.unwrap(), None);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn leftover_scratch_files_are_cleared_on_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(LocalStore::open(dir.path()).await.unwrap());
    std::fs::write(dir.path().join("tmp/half-written"), b"partial").unwrap();
    drop(LocalStore::open(dir.path()).await.unwrap());
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}
