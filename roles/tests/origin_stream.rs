//! An origin's GET of a blob it does not hold yet: one fetch from the backend, shared by every
//! GET and by the metainfo requests, streamed to the GETs while it lands; a blob that fails its
//! digest cuts their bodies short and is not kept.

mod common;

use std::time::Duration;

use common::{Cluster, Spec, digest_of, noise, poll_until};

const NS: &str = "team/app";

fn single_origin() -> Spec {
    Spec {
        origins: 1,
        agents: 0,
        max_replica: 1,
        ..Spec::default()
    }
}

fn blob_url(cluster: &Cluster, digest: &str, tail: &str) -> String {
    let path = format!(
        "/namespace/{}/blobs/{digest}{tail}",
        shoal_roles::http::segment(NS)
    );
    cluster.url(cluster.origins[0].http, &path)
}

/// `method` of the origin's blob URL (`tail` after the digest), sent.
async fn call(
    cluster: &Cluster,
    method: reqwest::Method,
    digest: &str,
    tail: &str,
) -> reqwest::Response {
    cluster
        .http
        .request(method, blob_url(cluster, digest, tail))
        .send()
        .await
        .expect("the origin answers")
}

async fn get(cluster: &Cluster, digest: &str, tail: &str) -> reqwest::Response {
    call(cluster, reqwest::Method::GET, digest, tail).await
}

/// Reads `resp`'s body to its end: the bytes, and whether it ended cleanly.
async fn drain(mut resp: reqwest::Response, mut got: Vec<u8>) -> (Vec<u8>, bool) {
    loop {
        match resp.chunk().await {
            Ok(Some(c)) => got.extend_from_slice(&c),
            Ok(None) => return (got, true),
            Err(_) => return (got, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_get_streams_the_one_backend_fetch_while_it_lands() {
    let cluster = Cluster::start(single_origin()).await;
    let blob = noise(3 << 20, 41);
    let digest = digest_of(&blob);
    cluster
        .backend
        .insert(NS, digest.strip_prefix("sha256:").unwrap(), blob.clone());
    let before = cluster.backend.downloads();
    // The backend sends 64 KiB and then waits for the test.
    cluster.flaky.hold_downloads(true);

    let mut first = get(&cluster, &digest, "").await;
    assert_eq!(first.status().as_u16(), 200);
    assert_eq!(first.content_length(), Some(blob.len() as u64));
    // Bytes arrive while the fetch is held: streamed, not stored first.
    let head = first.chunk().await.unwrap().expect("a first chunk");
    assert!(!head.is_empty() && head.len() < blob.len());
    assert_eq!(&blob[..head.len()], &head[..]);
    // Meanwhile: the metainfo is still being fetched, and a second GET joins the same fetch.
    let meta = get(&cluster, &digest, "/metainfo").await;
    assert_eq!(meta.status().as_u16(), 202);
    let second = get(&cluster, &digest, "").await;
    assert_eq!(second.status().as_u16(), 200);
    assert_eq!(cluster.backend.downloads() - before, 1);

    cluster.flaky.hold_downloads(false);
    let (a, b) = tokio::join!(drain(first, head.to_vec()), drain(second, Vec::new()));
    assert_eq!(a, (blob.clone(), true));
    assert_eq!(b, (blob.clone(), true));
    // Now held: the metainfo is served, and still from that one fetch.
    let served = poll_until(Duration::from_secs(30), || async {
        let r = get(&cluster, &digest, "/metainfo").await;
        r.status().as_u16() == 200
    })
    .await;
    assert!(served, "the origin holds the blob after the fetch");
    assert_eq!(cluster.backend.downloads() - before, 1);
}

/// A metainfo request with `?wait_ms=` (what the tracker passes on from an agent polling a
/// cold blob) is held while the fetch runs: 202 when its wait passes first, the metainfo as
/// soon as the fetch ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metainfo_request_waits_for_the_running_fetch() {
    let cluster = Cluster::start(single_origin()).await;
    let origin = &cluster.origins[0];
    let HeldFetch {
        blob,
        digest,
        first,
        head,
    } = held_fetch(&cluster, 43).await;

    // Held while the fetch is: the wait passes, 202.
    let request = held(&cluster, &digest);
    assert!(held_at(&cluster, 1).await, "the request was not held");
    let (status, _) = request.await.unwrap();
    assert_eq!(status, 202);
    assert!(held_at(&cluster, 0).await);

    // Held, then the fetch ends: the metainfo, at once.
    let request = held(&cluster, &digest);
    assert!(held_at(&cluster, 1).await, "the request was not held");
    cluster.flaky.hold_downloads(false);
    let (status, body) = request.await.unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let m = shoal_p2p::Metainfo::decode(&body).unwrap();
    assert_eq!(m.digest().to_string(), digest);
    assert_eq!(drain(first, head.to_vec()).await, (blob, true));
    assert_eq!(cluster.metric(origin, WAITING).await, Some(0));
}

/// At most `MAX_HELD_METAINFO` requests are held at once: one more is answered at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_metainfo_requests_are_capped() {
    let cluster = Cluster::start(single_origin()).await;
    let HeldFetch {
        blob,
        digest,
        first,
        head,
    } = held_fetch(&cluster, 44).await;
    let cap = shoal_roles::origin::MAX_HELD_METAINFO;
    let requests: Vec<_> = (0..cap).map(|_| held(&cluster, &digest)).collect();
    assert!(
        held_at(&cluster, cap as u64).await,
        "the requests were not held"
    );
    // One more is not held: 202 while the others still wait.
    let more = get(&cluster, &digest, "/metainfo?wait_ms=2000").await;
    assert_eq!(more.status().as_u16(), 202);
    assert_eq!(
        cluster.metric(&cluster.origins[0], WAITING).await,
        Some(cap as u64)
    );
    cluster.flaky.hold_downloads(false);
    for r in requests {
        let (status, _) = r.await.unwrap();
        assert!(status == 200 || status == 202, "{status}");
    }
    assert_eq!(drain(first, head.to_vec()).await, (blob, true));
    assert!(held_at(&cluster, 0).await);
}

const WAITING: &str = "shoal_origin_metainfo_waiting";

/// A fetch the backend holds after its first 64 KiB, started by a GET.
struct HeldFetch {
    blob: Vec<u8>,
    digest: String,
    /// The GET, its first chunk read.
    first: reqwest::Response,
    head: bytes::Bytes,
}

async fn held_fetch(cluster: &Cluster, seed: u8) -> HeldFetch {
    let blob = noise(1 << 20, seed);
    let digest = digest_of(&blob);
    cluster
        .backend
        .insert(NS, digest.strip_prefix("sha256:").unwrap(), blob.clone());
    cluster.flaky.hold_downloads(true);
    let mut first = get(cluster, &digest, "").await;
    let head = first.chunk().await.unwrap().expect("a first chunk");
    HeldFetch {
        blob,
        digest,
        first,
        head,
    }
}

/// A metainfo request asking to be held (the most an origin holds one), sent.
fn held(cluster: &Cluster, digest: &str) -> tokio::task::JoinHandle<(u16, bytes::Bytes)> {
    let (http, url) = (cluster.http.clone(), blob_url(cluster, digest, "/metainfo"));
    tokio::spawn(async move {
        let r = http
            .get(format!("{url}?wait_ms=2000"))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.bytes().await.unwrap())
    })
}

/// Whether the origin's count of held metainfo requests reaches `n` (polled).
async fn held_at(cluster: &Cluster, n: u64) -> bool {
    poll_until(Duration::from_secs(30), || async {
        cluster.metric(&cluster.origins[0], WAITING).await == Some(n)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_get_of_a_corrupt_blob_is_cut_short_and_nothing_is_kept() {
    let cluster = Cluster::start(single_origin()).await;
    let blob = noise(1 << 20, 42);
    // Stored under a digest it does not have.
    let digest = digest_of(b"what the backend should have held");
    cluster
        .backend
        .insert(NS, digest.strip_prefix("sha256:").unwrap(), blob.clone());
    let resp = get(&cluster, &digest, "").await;
    // The fetch of 1 MiB may fail before this GET joins it: then it is told so (502) at once.
    match resp.status().as_u16() {
        200 => {
            let (got, clean) = drain(resp, Vec::new()).await;
            assert!(!clean, "the body ends in an error");
            assert!(got.len() < blob.len(), "never the whole blob");
        }
        status => assert_eq!(status, 502, "{:?}", resp.text().await),
    }
    // The failure is remembered for a few seconds and answered as such; nothing is stored.
    let r = get(&cluster, &digest, "").await;
    assert_eq!(r.status().as_u16(), 502, "{:?}", r.text().await);
    let r = call(&cluster, reqwest::Method::HEAD, &digest, "?local=true").await;
    assert_eq!(r.status().as_u16(), 404, "nothing kept");
}

fn length_header(r: &reqwest::Response) -> Option<u64> {
    r.headers()
        .get(reqwest::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// A `HEAD` of a blob the origin does not hold asks the backend's `stat`, downloading nothing;
/// `?local=true` (what a ring member asks before copying a blob to another) asks only the
/// piece store, as on Kraken's origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_asks_the_backend_without_downloading_and_local_asks_only_the_store() {
    let cluster = Cluster::start(single_origin()).await;
    let blob = noise(1 << 20, 43);
    let digest = digest_of(&blob);
    cluster
        .backend
        .insert(NS, digest.strip_prefix("sha256:").unwrap(), blob.clone());
    let before = cluster.backend.downloads();

    let r = call(&cluster, reqwest::Method::HEAD, &digest, "").await;
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(length_header(&r), Some(blob.len() as u64));
    let r = call(&cluster, reqwest::Method::HEAD, &digest, "?local=true").await;
    assert_eq!(r.status().as_u16(), 404, "not in the piece store yet");
    assert_eq!(
        cluster.backend.downloads(),
        before,
        "a HEAD downloads nothing"
    );
    let unknown = digest_of(b"in no backend");
    let r = call(&cluster, reqwest::Method::HEAD, &unknown, "").await;
    assert_eq!(r.status().as_u16(), 404);

    // Once fetched, the piece store answers, with or without `local`.
    let (got, clean) = drain(get(&cluster, &digest, "").await, Vec::new()).await;
    assert!(clean && got == blob);
    assert!(
        poll_until(Duration::from_secs(30), || async {
            let r = call(&cluster, reqwest::Method::HEAD, &digest, "?local=true").await;
            r.status().as_u16() == 200 && length_header(&r) == Some(blob.len() as u64)
        })
        .await,
        "the fetched blob never showed in the piece store"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_of_a_blob_no_backend_holds_is_404() {
    let cluster = Cluster::start(single_origin()).await;
    let digest = digest_of(b"nobody has this");
    let r = get(&cluster, &digest, "").await;
    assert_eq!(r.status().as_u16(), 404);
}

/// An agent's first pull of a blob no origin holds: the origin seeds the pieces it has written
/// while it fetches the rest, so the agent's client gets bytes before the backend sent the
/// whole blob, and the whole verified blob after, from the one backend fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_streams_a_blob_its_origin_is_still_fetching() {
    let cluster = Cluster::start(Spec {
        origins: 1,
        agents: 1,
        max_replica: 1,
        ..Spec::default()
    })
    .await;
    // Pieces of 1 MiB (the cluster's `metainfogen`); the backend stops after three and a bit.
    let piece = 1usize << 20;
    let blob = noise(6 * piece + 12_345, 45);
    let digest = digest_of(&blob);
    cluster
        .backend
        .insert(NS, digest.strip_prefix("sha256:").unwrap(), blob.clone());
    let before = cluster.backend.downloads();
    cluster
        .flaky
        .hold_downloads_after(3 * piece as u64 + 1000, true);

    let url = cluster.url(cluster.agents[0].http, &format!("/v2/{NS}/blobs/{digest}"));
    let mut resp = cluster.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    // Three pieces reach the client while the backend holds the rest.
    let mut got = Vec::new();
    while got.len() < 3 * piece {
        let chunk = tokio::time::timeout(Duration::from_secs(30), resp.chunk())
            .await
            .expect("the pieces the origin had fetched did not reach the agent's client")
            .unwrap()
            .expect("the body ended early");
        got.extend_from_slice(&chunk);
    }
    assert_eq!(&got[..], &blob[..got.len()]);
    assert!(got.len() < blob.len());
    // The origin still fetches: it hands out the hashes it knows, not the whole metainfo.
    let meta = get(&cluster, &digest, "/metainfo").await;
    assert_eq!(meta.status().as_u16(), 200);
    let m = shoal_p2p::Metainfo::decode(&meta.bytes().await.unwrap()).unwrap();
    assert!(!m.is_complete() && m.known() >= 3, "{} known", m.known());
    // Asking for more than that is held until there are more (what agents ask the tracker).
    let more = {
        let url = blob_url(&cluster, &digest, "/metainfo");
        let url = format!("{url}?wait_ms=2000&known={}", m.known());
        let http = cluster.http.clone();
        tokio::spawn(async move {
            let r = http.get(url).send().await.unwrap();
            (r.status().as_u16(), r.bytes().await.unwrap())
        })
    };
    assert!(
        held_at(&cluster, 1).await,
        "the ask for more hashes was not held"
    );

    cluster.flaky.hold_downloads(false);
    let (status, body) = more.await.unwrap();
    assert_eq!(status, 200);
    let longer = shoal_p2p::Metainfo::decode(&body).unwrap();
    assert!(longer.known() > m.known() && longer.agrees_with(&m));
    assert_eq!(drain(resp, got).await, (blob.clone(), true));
    assert_eq!(cluster.backend.downloads() - before, 1);
}
