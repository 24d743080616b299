//! The preload route driven with `oneshot` over a registry whose store holds the images (no
//! backing, no sockets): what it refuses and with which code, how it reads an index, and what
//! its stream says. Fetching over P2P is `roles/tests/preload.rs`.

use axum::http::Request;
use futures_util::stream;
use serde_json::Value;
use shoal_registry::LocalStore;
use tower::ServiceExt;

use super::*;

const AMD64: &str = r#"{"architecture":"amd64","os":"linux"}"#;
const ARM64: &str = r#"{"architecture":"arm64","os":"linux","variant":"v8"}"#;

fn repo(name: &str) -> RepoName {
    name.parse().unwrap()
}

struct Fixture {
    _dir: tempfile::TempDir,
    registry: Arc<Registry>,
    preloader: Preloader,
    _pieces_dir: tempfile::TempDir,
}

async fn fixture(mirrors: Mirrors) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pieces_dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).await.unwrap();
    let registry = Arc::new(Registry::new(store));
    let pieces = PieceStore::open(pieces_dir.path(), &Default::default()).unwrap();
    let preloader = Preloader::new(registry.clone(), pieces, mirrors, Tasks::new());
    Fixture {
        _dir: dir,
        registry,
        preloader,
        _pieces_dir: pieces_dir,
    }
}

async fn put_blob(reg: &Registry, repo: &RepoName, bytes: &[u8]) -> (Digest, u64) {
    let d = Digest::sha256_of(bytes);
    let body = stream::iter([Ok::<_, std::io::Error>(Bytes::copy_from_slice(bytes))]);
    reg.store.put_blob(repo, &d, body).await.unwrap();
    (d, bytes.len() as u64)
}

async fn put_manifest(reg: &Registry, repo: &RepoName, tag: Option<&str>, json: String) -> Digest {
    let bytes = Bytes::from(json);
    let m = Manifest::parse(&bytes, None).unwrap();
    let reference = match tag {
        Some(t) => Reference::Tag(t.parse().unwrap()),
        None => Reference::Digest(Digest::sha256_of(&bytes)),
    };
    reg.store
        .put_manifest(repo, &reference, bytes, &m)
        .await
        .unwrap()
}

fn desc(media: &str, (d, size): &(Digest, u64)) -> String {
    format!(r#"{{"mediaType":"{media}","digest":"{d}","size":{size}}}"#)
}

/// An image of `config` and `layers` in `repo`, tagged `tag` when given.
async fn image(
    reg: &Registry,
    repo: &RepoName,
    tag: Option<&str>,
    config: &[u8],
    layers: &[&[u8]],
) -> (Digest, u64) {
    let config = put_blob(reg, repo, config).await;
    let mut descs = Vec::new();
    for l in layers {
        let l = put_blob(reg, repo, l).await;
        descs.push(desc("application/vnd.oci.image.layer.v1.tar+gzip", &l));
    }
    let json = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{},"layers":[{}]}}"#,
        desc("application/vnd.oci.image.config.v1+json", &config),
        descs.join(",")
    );
    let len = json.len() as u64;
    (put_manifest(reg, repo, tag, json).await, len)
}

/// An index of an amd64 and an arm64/v8 image that share their first layer, tagged `multi`.
async fn multi_platform(reg: &Registry, repo: &RepoName) -> Digest {
    let amd = image(reg, repo, None, AMD64.as_bytes(), &[b"shared", b"amd"]).await;
    let arm = image(reg, repo, None, ARM64.as_bytes(), &[b"shared", b"arm"]).await;
    let entry = |(d, size): &(Digest, u64), platform: &str| {
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{d}","size":{size},"platform":{platform}}}"#
        )
    };
    let json = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{},{}]}}"#,
        entry(&amd, AMD64),
        entry(&arm, ARM64)
    );
    put_manifest(reg, repo, Some("multi"), json).await
}

async fn post(p: &Preloader, body: impl Into<Body>) -> (StatusCode, Vec<u8>) {
    let req = Request::post(PATH).body(body.into()).unwrap();
    let resp = p.router().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

/// The OCI error code of an error body.
fn code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
    v["errors"][0]["code"].as_str().unwrap().to_owned()
}

fn events(body: &[u8]) -> Vec<PreloadEvent> {
    std::str::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn json(image: &str) -> String {
    serde_json::to_string(&PreloadRequest {
        image: image.to_owned(),
        platform: None,
    })
    .unwrap()
}

#[tokio::test]
async fn bad_requests_are_400s_that_name_what_is_wrong() {
    let f = fixture(Mirrors::all()).await;
    for (body, want, says) in [
        ("not json".to_owned(), "NAME_INVALID", "REPOSITORY:TAG"),
        (r#"{"img":"a:b"}"#.to_owned(), "NAME_INVALID", "img"),
        (json("Team/App:v1"), "NAME_INVALID", "Team/App"),
        (json("team/app:-x"), "MANIFEST_INVALID", "-x"),
        (json("team/app@sha256:abc"), "DIGEST_INVALID", "abc"),
        (
            r#"{"image":"team/app:v1","platform":"linux"}"#.to_owned(),
            "MANIFEST_INVALID",
            "os/architecture",
        ),
        (
            format!(r#"{{"image":"{}"}}"#, "a".repeat(9000)),
            "SIZE_INVALID",
            "8192",
        ),
    ] {
        let (status, resp) = post(&f.preloader, body.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:.80}");
        assert_eq!(code(&resp), want, "{body:.80}");
        let text = String::from_utf8_lossy(&resp);
        assert!(text.contains(says), "{body:.80}: {text}");
    }
    let scrape = scrape(&f.preloader);
    assert!(
        scrape.contains(r#"shoal_agent_preloads_total{result="refused"} 7"#),
        "{scrape}"
    );
}

fn scrape(p: &Preloader) -> String {
    let mut out = Exposition::new();
    p.collect(&mut out);
    out.finish()
}

#[tokio::test]
async fn an_unknown_image_is_a_404() {
    let f = fixture(Mirrors::all()).await;
    let (status, resp) = post(&f.preloader, json("team/app:v1")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&resp), "MANIFEST_UNKNOWN");
}

#[tokio::test]
async fn an_image_streams_each_blob_and_ends_done() {
    let f = fixture(Mirrors::all()).await;
    let app = repo("team/app");
    let (top, _) = image(
        &f.registry,
        &app,
        Some("v1"),
        b"{}",
        &[b"one", b"two", b"three"],
    )
    .await;
    let (status, body) = post(&f.preloader, json("team/app:v1")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let events = events(&body);
    assert_eq!(
        events[0],
        PreloadEvent::Resolved {
            repository: app.clone(),
            digest: top.clone(),
            manifests: 1,
            blobs: 4,
            total: 2 + 3 + 3 + 5,
        }
    );
    let blobs: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            PreloadEvent::Blob { done, fetched, .. } => Some((*done, *fetched)),
            _ => None,
        })
        .collect();
    assert_eq!(blobs, [(1, false), (2, false), (3, false), (4, false)]);
    assert_eq!(
        events.last(),
        Some(&PreloadEvent::Done {
            total: 13,
            blobs: 4,
            fetched: 0
        })
    );
    // By digest too, and with a mirrored host's name.
    let (status, body) = post(&f.preloader, json(&format!("team/app@{top}"))).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let f2 = fixture(Mirrors::only([("registry.local:5000", "")]).unwrap()).await;
    image(&f2.registry, &app, Some("v1"), b"{}", &[b"one"]).await;
    let (status, _) = post(&f2.preloader, json("registry.local:5000/team/app:v1")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, resp) = post(&f2.preloader, json("ghcr.io/team/app:v1")).await;
    assert_eq!(
        (status, code(&resp).as_str()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
    );
    let scrape = scrape(&f.preloader);
    assert!(
        scrape.contains(r#"shoal_agent_preloads_total{result="done"} 2"#),
        "{scrape}"
    );
}

#[tokio::test]
async fn an_index_covers_every_platform_or_the_one_asked_for() {
    let f = fixture(Mirrors::all()).await;
    let app = repo("team/multi");
    let index = multi_platform(&f.registry, &app).await;
    let resolved = |body: &[u8]| events(body).into_iter().next().unwrap();

    let (status, body) = post(&f.preloader, json("team/multi:multi")).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    // Two configs, the shared layer once, and one layer of each.
    let PreloadEvent::Resolved {
        digest,
        manifests,
        blobs,
        ..
    } = resolved(&body)
    else {
        panic!("not resolved first")
    };
    assert_eq!((digest, manifests, blobs), (index.clone(), 3, 5));

    let only_arm = r#"{"image":"team/multi:multi","platform":"linux/arm64"}"#;
    let (status, body) = post(&f.preloader, only_arm).await;
    assert_eq!(status, StatusCode::OK);
    let PreloadEvent::Resolved {
        manifests, blobs, ..
    } = resolved(&body)
    else {
        panic!("not resolved first")
    };
    assert_eq!((manifests, blobs), (2, 3));

    let s390x = r#"{"image":"team/multi:multi","platform":"linux/s390x"}"#;
    let (status, body) = post(&f.preloader, s390x).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("linux/amd64, linux/arm64/v8"), "{text}");
}

#[tokio::test]
async fn a_blob_that_cannot_be_had_ends_the_stream_with_an_error_naming_it() {
    let f = fixture(Mirrors::all()).await;
    let app = repo("team/app");
    image(&f.registry, &app, Some("v1"), b"{}", &[b"gone"]).await;
    let gone = Digest::sha256_of(b"gone");
    f.registry.store.delete_blob(&app, &gone).await.unwrap();
    let (status, body) = post(&f.preloader, json("team/app:v1")).await;
    assert_eq!(status, StatusCode::OK);
    match events(&body).last() {
        Some(PreloadEvent::Error { error, blobs, .. }) => {
            assert!(error.contains(&gone.to_string()), "{error}");
            assert_eq!(*blobs, 2);
        }
        other => panic!("the stream ended with {other:?}"),
    }
    let scrape = scrape(&f.preloader);
    assert!(
        scrape.contains(r#"shoal_agent_preloads_total{result="failed"} 1"#),
        "{scrape}"
    );
}

#[tokio::test]
async fn past_the_limit_a_preload_is_refused_with_429() {
    let f = fixture(Mirrors::all()).await;
    let app = repo("team/app");
    image(&f.registry, &app, Some("v1"), b"{}", &[b"x"]).await;
    let held = f
        .preloader
        .running
        .clone()
        .try_acquire_many_owned(MAX_RUNNING as u32)
        .unwrap();
    assert!(scrape(&f.preloader).contains(&format!("shoal_agent_preloads_running {MAX_RUNNING}")));
    let (status, body) = post(&f.preloader, json("team/app:v1")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(code(&body), "TOOMANYREQUESTS");
    drop(held);
    let (status, _) = post(&f.preloader, json("team/app:v1")).await;
    assert_eq!(status, StatusCode::OK);
}
