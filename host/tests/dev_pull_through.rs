//! `shoal dev` in front of a real upstream registry (Debian's docker-registry) through the
//! `registry_blob` / `registry_tag` backends: a cold pull asks the upstream for a manifest as a
//! manifest only, a tag moved upstream is seen at once (`tag_ttl: 0s`), and while the upstream
//! is down the last digest it named is served with a warning; an image pulled under a second
//! name is served from what the first pull brought in; the upstream's referrers (kept under the
//! referrers tag schema) are listed.

mod common;
#[allow(dead_code)] // this binary uses the docker-registry fixture only
mod registry_peers;

use common::http::{ACCEPT_MANIFESTS, http};
use common::image;
use common::skopeo::skopeo;
use common::{DevServer, block_on, require, run_ok, tempdir};

fn pull_through_config(upstream: &std::net::SocketAddr) -> String {
    format!(
        "tag_ttl: 0s\nbackends:\n  - namespace: library/.*\n    backend:\n      registry_blob:\n        \
         address: {upstream}\n        security:\n          tls:\n            client:\n              \
         disabled: true\n  - namespace: library/.*\n    backend:\n      registry_tag:\n        \
         address: {upstream}\n        security:\n          tls:\n            client:\n              \
         disabled: true\n"
    )
}

/// Copies the OCI layout at `layout` (tag `tag`) to `reference` on the upstream.
fn seed(layout: &std::path::Path, tag: &str, upstream: &std::net::SocketAddr, reference: &str) {
    run_ok(
        skopeo()
            .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:{tag}", layout.display()))
            .arg(format!("docker://{upstream}/{reference}")),
    );
}

/// The digest `shoal dev` serves for `library/app:v1`.
fn served_digest(server: &DevServer) -> (u16, String) {
    let (status, headers, body) = http(
        "GET",
        &server.url("/v2/library/app/manifests/v1"),
        ACCEPT_MANIFESTS,
    );
    let digest = headers
        .get("docker-content-digest")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    (status, digest)
}

#[test]
fn pull_through_tags_follow_the_upstream_and_go_stale_only_while_it_is_down() {
    if !require("skopeo") || !require("docker-registry") {
        return;
    }
    let work = tempdir("shoal-pull-through-");
    let upstream = registry_peers::Registry::start(work.path(), 0, &registry_peers::Auth::Open);
    let first = image::write_image_layout(&work.path().join("first"), "v1", "first");
    let second = image::write_image_layout(&work.path().join("second"), "v1", "second");
    seed(
        &work.path().join("first"),
        "v1",
        &upstream.addr,
        "library/app:v1",
    );

    let data = tempdir("shoal-pull-through-data-");
    let config = data.path().join("dev.yaml");
    std::fs::write(&config, pull_through_config(&upstream.addr)).unwrap();
    let server = DevServer::start_with_config(data.path(), &config);

    // Cold: the manifest comes through, and the upstream was never asked for it as a blob.
    let (status, digest) = served_digest(&server);
    assert_eq!(
        (status, digest.as_str()),
        (200, first.manifest_digest.as_str())
    );
    let log = upstream.log_text();
    let as_manifest = format!("/manifests/{}", first.manifest_digest.as_str());
    assert!(
        log.contains(&as_manifest),
        "the upstream's log names the manifest fetch:\n{log}"
    );
    let as_blob = format!("/blobs/{}", first.manifest_digest.as_str());
    assert_eq!(
        log.matches(&as_blob).count(),
        0,
        "the manifest was asked for as a blob:\n{log}"
    );

    // The tag moves upstream: the next request by tag sees it.
    seed(
        &work.path().join("second"),
        "v1",
        &upstream.addr,
        "library/app:v1",
    );
    let (status, digest) = served_digest(&server);
    assert_eq!(
        (status, digest.as_str()),
        (200, second.manifest_digest.as_str())
    );

    // The upstream goes away: the last digest it named is served, with a warning.
    upstream.stop();
    let (status, digest) = served_digest(&server);
    assert_eq!(
        (status, digest.as_str()),
        (200, second.manifest_digest.as_str())
    );
    assert!(
        server.logged(|l| l.contains("serving a stale tag")),
        "{:?}",
        server.log()
    );
    // A digest is immutable: served from the cache without asking anyone.
    let (status, _, _) = http(
        "GET",
        &server.url(&format!(
            "/v2/library/app/manifests/{}",
            first.manifest_digest.as_str()
        )),
        ACCEPT_MANIFESTS,
    );
    assert_eq!(status, 200);
    server.stop();
}

/// One image under two names upstream (a copy, or two images over one base layer): pulled
/// through `shoal dev` by the first name, then by the second, by tag and by digest. The second
/// pull is served from what the first brought in, after the upstream's `HEAD` says the second
/// repository holds each blob; no blob is downloaded twice.
#[test]
fn an_image_pulled_under_a_second_name_is_served_from_the_first_pulls_content() {
    if !require("skopeo") || !require("docker-registry") {
        return;
    }
    let work = tempdir("shoal-pull-through-shared-");
    let upstream = registry_peers::Registry::start(work.path(), 0, &registry_peers::Auth::Open);
    let built = image::write_image_layout(&work.path().join("img"), "v1", "shared");
    for name in ["library/app:v1", "library/copy:v1"] {
        seed(&work.path().join("img"), "v1", &upstream.addr, name);
    }
    let data = tempdir("shoal-pull-through-shared-data-");
    let config = data.path().join("dev.yaml");
    std::fs::write(&config, pull_through_config(&upstream.addr)).unwrap();
    let server = DevServer::start_with_config(data.path(), &config);

    let pull = |reference: &str, into: &str| {
        run_ok(
            skopeo()
                .args(["copy", "--src-tls-verify=false"])
                .arg(format!("docker://{}/{reference}", server.host_port()))
                .arg(format!("oci:{}:v1", work.path().join(into).display())),
        );
    };
    pull("library/app:v1", "first");
    pull("library/copy:v1", "second");
    pull(
        &format!("library/copy@{}", built.manifest_digest.as_str()),
        "third",
    );
    // The upstream's access log, without the seeding's own requests (skopeo's).
    let log = upstream.log_text();
    let shoal: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("127.0.0.1 - -") && !l.contains("skopeo"))
        .collect();
    for blob in built.layer_digests.iter().chain([&built.config_digest]) {
        let gets = shoal
            .iter()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&format!("/blobs/{blob} ")))
            .count();
        assert_eq!(
            gets, 1,
            "{blob} downloaded once, for library/app:\n{shoal:#?}"
        );
        let checked = format!("\"HEAD /v2/library/copy/blobs/{blob} HTTP/1.1\" 200");
        assert!(
            shoal.iter().any(|l| l.contains(&checked)),
            "library/copy's {blob} was checked upstream:\n{shoal:#?}"
        );
    }
    server.stop();
    upstream.stop();
}

/// An upstream without the referrers API (distribution 2.8) keeps a signature's referrers under
/// the referrers tag schema, as its clients push them: an index tagged `sha256-<hex>` of the
/// subject. `shoal dev` lists them for the pull-through namespace, with `artifactType`
/// filtering; an empty list would tell a client there are none.
#[test]
fn a_pull_through_namespace_lists_the_referrers_the_upstream_keeps_by_tag() {
    if !require("skopeo") || !require("docker-registry") {
        return;
    }
    let work = tempdir("shoal-pull-through-referrers-");
    let upstream = registry_peers::Registry::start(work.path(), 0, &registry_peers::Auth::Open);
    let built = image::write_image_layout(&work.path().join("img"), "v1", "signed");
    seed(
        &work.path().join("img"),
        "v1",
        &upstream.addr,
        "library/app:v1",
    );

    // What a signing client does against such an upstream: the empty config, the signature,
    // then the index under the subject's tag.
    let base = format!("http://{}/v2/library/app", upstream.addr);
    let empty = image::Digest::of(b"{}");
    let subject = &built.manifest_digest;
    let sig = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.sig","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{empty}","size":2}}],"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{subject}","size":{}}}}}"#,
        built.manifest.len()
    );
    let sig_d = image::Digest::of(sig.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{sig_d}","size":{},"artifactType":"application/vnd.example.sig"}}]}}"#,
        sig.len()
    );
    block_on(async {
        let client = reqwest::Client::new();
        let started = client
            .post(format!("{base}/blobs/uploads/"))
            .send()
            .await
            .unwrap();
        assert_eq!(started.status().as_u16(), 202);
        let location = started.headers()["location"].to_str().unwrap().to_owned();
        let separator = if location.contains('?') { '&' } else { '?' };
        let put = |url: String, kind: &'static str, body: Vec<u8>| {
            let client = client.clone();
            async move {
                let r = client
                    .put(&url)
                    .header("Content-Type", kind)
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status().as_u16(), 201, "PUT {url}: {:?}", r.text().await);
            }
        };
        put(
            format!("{location}{separator}digest={empty}"),
            "application/octet-stream",
            b"{}".to_vec(),
        )
        .await;
        put(
            format!("{base}/manifests/{sig_d}"),
            "application/vnd.oci.image.manifest.v1+json",
            sig.into_bytes(),
        )
        .await;
        put(
            format!("{base}/manifests/sha256-{}", subject.hex()),
            "application/vnd.oci.image.index.v1+json",
            index.into_bytes(),
        )
        .await;
    });

    let data = tempdir("shoal-pull-through-referrers-data-");
    let config = data.path().join("dev.yaml");
    std::fs::write(&config, pull_through_config(&upstream.addr)).unwrap();
    let server = DevServer::start_with_config(data.path(), &config);
    for query in ["", "?artifactType=application/vnd.example.sig"] {
        let (status, _, body) = http(
            "GET",
            &server.url(&format!("/v2/library/app/referrers/{subject}{query}")),
            "application/vnd.oci.image.index.v1+json",
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let listed = v["manifests"].as_array().unwrap();
        assert_eq!(listed.len(), 1, "{query}: {v}");
        assert_eq!(listed[0]["digest"], sig_d.as_str(), "{query}");
        assert_eq!(listed[0]["artifactType"], "application/vnd.example.sig");
    }
    let (status, _, body) = http(
        "GET",
        &server.url(&format!(
            "/v2/library/app/referrers/{subject}?artifactType=application/vnd.example.sbom"
        )),
        "application/vnd.oci.image.index.v1+json",
    );
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["manifests"], serde_json::json!([]));
    server.stop();
    upstream.stop();
}
