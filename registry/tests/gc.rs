//! The local store's garbage collector: what a tag delete and a collection free, what they
//! keep (shared blobs, index children, referrers, young content, uploads in progress), and
//! writes that meet a collection half way. The backing side is in `gc_backing.rs`.

mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use common::gc::*;
use common::{Fixture, fixture};
use shoal_registry::manifest::{OCI_INDEX, OCI_MANIFEST};

#[tokio::test]
async fn a_tag_delete_and_a_gc_free_the_unreferenced_blobs() {
    let f = fixture().await;
    let a = push_image(
        &f,
        "app",
        Some("a"),
        &["config", "shared layer", "layer of a"],
    )
    .await;
    let b = push_image(
        &f,
        "app",
        Some("b"),
        &["config", "shared layer", "layer of b"],
    )
    .await;

    let before = gc(&f, now()).await;
    assert_eq!(before.blobs_deleted, 0, "{before}");
    delete(&f, "/v2/app/manifests/a").await;
    let report = gc(&f, now()).await;

    let freed = [&a.digest, &a.blobs[2].0];
    for d in freed {
        assert!(!stored(&f, d), "{d} was freed");
    }
    assert_eq!(report.blobs_deleted, 2, "{report}");
    assert_eq!(
        report.bytes_freed,
        (a.manifest.len() + "layer of a".len()) as u64,
        "{report}"
    );
    assert_eq!(report.manifests_removed, 1, "{report}");
    assert_eq!(report.layer_links_removed, 1, "{report}");
    assert_status(&f, &format!("/v2/app/manifests/{}", a.digest), 404).await;
    assert_status(&f, &format!("/v2/app/blobs/{}", a.blobs[2].0), 404).await;
    assert_intact(&f, "app", &b).await;

    let again = gc(&f, now()).await;
    assert_eq!(
        (again.blobs_deleted, again.manifests_removed),
        (0, 0),
        "{again}"
    );
}

#[tokio::test]
async fn blobs_shared_with_another_repository_stay() {
    let f = fixture().await;
    let x = push_image(&f, "x", Some("v1"), &["config", "shared"]).await;
    let y = push_image(&f, "y", Some("v1"), &["config", "shared", "only y"]).await;
    delete(&f, "/v2/x/manifests/v1").await;
    let report = gc(&f, now()).await;
    assert_eq!(report.blobs_deleted, 1, "only x's manifest: {report}");
    assert_eq!(
        report.layer_links_removed, 2,
        "x's config and layer links: {report}"
    );
    assert!(!stored(&f, &x.digest));
    assert_status(&f, &format!("/v2/x/blobs/{}", x.blobs[1].0), 404).await;
    assert_intact(&f, "y", &y).await;
}

#[tokio::test]
async fn index_children_and_referrers_stay_live_to_a_fixpoint() {
    let f = fixture().await;
    let amd = push_image(&f, "multi", None, &["cfg amd", "layer amd"]).await;
    let arm = push_image(&f, "multi", None, &["cfg arm", "layer arm"]).await;
    let index = push_index(&f, "multi", "latest", &[&amd, &arm]).await;
    // A signature of the index, and an attestation of the signature: live through subjects.
    let sig = push_referrer(&f, "multi", &index, "signature").await;
    let att = push_referrer(&f, "multi", &sig, "attestation").await;
    // An untagged image and its signature: dead together.
    let loose = push_image(&f, "multi", None, &["cfg loose", "layer loose"]).await;
    let loose_sig = push_referrer(&f, "multi", &loose, "loose signature").await;

    let report = gc(&f, now()).await;
    for image in [&amd, &arm, &sig, &att] {
        assert_intact(&f, "multi", image).await;
    }
    assert_eq!(manifest_status(&f, "multi", &index.digest).await, 200);
    assert_eq!(
        referrers(&f, "multi", &index.digest).await,
        vec![sig.digest.to_string()]
    );
    for d in [&loose.digest, &loose.blobs[1].0, &loose_sig.digest] {
        assert!(!stored(&f, d), "{d} should be freed: {report}");
    }
    assert_eq!(report.manifests_removed, 2, "{report}");
    assert_eq!(report.referrers_removed, 1, "{report}");

    // Without the tag everything goes, referrer entries too.
    delete(&f, "/v2/multi/manifests/latest").await;
    let report = gc(&f, now()).await;
    assert_eq!(report.manifests_removed, 5, "{report}");
    for image in [&amd, &arm, &sig, &att] {
        for d in image.all() {
            assert!(!stored(&f, d), "{d} should be freed: {report}");
        }
    }
    assert!(!stored(&f, &index.digest));
    assert!(referrers(&f, "multi", &index.digest).await.is_empty());
}

#[tokio::test]
async fn young_content_stays_within_the_grace_period() {
    let f = fixture().await;
    // A push half way through: layers up, manifest not yet; and an untagged manifest.
    let layer = f.push_blob("app", b"uploaded first").await;
    let untagged = push_image(&f, "app", None, &["cfg", "untagged"]).await;
    let hour = shoal_registry::GcPolicy {
        grace: Duration::from_secs(3600),
        delete_from_backing: true,
    };
    let report = gc(&f, hour).await;
    assert_eq!(report.blobs_deleted, 0, "{report}");
    assert!(report.kept_young >= 2, "{report}");
    assert!(stored(&f, &layer));
    assert_intact(&f, "app", &untagged).await;

    let report = gc(&f, now()).await;
    assert_eq!(report.blobs_deleted, 4, "{report}");
    assert!(!stored(&f, &layer));
}

#[tokio::test]
async fn an_upload_in_progress_is_untouched() {
    let f = fixture().await;
    let r = f
        .call(Method::POST, "/v2/app/blobs/uploads/", &[], vec![])
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let location = r.header("location").to_owned();
    let r = f
        .call(Method::PATCH, &location, &[], b"first half, ".to_vec())
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let report = gc(&f, now()).await;
    assert_eq!(report.blobs_deleted, 0, "{report}");
    let d = shoal_registry::Digest::sha256_of(b"first half, second half");
    let r = f
        .call(
            Method::PUT,
            &format!("{location}?digest={d}"),
            &[],
            b"second half".to_vec(),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        f.get(&format!("/v2/app/blobs/{d}")).await.body,
        b"first half, second half"
    );
}

#[tokio::test]
async fn a_manifest_whose_blobs_were_swept_is_refused() {
    let f = fixture().await;
    let config = f.push_blob("app", b"cfg").await;
    let layer = f.push_blob("app", b"layer").await;
    gc(&f, now()).await;
    assert!(!stored(&f, &layer));
    let manifest = image_manifest(&[(config, 3), (layer, 5)], None);
    let r = f.push_manifest("app", "v1", OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN");
    assert_status(&f, "/v2/app/manifests/v1", 404).await;
    assert!(
        f.get("/v2/app/tags/list").await.json()["tags"]
            .as_array()
            .is_none_or(|t| t.is_empty())
    );
}

#[tokio::test]
async fn writes_between_mark_and_sweep_are_kept() {
    let f = fixture().await;
    let image = push_image(&f, "app", Some("v1"), &["cfg", "layer"]).await;
    let child = push_image(&f, "app", None, &["cfg child", "layer child"]).await;
    delete(&f, "/v2/app/manifests/v1").await;

    let marked = f.registry.store.mark(&now(), None).await.unwrap();
    // Tagged again, and an index adopting the untagged child, after the mark saw them dead.
    let r = f
        .push_manifest("app", "v2", OCI_MANIFEST, &image.manifest)
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let index = push_index(&f, "app", "multi", &[&child]).await;
    let report = marked.sweep().await;

    assert_eq!(report.blobs_deleted, 0, "{report}");
    assert!(report.kept_in_use >= 6, "{report}");
    assert_intact(&f, "app", &image).await;
    assert_intact(&f, "app", &child).await;
    assert_eq!(manifest_status(&f, "app", &index.digest).await, 200);
    // The next collection sees them live.
    assert_eq!(gc(&f, now()).await.blobs_deleted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_racing_the_gc_loses_nothing() {
    let f = std::sync::Arc::new(fixture().await);
    let outcome = race(f.clone(), 4, 12).await;
    eprintln!(
        "{} collections freed {} blobs; {} pushes acknowledged, {} refused",
        outcome.collections,
        outcome.freed,
        outcome.pushed,
        outcome.refused.len()
    );
    assert!(outcome.collections > 0 && outcome.freed > 0, "{outcome:?}");
    assert!(outcome.pushed > 0, "{outcome:?}");
    for (repo, image) in &outcome.kept {
        assert_intact(&f, repo, image).await;
    }
    for (repo, tag) in &outcome.refused {
        assert_status(&f, &format!("/v2/{repo}/manifests/{tag}"), 404).await;
    }
}

async fn assert_status(f: &Fixture, uri: &str, status: u16) {
    assert_eq!(f.get(uri).await.status.as_u16(), status, "{uri}");
}

async fn manifest_status(f: &Fixture, repo: &str, d: &shoal_registry::Digest) -> u16 {
    let r = f
        .call(
            Method::GET,
            &format!("/v2/{repo}/manifests/{d}"),
            &[("accept", OCI_INDEX), ("accept", OCI_MANIFEST)],
            vec![],
        )
        .await;
    r.status.as_u16()
}
