//! `shoal dev`'s garbage collector as a user meets it: two images sharing layers pushed with
//! skopeo, one tag deleted through the API, and the periodic collection (`gc:` in the config)
//! frees what only the deleted image used, from the local cache and from the `fs` backend,
//! while the image still tagged pulls byte for byte. And the one-shot `shoal gc`, refused
//! while a `shoal dev` uses the data directory, which also purges abandoned upload sessions.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::http::{ACCEPT_MANIFESTS, http, push_over_http};
use common::image::{self, BuiltImage, Digest};
use common::skopeo::skopeo;
use common::{DevServer, block_on, poll_until, require, run, run_ok, tempdir};

/// Where the local cache keeps `d`.
fn cache_file(data: &Path, d: &Digest) -> std::path::PathBuf {
    data.join("cache/blobs/sha256")
        .join(&d.hex()[..2])
        .join(d.hex())
}

/// Where the default `fs` backend keeps `d` (Kraken's naming: the hex alone).
fn backend_file(data: &Path, d: &Digest) -> std::path::PathBuf {
    data.join("backend").join(d.hex())
}

/// The digests only `gone` uses, and those `kept` uses.
fn split(gone: &BuiltImage, kept: &BuiltImage) -> (Vec<Digest>, Vec<Digest>) {
    let kept_all = kept.all_digests();
    let only_gone = gone
        .all_digests()
        .into_iter()
        .filter(|d| !kept_all.contains(d))
        .collect();
    (only_gone, kept_all)
}

fn delete_tag(server: &DevServer, reference: &str) {
    let (status, _, body) = http(
        "DELETE",
        &server.url(&format!("/v2/{reference}")),
        ACCEPT_MANIFESTS,
    );
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&body));
}

#[test]
fn a_deleted_tag_frees_its_blobs_in_the_cache_and_the_backend() {
    if !require("skopeo") {
        return;
    }
    let data = tempdir("shoal-gc-");
    let work = tempdir("shoal-gc-layout-");
    // Two platforms of one build: they share their first two layers.
    let layout = work.path().join("in");
    let index = image::write_index_layout(&layout, "v1", "gc");
    let (amd, arm) = (&index.images[0], &index.images[1]);
    let config = work.path().join("dev.yaml");
    // A grace of 0s would let a collection between a layer's upload and its manifest's PUT
    // sweep the layer (nothing references it yet), which a loaded machine makes likely; 10s
    // covers a push and still frees the deleted image well within the wait below.
    std::fs::write(&config, "gc:\n  interval: 1s\n  grace: 10s\n").expect("writing dev.yaml");

    let server = DevServer::start_with_config(data.path(), &config);
    for (image, arch, variant) in [(amd, "amd64", None), (arm, "arm64", Some("v8"))] {
        let mut cmd = skopeo();
        cmd.args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
            .args(["--override-os", "linux", "--override-arch", arch]);
        if let Some(v) = variant {
            cmd.args(["--override-variant", v]);
        }
        cmd.arg(format!("oci:{}:v1", layout.display())).arg(format!(
            "docker://{}/team/app:{}",
            server.host_port(),
            image.architecture
        ));
        run_ok(&mut cmd);
    }
    let (freed, kept) = split(amd, arm);
    assert_eq!(freed.len(), 3, "amd64's manifest, config and own layer");
    for d in freed.iter().chain(&kept) {
        assert!(cache_file(data.path(), d).is_file(), "{d} pushed");
        assert!(
            backend_file(data.path(), d).is_file(),
            "{d} written through"
        );
    }

    delete_tag(&server, "team/app/manifests/amd64");
    let all_gone = poll_until(Duration::from_secs(60), || {
        freed
            .iter()
            .all(|d| !cache_file(data.path(), d).exists() && !backend_file(data.path(), d).exists())
    });
    assert!(
        all_gone,
        "amd64's own blobs are still stored a minute after its tag was deleted; log:\n{}",
        server.log().join("\n")
    );
    for d in &kept {
        assert!(cache_file(data.path(), d).is_file(), "{d} stays cached");
        assert!(
            backend_file(data.path(), d).is_file(),
            "{d} stays in the backend"
        );
    }
    assert!(
        server.logged(|l| l.contains("garbage collected") && l.contains("blobs_deleted=3")),
        "a collection reports what it freed; log:\n{}",
        server.log().join("\n")
    );

    let out = work.path().join("out");
    run_ok(
        skopeo()
            .args(["copy", "--preserve-digests", "--src-tls-verify=false"])
            .arg(format!("docker://{}/team/app:arm64", server.host_port()))
            .arg(format!("oci:{}:v1", out.display())),
    );
    assert_eq!(
        image::layout_digest_for_tag(&out, "v1"),
        arm.manifest_digest
    );
    let pulled: Vec<Digest> = image::read_layout_blobs(&out).into_keys().collect();
    let mut expected = arm.all_digests();
    expected.sort();
    assert_eq!(
        pulled, expected,
        "the arm64 image pulls whole, byte for byte"
    );
    server.stop();
}

#[test]
fn shoal_gc_is_refused_while_shoal_dev_runs_and_collects_once_it_stopped() {
    let data = tempdir("shoal-gc-once-");
    let work = tempdir("shoal-gc-once-layout-");
    let config = work.path().join("dev.yaml");
    std::fs::write(&config, "gc:\n  interval: 0s\n").expect("writing dev.yaml");
    let old = image::write_image_layout(&work.path().join("old"), "v1", "gc-old");
    let new = image::write_image_layout(&work.path().join("new"), "v1", "gc-new");

    let server = DevServer::start_with_config(data.path(), &config);
    block_on(async {
        let client = reqwest::Client::new();
        push_over_http(
            &client,
            &server,
            "app",
            "old",
            &work.path().join("old"),
            &old,
        )
        .await;
        push_over_http(
            &client,
            &server,
            "app",
            "new",
            &work.path().join("new"),
            &new,
        )
        .await;
    });
    delete_tag(&server, "app/manifests/old");
    // Two upload sessions left behind, one of them abandoned long ago.
    let (stale, fresh) = block_on(async {
        let client = reqwest::Client::new();
        let mut sessions = Vec::new();
        for _ in 0..2 {
            let started = client
                .post(server.url("/v2/app/blobs/uploads/"))
                .send()
                .await
                .expect("starting an upload");
            assert_eq!(started.status(), 202);
            let location = started.headers()["location"].to_str().unwrap().to_owned();
            let id = location.rsplit('/').next().unwrap().to_owned();
            let location = server.url(&location);
            let wrote = client
                .patch(location)
                .header("content-type", "application/octet-stream")
                .body(vec![7u8; 4096])
                .send()
                .await
                .expect("writing a chunk");
            assert_eq!(wrote.status(), 202);
            sessions.push(data.path().join("cache/uploads").join(id));
        }
        (sessions.remove(0), sessions.remove(0))
    });
    assert!(stale.is_dir() && fresh.is_dir(), "sessions live elsewhere");
    run_ok(
        Command::new("touch")
            .args(["-d", "3 days ago"])
            .arg(stale.join("data")),
    );

    let gc = |grace: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shoal"));
        cmd.args(["gc", "--data-dir"])
            .arg(data.path())
            .arg("--config")
            .arg(&config)
            .args(["--grace", grace])
            .env("RUST_LOG", "warn");
        cmd
    };
    let refused = run(&mut gc("0s"));
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("in use by another shoal dev"), "{stderr}");
    assert!(
        stderr.contains(&format!("pid {} holds the lock", server.pid())),
        "{stderr}"
    );
    server.stop();

    // A grace period longer than the data's age keeps everything; the upload session older
    // than uploads.max_age (24h) is purged, the other kept.
    let kept = String::from_utf8_lossy(&run_ok(&mut gc("1h"))).into_owned();
    assert!(kept.contains(" 0 blobs deleted"), "{kept}");
    assert!(
        kept.contains("upload sessions: 1 purged (4096 bytes)"),
        "{kept}"
    );
    assert!(!stale.exists() && fresh.join("data").is_file());
    let report = String::from_utf8_lossy(&run_ok(&mut gc("0s"))).into_owned();
    let (freed, still) = split(&old, &new);
    assert!(
        report.contains(&format!(" {} blobs deleted", freed.len())),
        "{report}"
    );
    for d in &freed {
        assert!(!cache_file(data.path(), d).exists() && !backend_file(data.path(), d).exists());
    }
    for d in &still {
        assert!(cache_file(data.path(), d).is_file() && backend_file(data.path(), d).is_file());
    }

    let server = DevServer::start_with_config(data.path(), &config);
    let (status, _, body) = http(
        "GET",
        &server.url("/v2/app/manifests/new"),
        ACCEPT_MANIFESTS,
    );
    assert_eq!((status, body), (200, new.manifest.clone()));
    server.stop();
}

/// `gc.backends: false`: a collection frees the local cache and leaves the backend alone (for a
/// backend other registries read, or one with its own retention).
#[test]
fn with_gc_backends_false_the_backend_keeps_what_the_cache_frees() {
    let data = tempdir("shoal-gc-keep-");
    let work = tempdir("shoal-gc-keep-layout-");
    let config = work.path().join("dev.yaml");
    std::fs::write(
        &config,
        "gc:\n  interval: 1s\n  grace: 0s\n  backends: false\n",
    )
    .unwrap();
    let built = image::write_image_layout(&work.path().join("img"), "v1", "gc-keep");
    let server = DevServer::start_with_config(data.path(), &config);
    block_on(async {
        let client = reqwest::Client::new();
        let layout = work.path().join("img");
        push_over_http(&client, &server, "app", "v1", &layout, &built).await;
    });
    let digests = built.all_digests();
    for d in &digests {
        assert!(
            backend_file(data.path(), d).is_file(),
            "{d} written through"
        );
    }
    delete_tag(&server, "app/manifests/v1");
    let freed = poll_until(Duration::from_secs(60), || {
        digests.iter().all(|d| !cache_file(data.path(), d).exists())
    });
    assert!(
        freed,
        "the cache still holds the image a minute after its tag was deleted; log:\n{}",
        server.log().join("\n")
    );
    for d in &digests {
        assert!(
            backend_file(data.path(), d).is_file(),
            "{d} stays in the backend with gc.backends: false"
        );
    }
    server.stop();
}
