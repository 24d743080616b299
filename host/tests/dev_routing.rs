//! One `shoal dev` config with several namespaces, each on a different real server: S3
//! (moto), an upstream Docker registry (docker-registry, pull-through), and a local folder;
//! and another with GCS (fake-gcs-server) and HDFS (the in-repo WebHDFS fake, the one
//! server here that is a mock). Each pull is served from the right server; bad credentials are `UNAUTHORIZED` naming the
//! backend and the namespace with nothing cached; a server that is down is a clear 503 and
//! the process stays healthy.

mod common;
#[allow(dead_code)] // this binary uses the docker-registry fixture only
mod registry_peers;

use common::daemons::{FakeGcs, Moto, MotoKeys};
use common::http::{ACCEPT_MANIFESTS, http, push_over_http};
use common::image::{self, Digest};
use common::skopeo::{skopeo, skopeo_pull, skopeo_push};
use common::webhdfs::WebHdfs;
use common::{DevServer, assert_same_blobs, block_on, error_of, require, run_ok, tempdir};

const BUCKET: &str = "shoal-routing";

/// An s3 entry as the seed writes one; `name_path` decides whether it holds blobs
/// (`sharded_docker_blob`) or tags (`docker_tag`).
fn s3_backend(namespace: &str, endpoint: &str, user: &str, name_path: &str) -> String {
    format!(
        "  - namespace: {namespace}\n    backend:\n      s3:\n        region: us-east-1\n        \
         bucket: {BUCKET}\n        root_directory: /kraken/\n        name_path: {name_path}\n        \
         username: {user}\n        endpoint: {endpoint}\n        disable_ssl: true\n        \
         force_path_style: true\n"
    )
}

fn s3_user(user: &str, keys: &MotoKeys) -> String {
    format!(
        "    {user}:\n      s3:\n        aws_access_key_id: {}\n        aws_secret_access_key: \
         {}\n",
        keys.access_key_id, keys.secret_access_key
    )
}

#[test]
fn each_namespace_is_served_by_its_own_server() {
    if !require("skopeo") || !require("docker-registry") || !Moto::available() {
        return;
    }
    let data = tempdir("shoal-routing-");
    let work = tempdir("shoal-routing-layout-");

    // Three servers, three images.
    let mut moto = Moto::start();
    let keys = moto.setup(BUCKET, false);
    let upstream = registry_peers::Registry::start(work.path(), 0, &registry_peers::Auth::Open);
    let mirrored_layout = work.path().join("mirrored");
    let mirrored = image::write_image_layout(&mirrored_layout, "v1", "mirrored");
    run_ok(
        skopeo()
            .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", mirrored_layout.display()))
            .arg(format!("docker://{}/library/app:v1", upstream.addr)),
    );
    let s3_layout = work.path().join("s3");
    let in_s3 = image::write_image_layout(&s3_layout, "v1", "in-s3");
    let local_layout = work.path().join("local");
    let local = image::write_image_layout(&local_layout, "v1", "local");

    let registry = format!(
        "        address: {}\n        security:\n          tls:\n            client:\n              \
         disabled: true\n",
        upstream.addr
    );
    let fs_root = data.path().join("backend");
    let config = data.path().join("dev.yaml");
    std::fs::write(
        &config,
        format!(
            "auth:\n  s3:\n{}backends:\n{}{}  - namespace: library/.*\n    backend:\n      \
             registry_blob:\n{registry}  - namespace: library/.*\n    backend:\n      \
             registry_tag:\n{registry}  - namespace: .*\n    backend:\n      fs:\n        \
             root: {}\n",
            s3_user("tester", &keys),
            s3_backend(
                "s3-images/.*",
                &moto.endpoint(),
                "tester",
                "sharded_docker_blob"
            ),
            s3_backend("s3-images/.*", &moto.endpoint(), "tester", "docker_tag"),
            fs_root.display()
        ),
    )
    .unwrap();

    // Push the S3 and the local image through shoal: each lands in its own backend.
    let server = DevServer::start_with_config(data.path(), &config);
    skopeo_push(&server, &s3_layout, "v1", "s3-images/app:v1", false);
    block_on(async {
        let client = reqwest::Client::new();
        push_over_http(&client, &server, "team/app", "v1", &local_layout, &local).await;
    });
    server.stop();
    for d in &in_s3.layer_digests {
        assert!(
            !fs_root.join(d.hex()).exists(),
            "{d} of s3-images went to the fs backend"
        );
    }
    for d in &local.layer_digests {
        assert!(
            fs_root.join(d.hex()).exists(),
            "{d} of team/app is not in the fs backend"
        );
    }

    // A cold cache: every pull has to reach its own server.
    std::fs::remove_dir_all(data.path().join("cache")).unwrap();
    let server = DevServer::start_with_config(data.path(), &config);
    for (reference, layout, built) in [
        ("s3-images/app:v1", &s3_layout, &in_s3),
        ("library/app:v1", &mirrored_layout, &mirrored),
        ("team/app:v1", &local_layout, &local),
    ] {
        let out = work
            .path()
            .join(format!("out-{}", reference.replace(['/', ':'], "-")));
        skopeo_pull(&server, reference, &out, "v1", false);
        assert_same_blobs(layout, &out);
        assert_eq!(
            image::layout_digest_for_tag(&out, "v1"),
            built.manifest_digest,
            "{reference}"
        );
    }
    // The S3 image really came from moto: with moto gone, an uncached blob of it is a 503
    // naming the plugin, and the process serves everything else.
    std::fs::remove_dir_all(data.path().join("cache")).ok();
    server.stop();
    moto.stop();
    let server = DevServer::start_with_config(data.path(), &config);
    let d = &in_s3.layer_digests[0];
    let (status, _, body) = http(
        "GET",
        &server.url(&format!("/v2/s3-images/app/blobs/{d}")),
        "*/*",
    );
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    let (code, message) = error_of(&body);
    assert_eq!(code, "UNAVAILABLE");
    assert!(
        message.contains("plugin s3") && message.contains("s3-images/app"),
        "{message}"
    );
    let (status, _, body) = http(
        "GET",
        &server.url("/v2/team/app/manifests/v1"),
        ACCEPT_MANIFESTS,
    );
    assert_eq!(status, 200);
    assert_eq!(body, local.manifest);
    server.stop();
    upstream.stop();
}

#[test]
fn bad_s3_credentials_are_unauthorized_and_nothing_is_cached() {
    if !Moto::available() {
        return;
    }
    let data = tempdir("shoal-badcreds-");
    let moto = Moto::start();
    let keys = moto.setup(BUCKET, true);
    let wrong = MotoKeys {
        secret_access_key: format!("{}x", keys.secret_access_key),
        ..keys.clone()
    };
    let config = data.path().join("dev.yaml");
    std::fs::write(
        &config,
        format!(
            "auth:\n  s3:\n{}{}backends:\n{}{}",
            s3_user("right", &keys),
            s3_user("wrong", &wrong),
            s3_backend("good/.*", &moto.endpoint(), "right", "sharded_docker_blob"),
            s3_backend("bad/.*", &moto.endpoint(), "wrong", "sharded_docker_blob"),
        ),
    )
    .unwrap();
    let server = DevServer::start_with_config(data.path(), &config);
    let blob = b"a layer that must not be kept".to_vec();
    let d = Digest::of(&blob);
    let push = |ns: &str| {
        block_on(async {
            let r = reqwest::Client::new()
                .post(server.url(&format!("/v2/{ns}/blobs/uploads/?digest={d}")))
                .body(blob.clone())
                .send()
                .await
                .expect("POST");
            (r.status().as_u16(), r.bytes().await.expect("body").to_vec())
        })
    };
    let (status, body) = push("bad/app");
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&body));
    let (code, message) = error_of(&body);
    assert_eq!(code, "UNAUTHORIZED");
    assert!(
        message.contains("plugin s3") && message.contains("namespace bad/app"),
        "the error names the backend and the namespace: {message}"
    );
    // Nothing was kept: the blob is not served, so the client's retry uploads again.
    let (status, _, _) = http(
        "HEAD",
        &server.url(&format!("/v2/bad/app/blobs/{d}")),
        "*/*",
    );
    assert_eq!(status, 404);
    let (status, _, _) = http(
        "GET",
        &server.url(&format!("/v2/good/app/blobs/{d}")),
        "*/*",
    );
    assert_eq!(status, 404);
    // The same push with the right credentials works, and is served.
    let (status, body) = push("good/app");
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    let (status, _, got) = http(
        "GET",
        &server.url(&format!("/v2/good/app/blobs/{d}")),
        "*/*",
    );
    assert_eq!((status, got), (200, blob.clone()));
    server.stop();
}

/// A gcs entry for fake-gcs-server (with an empty key: the emulator checks none).
fn gcs_backend(namespace: &str, endpoint: &str, name_path: &str) -> String {
    format!(
        "  - namespace: {namespace}\n    backend:\n      gcs:\n        bucket: {BUCKET}\n        \
         root_directory: /kraken/\n        name_path: {name_path}\n        username: tester\n        \
         endpoint: {endpoint}\n"
    )
}

/// An hdfs entry for the WebHDFS fake: the standby name node first, the data node granted.
fn hdfs_backend(namespace: &str, fake: &WebHdfs, name_path: &str) -> String {
    format!(
        "  - namespace: {namespace}\n    backend:\n      hdfs:\n        namenodes: ['{}', '{}']\n        \
         root_directory: /kraken/\n        name_path: {name_path}\n        user_name: shoal\n        \
         allowed_hosts: ['{}']\n",
        fake.namenodes[0], fake.namenodes[1], fake.datanode
    )
}

/// Object names in the fake-gcs-server bucket.
fn gcs_objects(endpoint: &str) -> Vec<String> {
    let (status, _, body) = http(
        "GET",
        &format!("{endpoint}/storage/v1/b/{BUCKET}/o"),
        "application/json",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let list = common::json(&body);
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn gcs_and_hdfs_namespaces_are_served_by_their_own_servers() {
    if !require("skopeo") {
        return;
    }
    let Some(binary) = FakeGcs::binary() else {
        return;
    };
    let data = tempdir("shoal-routing2-");
    let work = tempdir("shoal-routing2-layout-");
    let mut gcs = FakeGcs::start(&binary);
    block_on(gcs.create_bucket(BUCKET));
    let hdfs = WebHdfs::start();
    hdfs.set_standby(0, true);

    let gcs_layout = work.path().join("gcs");
    let in_gcs = image::write_image_layout(&gcs_layout, "v1", "in-gcs");
    let hdfs_layout = work.path().join("hdfs");
    let in_hdfs = image::write_image_layout(&hdfs_layout, "v1", "in-hdfs");
    let config = data.path().join("dev.yaml");
    std::fs::write(
        &config,
        format!(
            // fake-gcs-server checks no credentials: an empty key makes the plugin send
            // no Authorization.
            "auth:\n  gcs:\n    tester:\n      gcs:\n        access_blob: ''\nbackends:\n{}{}{}{}",
            gcs_backend("gcs-images/.*", &gcs.endpoint(), "sharded_docker_blob"),
            gcs_backend("gcs-images/.*", &gcs.endpoint(), "docker_tag"),
            hdfs_backend("hdfs-images/.*", &hdfs, "sharded_docker_blob"),
            hdfs_backend("hdfs-images/.*", &hdfs, "docker_tag"),
        ),
    )
    .unwrap();

    // Each push lands in its own server, in the seed's layout under the root.
    let server = DevServer::start_with_config(data.path(), &config);
    skopeo_push(&server, &gcs_layout, "v1", "gcs-images/app:v1", false);
    skopeo_push(&server, &hdfs_layout, "v1", "hdfs-images/app:v1", false);
    server.stop();
    let objects = gcs_objects(&gcs.endpoint());
    let blob_path = |d: &Digest| {
        format!(
            "kraken/docker/registry/v2/blobs/sha256/{}/{}/data",
            &d.hex()[..2],
            d.hex()
        )
    };
    for d in &in_gcs.layer_digests {
        assert!(
            objects.contains(&blob_path(d)),
            "{d} is not in GCS: {objects:?}"
        );
        assert!(
            hdfs.file(&format!("/{}", blob_path(d))).is_none(),
            "{d} went to HDFS"
        );
    }
    assert!(
        objects.contains(
            &"kraken/docker/registry/v2/repositories/gcs-images/app/_manifests/tags/v1/current/link"
                .to_owned()
        ),
        "{objects:?}"
    );
    for d in &in_hdfs.layer_digests {
        assert!(
            hdfs.file(&format!("/{}", blob_path(d))).is_some(),
            "{d} is not in HDFS: {:?}",
            hdfs.paths()
        );
        assert!(!objects.contains(&blob_path(d)), "{d} went to GCS");
    }
    assert!(
        hdfs.users().iter().all(|u| u == "shoal"),
        "{:?}",
        hdfs.users()
    );

    // A cold cache: every pull has to reach its own server.
    std::fs::remove_dir_all(data.path().join("cache")).unwrap();
    let server = DevServer::start_with_config(data.path(), &config);
    let datanode_before = hdfs.datanode_hits();
    for (reference, layout, built) in [
        ("gcs-images/app:v1", &gcs_layout, &in_gcs),
        ("hdfs-images/app:v1", &hdfs_layout, &in_hdfs),
    ] {
        let out = work
            .path()
            .join(format!("out-{}", reference.replace(['/', ':'], "-")));
        skopeo_pull(&server, reference, &out, "v1", false);
        assert_same_blobs(layout, &out);
        assert_eq!(
            image::layout_digest_for_tag(&out, "v1"),
            built.manifest_digest,
            "{reference}"
        );
    }
    assert!(
        hdfs.datanode_hits() > datanode_before,
        "the HDFS image was read through the data node"
    );
    server.stop();

    // With fake-gcs-server gone, an uncached GCS blob is a 503 naming the plugin, while
    // HDFS still serves its own.
    std::fs::remove_dir_all(data.path().join("cache")).ok();
    gcs.stop();
    let server = DevServer::start_with_config(data.path(), &config);
    let d = &in_gcs.layer_digests[0];
    let (status, _, body) = http(
        "GET",
        &server.url(&format!("/v2/gcs-images/app/blobs/{d}")),
        "*/*",
    );
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    let (code, message) = error_of(&body);
    assert_eq!(code, "UNAVAILABLE");
    assert!(
        message.contains("plugin gcs") && message.contains("gcs-images/app"),
        "{message}"
    );
    let d = &in_hdfs.layer_digests[0];
    let (status, _, body) = http(
        "GET",
        &server.url(&format!("/v2/hdfs-images/app/blobs/{d}")),
        "*/*",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(Digest::of(&body), *d);
    server.stop();
}
