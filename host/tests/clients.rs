//! `shoal dev` driven by the clients users push and pull with: skopeo, containerd's ctr, oras-py
//! and docker. Each test starts its own server (and daemons) on 127.0.0.1 and builds its images
//! on the spot, so nothing reaches the network.
//!
//! A peer that is not installed skips its test, unless `SHOAL_REQUIRE_PEERS=1` (as in CI), where
//! it fails: `scripts/install-test-deps` installs them all.

mod common;

use std::path::Path;
use std::time::Duration;

use common::daemons::{Containerd, Dockerd};
use common::http::{ACCEPT_MANIFESTS, http, push_over_http};
use common::image::{self, Digest};
use common::skopeo::{skopeo, skopeo_inspect_raw, skopeo_pull, skopeo_push};
use common::{
    DevServer, assert_same_blobs, block_on, command, json, require, require_python_module,
    require_root, run, run_ok, tempdir,
};
use serde_json::Value;

#[test]
fn skopeo_round_trips_an_image_with_identical_digests() {
    if !require("skopeo") {
        return;
    }
    let server = DevServer::start();
    let work = tempdir("shoal-skopeo-");
    let src = work.path().join("src");
    let built = image::write_image_layout(&src, "v1", "skopeo-single");

    skopeo_push(&server, &src, "v1", "test/app:v1", false);

    let raw = skopeo_inspect_raw(&server, "test/app:v1");
    assert!(
        raw == built.manifest,
        "inspect --raw by tag is not the pushed manifest:\n{}",
        String::from_utf8_lossy(&raw)
    );
    let raw = skopeo_inspect_raw(&server, &format!("test/app@{}", built.manifest_digest));
    assert!(
        raw == built.manifest,
        "inspect --raw by digest is not the pushed manifest"
    );

    let inspected = json(&run_ok(
        skopeo()
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{}/test/app:v1", server.host_port())),
    ));
    assert_eq!(inspected["Digest"], built.manifest_digest.as_str());
    assert_eq!(inspected["Architecture"], "amd64");
    let layers: Vec<&str> = inspected["Layers"]
        .as_array()
        .expect("Layers")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(
        layers,
        built
            .layer_digests
            .iter()
            .map(Digest::as_str)
            .collect::<Vec<_>>()
    );

    let tags = json(&run_ok(
        skopeo()
            .args(["list-tags", "--tls-verify=false"])
            .arg(format!("docker://{}/test/app", server.host_port())),
    ));
    assert_eq!(tags["Tags"], serde_json::json!(["v1"]));

    let out = work.path().join("out");
    skopeo_pull(&server, "test/app:v1", &out, "v1", false);
    assert_eq!(
        image::layout_digest_for_tag(&out, "v1"),
        built.manifest_digest
    );
    assert_same_blobs(&src, &out);

    let by_digest = work.path().join("by-digest");
    skopeo_pull(
        &server,
        &format!("test/app@{}", built.manifest_digest),
        &by_digest,
        "pinned",
        false,
    );
    assert_eq!(
        image::layout_digest_for_tag(&by_digest, "pinned"),
        built.manifest_digest
    );
    assert_same_blobs(&src, &by_digest);
}

#[test]
fn skopeo_round_trips_a_two_platform_index() {
    if !require("skopeo") {
        return;
    }
    let server = DevServer::start();
    let work = tempdir("shoal-skopeo-index-");
    let src = work.path().join("src");
    let built = image::write_index_layout(&src, "v1", "skopeo-index");

    skopeo_push(&server, &src, "v1", "test/multi:v1", true);

    let raw = skopeo_inspect_raw(&server, "test/multi:v1");
    assert!(
        raw == built.index,
        "inspect --raw is not the pushed index:\n{}",
        String::from_utf8_lossy(&raw)
    );
    for child in &built.images {
        let raw = skopeo_inspect_raw(&server, &format!("test/multi@{}", child.manifest_digest));
        assert!(
            raw == child.manifest,
            "the {} manifest came back changed",
            child.architecture
        );
    }

    let out = work.path().join("out");
    skopeo_pull(&server, "test/multi:v1", &out, "v1", true);
    assert_eq!(image::layout_digest_for_tag(&out, "v1"), built.index_digest);
    let pulled = image::read_layout_blobs(&out);
    for child in &built.images {
        for digest in child.all_digests() {
            assert!(
                pulled.contains_key(&digest),
                "{} blob {digest} missing after copy --all",
                child.architecture
            );
        }
    }
    assert_same_blobs(&src, &out);

    // Without --all skopeo resolves the index to this machine's platform (linux/amd64).
    let amd64 = &built.images[0];
    let single = work.path().join("single");
    let mut cmd = skopeo();
    cmd.args([
        "copy",
        "--src-tls-verify=false",
        "--override-arch",
        "amd64",
        "--override-os",
        "linux",
    ])
    .arg(format!("docker://{}/test/multi:v1", server.host_port()))
    .arg(format!("oci:{}:amd64", single.display()));
    run_ok(&mut cmd);
    assert_eq!(
        image::layout_digest_for_tag(&single, "amd64"),
        amd64.manifest_digest
    );
}

#[test]
fn skopeo_copies_between_repositories_with_a_mount_and_deletes() {
    if !require("skopeo") {
        return;
    }
    let server = DevServer::start();
    let work = tempdir("shoal-skopeo-mount-");
    let src = work.path().join("src");
    let built = image::write_image_layout(&src, "v1", "skopeo-mount");
    skopeo_push(&server, &src, "v1", "test/app:v1", false);

    // Registry to registry on the same host: skopeo knows the blobs live in test/app and asks
    // for a cross-repository mount (POST .../blobs/uploads/?mount=DIGEST&from=test/app) instead
    // of uploading them again.
    let host = server.host_port();
    let output = run(skopeo()
        .args([
            "--debug",
            "copy",
            "--preserve-digests",
            "--src-tls-verify=false",
            "--dest-tls-verify=false",
        ])
        .arg(format!("docker://{host}/test/app:v1"))
        .arg(format!("docker://{host}/mirror/app:v1")));
    let debug = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "skopeo copy between repositories failed:\n{debug}"
    );
    // skopeo logs `Trying to mount /v2/mirror/app/blobs/uploads/?from=test%2Fapp&mount=sha256%3A<hex>`
    // and then `... mount OK` for each blob the registry mounted.
    let mount_lines: Vec<&str> = debug
        .lines()
        .filter(|l| l.contains("Trying to mount"))
        .collect();
    let mounted = debug.lines().filter(|l| l.contains("mount OK")).count();
    eprintln!(
        "skopeo's mount lines ({mounted} OK):\n{}",
        mount_lines.join("\n")
    );
    assert!(
        mounted >= built.layer_digests.len(),
        "skopeo mounted {mounted} blobs, not every layer; its debug log:\n{debug}"
    );
    for layer in &built.layer_digests {
        assert!(
            mount_lines
                .iter()
                .any(|l| l.contains("from=test%2Fapp") && l.contains(layer.hex())),
            "skopeo did not try to mount {layer} from test/app; its debug log:\n{debug}"
        );
        let put_of_layer = debug.lines().any(|l| {
            l.contains("PUT") && l.contains("mirror/app/blobs/uploads") && l.contains(layer.hex())
        });
        assert!(
            !put_of_layer,
            "skopeo uploaded {layer} again instead of mounting it:\n{debug}"
        );
        let (status, headers, _) = http(
            "HEAD",
            &server.url(&format!("/v2/mirror/app/blobs/{layer}")),
            "*/*",
        );
        assert_eq!(status, 200, "HEAD mirror/app blob {layer}");
        assert_eq!(
            headers
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok()),
            Some(layer.as_str())
        );
    }
    assert!(
        skopeo_inspect_raw(&server, "mirror/app:v1") == built.manifest,
        "mirror/app:v1 differs from test/app:v1"
    );

    run_ok(
        skopeo()
            .args(["delete", "--tls-verify=false"])
            .arg(format!("docker://{host}/mirror/app:v1")),
    );
    let gone = run(skopeo()
        .args(["inspect", "--tls-verify=false", "--raw"])
        .arg(format!("docker://{host}/mirror/app:v1")));
    assert!(
        !gone.status.success(),
        "mirror/app:v1 is still served after skopeo delete"
    );
    for reference in ["v1".to_owned(), built.manifest_digest.to_string()] {
        let (status, _, body) = http(
            "GET",
            &server.url(&format!("/v2/mirror/app/manifests/{reference}")),
            ACCEPT_MANIFESTS,
        );
        assert_eq!(
            status,
            404,
            "GET mirror/app manifest {reference} after delete: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(
            json(&body)["errors"][0]["code"],
            "MANIFEST_UNKNOWN",
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    // The delete is per repository: test/app still has the same manifest.
    assert!(
        skopeo_inspect_raw(&server, "test/app:v1") == built.manifest,
        "deleting mirror/app:v1 changed test/app:v1"
    );
}

/// The digest containerd lists for `reference`.
fn ctr_image_digest(containerd: &Containerd, reference: &str) -> Digest {
    Digest::parse(&containerd.image_digest(reference)).expect("the DIGEST column")
}

#[test]
fn ctr_pulls_an_image_and_an_index_pushed_by_skopeo() {
    if !(require("skopeo") && require("containerd") && require("ctr") && require_root("containerd"))
    {
        return;
    }
    let server = DevServer::start();
    let work = tempdir("shoal-ctr-pull-");
    let single = image::write_image_layout(&work.path().join("single"), "v1", "ctr-pull");
    let index = image::write_index_layout(&work.path().join("index"), "v1", "ctr-pull-index");
    skopeo_push(
        &server,
        &work.path().join("single"),
        "v1",
        "test/app:v1",
        false,
    );
    skopeo_push(
        &server,
        &work.path().join("index"),
        "v1",
        "test/multi:v1",
        true,
    );

    let containerd = Containerd::start();
    let host = server.host_port();
    let app = format!("{host}/test/app:v1");
    run_ok(
        containerd
            .ctr()
            .args(["images", "pull", "--plain-http", "--snapshotter", "native"])
            .arg(&app),
    );
    assert_eq!(ctr_image_digest(&containerd, &app), single.manifest_digest);
    let content =
        String::from_utf8(run_ok(containerd.ctr().args(["content", "ls"]))).expect("UTF-8");
    for digest in single.all_digests() {
        assert!(
            content.contains(digest.as_str()),
            "{digest} not in containerd's content store:\n{content}"
        );
    }
    // Unpacking checks each uncompressed layer against the config's diff_ids: one committed
    // snapshot per layer means all three matched.
    let snapshots = String::from_utf8(run_ok(containerd.ctr().args([
        "snapshots",
        "--snapshotter",
        "native",
        "ls",
    ])))
    .expect("UTF-8");
    let committed = snapshots
        .lines()
        .filter(|l| l.contains("Committed"))
        .count();
    assert_eq!(
        committed,
        single.layer_digests.len(),
        "ctr did not unpack every layer:\n{snapshots}"
    );

    let multi = format!("{host}/test/multi:v1");
    run_ok(
        containerd
            .ctr()
            .args(["images", "pull", "--plain-http", "--snapshotter", "native"])
            .arg(&multi),
    );
    assert_eq!(ctr_image_digest(&containerd, &multi), index.index_digest);
    let content =
        String::from_utf8(run_ok(containerd.ctr().args(["content", "ls"]))).expect("UTF-8");
    for digest in index.images[0].all_digests() {
        assert!(
            content.contains(digest.as_str()),
            "amd64 blob {digest} not pulled:\n{content}"
        );
    }
}

#[test]
fn ctr_pushes_an_imported_image_that_skopeo_pulls_back() {
    if !(require("skopeo") && require("containerd") && require("ctr") && require_root("containerd"))
    {
        return;
    }
    let server = DevServer::start();
    let work = tempdir("shoal-ctr-push-");
    let src = work.path().join("src");
    let built = image::write_image_layout(&src, "v1", "ctr-push");
    let archive = image::layout_to_archive(&src, &work.path().join("image.tar"));

    let containerd = Containerd::start();
    let host = server.host_port();
    let base = format!("{host}/ctr/app");
    run_ok(
        containerd
            .ctr()
            .args(["images", "import", "--snapshotter", "native", "--base-name"])
            .arg(&base)
            .arg(&archive),
    );
    let reference = format!("{base}:v1");
    assert_eq!(
        ctr_image_digest(&containerd, &reference),
        built.manifest_digest
    );
    // containerd's pusher streams each blob in one PUT after the POST, with no Content-Length
    // when it does not know the size up front, and checks that the manifest came back.
    run_ok(
        containerd
            .ctr()
            .args(["images", "push", "--plain-http"])
            .arg(&reference),
    );

    assert!(
        skopeo_inspect_raw(&server, "ctr/app:v1") == built.manifest,
        "ctr pushed other manifest bytes"
    );
    let out = work.path().join("out");
    skopeo_pull(&server, "ctr/app:v1", &out, "v1", false);
    assert_eq!(
        image::layout_digest_for_tag(&out, "v1"),
        built.manifest_digest
    );
    assert_same_blobs(&src, &out);
}

#[test]
fn oras_py_pushes_and_pulls_an_artifact() {
    if !require_python_module("oras") {
        return;
    }
    let server = DevServer::start();
    let work = tempdir("shoal-oras-");
    // Different files per tag: oras-py skips blobs the registry already has, and the chunked
    // push must upload something.
    let files: [(&str, &str, Vec<u8>); 4] = [
        (
            "v1",
            "alpha.txt",
            b"alpha: pushed with a POST and one PUT\n".to_vec(),
        ),
        ("v1", "beta.bin", image::noise("oras-beta", 100 * 1024)),
        (
            "chunked",
            "gamma.txt",
            b"gamma: pushed in PATCH chunks\n".to_vec(),
        ),
        // 200 KiB in 64 KiB chunks: three full PATCHes and a short one.
        (
            "chunked",
            "delta.bin",
            image::noise("oras-delta", 200 * 1024),
        ),
    ];
    for (tag, name, content) in &files {
        let dir = work.path().join(format!("in-{tag}"));
        std::fs::create_dir_all(&dir).expect("creating an input directory");
        std::fs::write(dir.join(name), content).expect("writing an input file");
    }

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oras_roundtrip.py");
    let stdout = run_ok(
        command("python3")
            .arg(&script)
            .arg(server.host_port())
            .arg(work.path()),
    );
    eprintln!("{}", String::from_utf8_lossy(&stdout));

    for (tag, name, content) in &files {
        let pulled = work.path().join(format!("out-{tag}")).join(name);
        let bytes = std::fs::read(&pulled).unwrap_or_else(|e| panic!("{}: {e}", pulled.display()));
        assert!(
            bytes == *content,
            "{tag}/{name} came back different ({} bytes, pushed {})",
            bytes.len(),
            content.len()
        );
    }
    for tag in ["v1", "chunked"] {
        let (status, _, body) = http(
            "GET",
            &server.url(&format!("/v2/test/artifact/manifests/{tag}")),
            ACCEPT_MANIFESTS,
        );
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let manifest = json(&body);
        let mut layers: Vec<(String, String)> = manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| {
                let title = l["annotations"]["org.opencontainers.image.title"]
                    .as_str()
                    .unwrap_or_default();
                (
                    title.to_owned(),
                    l["digest"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        layers.sort();
        let mut expected: Vec<(String, String)> = files
            .iter()
            .filter(|(t, _, _)| *t == tag)
            .map(|(_, name, content)| ((*name).to_owned(), Digest::of(content).to_string()))
            .collect();
        expected.sort();
        assert_eq!(layers, expected, "the {tag} manifest's layers");
    }
}

/// The `RepoDigests` and `Id` of an image in dockerd.
fn docker_image(dockerd: &Dockerd, reference: &str) -> (Vec<String>, String) {
    let inspected = json(&run_ok(
        dockerd.docker().args(["image", "inspect"]).arg(reference),
    ));
    let image = &inspected[0];
    let repo_digests = image["RepoDigests"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    (
        repo_digests,
        image["Id"].as_str().unwrap_or_default().to_owned(),
    )
}

#[test]
fn docker_pulls_images_pushed_by_skopeo() {
    if !(require("skopeo") && require("dockerd") && require("docker") && require_root("dockerd")) {
        return;
    }
    let server = DevServer::start();
    let work = tempdir("shoal-docker-pull-");
    let single = image::write_image_layout(&work.path().join("single"), "v1", "docker-pull");
    let index = image::write_index_layout(&work.path().join("index"), "v1", "docker-pull-index");
    skopeo_push(
        &server,
        &work.path().join("single"),
        "v1",
        "test/app:v1",
        false,
    );
    skopeo_push(
        &server,
        &work.path().join("index"),
        "v1",
        "test/multi:v1",
        true,
    );

    let dockerd = Dockerd::start();
    let host = server.host_port();

    let app = format!("{host}/test/app:v1");
    run_ok(dockerd.docker().args(["pull", &app]));
    let (repo_digests, id) = docker_image(&dockerd, &app);
    let expected = format!("{host}/test/app@{}", single.manifest_digest);
    assert!(
        repo_digests.contains(&expected),
        "RepoDigests {repo_digests:?} lacks {expected}"
    );
    // An image's ID in docker is the digest of its config.
    assert_eq!(id, single.config_digest.as_str());

    // By digest, after removing the tag so docker has to fetch the manifest again.
    run_ok(dockerd.docker().args(["rmi", &app]));
    run_ok(dockerd.docker().args(["pull", &expected]));
    let (_, id) = docker_image(&dockerd, &expected);
    assert_eq!(id, single.config_digest.as_str());

    let multi = format!("{host}/test/multi:v1");
    run_ok(dockerd.docker().args(["pull", &multi]));
    let (repo_digests, id) = docker_image(&dockerd, &multi);
    let expected = format!("{host}/test/multi@{}", index.index_digest);
    assert!(
        repo_digests.contains(&expected),
        "RepoDigests {repo_digests:?} lacks {expected}"
    );
    assert_eq!(
        id,
        index.images[0].config_digest.as_str(),
        "docker did not pick the amd64 image"
    );
}

#[test]
fn docker_pushes_an_image_with_mounted_layers() {
    if !(require("skopeo") && require("dockerd") && require("docker") && require_root("dockerd")) {
        return;
    }
    let server = DevServer::start();
    let work = tempdir("shoal-docker-push-");
    let src = work.path().join("src");
    let built = image::write_image_layout(&src, "v1", "docker-push");
    skopeo_push(&server, &src, "v1", "test/app:v1", false);

    let dockerd = Dockerd::start();
    let host = server.host_port();
    let pulled = format!("{host}/test/app:v1");
    let pushed = format!("{host}/docker/app:v1");
    run_ok(dockerd.docker().args(["pull", &pulled]));
    run_ok(dockerd.docker().args(["tag", &pulled, &pushed]));
    let output =
        String::from_utf8(run_ok(dockerd.docker().args(["push", &pushed]))).expect("UTF-8");
    // docker prints `v1: digest: sha256:... size: N` when the registry took the manifest.
    let digest = output
        .lines()
        .find_map(|l| l.split("digest: ").nth(1)?.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in docker push's output:\n{output}"));
    let digest = Digest::parse(digest).expect("docker push's digest");

    let raw = skopeo_inspect_raw(&server, "docker/app:v1");
    assert_eq!(
        Digest::of(&raw),
        digest,
        "the registry serves other bytes than docker pushed"
    );
    let manifest = json(&raw);
    // docker keeps the compressed layers it pulled only when it can mount them from test/app
    // (or finds them already there); otherwise it compresses them anew, with other digests.
    let layers: Vec<&str> = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter_map(|l| l["digest"].as_str())
        .collect();
    assert_eq!(
        layers,
        built
            .layer_digests
            .iter()
            .map(Digest::as_str)
            .collect::<Vec<_>>(),
        "docker uploaded the layers anew"
    );
    assert_eq!(manifest["config"]["digest"], built.config_digest.as_str());

    // And back: a clean pull of what docker pushed.
    run_ok(dockerd.docker().args(["rmi", &pulled, &pushed]));
    run_ok(dockerd.docker().args(["pull", &pushed]));
    let (repo_digests, id) = docker_image(&dockerd, &pushed);
    let expected = format!("{host}/docker/app@{digest}");
    assert!(
        repo_digests.contains(&expected),
        "RepoDigests {repo_digests:?} lacks {expected}"
    );
    assert_eq!(id, built.config_digest.as_str());
}

#[test]
fn dev_server_stops_on_sigterm_and_serves_its_data_after_a_restart() {
    let data = tempdir("shoal-restart-");
    let work = tempdir("shoal-restart-layout-");
    let built = image::write_image_layout(work.path(), "v1", "restart");

    let mut server = DevServer::start_in(data.path());
    block_on(async {
        // One client for the push and for the SIGTERM below, so the server stops with an idle
        // keep-alive connection open, as it will with real clients.
        let client = reqwest::Client::new();
        push_over_http(&client, &server, "test/app", "v1", work.path(), &built).await;
        let health = client
            .get(server.url("/health"))
            .send()
            .await
            .expect("GET /health");
        assert_eq!(health.status().as_u16(), 200);
        assert_eq!(health.text().await.expect("health body"), "ok");

        let status = server.terminate(Duration::from_secs(15));
        let status = status.unwrap_or_else(|| {
            panic!(
                "shoal dev still runs 15 s after SIGTERM (an idle keep-alive connection was open)"
            )
        });
        assert!(
            status.success(),
            "shoal dev exited with {status} after SIGTERM"
        );
    });

    let mut server = DevServer::start_in(data.path());
    let (status, headers, body) = http(
        "GET",
        &server.url("/v2/test/app/manifests/v1"),
        ACCEPT_MANIFESTS,
    );
    assert_eq!(
        status,
        200,
        "manifest by tag after a restart: {}",
        String::from_utf8_lossy(&body)
    );
    assert!(
        body == built.manifest,
        "the manifest changed across a restart"
    );
    assert_eq!(
        headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok()),
        Some(built.manifest_digest.as_str())
    );
    for digest in std::iter::once(&built.config_digest).chain(&built.layer_digests) {
        let (status, _, body) = http(
            "GET",
            &server.url(&format!("/v2/test/app/blobs/{digest}")),
            "*/*",
        );
        assert_eq!(status, 200, "blob {digest} after a restart");
        assert_eq!(
            Digest::of(&body),
            *digest,
            "blob {digest} changed across a restart"
        );
    }
    let status = server
        .terminate(Duration::from_secs(15))
        .expect("shoal dev stops on SIGTERM");
    assert!(status.success(), "second shoal dev exited with {status}");
}
