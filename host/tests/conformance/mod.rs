//! The conformance suite every storage backend passes, as distribution/distribution has one
//! for its storage drivers: the same checks, through the native [`Backend`] trait, whatever
//! the plugin and the storage behind it.
//!
//! Two entry points:
//! - [`readable`] for every backend, read-only ones included (http, registry): the caller
//!   seeds blobs by its own means (a file on its server, a push to its registry) through a
//!   closure, and the suite reads them back: stat, whole and ranged downloads, not-found.
//! - [`writable`] for backends that store (fs, s3, gcs, ...): everything in `readable` (seeded
//!   through `upload`), plus overwrite, delete, listing with paging, names with odd
//!   characters, an empty blob, a streamed blob of at least 100 MiB checked by SHA-256, and
//!   concurrent uploads of one name.
//!
//! Backends under test use `name_path: identity` (names are object paths as given). Every run
//! works under a fresh prefix, so a shared bucket or folder holds no state that matters.
//! A failed check panics with the backend's name and the check's; nothing asserts time.

// Each test binary uses a different part of the suite.
#![allow(dead_code)]

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use shoal_host::plugin::{Backend, BackendError, ByteRange, ByteStream};

/// The namespace every call passes; identity-named backends ignore it, a registry backend
/// reads it as the repository.
pub const NAMESPACE: &str = "conformance/ns";
/// Chunk size of generated upload bodies, about what a client sends per read.
const CHUNK: usize = 1 << 20;
/// The smallest "big" blob the writable suite accepts: large enough that no backend can
/// hide a whole-blob buffer or a single-request shortcut (S3 multipart starts at 5 MiB).
pub const MIN_BIG_BLOB: u64 = 100 << 20;

/// What the writable suite needs to know about the backend under test.
#[derive(Clone, Copy, Debug)]
pub struct Writable {
    /// Size of the streamed blob, at least [`MIN_BIG_BLOB`].
    pub big_blob: u64,
    /// Size of each body in the concurrent-upload check; a backend with multipart uploads
    /// should get more than one part's worth, so that parts of different writers could mix.
    pub concurrent_blob: u64,
    /// How many uploads of one name run at once.
    pub writers: u32,
}

impl Default for Writable {
    fn default() -> Self {
        Writable {
            big_blob: MIN_BIG_BLOB,
            concurrent_blob: 3 << 20,
            writers: 4,
        }
    }
}

/// The read-only checks. `seed(content)` must store `content` in the backend's storage by
/// out-of-band means and return the name the backend knows it by; `missing` is a name that
/// the backend must answer not-found for (and that `seed` never returns).
pub async fn readable<F, Fut>(backend: &dyn Backend, missing: &str, mut seed: F)
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: Future<Output = String>,
{
    let who = backend.name().to_owned();
    let check = |what: &str| format!("conformance[{who}] readable: {what}");

    // Not found, as the WIT defines it: stat and download alike.
    let err = backend.stat(NAMESPACE, missing).await.err();
    assert!(
        matches!(err, Some(BackendError::NotFound { .. })),
        "{}: {err:?}",
        check("stat of a missing name is not-found")
    );
    let err = backend.download(NAMESPACE, missing, None).await.err();
    assert!(
        matches!(err, Some(BackendError::NotFound { .. })),
        "{}: {err:?}",
        check("download of a missing name is not-found")
    );

    // A small blob and one of several chunks, bytes that differ at every offset a bug
    // could confuse.
    let small = b"shoal conformance".to_vec();
    let medium = pattern((3 << 20) + 123);
    for content in [small, medium] {
        let name = seed(content.clone()).await;
        let len = content.len() as u64;
        let info = backend
            .stat(NAMESPACE, &name)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", check("stat of a seeded blob")));
        assert_eq!(info.size, len, "{}", check("stat reports the size"));
        let whole = download(backend, &name, None).await;
        assert!(whole == content, "{}", check("download returns the bytes"));
        check_ranges(backend, &name, &content, &check).await;
    }
}

async fn check_ranges(
    backend: &dyn Backend,
    name: &str,
    content: &[u8],
    check: &dyn Fn(&str) -> String,
) {
    let len = content.len() as u64;
    let ranges = [
        ("the start", 0, Some(10.min(len))),
        ("the middle", len / 3, Some(len / 3)),
        ("a suffix to the end", len - len / 4, None),
        ("a length past the end, cut at the end", len / 2, Some(len)),
        ("the last byte", len - 1, Some(1)),
    ];
    for (what, offset, length) in ranges {
        let range = ByteRange { offset, length };
        let got = backend
            .download(NAMESPACE, name, Some(range))
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", check(&format!("range at {what}"))));
        let end = length.map_or(len, |l| (offset + l).min(len));
        let want = &content[offset as usize..end as usize];
        if let Some(n) = got.length {
            assert_eq!(
                n,
                want.len() as u64,
                "{}",
                check(&format!("range at {what}: announced length"))
            );
        }
        let bytes = collect(got.body).await;
        assert!(
            bytes == want,
            "{}: got {} bytes, wanted {}",
            check(&format!("range at {what}")),
            bytes.len(),
            want.len()
        );
    }
    let past = ByteRange {
        offset: len + 1,
        length: None,
    };
    let err = backend.download(NAMESPACE, name, Some(past)).await.err();
    assert!(
        matches!(err, Some(BackendError::Invalid { .. })),
        "{}: {err:?}",
        check("a range starting past the end is invalid")
    );
}

/// Every check, for a backend that stores. Each group works under its own fresh prefix.
pub async fn writable(backend: &dyn Backend, options: Writable) {
    assert!(
        options.big_blob >= MIN_BIG_BLOB,
        "the streamed blob must be at least {MIN_BIG_BLOB} bytes"
    );
    let run = run_prefix();
    let who = backend.name().to_owned();

    let seeded = std::cell::Cell::new(0u32);
    let missing = format!("{run}read/missing");
    readable(backend, &missing, |content| {
        let n = seeded.get();
        seeded.set(n + 1);
        let name = format!("{run}read/blob-{n}");
        async move {
            upload(backend, &name, &content).await;
            name
        }
    })
    .await;
    eprintln!("conformance[{who}]: readable ok");

    missing_names(backend, &format!("{run}missing/")).await;
    eprintln!("conformance[{who}]: not-found ok");
    empty_blob(backend, &format!("{run}empty/")).await;
    eprintln!("conformance[{who}]: empty blob ok");
    overwrite(backend, &format!("{run}overwrite/")).await;
    eprintln!("conformance[{who}]: overwrite ok");
    delete(backend, &format!("{run}delete/")).await;
    eprintln!("conformance[{who}]: delete ok");
    odd_names(backend, &format!("{run}odd/")).await;
    eprintln!("conformance[{who}]: odd names ok");
    paging(backend, &format!("{run}page/")).await;
    eprintln!("conformance[{who}]: list paging ok");
    concurrent_uploads(backend, &format!("{run}race/"), options).await;
    eprintln!("conformance[{who}]: concurrent uploads ok");
    big_blob(backend, &format!("{run}big/"), options.big_blob).await;
    eprintln!("conformance[{who}]: streamed big blob ok");
}

async fn missing_names(backend: &dyn Backend, dir: &str) {
    let name = format!("{dir}never-written");
    let who = backend.name();
    for (op, err) in [
        ("stat", backend.stat(NAMESPACE, &name).await.err()),
        (
            "download",
            backend.download(NAMESPACE, &name, None).await.err(),
        ),
        ("delete", backend.delete(NAMESPACE, &name).await.err()),
    ] {
        match err {
            Some(BackendError::NotFound { plugin, .. }) => assert_eq!(plugin, who),
            other => panic!("conformance[{who}]: {op} of a missing name: {other:?}"),
        }
    }
    let page = backend
        .list(NAMESPACE, dir, None, 10)
        .await
        .unwrap_or_else(|e| panic!("conformance[{who}]: list of an empty prefix: {e}"));
    assert!(
        page.names.is_empty() && page.continuation.is_none(),
        "conformance[{who}]: list of an empty prefix: {page:?}"
    );
}

async fn empty_blob(backend: &dyn Backend, dir: &str) {
    let who = backend.name();
    let name = format!("{dir}zero");
    upload(backend, &name, b"").await;
    let size = backend.stat(NAMESPACE, &name).await.map(|i| i.size);
    assert_eq!(
        size.ok(),
        Some(0),
        "conformance[{who}]: stat of an empty blob"
    );
    assert!(
        download(backend, &name, None).await.is_empty(),
        "conformance[{who}]: download of an empty blob"
    );
}

async fn overwrite(backend: &dyn Backend, dir: &str) {
    let who = backend.name();
    let name = format!("{dir}blob");
    upload(backend, &name, &pattern(5000)).await;
    let second = b"shorter, and different".to_vec();
    upload(backend, &name, &second).await;
    let size = backend.stat(NAMESPACE, &name).await.map(|i| i.size).ok();
    assert_eq!(
        size,
        Some(second.len() as u64),
        "conformance[{who}]: stat after an overwrite"
    );
    assert!(
        download(backend, &name, None).await == second,
        "conformance[{who}]: download after an overwrite returns the second body"
    );
}

async fn delete(backend: &dyn Backend, dir: &str) {
    let who = backend.name();
    let gone = format!("{dir}gone");
    let kept = format!("{dir}kept");
    upload(backend, &gone, b"1").await;
    upload(backend, &kept, b"2").await;
    backend
        .delete(NAMESPACE, &gone)
        .await
        .unwrap_or_else(|e| panic!("conformance[{who}]: delete: {e}"));
    assert!(
        matches!(
            backend.stat(NAMESPACE, &gone).await,
            Err(BackendError::NotFound { .. })
        ),
        "conformance[{who}]: stat after delete"
    );
    assert!(
        matches!(
            backend.delete(NAMESPACE, &gone).await,
            Err(BackendError::NotFound { .. })
        ),
        "conformance[{who}]: a second delete is not-found"
    );
    assert_eq!(
        list_all(backend, dir, 100).await,
        std::slice::from_ref(&kept),
        "conformance[{who}]: list after delete"
    );
    assert!(
        download(backend, &kept, None).await == b"2",
        "conformance[{who}]: a delete leaves its neighbour alone"
    );
}

/// Names with characters that URL, path and XML encodings treat specially.
const ODD_NAMES: &[&str] = &[
    "with space",
    "plus+sign",
    "percent%20literal",
    "equals=sign&amp",
    "ünïcødé-名前-🐳",
    "mixed a+b%c=d ~ü",
    "nested/dir with space/x+y",
];

async fn odd_names(backend: &dyn Backend, dir: &str) {
    let who = backend.name();
    let mut all = Vec::new();
    for odd in ODD_NAMES {
        let name = format!("{dir}{odd}");
        let content = format!("content of {odd}").into_bytes();
        upload(backend, &name, &content).await;
        let size = backend.stat(NAMESPACE, &name).await.map(|i| i.size);
        assert_eq!(
            size.ok(),
            Some(content.len() as u64),
            "conformance[{who}]: stat of {name:?}"
        );
        assert!(
            download(backend, &name, None).await == content,
            "conformance[{who}]: download of {name:?}"
        );
        all.push(name);
    }
    all.sort();
    assert_eq!(
        list_all(backend, dir, 1000).await,
        all,
        "conformance[{who}]: list gives odd names back unchanged"
    );
    // A prefix with odd characters selects exactly its names.
    let spaced = format!("{dir}with ");
    assert_eq!(
        list_all(backend, &spaced, 1000).await,
        [format!("{dir}with space")],
        "conformance[{who}]: list by a prefix with a space"
    );
    for name in &all {
        backend
            .delete(NAMESPACE, name)
            .await
            .unwrap_or_else(|e| panic!("conformance[{who}]: delete of {name:?}: {e}"));
    }
    assert!(
        list_all(backend, dir, 1000).await.is_empty(),
        "conformance[{who}]: every odd name was deleted"
    );
}

async fn paging(backend: &dyn Backend, dir: &str) {
    let who = backend.name();
    let mut names: Vec<String> = (0..7).map(|i| format!("{dir}item-{i}")).collect();
    for name in &names {
        upload(backend, name, name.as_bytes()).await;
    }
    // A neighbour whose name shares the prefix's text but not its folder.
    let outside = format!("{}-outside", dir.trim_end_matches('/'));
    upload(backend, &outside, b"x").await;
    names.sort();

    let limit = 3;
    let mut seen = Vec::new();
    let mut continuation = None;
    let mut pages = 0;
    loop {
        let page = backend
            .list(NAMESPACE, dir, continuation, limit)
            .await
            .unwrap_or_else(|e| panic!("conformance[{who}]: list page {pages}: {e}"));
        pages += 1;
        assert!(
            page.names.len() <= limit as usize,
            "conformance[{who}]: a page holds at most `limit` names: {:?}",
            page.names
        );
        seen.extend(page.names);
        continuation = page.continuation;
        if continuation.is_none() {
            break;
        }
        assert!(pages < 100, "conformance[{who}]: list never ends");
    }
    assert!(
        pages >= 3,
        "conformance[{who}]: 7 names with limit 3 came in {pages} page(s)"
    );
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(
        sorted.len(),
        seen.len(),
        "conformance[{who}]: paging repeated a name: {seen:?}"
    );
    assert_eq!(
        sorted, names,
        "conformance[{who}]: paging saw every name once"
    );
    assert!(
        !seen.contains(&outside),
        "conformance[{who}]: the prefix is a folder here, and {outside:?} is outside it"
    );
}

async fn concurrent_uploads(backend: &dyn Backend, dir: &str, options: Writable) {
    let who = backend.name();
    let name = format!("{dir}contested");
    let size = options.concurrent_blob;
    let seeds: Vec<u64> = (0..u64::from(options.writers))
        .map(|w| 0xC0FFEE + w)
        .collect();
    let expected: Vec<[u8; 32]> = seeds.iter().map(|&s| generated_sha256(s, size)).collect();
    let uploads = seeds
        .iter()
        .map(|&seed| backend.upload(NAMESPACE, &name, size, generated(seed, size)));
    let results = futures_util::future::join_all(uploads).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(
        ok >= 1,
        "conformance[{who}]: every concurrent upload failed: {results:?}"
    );
    let got = backend
        .download(NAMESPACE, &name, None)
        .await
        .unwrap_or_else(|e| panic!("conformance[{who}]: download after the race: {e}"));
    let (len, digest) = sha256_stream(got.body).await;
    assert_eq!(len, size, "conformance[{who}]: length after the race");
    let winner = expected.iter().position(|d| *d == digest);
    assert!(
        winner.is_some_and(|w| results[w].is_ok()),
        "conformance[{who}]: after {} concurrent uploads the blob is none of the bodies \
         that were stored whole (a mix of writers?)",
        options.writers
    );
}

async fn big_blob(backend: &dyn Backend, dir: &str, size: u64) {
    let who = backend.name();
    let name = format!("{dir}streamed");
    let seed = 0x5EED;
    let want = generated_sha256(seed, size);
    backend
        .upload(NAMESPACE, &name, size, generated(seed, size))
        .await
        .unwrap_or_else(|e| panic!("conformance[{who}]: upload of {size} bytes: {e}"));
    let info = backend.stat(NAMESPACE, &name).await;
    assert_eq!(
        info.ok().map(|i| i.size),
        Some(size),
        "conformance[{who}]: stat of the big blob"
    );
    let got = backend
        .download(NAMESPACE, &name, None)
        .await
        .unwrap_or_else(|e| panic!("conformance[{who}]: download of {size} bytes: {e}"));
    let (len, digest) = sha256_stream(got.body).await;
    assert_eq!(len, size, "conformance[{who}]: length of the big blob");
    assert!(
        digest == want,
        "conformance[{who}]: the big blob came back with other bytes"
    );
    // A range across any 1, 5, 8, 16, 32 or 64 MiB boundary: parts or chunks must join up.
    let boundary = 32u64 << 20;
    let range = ByteRange {
        offset: boundary - 100,
        length: Some(200),
    };
    let part = backend
        .download(NAMESPACE, &name, Some(range))
        .await
        .unwrap_or_else(|e| panic!("conformance[{who}]: range of the big blob: {e}"));
    assert!(
        collect(part.body).await == generate(seed, boundary - 100, boundary + 100),
        "conformance[{who}]: a range across a 32 MiB boundary"
    );
    backend
        .delete(NAMESPACE, &name)
        .await
        .unwrap_or_else(|e| panic!("conformance[{who}]: delete of the big blob: {e}"));
}

/// A fresh top folder for one run.
fn run_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("conformance-{nanos:x}/")
}

/// Uploads `content` in 64 KiB chunks, panicking with the backend's error.
pub async fn upload(backend: &dyn Backend, name: &str, content: &[u8]) {
    let parts: Vec<std::io::Result<Bytes>> = content
        .chunks(64 << 10)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let body: ByteStream = Box::pin(futures_util::stream::iter(parts));
    backend
        .upload(NAMESPACE, name, content.len() as u64, body)
        .await
        .unwrap_or_else(|e| panic!("conformance[{}]: upload of {name:?}: {e}", backend.name()));
}

/// A whole (small) blob.
pub async fn download(backend: &dyn Backend, name: &str, range: Option<ByteRange>) -> Vec<u8> {
    let got = backend
        .download(NAMESPACE, name, range)
        .await
        .unwrap_or_else(|e| panic!("conformance[{}]: download of {name:?}: {e}", backend.name()));
    collect(got.body).await
}

/// Every name under `prefix`, page by page.
pub async fn list_all(backend: &dyn Backend, prefix: &str, limit: u32) -> Vec<String> {
    let mut names = Vec::new();
    let mut continuation = None;
    for _ in 0..10_000 {
        let page = backend
            .list(NAMESPACE, prefix, continuation, limit)
            .await
            .unwrap_or_else(|e| panic!("conformance[{}]: list: {e}", backend.name()));
        names.extend(page.names);
        continuation = page.continuation;
        if continuation.is_none() {
            break;
        }
    }
    names.sort();
    names
}

async fn collect(mut body: ByteStream) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("a body chunk"));
    }
    out
}

async fn sha256_stream(mut body: ByteStream) -> (u64, [u8; 32]) {
    let mut hasher = Sha256::new();
    let mut len = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("a body chunk");
        len += chunk.len() as u64;
        hasher.update(&chunk);
    }
    (len, hasher.finalize().into())
}

/// `len` bytes that differ at every offset a bug could confuse.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// SplitMix64: a counter-based generator, so any byte of a generated blob can be computed
/// on its own (ranges are checked without keeping the blob).
fn splitmix(seed: u64, block: u64) -> u64 {
    let mut z = seed ^ block.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Bytes `start..end` of the blob generated from `seed`.
pub fn generate(seed: u64, start: u64, end: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity((end - start) as usize);
    let mut pos = start;
    while pos < end {
        let word = splitmix(seed, pos / 8).to_le_bytes();
        let from = (pos % 8) as usize;
        let take = (8 - from).min((end - pos) as usize);
        out.extend_from_slice(&word[from..from + take]);
        pos += take as u64;
    }
    out
}

/// The generated blob as an upload body, made chunk by chunk as it is read.
pub fn generated(seed: u64, size: u64) -> ByteStream {
    Box::pin(futures_util::stream::unfold(0u64, move |pos| async move {
        if pos >= size {
            return None;
        }
        let end = (pos + CHUNK as u64).min(size);
        Some((Ok(Bytes::from(generate(seed, pos, end))), end))
    }))
}

/// SHA-256 of the generated blob, computed chunk by chunk.
pub fn generated_sha256(seed: u64, size: u64) -> [u8; 32] {
    let mut hasher = Sha256::new();
    let mut pos = 0;
    while pos < size {
        let end = (pos + CHUNK as u64).min(size);
        hasher.update(generate(seed, pos, end));
        pos = end;
    }
    hasher.finalize().into()
}
