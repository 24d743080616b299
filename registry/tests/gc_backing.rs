//! The garbage collector over a backing: what it frees locally it deletes from the backing
//! (so deleted content does not come back from there), a failed backing delete is counted
//! and not fatal, and a live manifest the cache lacks is read from the backing before
//! anything it references is deleted. The backing is an in-memory map that, like the `fs`
//! plugin, names blobs by digest alone.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::gc::*;
use common::{Fixture, backed};
use shoal_registry::error::ApiResult;
use shoal_registry::{
    Backing, BodyStream, Digest, ErrorCode, GcPolicy, RegistryError, RepoName, Tag, TagKey,
};

#[derive(Default)]
struct Memory {
    blobs: Mutex<HashMap<Digest, Bytes>>,
    tags: Mutex<HashMap<TagKey, Digest>>,
    refuse_deletes: AtomicBool,
    /// Digests whose reads fail, as an unreachable backend's would.
    unreadable: Mutex<HashSet<Digest>>,
    /// When set, deletes wait for a permit: a slow backend.
    delete_gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
    deletes_started: AtomicUsize,
}

impl Memory {
    fn has(&self, d: &Digest) -> bool {
        self.blobs.lock().unwrap().contains_key(d)
    }
}

#[async_trait::async_trait]
impl Backing for Memory {
    async fn put_blob(&self, _: &RepoName, d: &Digest, path: &Path, _: u64) -> ApiResult<()> {
        let data = std::fs::read(path).unwrap();
        self.blobs.lock().unwrap().insert(d.clone(), data.into());
        Ok(())
    }

    async fn get_blob(&self, _: &RepoName, d: &Digest) -> ApiResult<Option<BodyStream>> {
        if self.unreadable.lock().unwrap().contains(d) {
            return Err(RegistryError::new(
                ErrorCode::Unavailable,
                "memory: unreachable",
            ));
        }
        let data = self.blobs.lock().unwrap().get(d).cloned();
        Ok(data.map(|b| Box::pin(futures_util::stream::iter([Ok(b)])) as BodyStream))
    }

    async fn delete_blob(&self, _: &RepoName, d: &Digest) -> ApiResult<()> {
        self.deletes_started.fetch_add(1, Ordering::SeqCst);
        let gate = self.delete_gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            let _permit = gate.acquire().await.unwrap();
        }
        if self.refuse_deletes.load(Ordering::SeqCst) {
            return Err(RegistryError::new(
                ErrorCode::Unavailable,
                "memory: refusing deletes",
            ));
        }
        self.blobs.lock().unwrap().remove(d);
        Ok(())
    }

    async fn put_tag(&self, repo: &RepoName, tag: &Tag, d: &Digest) -> ApiResult<()> {
        let key = TagKey::new(repo.clone(), tag.clone());
        self.tags.lock().unwrap().insert(key, d.clone());
        Ok(())
    }

    async fn get_tag(&self, repo: &RepoName, tag: &Tag) -> ApiResult<Option<Digest>> {
        let key = TagKey::new(repo.clone(), tag.clone());
        Ok(self.tags.lock().unwrap().get(&key).cloned())
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> ApiResult<()> {
        let key = TagKey::new(repo.clone(), tag.clone());
        self.tags.lock().unwrap().remove(&key);
        Ok(())
    }
}

async fn two_images(f: &Fixture) -> (Image, Image) {
    let a = push_image(f, "app", Some("a"), &["config", "shared", "only a"]).await;
    let b = push_image(f, "app", Some("b"), &["config", "shared", "only b"]).await;
    (a, b)
}

#[tokio::test]
async fn what_gc_frees_locally_goes_from_the_backing_too() {
    let memory = Arc::new(Memory::default());
    let f = backed(memory.clone()).await;
    let (a, b) = two_images(&f).await;
    delete(&f, "/v2/app/manifests/a").await;
    let report = gc(&f, now()).await;
    assert_eq!(
        (report.blobs_deleted, report.backing_deleted),
        (2, 2),
        "{report}"
    );
    for d in [&a.digest, &a.blobs[2].0] {
        assert!(!memory.has(d) && !stored(&f, d), "{d} freed in both places");
        let r = f.get(&format!("/v2/app/blobs/{d}")).await;
        assert_eq!(r.status.as_u16(), 404, "{d} is not fetched back");
    }
    for d in b.all() {
        assert!(memory.has(d), "{d} stays in the backing");
    }
    assert_intact(&f, "app", &b).await;
}

#[tokio::test]
async fn content_deleted_through_the_api_is_freed_everywhere() {
    let memory = Arc::new(Memory::default());
    let f = backed(memory.clone()).await;
    let (a, _) = two_images(&f).await;
    let loose = f.push_blob("other", b"loose blob").await;
    delete(&f, &format!("/v2/other/blobs/{loose}")).await;
    delete(&f, &format!("/v2/app/manifests/{}", a.digest)).await;
    let report = gc(&f, now()).await;
    for d in [&loose, &a.digest, &a.blobs[2].0] {
        assert!(!memory.has(d) && !stored(&f, d), "{d}: {report}");
    }
    let r = f.get(&format!("/v2/app/manifests/{}", a.digest)).await;
    assert_eq!(r.status.as_u16(), 404, "the deleted manifest stays deleted");
    // The marks of the two deletes went with the content: nothing is left to fetch back.
    assert_eq!(report.deleted_marks_dropped, 2, "{report}");
    let marks = f.dir.path().join("repositories");
    for (repo, d) in [("other", &loose), ("app", &a.digest)] {
        let mark = marks.join(repo).join("_deleted/sha256").join(d.hex());
        assert!(!mark.exists(), "{} is left", mark.display());
    }
}

#[tokio::test]
async fn a_failed_backing_delete_is_counted_not_fatal() {
    let memory = Arc::new(Memory::default());
    let f = backed(memory.clone()).await;
    let (a, b) = two_images(&f).await;
    delete(&f, "/v2/app/manifests/a").await;
    memory.refuse_deletes.store(true, Ordering::SeqCst);
    let report = gc(&f, now()).await;
    assert_eq!(
        (report.blobs_deleted, report.backing_failed),
        (2, 2),
        "{report}"
    );
    assert!(!stored(&f, &a.blobs[2].0), "freed locally all the same");
    assert!(memory.has(&a.blobs[2].0));
    assert_intact(&f, "app", &b).await;
}

#[tokio::test]
async fn the_backing_is_left_alone_when_the_policy_says_so() {
    let memory = Arc::new(Memory::default());
    let f = backed(memory.clone()).await;
    let (a, _) = two_images(&f).await;
    delete(&f, "/v2/app/manifests/a").await;
    let policy = GcPolicy {
        delete_from_backing: false,
        ..now()
    };
    let report = gc(&f, policy.clone()).await;
    assert_eq!(
        (report.blobs_deleted, report.backing_deleted),
        (2, 0),
        "{report}"
    );
    assert!(memory.has(&a.digest) && memory.has(&a.blobs[2].0));

    // A delete by digest is remembered while the backing keeps the content: after the local
    // copy is freed it is still not fetched back.
    let b = push_image(&f, "app", Some("c"), &["config", "only c"]).await;
    delete(&f, &format!("/v2/app/manifests/{}", b.digest)).await;
    let report = gc(&f, policy).await;
    assert_eq!(report.deleted_marks_dropped, 0, "{report}");
    assert!(memory.has(&b.digest) && !stored(&f, &b.digest));
    let r = f.get(&format!("/v2/app/manifests/{}", b.digest)).await;
    assert_eq!(
        r.status.as_u16(),
        404,
        "the deleted manifest is not fetched back"
    );
}

#[tokio::test]
async fn a_live_manifest_the_cache_lacks_is_read_from_the_backing() {
    let memory = Arc::new(Memory::default());
    let warm = backed(memory.clone()).await;
    let child = push_image(&warm, "multi", None, &["cfg", "layer"]).await;
    let index = push_index(&warm, "multi", "latest", &[&child]).await;

    // A cold cache pulls the index by tag and a layer, but not the child manifest.
    let cold = backed(memory.clone()).await;
    let r = cold
        .call(
            axum::http::Method::GET,
            "/v2/multi/manifests/latest",
            &[("accept", index.media)],
            vec![],
        )
        .await;
    assert_eq!(r.status.as_u16(), 200);
    let layer = &child.blobs[1].0;
    assert_eq!(
        cold.get(&format!("/v2/multi/blobs/{layer}"))
            .await
            .status
            .as_u16(),
        200
    );

    let report = gc(&cold, now()).await;
    assert_eq!(report.blobs_deleted, 0, "{report}");
    assert!(stored(&cold, layer) && memory.has(layer));

    // When the backing cannot say what the child references, nothing is deleted there.
    memory
        .unreadable
        .lock()
        .unwrap()
        .insert(child.digest.clone());
    let report = gc(&cold, now()).await;
    assert!(report.backing_skipped.is_some(), "{report}");
    assert!(stored(&cold, layer) && memory.has(layer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_racing_the_gc_keeps_its_backing_copies() {
    let memory = Arc::new(Memory::default());
    let f = Arc::new(backed(memory.clone()).await);
    let outcome = race(f.clone(), 4, 12).await;
    assert!(outcome.freed > 0 && outcome.pushed > 0, "{outcome:?}");
    for (repo, image) in &outcome.kept {
        assert_intact(&f, repo, image).await;
        for d in image.all() {
            assert!(
                memory.has(d),
                "{d} of {repo} was written through and must stay there"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_of_a_blob_being_deleted_from_the_backing_waits_for_the_delete() {
    let memory = Arc::new(Memory::default());
    let f = Arc::new(backed(memory.clone()).await);
    let d = f.push_blob("app", b"pushed, forgotten, pushed again").await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    *memory.delete_gate.lock().unwrap() = Some(gate.clone());

    // The collection frees the unreferenced blob locally, then stalls in the backend delete.
    let collection = tokio::spawn({
        let f = f.clone();
        async move { gc(&f, now()).await }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while memory.deletes_started.load(Ordering::SeqCst) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the collection never deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(!stored(&f, &d));

    // A client pushes the same content meanwhile: its write-through must land after the delete.
    let push = tokio::spawn({
        let f = f.clone();
        async move { f.push_blob("app", b"pushed, forgotten, pushed again").await }
    });
    // It waits for the stalled delete (a push in process takes a few ms otherwise).
    let watch = std::time::Instant::now() + std::time::Duration::from_millis(300);
    while std::time::Instant::now() < watch {
        assert!(
            !push.is_finished(),
            "the push finished while its digest was being deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    gate.add_permits(1);
    collection.await.unwrap();
    push.await.unwrap();
    assert!(stored(&f, &d));
    assert!(
        memory.has(&d),
        "the second push's backing copy survived the first one's delete"
    );
}
