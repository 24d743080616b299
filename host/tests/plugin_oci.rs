//! Plugins distributed as OCI artifacts (issue 15): `shoal plugin push` into a running
//! `shoal dev`, another `shoal dev` naming the plugin by digest in its YAML and serving a
//! skopeo round trip through it, restarts from the cache with the registry gone, and the
//! refusals: a wrong digest (naming both), a tag without `plugins.allow_tags`, a file that is
//! not a plugin.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output};

use common::daemons::Nginx;
use common::http::http;
use common::image::{self, write_image_layout};
use common::skopeo::{skopeo_pull, skopeo_push};
use common::{DevServer, assert_same_blobs, json, require, run, run_ok, tempdir};

/// The built-in `http` backend's component, pushed as a custom plugin would be.
const HTTP_PLUGIN: &str = env!("SHOAL_PLUGIN_HTTP");

fn shoal() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shoal"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `shoal plugin push FILE REGISTRY/plugins/http:v1`: the pinned reference it prints, the
/// tag kept beside the digest.
fn push(registry: &DevServer, file: &str) -> String {
    let target = format!("{}/plugins/http:v1", registry.host_port());
    let out = run_ok(shoal().args(["plugin", "push", file, &target]));
    let pinned = text(&out).trim().to_owned();
    let prefix = format!("oci://{}/plugins/http:v1@sha256:", registry.host_port());
    assert!(pinned.starts_with(&prefix), "push printed {pinned:?}");
    pinned
}

/// The digest part of a pinned reference.
fn digest_of(pinned: &str) -> &str {
    &pinned[pinned.find('@').expect("a pinned reference") + 1..]
}

/// A dev config whose one backend is the `http` plugin from `source`, storing blobs in nginx.
fn dev_config(dir: &Path, source: &str, nginx: &Nginx, extra: &str) -> std::path::PathBuf {
    let blobs = nginx.host_port();
    let config = dir.join("dev.yaml");
    std::fs::write(
        &config,
        format!(
            "data_dir: {}\n{extra}backends:\n  - namespace: .*\n    backend:\n      plugin:\n        \
             plugin: {source}\n        config:\n          download_url: http://{blobs}/%s\n          \
             upload_url: http://{blobs}/%s\n        allowed_hosts: [\"{blobs}\"]\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    config
}

fn config_check(config: &Path) -> Output {
    run(shoal()
        .args(["config", "check", "dev"])
        .arg(config)
        .env("NO_COLOR", "1"))
}

/// `shoal dev` with `config` on `data`, expected to refuse to start: its stderr.
/// Both the start and `config check` of `config` are refused, naming `key`, the pinned
/// digest `wrong`, and `other.1` (described by `other.0`).
fn refused_naming(config: &Path, data: &Path, key: &str, wrong: &str, other: (&str, &str)) {
    for (what, err) in [
        ("start", refused_start(config, data)),
        ("check", text(&config_check(config).stderr)),
    ] {
        assert!(err.contains(key), "{what}: {err}");
        assert!(err.contains(wrong), "{what} names the pinned digest: {err}");
        assert!(err.contains(other.1), "{what} names {}: {err}", other.0);
    }
}

fn refused_start(config: &Path, data: &Path) -> String {
    let out = run(shoal()
        .args(["dev", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--config")
        .arg(config));
    assert!(
        !out.status.success(),
        "shoal dev started: {}",
        text(&out.stderr)
    );
    text(&out.stderr)
}

#[test]
fn a_plugin_pushed_into_shoal_dev_and_pinned_by_digest_serves_a_round_trip_and_restarts_from_cache()
{
    if !require("skopeo") || !require("nginx") {
        return;
    }
    let registry = DevServer::start();
    let pinned = push(&registry, HTTP_PLUGIN);
    let component = std::fs::read(HTTP_PLUGIN).unwrap();

    // The artifact: its own type, the component as the one layer, world and imports noted.
    let (status, _, manifest) = http(
        "GET",
        &registry.url(&format!(
            "/v2/plugins/http/manifests/{}",
            digest_of(&pinned)
        )),
        "application/vnd.oci.image.manifest.v1+json",
    );
    assert_eq!(status, 200);
    let manifest = json(&manifest);
    assert_eq!(
        manifest["artifactType"],
        "application/vnd.shoal.plugin.v1+wasm"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    assert_eq!(manifest["layers"][0]["size"], component.len());
    let annotations = &manifest["annotations"];
    assert_eq!(
        annotations["dev.shoal.plugin.world"],
        "shoal:backend/backend@0.1.0"
    );
    let imports = annotations["dev.shoal.plugin.imports"].as_str().unwrap();
    assert!(imports.contains("wasi:http/outgoing-handler"), "{imports}");

    // `shoal plugin pull` writes the same bytes, and prints the same pinned reference.
    let work = tempdir("shoal-oci-");
    let pulled = work.path().join("pulled.wasm");
    let out = run_ok(shoal().args(["plugin", "pull", &pinned, "-o"]).arg(&pulled));
    assert_eq!(text(&out).trim(), pinned);
    assert_eq!(std::fs::read(&pulled).unwrap(), component);

    // Another instance runs it, named by digest, as its storage backend.
    let nginx = Nginx::start();
    let config = dev_config(work.path(), &pinned, &nginx, "");
    let check = config_check(&config);
    assert!(check.status.success(), "{}", text(&check.stderr));
    let data = work.path().join("data");
    let mirror = DevServer::start_with_config(&data, &config);
    let layout = work.path().join("layout");
    let built = write_image_layout(&layout, "v1", "oci-plugin");
    skopeo_push(&mirror, &layout, "v1", "test/app:v1", false);
    let out = work.path().join("out");
    skopeo_pull(&mirror, "test/app:v1", &out, "v1", false);
    assert_same_blobs(&layout, &out);
    for digest in built.all_digests() {
        assert!(
            nginx.root().join(digest.hex()).is_file(),
            "{digest} was written through the plugin"
        );
    }
    let cached = data.join(format!(
        "plugin-cache/oci/sha256/{}.json",
        digest_of(&pinned).trim_start_matches("sha256:")
    ));
    assert!(cached.is_file(), "{} is cached", cached.display());
    mirror.stop();

    // With the registry gone and the local store emptied, a restart runs the cached plugin
    // and serves the image from the backend it writes to.
    registry.stop();
    std::fs::remove_dir_all(data.join("cache")).unwrap();
    let mirror = DevServer::start_with_config(&data, &config);
    let again = work.path().join("again");
    skopeo_pull(&mirror, "test/app:v1", &again, "v1", false);
    assert_same_blobs(&layout, &again);
    assert_eq!(
        image::layout_digest_for_tag(&again, "v1"),
        built.manifest_digest
    );
}

/// A registry that lies: every manifest of a repository is answered with the manifest of
/// `plugins/http:v1` from the registry behind it, whatever digest was asked for (a
/// compromised or rewriting mirror). Everything else is passed through.
struct LyingRegistry {
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

impl LyingRegistry {
    fn start(behind: &DevServer) -> LyingRegistry {
        use axum::body::Body;
        use axum::extract::Request;
        use axum::response::Response;

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let upstream = behind.url("");
        let app = axum::Router::new().fallback(move |request: Request| {
            let upstream = upstream.clone();
            async move {
                let path = request.uri().path().to_owned();
                let path = match path.split_once("/manifests/") {
                    Some((repo, _)) => format!("{repo}/manifests/v1"),
                    None => path,
                };
                let mut asked = reqwest::Client::new().get(format!("{upstream}{path}"));
                if let Some(accept) = request.headers().get("accept") {
                    asked = asked.header("accept", accept.as_bytes());
                }
                let answer = asked.send().await.unwrap();
                let mut response = Response::builder().status(answer.status().as_u16());
                if let Some(t) = answer.headers().get("content-type") {
                    response = response.header("content-type", t.as_bytes());
                }
                response
                    .body(Body::from(answer.bytes().await.unwrap()))
                    .unwrap()
            }
        });
        runtime.spawn(async move { axum::serve(listener, app).await });
        LyingRegistry {
            addr,
            _runtime: runtime,
        }
    }
}

#[test]
fn a_wrong_digest_refuses_the_start_and_the_check_naming_both_digests() {
    if !require("nginx") {
        return;
    }
    let registry = DevServer::start();
    let pinned = push(&registry, HTTP_PLUGIN);
    let served = digest_of(&pinned);
    let wrong = format!("sha256:{}", "5".repeat(64));
    let nginx = Nginx::start();
    let work = tempdir("shoal-oci-wrong-");
    let key = "backends[0].backend.plugin.plugin";

    // A registry serving other bytes than the digest pins: refused, naming both digests.
    let liar = LyingRegistry::start(&registry);
    let lying = format!("oci://{}/plugins/http@{wrong}", liar.addr);
    let config = dev_config(work.path(), &lying, &nginx, "");
    let data = work.path().join("data");
    refused_naming(&config, &data, key, &wrong, ("the served digest", served));
    assert!(
        !data.join("plugin-cache").exists(),
        "a refused start leaves no plugin behind"
    );

    // An honest registry has no manifest under the wrong digest: refused, naming it.
    let honest = format!("oci://{}/plugins/http@{wrong}", registry.host_port());
    let config = dev_config(work.path(), &honest, &nginx, "");
    let err = refused_start(&config, &data);
    assert!(err.contains(key) && err.contains(&wrong), "{err}");
    assert!(err.contains("404"), "{err}");

    // The reference `push` printed, its digest mistyped: the tag beside it names the digest
    // the registry holds, so both the check and the start name both digests.
    let mistyped = pinned.replace(served, &wrong);
    assert!(mistyped.contains(":v1@"), "{mistyped}");
    let config = dev_config(work.path(), &mistyped, &nginx, "");
    let tag_names = format!("its tag v1 is {served}");
    refused_naming(
        &config,
        &data,
        key,
        &wrong,
        ("the tag's digest", &tag_names),
    );
}

#[test]
fn a_tag_is_refused_at_its_key_unless_plugins_allow_tags() {
    if !require("nginx") {
        return;
    }
    let registry = DevServer::start();
    push(&registry, HTTP_PLUGIN);
    let nginx = Nginx::start();
    let work = tempdir("shoal-oci-tag-");
    let tagged = format!("oci://{}/plugins/http:v1", registry.host_port());

    let config = dev_config(work.path(), &tagged, &nginx, "");
    let out = config_check(&config);
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("backends[0].backend.plugin.plugin"), "{err}");
    assert!(err.contains("plugins.allow_tags"), "{err}");
    assert!(
        err.contains("@sha256:"),
        "the error shows the pinned form: {err}"
    );

    // Allowed: the tag is resolved and the component verified against its manifest.
    let config = dev_config(
        work.path(),
        &tagged,
        &nginx,
        "plugins:\n  allow_tags: true\n",
    );
    let out = config_check(&config);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("allow_tags: true"));
}

#[test]
fn push_refuses_a_file_that_is_not_a_runnable_plugin() {
    let registry = DevServer::start();
    let work = tempdir("shoal-oci-junk-");
    let junk = work.path().join("junk.wasm");
    std::fs::write(&junk, b"\0asm\x01\0\0\0").unwrap();
    let target = format!("{}/plugins/junk:v1", registry.host_port());
    let out = run(shoal().args(["plugin", "push"]).arg(&junk).arg(&target));
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("not a runnable shoal plugin"), "{err}");
    let (status, _, _) = http(
        "GET",
        &registry.url("/v2/plugins/junk/manifests/v1"),
        "application/vnd.oci.image.manifest.v1+json",
    );
    assert_eq!(status, 404, "nothing was pushed");
}

#[test]
fn push_and_pull_answer_the_bearer_challenge_of_a_registry_with_credentials() {
    let dir = tempdir("shoal-oci-access-");
    let htpasswd = dir.path().join("htpasswd");
    let line = shoal_registry::htpasswd_line("alice", "s3cret-Pa55").unwrap();
    std::fs::write(&htpasswd, format!("{line}\n")).unwrap();
    let config = dir.path().join("dev.yaml");
    std::fs::write(
        &config,
        format!(
            "access:\n  htpasswd: {}\n  anonymous_pull: ['public/.*']\n",
            htpasswd.display()
        ),
    )
    .unwrap();
    let registry = DevServer::start_with_config(&dir.path().join("data"), &config);
    let target = format!("{}/public/plugins/http:v1", registry.host_port());
    let push = |user: &str| {
        run(shoal()
            .args(["plugin", "push", HTTP_PLUGIN, &target])
            .env("SHOAL_REGISTRY_USERNAME", user)
            .env("SHOAL_REGISTRY_PASSWORD", "s3cret-Pa55"))
    };

    // No credentials (an empty user is none): the registry's challenge cannot be answered.
    let refused = push("");
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("401"),
        "{}",
        text(&refused.stderr)
    );

    // With them: a token from the realm the challenge names, for a push scope.
    let pushed = push("alice");
    assert!(pushed.status.success(), "{}", text(&pushed.stderr));
    let pinned = text(&pushed.stdout).trim().to_owned();

    // Anonymous pulls of `public/` get an anonymous token and the same bytes.
    let pulled = dir.path().join("pulled.wasm");
    run_ok(
        shoal()
            .args(["plugin", "pull", &pinned, "-o"])
            .arg(&pulled)
            .env_remove("SHOAL_REGISTRY_USERNAME"),
    );
    assert_eq!(
        std::fs::read(&pulled).unwrap(),
        std::fs::read(HTTP_PLUGIN).unwrap()
    );
}
