//! The plugin template built the way an outside author builds it: `plugins/template` copied
//! into an empty temporary folder outside this repository, its SDK dependency pointed at
//! `plugins/sdk` by absolute path (as `path = "/where/you/copied/sdk"` would), and
//! `cargo build --release --target wasm32-wasip2` run there. Nothing of the repository's
//! workspaces, toolchain file or WIT folder is in reach of that build but the SDK itself.
//!
//! Built once per test binary. The copy gets `plugins/Cargo.lock` so it resolves the versions
//! the workspace has already fetched; its target directory is `plugins/target/author`, kept
//! apart from the workspace's so the two builds never wait on each other's lock.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use super::wait_with_deadline;

/// How long the template's build may take.
const BUILD_DEADLINE: Duration = Duration::from_secs(900);

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ sits in the repository")
        .to_path_buf()
}

/// The template's component, built from a copy outside the repository.
pub fn template_wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(build).clone()
}

fn build() -> PathBuf {
    let root = repo_root();
    let sdk = root.join("plugins/sdk");
    // Not under the repository: nothing there (workspace manifests, rust-toolchain.toml, the
    // top-level wit/) may be what makes it build.
    let folder = tempfile::Builder::new()
        .prefix("shoal-template-")
        .tempdir_in(std::env::temp_dir())
        .expect("a temporary folder");
    let copy = folder.path().to_path_buf();
    assert!(
        !copy.starts_with(&root),
        "the copy must be outside the repository"
    );
    copy_dir(&root.join("plugins/template"), &copy);
    let manifest = copy.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).expect("the template's Cargo.toml");
    let pointed = text.replace(
        "shoal-plugin-sdk = { path = \"../sdk\" }",
        &format!(
            "shoal-plugin-sdk = {{ path = {:?} }}",
            sdk.display().to_string()
        ),
    );
    assert_ne!(
        pointed, text,
        "the template's Cargo.toml names its SDK as `shoal-plugin-sdk = {{ path = \"../sdk\" }}`"
    );
    std::fs::write(&manifest, pointed).expect("writing the copy's Cargo.toml");
    std::fs::copy(root.join("plugins/Cargo.lock"), copy.join("Cargo.lock")).expect("lock file");

    let target = root.join("plugins/target/author");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut child = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&copy)
        .env("CARGO_TARGET_DIR", &target)
        // The outer build's settings are not the author's.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .stdin(Stdio::null())
        .spawn()
        .expect("running cargo");
    // A cold build compiles wit-bindgen's macros: minutes on a loaded 2-core machine.
    match wait_with_deadline(&mut child, BUILD_DEADLINE) {
        Some(status) if status.success() => {}
        Some(status) => panic!("building the template from a copy failed ({status}); see above"),
        None => {
            let _ = child.kill();
            panic!("building the template did not finish within {BUILD_DEADLINE:?}");
        }
    }
    let wasm = target.join("wasm32-wasip2/release/shoal_plugin_template.wasm");
    assert!(wasm.is_file(), "cargo built no {}", wasm.display());
    // The component lives in the target directory; the copy goes.
    drop(folder);
    wasm
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("creating the copy");
    for entry in std::fs::read_dir(from).expect("listing the template") {
        let entry = entry.expect("a template entry");
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name == "Cargo.lock" {
            continue;
        }
        if path.is_dir() {
            copy_dir(&path, &to.join(name));
        } else {
            std::fs::copy(&path, to.join(name)).expect("copying a template file");
        }
    }
}
