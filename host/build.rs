//! Builds the plugins in `plugins/` for `wasm32-wasip2` and tells the crate where they are.
//!
//! The guests are their own Cargo workspace, built with their own `--target-dir`: a nested
//! cargo that shared the outer build's directory would wait on its lock forever. Backend
//! plugins and health policies are built in two runs because the SDK's `backend` and
//! `health` features exclude each other and cargo unifies features within one run.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

/// (package, env var the crate reads the path from) for each backend component.
const BACKENDS: &[(&str, &str)] = &[
    ("shoal-plugin-fs", "SHOAL_PLUGIN_FS"),
    ("shoal-plugin-http", "SHOAL_PLUGIN_HTTP"),
    ("shoal-plugin-registry", "SHOAL_PLUGIN_REGISTRY"),
    ("shoal-plugin-s3", "SHOAL_PLUGIN_S3"),
    ("shoal-plugin-gcs", "SHOAL_PLUGIN_GCS"),
    ("shoal-plugin-hdfs", "SHOAL_PLUGIN_HDFS"),
    ("shoal-test-plugin-misbehave", "SHOAL_TEST_PLUGIN_MISBEHAVE"),
];

/// The same for health-policy components.
const POLICIES: &[(&str, &str)] = &[
    ("shoal-plugin-health-active", "SHOAL_PLUGIN_HEALTH_ACTIVE"),
    ("shoal-plugin-health-passive", "SHOAL_PLUGIN_HEALTH_PASSIVE"),
    (
        "shoal-test-plugin-health-count",
        "SHOAL_TEST_PLUGIN_HEALTH_COUNT",
    ),
];

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("host/ sits in the workspace root")
        .to_path_buf();
    let plugins = root.join("plugins");
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    for entry in [
        "Cargo.toml",
        "Cargo.lock",
        "sdk",
        "fs",
        "http",
        "registry",
        "s3",
        "gcs",
        "health-active",
        "health-passive",
        "hdfs",
        "testing",
    ] {
        println!("cargo:rerun-if-changed={}", plugins.join(entry).display());
    }

    ensure_wasm_target();
    let target_dir = plugins.join("target");
    build(&plugins, &target_dir, BACKENDS);
    build(&plugins, &target_dir, POLICIES);
    let out = target_dir.join(TARGET).join("release");
    for (package, var) in BACKENDS.iter().chain(POLICIES) {
        let wasm = out.join(format!("{}.wasm", package.replace('-', "_")));
        assert!(wasm.is_file(), "{} was not built", wasm.display());
        println!("cargo:rustc-env={var}={}", wasm.display());
    }
}

/// `rustup target add wasm32-wasip2` when the toolchain has no std for it: a
/// `targets = [...]` line in rust-toolchain.toml does not add it to an installed toolchain.
fn ensure_wasm_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc runs");
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    let lib = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .join("lib");
    let has_std = std::fs::read_dir(&lib).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
    });
    if !has_std {
        let status = Command::new("rustup")
            .args(["target", "add", TARGET])
            .status()
            .expect("rustup runs: the wasm32-wasip2 target is needed to build the plugins");
        assert!(status.success(), "rustup target add {TARGET} failed");
    }
}

fn build(plugins: &Path, target_dir: &Path, packages: &[(&str, &str)]) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(plugins)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(target_dir);
    for (package, _) in packages {
        cmd.args(["-p", package]);
    }
    // The outer build's settings are for the host, not for the guests.
    for var in [
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    // Nothing the nested cargo prints may reach our stdout, where cargo reads directives.
    cmd.stdout(std::process::Stdio::from(std::io::stderr()));
    let status = cmd.status().expect("cargo runs");
    assert!(
        status.success(),
        "building the plugins failed (see the cargo output above)"
    );
}
