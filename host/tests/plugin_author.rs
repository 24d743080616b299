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
