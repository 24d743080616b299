//! `shoal plugin push` and `shoal plugin pull`: a component into a registry as a plugin
//! artifact, and back out to a file, both verified.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, bail};
use shoal_config::{OCI_SCHEME, OciPin, OciPlugin};

use super::artifact;
use super::check::inspect;
use super::engine::{PluginEngine, PluginLimits};
use super::fetch::on_own_runtime;
use super::oci::RegistryClient;

/// `REGISTRY/REPOSITORY:TAG` or `...@sha256:<hex>`, with or without `oci://` in front.
pub fn parse_reference(s: &str) -> Result<OciPlugin, String> {
    s.strip_prefix(OCI_SCHEME)
        .unwrap_or(s)
        .parse()
        .map_err(|e: shoal_config::PluginSourceError| e.to_string())
}

fn client(reference: &OciPlugin, plain_http: bool) -> anyhow::Result<RegistryClient> {
    let plain = plain_http || reference.registry.is_loopback();
    Ok(RegistryClient::new(&reference.registry, plain)?)
}

/// `shoal plugin push FILE REGISTRY/REPOSITORY:TAG`: refuses a FILE that is not a runnable
/// shoal plugin (as `plugin check` says), pushes it, and prints the pinned reference a config
/// names: `oci://REGISTRY/REPOSITORY@sha256:<manifest digest>`.
pub fn run_push(file: &Path, target: &OciPlugin, plain_http: bool) -> anyhow::Result<ExitCode> {
    let OciPin::Tag(tag) = &target.pin else {
        bail!(
            "push names a tag, like {}/{}:v1",
            target.registry,
            target.repository
        );
    };
    let wasm = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let engine = PluginEngine::new(PluginLimits::default(), None)?;
    let name = file
        .file_stem()
        .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned());
    let not_a_plugin = || {
        format!(
            "{} is not a runnable shoal plugin (see `shoal plugin check`); nothing was pushed",
            file.display()
        )
    };
    let inspection = inspect(&engine, &name, &wasm).with_context(not_a_plugin)?;
    if !inspection.ok() {
        eprint!("{inspection}");
        bail!(not_a_plugin());
    }
    let title = file.file_name().map_or_else(
        || "plugin.wasm".to_owned(),
        |s| s.to_string_lossy().into_owned(),
    );
    let manifest = artifact::manifest(&wasm, &inspection, &title);
    let client = client(target, plain_http)?;
    let digest = on_own_runtime(client.push(&target.repository, tag, wasm, manifest))?
        .with_context(|| format!("pushing {} to {target}", file.display()))?;
    println!("{OCI_SCHEME}{}", target.pinned(digest));
    Ok(ExitCode::SUCCESS)
}

/// `shoal plugin pull REFERENCE -o FILE`: fetches the plugin, verifies the manifest against
/// the pinned digest and the component against the manifest, writes FILE, and prints the
/// pinned reference.
pub fn run_pull(
    reference: &OciPlugin,
    output: &Path,
    plain_http: bool,
) -> anyhow::Result<ExitCode> {
    let client = client(reference, plain_http)?;
    let pulled = on_own_runtime(client.pull(reference))?
        .with_context(|| format!("pulling {OCI_SCHEME}{reference}"))?;
    std::fs::write(output, &pulled.wasm)
        .with_context(|| format!("cannot write {}", output.display()))?;
    println!("{OCI_SCHEME}{}", reference.pinned(pulled.digest));
    Ok(ExitCode::SUCCESS)
}
