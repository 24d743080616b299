//! Builds the plugins in `plugins/` for `wasm32-wasip2` and tells the crate where they are.
//!
//! The guests are their own Cargo workspace, built with their own `--target-dir`: a nested
//! cargo that shared the outer build's directory would wait on its lock forever. Backend
//! plugins and health policies are built in two runs because the SDK's `backend` and
//! `health` features exclude each other and cargo unifies features within one run.
//!
//! The test fixtures (`plugins/testing/`) are built only with the feature `test-plugins`,
//! which the tests that load them require: `shoal` itself never carries them.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const TARGET: &str = "wasm32-wasip2";

/// (package, env var the crate reads the path from) for each backend component.
const BACKENDS: &[(&str, &str)] = &[
    ("shoal-plugin-fs", "SHOAL_PLUGIN_FS"),
    ("shoal-plugin-http", "SHOAL_PLUGIN_HTTP"),
    ("shoal-plugin-registry", "SHOAL_PLUGIN_REGISTRY"),
    ("shoal-plugin-s3", "SHOAL_PLUGIN_S3"),
    ("shoal-plugin-gcs", "SHOAL_PLUGIN_GCS"),
    ("shoal-plugin-hdfs", "SHOAL_PLUGIN_HDFS"),
];

/// The same for health-policy components.
const POLICIES: &[(&str, &str)] = &[
    ("shoal-plugin-health-active", "SHOAL_PLUGIN_HEALTH_ACTIVE"),
    ("shoal-plugin-health-passive", "SHOAL_PLUGIN_HEALTH_PASSIVE"),
];

/// Backend test fixtures, built with the feature `test-plugins`.
const TEST_BACKENDS: &[(&str, &str)] =
    &[("shoal-test-plugin-misbehave", "SHOAL_TEST_PLUGIN_MISBEHAVE")];

/// Health-policy test fixtures, built with the feature `test-plugins`.
const TEST_POLICIES: &[(&str, &str)] = &[(
    "shoal-test-plugin-health-count",
    "SHOAL_TEST_PLUGIN_HEALTH_COUNT",
)];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // Cargo shows a failed build script's stderr; say what to do, not just where.
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").ok_or("cargo sets CARGO_MANIFEST_DIR")?);
    let root = manifest
        .parent()
        .ok_or("host/ sits in the workspace root")?
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

    let test_plugins = env::var_os("CARGO_FEATURE_TEST_PLUGINS").is_some();
    let fixtures = |list: &'static [(&'static str, &'static str)]| {
        if test_plugins { list } else { &[] }
    };
    let backends = [BACKENDS, fixtures(TEST_BACKENDS)].concat();
    let policies = [POLICIES, fixtures(TEST_POLICIES)].concat();

    ensure_wasm_target()?;
    let target_dir = plugins.join("target");
    build(&plugins, &target_dir, &backends)?;
    build(&plugins, &target_dir, &policies)?;
    let out = target_dir.join(TARGET).join("release");
    for (package, var) in backends.iter().chain(&policies) {
        let wasm = out.join(format!("{}.wasm", package.replace('-', "_")));
        if !wasm.is_file() {
            return Err(format!(
                "cargo built {package} but {} is not there",
                wasm.display()
            ));
        }
        println!("cargo:rustc-env={var}={}", wasm.display());
    }
    Ok(())
}

/// Makes sure the toolchain has the standard library for `wasm32-wasip2`, adding it with
/// `rustup target add` when it has not: a `targets = [...]` line in rust-toolchain.toml does
/// not add it to a toolchain that is already installed. Without it no plugin builds, so a
/// failure says which command to run, and why.
fn ensure_wasm_target() -> Result<(), String> {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("running `{rustc} --print sysroot` to find the toolchain: {e}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_owned();
    if has_std(Path::new(&sysroot)) {
        return Ok(());
    }
    let why = format!(
        "shoal's storage backends are WebAssembly components built for {TARGET}, and the \
         toolchain at {sysroot} has no standard library for that target"
    );
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .stdout(Stdio::from(std::io::stderr()))
        .status();
    match status {
        Ok(status) if status.success() && has_std(Path::new(&sysroot)) => Ok(()),
        Ok(status) if status.success() => Err(format!(
            "{why}. `rustup target add {TARGET}` succeeded but did not add it there: is \
             RUSTC ({rustc}) a toolchain rustup does not manage? Install its {TARGET} \
             standard library, or build with the rustup toolchain"
        )),
        Ok(status) => Err(format!(
            "{why}. `rustup target add {TARGET}` was tried and failed ({status}; its output is \
             above): run it yourself, with network access, then build again"
        )),
        Err(e) => Err(format!(
            "{why}, and rustup could not be run to add it ({e}). Run `rustup target add \
             {TARGET}`; a toolchain not managed by rustup needs its {TARGET} standard \
             library installed the way that toolchain was"
        )),
    }
}

/// Whether the toolchain at `sysroot` has a standard library for [`TARGET`].
fn has_std(sysroot: &Path) -> bool {
    let lib = sysroot.join("lib/rustlib").join(TARGET).join("lib");
    std::fs::read_dir(&lib).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
    })
}

fn build(plugins: &Path, target_dir: &Path, packages: &[(&str, &str)]) -> Result<(), String> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
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
    cmd.stdout(Stdio::from(std::io::stderr()));
    let status = cmd
        .status()
        .map_err(|e| format!("running `{cargo} build` in {}: {e}", plugins.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "building the plugins in {} failed ({status}; see the cargo output above)",
            plugins.display()
        ))
    }
}
