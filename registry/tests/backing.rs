//! The local store as a cache over a [`Backing`]: write-through on push, verified fetch on
//! a miss, no resurrection of deleted content, and a failed write-through that leaves the
//! push retryable. The backing here is an in-memory map with switches for failures; the real
//! one (the plugin router) is tested in host/tests.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode};
use bytes::Bytes;
use common::{backed, backed_as, backed_by_authority};
use shoal_registry::error::ApiResult;
use shoal_registry::manifest::{OCI_INDEX, OCI_MANIFEST};
use shoal_registry::{
    Backing, BlobStat, BodyStream, Digest, ErrorCode, RegistryError, RepoName, Tag, TagKey,
};

#[derive(Default)]
struct Memory {
    blobs: Mutex<HashMap<String, Bytes>>,
    tags: Mutex<HashMap<TagKey, Digest>>,
    fetches: AtomicUsize,
    stats: AtomicUsize,
    /// `stat_blob` answers `Unknown`, as a backing that cannot stat.
    cannot_stat: AtomicBool,
    /// Tags belong to an upstream registry (a pull-through namespace).
    upstream: AtomicBool,
    refuse_writes: AtomicBool,
    corrupt_reads: AtomicBool,
}

impl Memory {
    fn tag(&self, repo: &str, tag: &str) -> Option<Digest> {
        self.tags
            .lock()
            .unwrap()
            .get(&TagKey::new(repo.parse().unwrap(), tag.parse().unwrap()))
            .cloned()
    }
    fn has_blob(&self, d: &Digest) -> bool {
        self.blobs.lock().unwrap().contains_key(&d.to_string())
    }
    fn refuse(&self) -> ApiResult<()> {
        if self.refuse_writes.load(Ordering::SeqCst) {
            Err(RegistryError::new(
                ErrorCode::Unavailable,
                "memory: refusing writes",
            ))
        } else {
            Ok(())
        }
    }
}

#[async_trait::async_trait]
impl Backing for Memory {
    async fn put_blob(
        &self,
        _repo: &RepoName,
        d: &Digest,
        path: &Path,
        size: u64,
    ) -> ApiResult<()> {
        self.refuse()?;
        let data = std::fs::read(path).unwrap();
        assert_eq!(data.len() as u64, size);
        self.blobs
            .lock()
            .unwrap()
            .insert(d.to_string(), data.into());
        Ok(())
    }

    async fn get_blob(&self, _repo: &RepoName, d: &Digest) -> ApiResult<Option<BodyStream>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let Some(mut data) = self.blobs.lock().unwrap().get(&d.to_string()).cloned() else {
            return Ok(None);
        };
        if self.corrupt_reads.load(Ordering::SeqCst) {
            let mut v = data.to_vec();
            v[0] ^= 0xff;
            data = v.into();
        }
        // Two chunks, so the store sees a stream, not one buffer.
        let (a, b) = data.split_at(data.len() / 2);
        let chunks = vec![Ok(Bytes::copy_from_slice(a)), Ok(Bytes::copy_from_slice(b))];
        Ok(Some(Box::pin(futures_util::stream::iter(chunks))))
    }

    async fn stat_blob(&self, _repo: &RepoName, d: &Digest) -> ApiResult<BlobStat> {
        self.stats.fetch_add(1, Ordering::SeqCst);
        if self.cannot_stat.load(Ordering::SeqCst) {
            return Ok(BlobStat::Unknown);
        }
        Ok(match self.blobs.lock().unwrap().get(&d.to_string()) {
            Some(data) => BlobStat::Present(data.len() as u64),
            None => BlobStat::Absent,
        })
    }

    async fn put_tag(&self, repo: &RepoName, tag: &Tag, d: &Digest) -> ApiResult<()> {
        self.refuse()?;
        self.tags
            .lock()
            .unwrap()
            .insert(TagKey::new(repo.clone(), tag.clone()), d.clone());
        Ok(())
    }

    fn tags_move_upstream(&self, _: &RepoName) -> bool {
        self.upstream.load(Ordering::SeqCst)
    }

    async fn get_tag(&self, repo: &RepoName, tag: &Tag) -> ApiResult<Option<Digest>> {
        Ok(self.tag(repo.as_str(), tag.as_str()))
    }

    async fn delete_tag(&self, repo: &RepoName, tag: &Tag) -> ApiResult<()> {
        self.refuse()?;
        self.tags
            .lock()
            .unwrap()
            .remove(&TagKey::new(repo.clone(), tag.clone()));
        Ok(())
    }
}

#[tokio::test]
async fn pushes_write_through_and_a_cold_cache_serves_from_the_backing() {
    let memory = Arc::new(Memory::default());
    let first = backed(memory.clone()).await;
    let layer = vec![7u8; 100_000];
    let manifest = first.image("team/app", OCI_MANIFEST, &layer).await;
    let r = first
        .push_manifest("team/app", "v1", OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let manifest_digest = Digest::sha256_of(manifest.as_bytes());
    let layer_digest = Digest::sha256_of(&layer);
    assert!(memory.has_blob(&layer_digest));
    assert!(memory.has_blob(&manifest_digest));
    assert_eq!(memory.tag("team/app", "v1"), Some(manifest_digest.clone()));

    // A second registry with an empty local store: everything comes from the backing.
    let cold = backed(memory.clone()).await;
    let r = cold.get("/v2/team/app/manifests/v1").await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.body, manifest.as_bytes());
    assert_eq!(r.header("content-type"), OCI_MANIFEST);
    assert_eq!(
        r.header("docker-content-digest"),
        manifest_digest.to_string()
    );
    let r = cold
        .get(&format!("/v2/team/app/blobs/{layer_digest}"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, layer);
    let fetched = memory.fetches.load(Ordering::SeqCst);
    assert_eq!(fetched, 2, "the manifest and the layer, once each");

    // Now cached: served locally, the backing is not asked again.
    assert_eq!(
        cold.get(&format!("/v2/team/app/blobs/{layer_digest}"))
            .await
            .body,
        layer
    );
    assert_eq!(
        cold.get("/v2/team/app/manifests/v1").await.status,
        StatusCode::OK
    );
    let r = cold
        .get(&format!("/v2/team/app/manifests/{manifest_digest}"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(memory.fetches.load(Ordering::SeqCst), fetched);

    // Unknown content is still unknown.
    let nothing = Digest::sha256_of(b"nothing");
    let r = cold.get(&format!("/v2/team/app/blobs/{nothing}")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
    );
    let r = cold.get("/v2/team/app/manifests/v2").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
    );
}

#[tokio::test]
async fn corrupt_content_from_the_backing_is_refused_and_not_stored() {
    let memory = Arc::new(Memory::default());
    let first = backed(memory.clone()).await;
    let d = first.push_blob("a", b"the real bytes").await;
    memory.corrupt_reads.store(true, Ordering::SeqCst);
    let cold = backed(memory.clone()).await;
    let r = cold.get(&format!("/v2/a/blobs/{d}")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE")
    );
    assert!(
        r.json()["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("storage backend")
    );
    assert!(
        !cold
            .dir
            .path()
            .join("blobs/sha256")
            .join(&d.hex()[..2])
            .join(d.hex())
            .exists()
    );
    // Once the backing serves the right bytes again, so does the registry.
    memory.corrupt_reads.store(false, Ordering::SeqCst);
    assert_eq!(
        cold.get(&format!("/v2/a/blobs/{d}")).await.body,
        b"the real bytes"
    );
}

#[tokio::test]
async fn a_failed_write_through_fails_the_push_and_leaves_it_retryable() {
    let memory = Arc::new(Memory::default());
    let reg = backed(memory.clone()).await;
    memory.refuse_writes.store(true, Ordering::SeqCst);
    let data = b"layer bytes".to_vec();
    let d = Digest::sha256_of(&data);
    let r = reg
        .call(
            Method::POST,
            &format!("/v2/a/blobs/uploads/?digest={d}"),
            &[],
            data.clone(),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    // The client's HEAD must not find it, or it would skip the retry.
    let r = reg
        .call(Method::HEAD, &format!("/v2/a/blobs/{d}"), &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    memory.refuse_writes.store(false, Ordering::SeqCst);
    reg.push_blob("a", &data).await;
    assert!(memory.has_blob(&d));

    // Same for a tag: the push fails and the tag is not served.
    let manifest = reg.image("a", OCI_MANIFEST, &data).await;
    memory.refuse_writes.store(true, Ordering::SeqCst);
    let r = reg.push_manifest("a", "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        reg.get("/v2/a/manifests/v1").await.status,
        StatusCode::NOT_FOUND
    );
    memory.refuse_writes.store(false, Ordering::SeqCst);
    let r = reg.push_manifest("a", "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(reg.get("/v2/a/manifests/v1").await.status, StatusCode::OK);
}

#[tokio::test]
async fn deleted_tags_and_blobs_stay_deleted() {
    let memory = Arc::new(Memory::default());
    let reg = backed(memory.clone()).await;
    let manifest = reg.image("a", OCI_MANIFEST, b"layer").await;
    reg.push_manifest("a", "v1", OCI_MANIFEST, &manifest).await;
    reg.push_manifest("a", "v2", OCI_MANIFEST, &manifest).await;
    let r = reg
        .call(Method::DELETE, "/v2/a/manifests/v1", &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(memory.tag("a", "v1"), None, "deleted in the backing too");
    assert_eq!(
        reg.get("/v2/a/manifests/v1").await.status,
        StatusCode::NOT_FOUND
    );

    // Deleting the manifest by digest removes the tags pointing at it, everywhere.
    let d = Digest::sha256_of(manifest.as_bytes());
    let r = reg
        .call(Method::DELETE, &format!("/v2/a/manifests/{d}"), &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(memory.tag("a", "v2"), None);
    assert_eq!(
        reg.get("/v2/a/manifests/v2").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        reg.get(&format!("/v2/a/manifests/{d}")).await.status,
        StatusCode::NOT_FOUND
    );

    // A deleted blob is not fetched back, though the backing still has it.
    let layer = Digest::sha256_of(b"layer");
    let r = reg
        .call(Method::DELETE, &format!("/v2/a/blobs/{layer}"), &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert!(memory.has_blob(&layer));
    assert_eq!(
        reg.get(&format!("/v2/a/blobs/{layer}")).await.status,
        StatusCode::NOT_FOUND
    );

    // Nor once the local copies are gone (as the garbage collector frees them, the backing's
    // kept with `gc.backends: false`): the deletes are remembered, not inferred from them.
    for content in [&layer, &d] {
        let file = reg
            .dir
            .path()
            .join("blobs/sha256")
            .join(&content.hex()[..2])
            .join(content.hex());
        std::fs::remove_file(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    }
    assert_eq!(
        reg.get(&format!("/v2/a/blobs/{layer}")).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        reg.get(&format!("/v2/a/manifests/{d}")).await.status,
        StatusCode::NOT_FOUND
    );
}

/// Images share layers (and the same image is often pushed under several names): where the
/// backing says what each repository holds (an agent's or the proxy's cluster, an upstream a
/// pull-through namespace mirrors), content the store holds for one repository is served in
/// another the backing holds it in too, linked without fetching the bytes again; a client's
/// delete there evicts the local link, and the backing is asked again.
#[tokio::test]
async fn content_held_for_one_repository_is_served_in_another_the_backing_holds_it_in() {
    let memory = Arc::new(Memory::default());
    let reg = backed_by_authority(memory.clone()).await;
    let layer = vec![3u8; 50_000];
    let (manifest, m, l) = pushed_image(&reg, "team/app", &layer).await;
    let fetched = memory.fetches.load(Ordering::SeqCst);

    let head = reg
        .call(
            Method::HEAD,
            &format!("/v2/team/copy/blobs/{l}"),
            &[],
            vec![],
        )
        .await;
    assert_eq!(head.status, StatusCode::OK, "HEAD asks the backing's stat");
    assert_eq!(head.header("content-length"), layer.len().to_string());
    let r = reg.get(&format!("/v2/team/copy/blobs/{l}")).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.body, layer);
    assert_eq!(
        memory.fetches.load(Ordering::SeqCst),
        fetched,
        "the copy held for team/app is linked, not fetched again"
    );
    let r = reg.get(&format!("/v2/team/copy/manifests/{m}")).await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.body, manifest.as_bytes());

    // A client deletes both from team/copy: where the backing says what a repository holds,
    // that evicts the local links only, and the next reads link them again; team/app is
    // untouched.
    for path in [
        format!("/v2/team/copy/manifests/{m}"),
        format!("/v2/team/copy/blobs/{l}"),
    ] {
        let r = reg.call(Method::DELETE, &path, &[], vec![]).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{path}");
        assert_eq!(reg.get(&path).await.status, StatusCode::OK, "{path} again");
    }
    assert_eq!(
        reg.get(&format!("/v2/team/app/blobs/{l}")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        reg.get(&format!("/v2/team/app/manifests/{m}")).await.status,
        StatusCode::OK
    );
}

/// In a namespace of the store's own (`shoal dev`'s, whose backend may name blobs by digest
/// alone and so "hold" every blob for every repository), what was pushed to a repository here
/// is all it holds: another repository does not get it by naming its digest.
#[tokio::test]
async fn in_a_namespace_of_its_own_content_pushed_to_one_repository_is_unknown_in_another() {
    let memory = Arc::new(Memory::default());
    let reg = backed(memory.clone()).await;
    let layer = vec![5u8; 20_000];
    let (_, m, l) = pushed_image(&reg, "team/app", &layer).await;
    unknown_in(&reg, "team/other", &m, &l).await;
}

/// Pushes an image of one `layer` to `repo`, tagged `v1`: the manifest, its digest and the
/// layer's.
async fn pushed_image(reg: &common::Fixture, repo: &str, layer: &[u8]) -> (String, Digest, Digest) {
    let manifest = reg.image(repo, OCI_MANIFEST, layer).await;
    let r = reg.push_manifest(repo, "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let m = Digest::sha256_of(manifest.as_bytes());
    (manifest, m, Digest::sha256_of(layer))
}

/// Asserts that `repo` of `reg` knows neither manifest `m` nor blob `l`: GET and HEAD of the
/// blob and GET of the manifest are 404 with the right codes.
async fn unknown_in(reg: &common::Fixture, repo: &str, m: &Digest, l: &Digest) {
    let r = reg.get(&format!("/v2/{repo}/blobs/{l}")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
        "GET blob in {repo}"
    );
    let head = reg
        .call(Method::HEAD, &format!("/v2/{repo}/blobs/{l}"), &[], vec![])
        .await;
    assert_eq!(head.status, StatusCode::NOT_FOUND, "HEAD blob in {repo}");
    let r = reg.get(&format!("/v2/{repo}/manifests/{m}")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
        "GET manifest in {repo}"
    );
}

/// A referrer manifest whose subject is `subject` (`len` bytes), with an empty config.
fn referrer(subject: &Digest, len: usize, empty: &Digest, kind: &str) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","artifactType":"{kind}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}}],"subject":{{"mediaType":"{OCI_MANIFEST}","digest":"{subject}","size":{len}}}}}"#
    )
}

/// With referrers kept in the backing, a registry that never saw a referrer pushed lists it
/// from the subject's `sha256-<hex>` index; a tag of that name that names something else is
/// listed as no referrers (and logged), and a referrer pushed for that subject is refused with
/// a message naming the tag instead of overwriting it.
#[tokio::test]
async fn referrers_kept_in_the_backing_are_listed_by_a_registry_that_never_saw_them() {
    let memory = Arc::new(Memory::default());
    let writer = backed_as(memory.clone(), |r| {
        r.tags_from_backing(std::time::Duration::ZERO)
            .referrers_in_backing()
    })
    .await;
    let reader = backed_as(memory.clone(), |r| {
        r.tags_from_backing(std::time::Duration::ZERO)
            .referrers_in_backing()
            .read_only("an agent")
    })
    .await;
    let image = writer.image("team/app", OCI_MANIFEST, b"layer").await;
    writer
        .push_manifest("team/app", "v1", OCI_MANIFEST, &image)
        .await;
    let subject = Digest::sha256_of(image.as_bytes());
    let empty = writer.push_blob("team/app", b"{}").await;
    let sig = referrer(&subject, image.len(), &empty, "application/vnd.example.sig");
    let sig_d = Digest::sha256_of(sig.as_bytes());
    let r = writer
        .push_manifest("team/app", &sig_d.to_string(), OCI_MANIFEST, &sig)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = reader
        .get(&format!("/v2/team/app/referrers/{subject}"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let listed = r.json()["manifests"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["digest"], sig_d.to_string());
    assert_eq!(listed[0]["artifactType"], "application/vnd.example.sig");

    // Someone tagged an image `sha256-<hex>` of another subject.
    let other = Digest::sha256_of(b"another subject");
    let tag = format!("sha256-{}", other.hex());
    writer
        .push_manifest("team/app", &tag, OCI_MANIFEST, &image)
        .await;
    let r = reader.get(&format!("/v2/team/app/referrers/{other}")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
    let sig = referrer(&other, 10, &empty, "application/vnd.example.sig");
    let r = writer
        .push_manifest(
            "team/app",
            &Digest::sha256_of(sig.as_bytes()).to_string(),
            OCI_MANIFEST,
            &sig,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "MANIFEST_INVALID");
    let text = String::from_utf8_lossy(&r.body);
    assert!(text.contains(&tag), "{text}");
    assert_eq!(
        memory.tag("team/app", &tag),
        Some(Digest::sha256_of(image.as_bytes())),
        "the tag is left as it was"
    );
}

/// A pull-through namespace's referrers are the upstream's: an upstream without the referrers
/// API keeps them under the referrers tag schema (its clients push the index), and `shoal dev`
/// lists them from there. A namespace of its own lists what was pushed to it.
#[tokio::test]
async fn a_pull_through_namespace_lists_the_referrers_the_upstream_keeps_by_tag() {
    let memory = Arc::new(Memory::default());
    // What a client did upstream: an image, a signature, and the index under `sha256-<hex>`.
    let upstream = backed(memory.clone()).await;
    let image = upstream.image("library/app", OCI_MANIFEST, b"layer").await;
    upstream
        .push_manifest("library/app", "v1", OCI_MANIFEST, &image)
        .await;
    let subject = Digest::sha256_of(image.as_bytes());
    let empty = upstream.push_blob("library/app", b"{}").await;
    let sig = referrer(&subject, image.len(), &empty, "application/vnd.example.sig");
    let sig_d = Digest::sha256_of(sig.as_bytes());
    upstream
        .push_manifest("library/app", &sig_d.to_string(), OCI_MANIFEST, &sig)
        .await;
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{sig_d}","size":{},"artifactType":"application/vnd.example.sig"}}]}}"#,
        sig.len()
    );
    let tag = format!("sha256-{}", subject.hex());
    let r = upstream
        .push_manifest("library/app", &tag, OCI_INDEX, &index)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);

    memory.upstream.store(true, Ordering::SeqCst);
    let mirror = backed_as(memory.clone(), |r| {
        r.upstream_tags_from_backing(std::time::Duration::ZERO)
    })
    .await;
    let r = mirror
        .get(&format!("/v2/library/app/referrers/{subject}"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let listed = r.json()["manifests"].clone();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["digest"], sig_d.to_string());

    memory.upstream.store(false, Ordering::SeqCst);
    let own = backed(memory.clone()).await;
    let r = own
        .get(&format!("/v2/library/app/referrers/{subject}"))
        .await;
    assert_eq!(r.json()["manifests"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_fetch_once() {
    let memory = Arc::new(Memory::default());
    let first = backed(memory.clone()).await;
    let data = vec![3u8; 1 << 20];
    let d = first.push_blob("a", &data).await;
    let cold = Arc::new(backed(memory.clone()).await);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let cold = cold.clone();
        let uri = format!("/v2/a/blobs/{d}");
        tasks.spawn(async move { cold.get(&uri).await });
    }
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap();
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.body.len(), data.len());
    }
    assert_eq!(memory.fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_head_of_a_cold_blob_asks_the_backing_and_fetches_nothing() {
    let memory = Arc::new(Memory::default());
    let first = backed(memory.clone()).await;
    let data = vec![5u8; 300_000];
    let d = first.push_blob("a", &data).await;
    let cold = backed(memory.clone()).await;
    let head = |d: Digest| {
        let cold = &cold;
        async move {
            cold.call(Method::HEAD, &format!("/v2/a/blobs/{d}"), &[], vec![])
                .await
        }
    };

    let r = head(d.clone()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), data.len().to_string());
    assert_eq!(r.header("docker-content-digest"), d.to_string());
    assert!(r.body.is_empty());
    let missing = Digest::sha256_of(b"nobody has this");
    assert_eq!(head(missing).await.status, StatusCode::NOT_FOUND);
    assert_eq!(memory.stats.load(Ordering::SeqCst), 2);
    assert_eq!(
        memory.fetches.load(Ordering::SeqCst),
        0,
        "a HEAD fetched the blob"
    );

    // The GET fetches it, once; HEADs are then answered locally.
    let r = cold.get(&format!("/v2/a/blobs/{d}")).await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, data.len()));
    assert_eq!(head(d.clone()).await.status, StatusCode::OK);
    assert_eq!(memory.fetches.load(Ordering::SeqCst), 1);
    assert_eq!(memory.stats.load(Ordering::SeqCst), 2);

    // A backing that cannot stat has the blob fetched, as before.
    let other = backed(memory.clone()).await;
    memory.cannot_stat.store(true, Ordering::SeqCst);
    let r = other
        .call(Method::HEAD, &format!("/v2/a/blobs/{d}"), &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), data.len().to_string());
    assert_eq!(memory.fetches.load(Ordering::SeqCst), 2);
}
