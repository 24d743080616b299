//! Images pushed through the API for the garbage-collector tests, the checks that they are
//! whole, and a push-versus-collector race.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::json;
use shoal_registry::manifest::{OCI_INDEX, OCI_MANIFEST};
use shoal_registry::{Digest, GcPolicy, GcReport};

use super::Fixture;

/// An image (or index) as pushed: its manifest and its blobs, config first.
#[derive(Clone, Debug)]
pub struct Image {
    pub digest: Digest,
    pub manifest: String,
    pub media: &'static str,
    pub blobs: Vec<(Digest, Vec<u8>)>,
}

impl Image {
    /// The manifest's digest and every blob's.
    pub fn all(&self) -> impl Iterator<Item = &Digest> {
        std::iter::once(&self.digest).chain(self.blobs.iter().map(|(d, _)| d))
    }
}

/// No grace period: everything unreferenced goes.
pub fn now() -> GcPolicy {
    GcPolicy {
        grace: Duration::ZERO,
        delete_from_backing: true,
    }
}

pub async fn gc(f: &Fixture, policy: GcPolicy) -> GcReport {
    f.registry.collect_garbage(&policy).await.unwrap()
}

/// Whether the store holds `d`'s file.
pub fn stored(f: &Fixture, d: &Digest) -> bool {
    f.registry.store.blob_file(d).exists()
}

/// An image manifest over `(digest, size)` blobs, the first being the config.
pub fn image_manifest(blobs: &[(Digest, usize)], subject: Option<&Image>) -> String {
    let descriptor = |(d, size): &(Digest, usize), media: &str| json!({ "mediaType": media, "digest": d.to_string(), "size": size });
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(&blobs[0], "application/vnd.oci.image.config.v1+json"),
        "layers": blobs[1..].iter()
            .map(|b| descriptor(b, "application/vnd.oci.image.layer.v1.tar"))
            .collect::<Vec<_>>(),
    });
    if let Some(s) = subject {
        m["artifactType"] = json!("application/vnd.example.signature");
        m["subject"] = json!({
            "mediaType": s.media, "digest": s.digest.to_string(), "size": s.manifest.len()
        });
    }
    m.to_string()
}

/// Pushes `contents` as blobs (config first) and an image manifest over them, tagged `tag`
/// or by digest.
pub async fn push_image(f: &Fixture, repo: &str, tag: Option<&str>, contents: &[&str]) -> Image {
    push_with_subject(f, repo, tag, contents, None).await
}

/// Pushes an artifact whose subject is `subject`, by digest.
pub async fn push_referrer(f: &Fixture, repo: &str, subject: &Image, payload: &str) -> Image {
    let config = format!("{payload} config");
    push_with_subject(f, repo, None, &[&config, payload], Some(subject)).await
}

async fn push_with_subject(
    f: &Fixture,
    repo: &str,
    tag: Option<&str>,
    contents: &[&str],
    subject: Option<&Image>,
) -> Image {
    let mut blobs = Vec::new();
    for c in contents {
        let d = f.push_blob(repo, c.as_bytes()).await;
        blobs.push((d, c.as_bytes().to_vec()));
    }
    let sizes: Vec<_> = blobs.iter().map(|(d, b)| (d.clone(), b.len())).collect();
    let manifest = image_manifest(&sizes, subject);
    put_manifest(f, repo, tag, manifest, OCI_MANIFEST, blobs).await
}

/// Pushes an index of `children`, tagged `tag`.
pub async fn push_index(f: &Fixture, repo: &str, tag: &str, children: &[&Image]) -> Image {
    let manifests: Vec<_> = children
        .iter()
        .map(|c| json!({ "mediaType": c.media, "digest": c.digest.to_string(), "size": c.manifest.len() }))
        .collect();
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    put_manifest(f, repo, Some(tag), index.to_string(), OCI_INDEX, Vec::new()).await
}

async fn put_manifest(
    f: &Fixture,
    repo: &str,
    tag: Option<&str>,
    manifest: String,
    media: &'static str,
    blobs: Vec<(Digest, Vec<u8>)>,
) -> Image {
    let digest = Digest::sha256_of(manifest.as_bytes());
    let reference = tag.map_or_else(|| digest.to_string(), str::to_owned);
    let r = f.push_manifest(repo, &reference, media, &manifest).await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    Image {
        digest,
        manifest,
        media,
        blobs,
    }
}

pub async fn delete(f: &Fixture, uri: &str) {
    let r = f.call(Method::DELETE, uri, &[], vec![]).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "DELETE {uri}");
}

/// Digests of `repo`'s referrers of `d`.
pub async fn referrers(f: &Fixture, repo: &str, d: &Digest) -> Vec<String> {
    let r = f.get(&format!("/v2/{repo}/referrers/{d}")).await;
    assert_eq!(r.status, StatusCode::OK);
    r.json()["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// Asserts that `repo` serves `image`'s manifest and every blob, byte for byte.
pub async fn assert_intact(f: &Fixture, repo: &str, image: &Image) {
    let r = f
        .call(
            Method::GET,
            &format!("/v2/{repo}/manifests/{}", image.digest),
            &[("accept", image.media)],
            vec![],
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::OK,
        "manifest {} of {repo}",
        image.digest
    );
    assert_eq!(r.body, image.manifest.as_bytes());
    for (d, bytes) in &image.blobs {
        let r = f.get(&format!("/v2/{repo}/blobs/{d}")).await;
        assert_eq!(r.status, StatusCode::OK, "blob {d} of {repo}");
        assert_eq!(&r.body, bytes, "blob {d} of {repo}");
    }
}

/// What [`race`] saw.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Collections run while the pushes went on, and blobs they deleted.
    pub collections: usize,
    pub freed: usize,
    /// Manifest pushes acknowledged.
    pub pushed: usize,
    /// Acknowledged pushes whose tag stayed: they must be whole.
    pub kept: Vec<(String, Image)>,
    /// Pushes refused with MANIFEST_BLOB_UNKNOWN (a blob was swept after the client checked
    /// it): their tag must not exist.
    pub refused: Vec<(String, String)>,
}

/// Collects garbage with no grace period in a loop while `pushers` clients push `images`
/// images each, as clients do: HEAD each blob, upload it only when missing, then the
/// manifest. Every third acknowledged image has its tag deleted again, to make garbage.
pub async fn race(f: Arc<Fixture>, pushers: usize, images: usize) -> Outcome {
    let stop = Arc::new(AtomicBool::new(false));
    let collector = {
        let (f, stop) = (f.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut runs, mut freed) = (0, 0);
            while !stop.load(Ordering::SeqCst) || runs == 0 {
                freed += gc(&f, now()).await.blobs_deleted;
                runs += 1;
                tokio::task::yield_now().await;
            }
            (runs, freed)
        })
    };
    let mut tasks = Vec::new();
    for p in 0..pushers {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Outcome::default();
            let repo = format!("race/{p}");
            for i in 0..images {
                let tag = format!("t{i}");
                let unique = format!("layer {p}-{i}");
                let contents = ["race config", "race shared layer", unique.as_str()];
                let mut blobs = Vec::new();
                for c in contents {
                    let d = Digest::sha256_of(c.as_bytes());
                    let uri = format!("/v2/{repo}/blobs/{d}");
                    if f.call(Method::HEAD, &uri, &[], vec![]).await.status != StatusCode::OK {
                        f.push_blob(&repo, c.as_bytes()).await;
                    }
                    blobs.push((d, c.as_bytes().to_vec()));
                }
                let sizes: Vec<_> = blobs.iter().map(|(d, b)| (d.clone(), b.len())).collect();
                let manifest = image_manifest(&sizes, None);
                let r = f.push_manifest(&repo, &tag, OCI_MANIFEST, &manifest).await;
                if r.status == StatusCode::CREATED {
                    out.pushed += 1;
                    let image = Image {
                        digest: Digest::sha256_of(manifest.as_bytes()),
                        manifest,
                        media: OCI_MANIFEST,
                        blobs,
                    };
                    if i % 3 == 0 {
                        delete(&f, &format!("/v2/{repo}/manifests/{tag}")).await;
                    } else {
                        out.kept.push((repo.clone(), image));
                    }
                } else {
                    assert_eq!(
                        r.code(),
                        "MANIFEST_BLOB_UNKNOWN",
                        "{}",
                        String::from_utf8_lossy(&r.body)
                    );
                    out.refused.push((repo.clone(), tag));
                }
            }
            out
        }));
    }
    let mut outcome = Outcome::default();
    for t in tasks {
        let o = t.await.unwrap();
        outcome.pushed += o.pushed;
        outcome.kept.extend(o.kept);
        outcome.refused.extend(o.refused);
    }
    stop.store(true, Ordering::SeqCst);
    (outcome.collections, outcome.freed) = collector.await.unwrap();
    outcome
}
