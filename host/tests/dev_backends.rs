//! `shoal dev` storing and serving through its backend plugins: the embedded `fs` plugin by
//! default, several backends routed by namespace, bandwidth limits, and hostile plugins that
//! each cost one request through the registry API.

mod common;
#[allow(dead_code)] // this binary uses the docker-registry fixture only
mod registry_peers;

use std::path::Path;

use common::http::{ACCEPT_MANIFESTS, http, push_over_http};
use common::image::{self, Digest};
use common::skopeo::{skopeo, skopeo_inspect_raw, skopeo_pull, skopeo_push};
use common::{DevServer, assert_same_blobs, block_on, error_of, json, require, run_ok, tempdir};

/// Asserts that the fs backend under `root` holds every blob of `digests` under its hex name.
fn assert_backend_holds(root: &Path, digests: &[&Digest]) {
    for d in digests {
        let path = root.join(d.hex());
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("the fs backend lacks {d} at {}: {e}", path.display()));
        assert_eq!(
            Digest::of(&bytes),
            **d,
            "{} holds other bytes",
            path.display()
        );
    }
}

#[test]
fn skopeo_round_trip_is_served_from_the_fs_plugin_once_the_cache_is_gone() {
    if !require("skopeo") {
        return;
    }
    let data = tempdir("shoal-fs-plugin-");
    let work = tempdir("shoal-fs-plugin-layout-");
    let layout = work.path().join("in");
    let built = image::write_image_layout(&layout, "v1", "fs-plugin");

    let server = DevServer::start_in(data.path());
    skopeo_push(&server, &layout, "v1", "test/app:v1", false);
    server.stop();

    // Written through the fs plugin, under Kraken's names: blobs by hex, tags as repo:tag.
    let backend = data.path().join("backend");
    let mut all: Vec<&Digest> = vec![&built.manifest_digest, &built.config_digest];
    all.extend(&built.layer_digests);
    assert_backend_holds(&backend, &all);
    let tag = std::fs::read_to_string(backend.join("test/app:v1")).expect("tag object");
    assert_eq!(tag.trim(), built.manifest_digest.as_str());

    // Lose the local cache: everything now has to come back through the plugin.
    std::fs::remove_dir_all(data.path().join("cache")).expect("removing the cache");
    let server = DevServer::start_in(data.path());
    assert_eq!(
        skopeo_inspect_raw(&server, "test/app:v1"),
        built.manifest,
        "the manifest bytes (and so its digest) are unchanged"
    );
    let out = work.path().join("out");
    skopeo_pull(&server, "test/app:v1", &out, "v1", false);
    assert_same_blobs(&layout, &out);
    assert_eq!(
        image::layout_digest_for_tag(&out, "v1"),
        built.manifest_digest
    );
    assert!(
        data.path().join("cache/blobs").is_dir(),
        "fetched content is cached locally again"
    );
    server.stop();
}

#[test]
fn namespaces_route_to_their_own_backends_with_bandwidth_limits() {
    let data = tempdir("shoal-routes-");
    let work = tempdir("shoal-routes-layout-");
    let team = data.path().join("team-store");
    let rest = data.path().join("other-store");
    let config = data.path().join("dev.yaml");
    // The catch-all is paced at 400 Mbit/s each way: the limiter sits in the path of every
    // transfer without slowing the test much.
    std::fs::write(
        &config,
        format!(
            "backends:\n\
             \x20 - namespace: team-a/.*\n\
             \x20   backend:\n\
             \x20     fs:\n\
             \x20       root: {}\n\
             \x20 - namespace: .*\n\
             \x20   backend:\n\
             \x20     fs:\n\
             \x20       root: {}\n\
             \x20   bandwidth:\n\
             \x20     enable: true\n\
             \x20     egress_bits_per_sec: 400000000\n\
             \x20     ingress_bits_per_sec: 400000000\n",
            team.display(),
            rest.display()
        ),
    )
    .unwrap();
    let team_layout = work.path().join("team");
    let team_image = image::write_image_layout(&team_layout, "v1", "team-a");
    let other_layout = work.path().join("other");
    let other_image = image::write_image_layout(&other_layout, "v1", "other");

    let server = DevServer::start_with_config(data.path(), &config);
    block_on(async {
        let client = reqwest::Client::new();
        push_over_http(
            &client,
            &server,
            "team-a/app",
            "v1",
            &team_layout,
            &team_image,
        )
        .await;
        push_over_http(
            &client,
            &server,
            "other/app",
            "v1",
            &other_layout,
            &other_image,
        )
        .await;
    });
    server.stop();

    assert_backend_holds(&team, &team_image.layer_digests.iter().collect::<Vec<_>>());
    assert_backend_holds(&rest, &other_image.layer_digests.iter().collect::<Vec<_>>());
    for d in &team_image.layer_digests {
        assert!(
            !rest.join(d.hex()).exists(),
            "team-a's {d} leaked into the catch-all"
        );
    }
    for d in &other_image.layer_digests {
        assert!(
            !team.join(d.hex()).exists(),
            "other's {d} leaked into team-a's store"
        );
    }
    assert!(team.join("team-a/app:v1").is_file());
    assert!(rest.join("other/app:v1").is_file());

    // A cold cache pulls each namespace from its own backend.
    std::fs::remove_dir_all(data.path().join("cache")).unwrap();
    let server = DevServer::start_with_config(data.path(), &config);
    for (name, built) in [("team-a/app", &team_image), ("other/app", &other_image)] {
        let (status, _, body) = http(
            "GET",
            &server.url(&format!("/v2/{name}/manifests/v1")),
            ACCEPT_MANIFESTS,
        );
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&body));
        assert_eq!(body, built.manifest);
        for d in &built.layer_digests {
            let (status, _, body) =
                http("GET", &server.url(&format!("/v2/{name}/blobs/{d}")), "*/*");
            assert_eq!(status, 200, "{name} blob {d}");
            assert_eq!(Digest::of(&body), *d);
        }
    }
    // The wrong namespace does not see the other's content.
    let d = &team_image.layer_digests[0];
    let (status, _, _) = http(
        "GET",
        &server.url(&format!("/v2/other/app/blobs/{d}")),
        "*/*",
    );
    assert_eq!(status, 404);
    server.stop();
}

/// Hostile plugins through the registry API: they need the misbehaving fixture plugin, which
/// is built with the feature `test-plugins`.
#[cfg(feature = "test-plugins")]
mod hostile {
    use std::time::Duration;

    use super::common::http::http;
    use super::common::image::Digest;
    use super::common::{DevServer, error_of, poll_until, tempdir};

    #[test]
    fn hostile_plugins_cost_one_request_each_through_the_registry_api() {
        let data = tempdir("shoal-hostile-api-");
        // A server the sneaking plugin would reach if the host let it.
        let trap = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let target = format!("http://{}/steal", trap.local_addr().unwrap());
        // One fixture plugin, four backends: its config's `mode` picks the misdeed.
        let plugin = |kind: &str, config: &str, allowed_hosts: &str| {
            format!(
                "  - namespace: (hostile|calm)/{kind}\n\
                 \x20   backend:\n\
                 \x20     plugin:\n\
                 \x20       plugin: {}\n\
                 \x20       config: {{mode: {kind}{config}}}\n\
                 \x20       allowed_hosts: [{allowed_hosts}]\n",
                env!("SHOAL_TEST_PLUGIN_MISBEHAVE")
            )
        };
        let config = data.path().join("dev.yaml");
        std::fs::write(
            &config,
            format!(
                "plugins:\n  call_timeout: 2s\n  memory_bytes: 33554432\n  breaker_threshold: 3\n  \
                 breaker_cool_down: 2s\nbackends:\n{}{}{}{}",
                plugin("panic", "", ""),
                plugin("spin", "", ""),
                plugin("hog", "", ""),
                plugin("sneak", &format!(", url: \"{target}\""), "granted.example"),
            ),
        )
        .unwrap();
        let server = DevServer::start_with_config(data.path(), &config);
        let blob = Digest::of(b"whatever");
        let get = |ns: &str| http("GET", &server.url(&format!("/v2/{ns}/blobs/{blob}")), "*/*");

        for (kind, code, says) in [
            ("panic", "UNAVAILABLE", "unreachable"),
            ("spin", "UNAVAILABLE", "deadline"),
            ("hog", "UNAVAILABLE", "memory"),
            ("sneak", "UNKNOWN", "does not grant"),
        ] {
            let (status, _, body) = get(&format!("hostile/{kind}"));
            assert!(status >= 500, "{kind}: status {status}");
            let (got_code, message) = error_of(&body);
            assert_eq!(got_code, code, "{kind}: {message}");
            assert!(
                message.contains("shoal_test_plugin_misbehave"),
                "{kind}: the error names the plugin: {message}"
            );
            assert!(message.contains(says), "{kind}: {message}");
            // The next request to the same plugin is answered normally.
            let (status, _, body) = get(&format!("calm/{kind}"));
            assert_eq!(
                status,
                404,
                "{kind} after its failure: {}",
                String::from_utf8_lossy(&body)
            );
            assert_eq!(error_of(&body).0, "BLOB_UNKNOWN");
        }
        // The sneaking plugin's request never left the host.
        trap.set_nonblocking(true).unwrap();
        assert!(
            trap.accept().is_err(),
            "the plugin reached a host it was not granted"
        );

        // Three traps in a row open the panicking plugin's breaker; it answers again after the
        // cool-down.
        for _ in 0..3 {
            assert_eq!(get("hostile/panic").0, 503);
        }
        let (status, _, body) = get("calm/panic");
        assert_eq!(status, 503);
        assert!(
            error_of(&body).1.contains("paused"),
            "{}",
            error_of(&body).1
        );
        assert!(
            poll_until(Duration::from_secs(30), || get("calm/panic").0 == 404),
            "the breaker closes after its cool-down"
        );
        // Other plugins and the process were never affected.
        assert_eq!(get("calm/hog").0, 404);
        assert_eq!(http("GET", &server.url("/v2/"), "*/*").0, 200);
        server.stop();
    }
}

#[test]
fn pulls_through_an_upstream_registry_and_serves_from_cache_once_it_is_gone() {
    if !require("skopeo") || !require("docker-registry") {
        return;
    }
    let data = tempdir("shoal-pull-through-");
    let work = tempdir("shoal-pull-through-layout-");
    let upstream = registry_peers::Registry::start(work.path(), 0, &registry_peers::Auth::Open);
    let layout = work.path().join("in");
    let built = image::write_image_layout(&layout, "v1", "upstream");
    run_ok(
        skopeo()
            .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{}/library/app:v1", upstream.addr)),
    );
    // Kraken's pull-through pair: blobs from registry_blob, tags from registry_tag; anything
    // else in the local fs backend.
    let registry = format!(
        "        address: {}\n        security:\n          tls:\n            client:\n              \
         disabled: true\n",
        upstream.addr
    );
    let config = data.path().join("dev.yaml");
    std::fs::write(
        &config,
        format!(
            "backends:\n  - namespace: library/.*\n    backend:\n      registry_blob:\n{registry}\
             \x20 - namespace: library/.*\n    backend:\n      registry_tag:\n{registry}\
             \x20 - namespace: .*\n    backend:\n      fs:\n        root: {}\n",
            data.path().join("backend").display()
        ),
    )
    .unwrap();
    let server = DevServer::start_with_config(data.path(), &config);
    let out = work.path().join("out");
    skopeo_pull(&server, "library/app:v1", &out, "v1", false);
    assert_same_blobs(&layout, &out);
    assert_eq!(
        image::layout_digest_for_tag(&out, "v1"),
        built.manifest_digest
    );

    // A read-only upstream takes no pushes: the registry says DENIED and names the plugin.
    let (status, body) = block_on(async {
        let r = reqwest::Client::new()
            .post(server.url("/v2/library/app/blobs/uploads/?digest=sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"))
            .body("hello")
            .send()
            .await
            .expect("POST");
        (r.status().as_u16(), r.bytes().await.expect("body").to_vec())
    });
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    let v = json(&body);
    assert_eq!(v["errors"][0]["code"], "DENIED");
    assert!(
        v["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("registry_blob"),
        "{v}"
    );

    // Once fetched, the content is served from the cache with the upstream gone.
    upstream.stop();
    let again = work.path().join("again");
    skopeo_pull(&server, "library/app:v1", &again, "v1", false);
    assert_same_blobs(&layout, &again);
    server.stop();
}

/// A read-only HTTP blob store on 127.0.0.1: serves `blob` at `/<hex of its digest>`, answers
/// 503 for `down`'s hex and 404 for anything else; counts the requests for `down`.
struct BlobServer {
    addr: std::net::SocketAddr,
    down_hits: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    runtime: tokio::runtime::Runtime,
}

impl BlobServer {
    fn start(blob: Vec<u8>, down: &Digest) -> BlobServer {
        use axum::extract::Path as UrlPath;
        use std::sync::atomic::Ordering;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let good = Digest::of(&blob).hex().to_owned();
        let down = down.hex().to_owned();
        let down_hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let hits = down_hits.clone();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/{name}",
            axum::routing::get(move |UrlPath(name): UrlPath<String>| {
                let (blob, good, down, hits) =
                    (blob.clone(), good.clone(), down.clone(), hits.clone());
                async move {
                    if name == good {
                        (axum::http::StatusCode::OK, blob)
                    } else if name == down {
                        hits.fetch_add(1, Ordering::SeqCst);
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, Vec::new())
                    } else {
                        (axum::http::StatusCode::NOT_FOUND, Vec::new())
                    }
                }
            }),
        );
        runtime.spawn(async move { axum::serve(listener, app).await });
        BlobServer {
            addr,
            down_hits,
            runtime,
        }
    }
}

#[test]
fn the_http_plugin_serves_blobs_maps_404_and_retries_503_through_the_api() {
    let data = tempdir("shoal-http-backend-");
    let blob = image::noise("http-backend", 300_000);
    let good = Digest::of(&blob);
    let down = Digest::of(b"a blob on a failing disk");
    let server = BlobServer::start(blob.clone(), &down);
    let config = data.path().join("dev.yaml");
    std::fs::write(
        &config,
        format!(
            "backends:\n  - namespace: web/.*\n    backend:\n      http:\n        download_url: \
             http://{}/%s\n        download_backoff:\n          enabled: true\n          \
             initial_interval: 10ms\n          max_interval: 20ms\n          max_elapsed_time: \
             500ms\n",
            server.addr
        ),
    )
    .unwrap();
    let dev = DevServer::start_with_config(data.path(), &config);
    let get = |d: &Digest| http("GET", &dev.url(&format!("/v2/web/app/blobs/{d}")), "*/*");

    let (status, _, body) = get(&good);
    assert_eq!(status, 200);
    assert_eq!(body, blob, "fetched through the plugin, verified, served");
    let (status, _, body) = get(&Digest::of(b"nowhere"));
    assert_eq!((status, error_of(&body).0.as_str()), (404, "BLOB_UNKNOWN"));
    let (status, _, body) = get(&down);
    let (code, message) = error_of(&body);
    assert_eq!((status, code.as_str()), (503, "UNAVAILABLE"), "{message}");
    assert!(
        message.contains("plugin http") && message.contains("503"),
        "{message}"
    );
    assert!(
        server.down_hits.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "503 is retried before the error"
    );
    // The blob server is read-only (no upload_url): a push of new content is refused.
    let fresh = b"content the blob server does not have".to_vec();
    let fresh_digest = Digest::of(&fresh);
    let (status, body) = block_on(async {
        let r = reqwest::Client::new()
            .post(dev.url(&format!("/v2/web/app/blobs/uploads/?digest={fresh_digest}")))
            .body(fresh)
            .send()
            .await
            .expect("POST");
        (r.status().as_u16(), r.bytes().await.expect("body").to_vec())
    });
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(
        error_of(&body).1.contains("plugin http"),
        "{}",
        error_of(&body).1
    );
    dev.stop();
    drop(server.runtime);
}
