//! What an outside plugin author does, repeated by the suite: the template (plugins/template)
//! copied into an empty folder outside the repository and built there against the SDK alone
//! (tests/common/template.rs), checked with `shoal plugin check`, given its access token
//! through `auth.plugin` (redacted by `shoal config check`), run through the backend
//! conformance suite against a small bearer-token object store (tests/common/object_store.rs),
//! and used by `shoal dev` for a byte-exact push/pull round trip with skopeo.

mod common;
mod conformance;

use std::process::Command;

use common::image;
use common::object_store::ObjectStore;
use common::skopeo::{skopeo_pull, skopeo_push};
use common::template::template_wasm;
use common::{DevServer, assert_same_blobs, require, run, tempdir};
use conformance::Writable;
use shoal_host::plugin::{Backend, BackendError, PluginEngine, PluginLimits};

const TOKEN: &str = "t0ken-from-the-environment";

/// A `shoal dev` config whose one backend is the template over `store`, its token read from
/// `auth.plugin.blobs.token`, itself `${BLOBS_TOKEN}`.
fn dev_yaml(store: &ObjectStore) -> String {
    format!(
        "backends:\n  - namespace: .*\n    backend:\n      plugin:\n        plugin: {}\n        \
         username: blobs\n        config:\n          base_url: {}\n        \
         allowed_hosts: [\"{}\"]\nauth:\n  plugin:\n    blobs:\n      token: ${{BLOBS_TOKEN}}\n",
        template_wasm().display(),
        store.base_url(),
        store.host_port()
    )
}

fn token_env(name: &str) -> Option<String> {
    (name == "BLOBS_TOKEN").then(|| TOKEN.to_owned())
}

#[test]
fn the_template_built_outside_the_repository_is_a_backend_plugin_check_accepts() {
    let out = run(Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["plugin", "check"])
        .arg(template_wasm()));
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains("storage backend"), "{printed}");
    assert!(printed.contains("runnable: yes"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_passes_the_conformance_suite_with_its_token_from_auth() {
    let store = ObjectStore::start(TOKEN);
    let yaml = dev_yaml(&store);
    let config: shoal_config::DevConfig = shoal_config::load_str(&yaml, &token_env).expect("loads");
    let entry = &config.backends[0].backend;
    let engine = PluginEngine::new(PluginLimits::default(), None).expect("engine");
    let backend = engine
        .backend(entry, config.auth.secrets_for(entry))
        .expect("the template loads");
    conformance::writable(&backend, Writable::default()).await;
    assert_eq!(
        store.refused(),
        0,
        "every request carried the token from auth.plugin"
    );

    // The token is what lets it in: without the auth entry every call is refused, as the
    // store's 401 (Unauthorized), not as a missing blob.
    let anonymous = engine
        .backend(entry, Default::default())
        .expect("the template loads");
    conformance::upload(&backend, "guarded", b"content").await;
    match anonymous.stat(conformance::NAMESPACE, "guarded").await {
        Err(BackendError::Unauthorized { .. }) => {}
        other => panic!("expected Unauthorized without the token, got {other:?}"),
    }
    assert!(store.refused() > 0);
}

#[test]
fn shoal_dev_round_trips_an_image_through_the_template_and_config_check_redacts_its_token() {
    if !require("skopeo") {
        return;
    }
    let store = ObjectStore::start(TOKEN);
    let work = tempdir("shoal-author-");
    let config = work.path().join("dev.yaml");
    std::fs::write(&config, dev_yaml(&store)).unwrap();

    let check = run(Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["config", "check", "dev"])
        .arg(&config)
        .env("BLOBS_TOKEN", TOKEN));
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(
        check.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(printed.contains("token: <redacted>"), "{printed}");
    assert!(!printed.contains(TOKEN), "{printed}");

    let layout = work.path().join("in");
    let built = image::write_image_layout(&layout, "v1", "template-author");
    let data = work.path().join("data");
    let server = DevServer::start_with_env(&data, &config, &[("BLOBS_TOKEN", TOKEN)]);
    skopeo_push(&server, &layout, "v1", "team/app:v1", false);
    server.stop();
    assert!(
        !any_file_holds(&data, TOKEN),
        "the token never reaches a file of the data directory"
    );

    // Written through the plugin, under Kraken's names in the repository's namespace.
    let keys = store.keys();
    let mut expected = vec![&built.manifest_digest, &built.config_digest];
    expected.extend(&built.layer_digests);
    for d in expected {
        let key = format!("team/app/{}", d.hex());
        assert!(keys.contains(&key), "the store lacks {key}: {keys:?}");
    }
    assert_eq!(
        store.get("team/app/team/app:v1").as_deref(),
        Some(built.manifest_digest.as_str().as_bytes()),
        "the tag object holds the manifest's digest"
    );

    // Without the local cache everything comes back through the plugin.
    std::fs::remove_dir_all(data.join("cache")).expect("removing the cache");
    let server = DevServer::start_with_env(&data, &config, &[("BLOBS_TOKEN", TOKEN)]);
    let out = work.path().join("out");
    skopeo_pull(&server, "team/app:v1", &out, "v1", false);
    assert_same_blobs(&layout, &out);
    assert_eq!(
        image::layout_digest_for_tag(&out, "v1"),
        built.manifest_digest
    );
    server.stop();
    assert_eq!(store.refused(), 0);
}

/// Whether any file under `dir` holds `needle`.
fn any_file_holds(dir: &std::path::Path, needle: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        if path.is_dir() {
            any_file_holds(&path, needle)
        } else {
            std::fs::read(&path)
                .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        }
    })
}

/// `shoal plugin call FILE ARGS...`: its output, checked to exit as `ok` says.
fn call(file: &std::path::Path, args: &[&str], ok: bool) -> (String, String) {
    let out = run(Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["plugin", "call"])
        .arg(file)
        .args(args));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        out.status.success(),
        ok,
        "shoal plugin call {args:?}: {}\nstdout: {stdout}\nstderr: {stderr}",
        out.status
    );
    (stdout, stderr)
}

/// Every backend export through `shoal plugin call`, on the object at `name`: upload from a
/// file and from stdin, stat, whole and ranged download, list, delete, then not-found.
fn every_backend_export(wasm: &std::path::Path, grants: &[&str], work: &std::path::Path) {
    let content = work.join("content");
    std::fs::write(&content, b"0123456789abcdef").unwrap();
    let with = |rest: &[&str]| -> Vec<String> {
        grants.iter().chain(rest).map(|s| (*s).to_owned()).collect()
    };
    let run_with = |rest: &[&str], ok: bool| {
        let args = with(rest);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        call(wasm, &args, ok)
    };
    let (out, _) = run_with(
        &["upload", "team/app", "obj", content.to_str().unwrap()],
        true,
    );
    assert_eq!(out.trim(), "uploaded 16 bytes");
    let (out, _) = run_with(&["stat", "team/app", "obj"], true);
    assert_eq!(out.trim(), "size: 16");
    let (out, _) = run_with(&["download", "team/app", "obj"], true);
    assert_eq!(out, "0123456789abcdef");
    let (out, err) = run_with(&["download", "team/app", "obj", "--range", "4-7"], true);
    assert_eq!(out, "4567", "{err}");
    let saved = work.join("saved");
    run_with(
        &[
            "download",
            "team/app",
            "obj",
            "--range",
            "10-",
            "-o",
            saved.to_str().unwrap(),
        ],
        true,
    );
    assert_eq!(std::fs::read(&saved).unwrap(), b"abcdef");
    // stdin, for a second name, so the listing has two pages of one.
    let args = with(&["upload", "team/app", "obj2"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal"))
        .args(["plugin", "call"])
        .arg(wasm)
        .args(&args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"from stdin")
        .unwrap();
    let uploaded = child.wait_with_output().unwrap();
    assert!(uploaded.status.success());
    assert_eq!(
        String::from_utf8_lossy(&uploaded.stdout).trim(),
        "uploaded 10 bytes"
    );
    let (out, _) = run_with(&["list", "team/app", "obj", "--limit", "1"], true);
    assert_eq!(out, "obj\ncontinuation: obj\n");
    let (out, _) = run_with(
        &[
            "list",
            "team/app",
            "obj",
            "--limit",
            "1",
            "--continuation",
            "obj",
        ],
        true,
    );
    assert!(out.starts_with("obj2\n"), "{out}");
    let (out, _) = run_with(&["delete", "team/app", "obj"], true);
    assert_eq!(out.trim(), "deleted");
    let (_, err) = run_with(&["stat", "team/app", "obj"], false);
    assert!(err.contains("error: not-found"), "{err}");
    let (_, err) = run_with(&["download", "team/app", "obj", "--range", "9-3"], false);
    assert!(err.contains("START-END"), "{err}");
}

#[test]
fn plugin_call_runs_every_export_of_the_fs_plugin() {
    let work = tempdir("shoal-call-fs-");
    let root = work.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let fs = std::path::Path::new(env!("SHOAL_PLUGIN_FS"));
    every_backend_export(fs, &["--dir", root.to_str().unwrap()], work.path());
    assert!(root.join("obj2").is_file(), "written under --dir");
}

#[test]
fn plugin_call_runs_every_export_of_the_template_with_its_grants() {
    let store = ObjectStore::start(TOKEN);
    let work = tempdir("shoal-call-template-");
    let config = format!("{{\"base_url\": \"{}\"}}", store.base_url());
    let wasm = template_wasm();
    let host = store.host_port();
    every_backend_export(
        &wasm,
        &[
            "--config",
            &config,
            "--secret",
            &format!("token={TOKEN}"),
            "--allow-host",
            &host,
        ],
        work.path(),
    );
    assert_eq!(store.refused(), 0);
    assert!(store.get("team/app/obj2").is_some());
    // No token: the store's 401 as the WIT's `unauthorized`.
    let (_, err) = call(
        &wasm,
        &[
            "--config",
            &config,
            "--allow-host",
            &host,
            "stat",
            "team/app",
            "obj2",
        ],
        false,
    );
    assert!(err.contains("error: unauthorized"), "{err}");
    // No grant for the host: refused before anything leaves.
    let (_, err) = call(
        &wasm,
        &[
            "--config",
            &config,
            "--secret",
            &format!("token={TOKEN}"),
            "stat",
            "team/app",
            "obj2",
        ],
        false,
    );
    assert!(err.contains("does not grant"), "{err}");
}

#[test]
fn plugin_call_shows_a_health_policys_decisions() {
    let passive = std::path::Path::new(env!("SHOAL_PLUGIN_HEALTH_PASSIVE"));
    let (out, _) = call(
        passive,
        &[
            "--config",
            r#"{"fails": 2, "fail_timeout": "5s"}"#,
            "policy",
            "a:80=fail",
            "a:80=fail@10",
            "b:80@20",
            "a:80@6000",
        ],
        true,
    );
    assert_eq!(
        out,
        "@0 a:80 fail -> healthy\n@10 a:80 fail -> unhealthy\n@20 b:80 ? -> healthy\n\
         @6000 a:80 ? -> healthy\n"
    );
    // A backend is not a policy, and the reverse.
    let fs = std::path::Path::new(env!("SHOAL_PLUGIN_FS"));
    let (_, err) = call(fs, &["policy", "a=ok"], false);
    assert!(err.contains("storage backend"), "{err}");
    let (_, err) = call(passive, &["stat", "ns", "x"], false);
    assert!(err.contains("health-check policy"), "{err}");
}

#[test]
fn shoal_dev_lists_tags_deletes_them_and_reads_ranges_through_the_plugin() {
    if !require("skopeo") {
        return;
    }
    let store = ObjectStore::start(TOKEN);
    let work = tempdir("shoal-author-calls-");
    let config = work.path().join("dev.yaml");
    std::fs::write(&config, dev_yaml(&store)).unwrap();
    let layout = work.path().join("in");
    let built = image::write_image_layout(&layout, "v1", "template-calls");
    let env = [("BLOBS_TOKEN", TOKEN)];

    // One instance pushes two tags; a second one, sharing only the store, never saw them.
    let writer = DevServer::start_with_env(&work.path().join("a"), &config, &env);
    skopeo_push(&writer, &layout, "v1", "team/app:v1", false);
    skopeo_push(&writer, &layout, "v1", "team/app:v2", false);
    let reader = DevServer::start_with_env(&work.path().join("b"), &config, &env);
    let client = reqwest::blocking::Client::new();
    let tags = |server: &DevServer| -> serde_json::Value {
        let resp = client
            .get(server.url("/v2/team/app/tags/list"))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        serde_json::from_slice::<serde_json::Value>(&resp.bytes().unwrap()).unwrap()["tags"].clone()
    };
    assert_eq!(
        tags(&reader),
        serde_json::json!(["v1", "v2"]),
        "listed through the plugin's `list`"
    );

    // A range of a blob the reader does not hold: that range, read as a range.
    let layer = &built.layer_digests[0];
    let whole = store.get(&format!("team/app/{}", layer.hex())).unwrap();
    let resp = client
        .get(reader.url(&format!("/v2/team/app/blobs/{layer}")))
        .header("range", "bytes=10-19")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(
        resp.headers()["content-range"].to_str().unwrap(),
        format!("bytes 10-19/{}", whole.len())
    );
    assert_eq!(resp.bytes().unwrap(), whole.slice(10..20));
    let requests = store.requests();
    let key = format!("team/app/{}", layer.hex());
    assert!(
        requests.contains(&format!("GET {key} bytes=10-19")),
        "the plugin's ranged `download`: {requests:?}"
    );
    assert!(
        !requests.contains(&format!("GET {key}")),
        "and not the whole blob: {requests:?}"
    );
    let resp = client
        .get(reader.url(&format!("/v2/team/app/blobs/{layer}")))
        .header("range", format!("bytes={}-", whole.len() + 5))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 416);

    // A deleted tag leaves the store through the plugin's `delete`, so no instance lists it.
    let resp = client
        .delete(writer.url("/v2/team/app/manifests/v2"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert!(store.get("team/app/team/app:v2").is_none());
    assert!(
        store
            .requests()
            .contains(&"DELETE team/app/team/app:v2".to_owned())
    );
    assert_eq!(tags(&reader), serde_json::json!(["v1"]));
    writer.stop();
    reader.stop();
}
