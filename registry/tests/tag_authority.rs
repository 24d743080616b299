//! A registry whose backing is the authority for tags (`Registry::tags_from_backing`, the
//! agent's): a tag pushed again is served with its new digest on the very next request, a tag
//! the backing dropped is unknown, and only when the backing does not answer is the last known
//! digest served, counted as stale. The backing is an in-memory fake with a switch for
//! failures and a gate that holds tag lookups.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use bytes::Bytes;
use common::Fixture;
use shoal_registry::error::ApiResult;
use shoal_registry::manifest::OCI_MANIFEST;
use shoal_registry::{
    Backing, BodyStream, Digest, ErrorCode, LocalStore, Registry, RegistryError, RepoName, Tag,
    TagKey,
};
use tokio::sync::Semaphore;

/// Fake tag service and blob store.
struct Fake {
    blobs: Mutex<HashMap<Digest, Bytes>>,
    tags: Mutex<HashMap<TagKey, Digest>>,
    lookups: AtomicUsize,
    down: AtomicBool,
    /// Each tag lookup takes a permit, which it does not give back.
    gate: Semaphore,
}

impl Fake {
    fn new() -> Arc<Self> {
        Arc::new(Fake {
            blobs: Mutex::default(),
            tags: Mutex::default(),
            lookups: AtomicUsize::new(0),
            down: AtomicBool::new(false),
            gate: Semaphore::new(Semaphore::MAX_PERMITS),
        })
    }

    /// Stores a manifest whose only difference from the others is `n`; returns its digest.
    fn manifest(&self, n: u32) -> Digest {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{}","size":{n}}},"layers":[]}}"#,
            Digest::sha256_of(b"config")
        );
        let d = Digest::sha256_of(body.as_bytes());
        self.blobs.lock().unwrap().insert(d.clone(), body.into());
        d
    }

    fn tag(&self, repo: &str, tag: &str, d: Option<&Digest>) {
        let key = TagKey::new(repo.parse().unwrap(), tag.parse().unwrap());
        let mut tags = self.tags.lock().unwrap();
        match d {
            Some(d) => tags.insert(key, d.clone()),
            None => tags.remove(&key),
        };
    }

    fn lookups(&self) -> usize {
        self.lookups.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Backing for Fake {
    async fn put_blob(&self, _: &RepoName, _: &Digest, _: &Path, _: u64) -> ApiResult<()> {
        unreachable!("the registry under test is read-only")
    }

    async fn get_blob(&self, _: &RepoName, d: &Digest) -> ApiResult<Option<BodyStream>> {
        let blob = self.blobs.lock().unwrap().get(d).cloned();
        Ok(blob.map(|b| Box::pin(futures_util::stream::iter([Ok(b)])) as BodyStream))
    }

    async fn put_tag(&self, _: &RepoName, _: &Tag, _: &Digest) -> ApiResult<()> {
        unreachable!("the registry under test is read-only")
    }

    async fn get_tag(&self, repo: &RepoName, tag: &Tag) -> ApiResult<Option<Digest>> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await.expect("gate open").forget();
        if self.down.load(Ordering::SeqCst) {
            return Err(RegistryError::new(
                ErrorCode::Unavailable,
                "fake: the tag service is down",
            ));
        }
        let key = TagKey::new(repo.clone(), tag.clone());
        Ok(self.tags.lock().unwrap().get(&key).cloned())
    }

    async fn delete_tag(&self, _: &RepoName, _: &Tag) -> ApiResult<()> {
        unreachable!("the registry under test is read-only")
    }
}

/// A read-only registry over `fake` that takes tags from it, and a handle on it.
async fn agent_like(fake: &Arc<Fake>, ttl: Duration) -> (Fixture, Arc<Registry>) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path()).await.unwrap();
    let registry = Arc::new(
        Registry::with_backing(store, fake.clone())
            .tags_from_backing(ttl)
            .read_only("read-only"),
    );
    let app = shoal_registry::router(registry.clone());
    (
        Fixture {
            dir,
            app,
            registry: registry.clone(),
        },
        registry,
    )
}

/// The digest served for `app:latest`, or the error code.
async fn served(f: &Fixture) -> Result<String, (StatusCode, String)> {
    let r = f.get("/v2/team/app/manifests/latest").await;
    if r.status == StatusCode::OK {
        assert_eq!(
            Digest::sha256_of(&r.body).to_string(),
            r.header("docker-content-digest")
        );
        Ok(r.header("docker-content-digest").to_owned())
    } else {
        Err((r.status, r.code()))
    }
}

#[tokio::test]
async fn a_tag_pushed_again_is_served_with_its_new_digest_at_once() {
    let fake = Fake::new();
    let (a, b) = (fake.manifest(1), fake.manifest(2));
    fake.tag("team/app", "latest", Some(&a));
    let (f, registry) = agent_like(&fake, Duration::ZERO).await;
    assert_eq!(served(&f).await, Ok(a.to_string()));
    assert_eq!(served(&f).await, Ok(a.to_string()));
    assert_eq!(fake.lookups(), 2, "ttl 0: every request by tag asks");

    fake.tag("team/app", "latest", Some(&b));
    assert_eq!(served(&f).await, Ok(b.to_string()));
    let head = f
        .call(Method::HEAD, "/v2/team/app/manifests/latest", &[], vec![])
        .await;
    assert_eq!(head.header("docker-content-digest"), b.to_string());
    // And back: the old manifest is local already, only the tag moves.
    fake.tag("team/app", "latest", Some(&a));
    assert_eq!(served(&f).await, Ok(a.to_string()));

    // A digest reference does not ask for any tag.
    let before = fake.lookups();
    let r = f.get(&format!("/v2/team/app/manifests/{b}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(fake.lookups(), before);
    assert_eq!(registry.stale_tags_served(), 0);
}

#[tokio::test]
async fn with_the_backing_down_the_last_known_digest_is_served_as_stale() {
    let fake = Fake::new();
    let (a, b) = (fake.manifest(1), fake.manifest(2));
    fake.tag("team/app", "latest", Some(&a));
    let (f, registry) = agent_like(&fake, Duration::ZERO).await;
    assert_eq!(served(&f).await, Ok(a.to_string()));
    fake.tag("team/app", "latest", Some(&b));
    assert_eq!(served(&f).await, Ok(b.to_string()));

    fake.down.store(true, Ordering::SeqCst);
    assert_eq!(served(&f).await, Ok(b.to_string()));
    assert_eq!(served(&f).await, Ok(b.to_string()));
    assert_eq!(registry.stale_tags_served(), 2);
    // A tag never served here has no last digest: the backing's error.
    let r = f.get("/v2/team/app/manifests/other").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
    );

    // Back up: fresh answers again, and the counter stays.
    fake.down.store(false, Ordering::SeqCst);
    fake.tag("team/app", "latest", Some(&a));
    assert_eq!(served(&f).await, Ok(a.to_string()));
    assert_eq!(registry.stale_tags_served(), 2);
}

#[tokio::test]
async fn a_tag_the_backing_dropped_is_unknown_even_when_it_goes_down_later() {
    let fake = Fake::new();
    let a = fake.manifest(1);
    fake.tag("team/app", "latest", Some(&a));
    let (f, _) = agent_like(&fake, Duration::ZERO).await;
    assert_eq!(served(&f).await, Ok(a.to_string()));
    fake.tag("team/app", "latest", None);
    let unknown = Err((StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN".to_owned()));
    assert_eq!(served(&f).await, unknown);
    // The local tag went with it: nothing stale to serve.
    fake.down.store(true, Ordering::SeqCst);
    assert_eq!(
        served(&f).await,
        Err((StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE".to_owned()))
    );
    // A tag naming a manifest the backing lacks is unknown, not an error.
    fake.down.store(false, Ordering::SeqCst);
    fake.tag("team/app", "latest", Some(&Digest::sha256_of(b"gone")));
    assert_eq!(served(&f).await, unknown);
}

#[tokio::test]
async fn a_ttl_bounds_how_often_a_tag_is_asked_for() {
    let fake = Fake::new();
    let (a, b) = (fake.manifest(1), fake.manifest(2));
    fake.tag("team/app", "latest", Some(&a));
    let (f, _) = agent_like(&fake, Duration::from_secs(3600)).await;
    assert_eq!(served(&f).await, Ok(a.to_string()));
    fake.tag("team/app", "latest", Some(&b));
    // Within the ttl the answer stands, as configured.
    assert_eq!(served(&f).await, Ok(a.to_string()));
    assert_eq!(fake.lookups(), 1);
    // "No such tag" stands for the ttl as well.
    let r = f.get("/v2/team/app/manifests/v9").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    fake.tag("team/app", "v9", Some(&b));
    let r = f.get("/v2/team/app/manifests/v9").await;
    assert_eq!(
        r.status,
        StatusCode::NOT_FOUND,
        "untagged is remembered too"
    );
    assert_eq!(fake.lookups(), 2);
}

/// Requests arriving while a lookup runs share the next one: one that started after they
/// arrived, so none is answered with what the backing said before it asked.
#[tokio::test]
async fn concurrent_requests_share_a_lookup_that_started_after_they_arrived() {
    let fake = Arc::new(Fake {
        gate: Semaphore::new(0),
        ..Arc::into_inner(Fake::new()).unwrap()
    });
    let a = fake.manifest(1);
    fake.tag("team/app", "latest", Some(&a));
    let (f, _) = agent_like(&fake, Duration::ZERO).await;
    let f = Arc::new(f);
    // One thread: each request runs until it waits, the first at the gate, the others for
    // the first's lookup.
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let f = f.clone();
        requests.spawn(async move { served(&f).await });
    }
    while fake.lookups() == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
    assert_eq!(fake.lookups(), 1, "the others wait for the first lookup");
    fake.gate.add_permits(8);
    while let Some(r) = requests.join_next().await {
        assert_eq!(r.unwrap(), Ok(a.to_string()));
    }
    assert_eq!(
        fake.lookups(),
        2,
        "the first lookup, and one shared by the seven that arrived while it ran"
    );
}
