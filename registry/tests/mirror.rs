//! containerd's `?ns=` through `mirror::apply`: the same path from two upstream hosts reaches
//! two repositories, a request without `ns` is unchanged, and an unlisted host is 404.

mod common;

use axum::http::StatusCode;
use common::{Fixture, fixture};
use shoal_registry::manifest::OCI_MANIFEST;
use shoal_registry::mirror::{self, Mirrors};

/// Pushes a different image as `v1` to each repository; returns their manifest digests.
async fn two_images(f: &Fixture, repos: [&str; 2]) -> Vec<String> {
    let mut digests = Vec::new();
    for (i, repo) in repos.into_iter().enumerate() {
        let manifest = f.image(repo, OCI_MANIFEST, &[i as u8; 10]).await;
        let r = f.push_manifest(repo, "v1", OCI_MANIFEST, &manifest).await;
        assert_eq!(r.status, StatusCode::CREATED);
        digests.push(r.header("docker-content-digest").to_owned());
    }
    digests
}

fn mirrored(f: Fixture, mirrors: Mirrors) -> Fixture {
    Fixture {
        app: mirror::apply(f.app, mirrors),
        dir: f.dir,
        registry: f.registry,
    }
}

#[tokio::test]
async fn each_upstream_host_gets_its_own_repository() {
    let f = fixture().await;
    let digests = two_images(&f, ["ghcr.io/org/app", "org/app"]).await;
    let (ghcr, hub) = (digests[0].clone(), digests[1].clone());
    let f = mirrored(f, Mirrors::all());
    let digest = |path: String| {
        let f = &f;
        async move {
            let r = f.get(&path).await;
            assert_eq!(r.status, StatusCode::OK, "{path}");
            r.header("docker-content-digest").to_owned()
        }
    };
    assert_eq!(
        digest("/v2/org/app/manifests/v1?ns=ghcr.io".into()).await,
        ghcr
    );
    assert_eq!(
        digest("/v2/org/app/manifests/v1?ns=docker.io".into()).await,
        hub
    );
    assert_eq!(digest("/v2/org/app/manifests/v1".into()).await, hub);
    // Blobs and tag lists follow the same mapping: ghcr.io's layer is not Docker Hub's.
    let layer = shoal_registry::Digest::sha256_of(&[0u8; 10]);
    let r = f
        .get(&format!("/v2/org/app/blobs/{layer}?ns=ghcr.io"))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = f
        .get(&format!("/v2/org/app/blobs/{layer}?ns=docker.io"))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = f.get("/v2/org/app/tags/list?ns=ghcr.io&n=1").await;
    assert_eq!(r.json()["name"], "ghcr.io/org/app");
}

#[tokio::test]
async fn a_host_not_listed_gets_404_so_containerd_falls_back() {
    let f = fixture().await;
    two_images(&f, ["ghcr/org/app", "org/app"]).await;
    let f = mirrored(
        f,
        Mirrors::only([("ghcr.io", "ghcr"), ("docker.io", "")]).unwrap(),
    );
    assert_eq!(
        f.get("/v2/org/app/manifests/v1?ns=ghcr.io").await.status,
        StatusCode::OK
    );
    let r = f.get("/v2/org/app/manifests/v1?ns=quay.io").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
    );
    let r = f.get("/v2/org/app/manifests/v1?ns=bad%20host").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(f.get("/v2/?ns=quay.io").await.status, StatusCode::OK);
}
