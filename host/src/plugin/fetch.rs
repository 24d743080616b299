//! Plugin sources as component bytes: a file is read; an `oci://` artifact is taken from the
//! local cache when it is there and still verifies, and otherwise pulled from its registry
//! (verified against the pinned digest) and cached, so a restart does not need the registry.
//!
//! The cache is content-addressed under `<data_dir>/plugin-cache/oci/`: the manifest at
//! `sha256/<manifest hex>.json`, the component at `sha256/<layer hex>.wasm`, each written to a
//! temporary file and renamed. Both are hashed again on every read, so a file changed on disk
//! is fetched anew rather than run. A tag is resolved at the registry on every load (it may
//! have moved); only a digest is served from the cache.
//!
//! Loading is synchronous (the engine compiles synchronously too), so a pull runs on a
//! runtime of its own on a scoped thread: callable from `main` before any runtime exists and
//! from inside the roles' runtime alike.

use std::path::{Path, PathBuf};

use shoal_config::{OciPin, OciPlugin, PluginSource, PluginsConfig, Sha256Digest};

use super::artifact::{self, plugin_layer};
use super::engine::LoadError;
use super::oci::{OciError, Pulled, RegistryClient};

/// The plugin cache of a role whose data directory is `data_dir`: compiled `.cwasm` files, and
/// `oci/` for fetched components.
pub fn cache_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("plugin-cache")
}

/// Turns plugin sources into component bytes.
#[derive(Clone, Debug, Default)]
pub struct PluginFetcher {
    /// The role's `plugins:` block: which registries are reached over plain HTTP.
    plugins: PluginsConfig,
    /// `<plugin cache>/oci`, when there is a cache.
    cache: Option<PathBuf>,
    /// Whether fetched components are written to the cache (a start), or only read from it
    /// (`config check` and the checks before a start, which create nothing).
    write: bool,
}

impl PluginFetcher {
    /// A fetcher that reads and fills the `oci/` folder of `plugin_cache`, with the registries
    /// `plugins` allows plain HTTP to.
    pub fn new(plugins: &PluginsConfig, plugin_cache: Option<&Path>) -> Self {
        PluginFetcher {
            plugins: plugins.clone(),
            cache: plugin_cache.map(|d| d.join("oci")),
            write: true,
        }
    }

    /// Like [`PluginFetcher::new`], but never writes: a miss is fetched into memory only.
    pub fn read_only(plugins: &PluginsConfig, plugin_cache: Option<&Path>) -> Self {
        PluginFetcher {
            write: false,
            ..PluginFetcher::new(plugins, plugin_cache)
        }
    }

    /// The name (file stem, or the repository's last component) and the bytes of `source`.
    pub fn component(&self, source: &PluginSource) -> Result<(String, Vec<u8>), LoadError> {
        let name = source_name(source);
        match source {
            PluginSource::File(path) => {
                let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
                    plugin: name.clone(),
                    path: path.clone(),
                    source,
                })?;
                Ok((name, bytes))
            }
            PluginSource::Oci(oci) => {
                let wasm = self.oci(oci).map_err(|source| LoadError::Fetch {
                    plugin: name.clone(),
                    source: Box::new(source),
                })?;
                Ok((name, wasm))
            }
        }
    }

    /// The verified component of `oci`, from the cache or its registry.
    pub fn oci(&self, oci: &OciPlugin) -> Result<Vec<u8>, OciError> {
        if let (OciPin::Digest(pin), Some(cache)) = (&oci.pin, &self.cache) {
            match cached(cache, pin) {
                Ok(Some(wasm)) => return Ok(wasm),
                Ok(None) => {}
                Err(why) => {
                    tracing::warn!(plugin = %oci, "fetching again, the cached copy: {why}");
                }
            }
        }
        let plain_http = self.plugins.plain_http(&oci.registry);
        let client = RegistryClient::new(&oci.registry, plain_http)?;
        let pulled = match on_own_runtime(client.pull(oci))? {
            Ok(pulled) => pulled,
            Err(e) => return Err(beside_its_tag(&client, oci, e)),
        };
        if let OciPin::Tag(tag) = &oci.pin {
            tracing::info!(plugin = %oci, digest = %pulled.digest, "tag {tag} resolved");
        }
        if self.write
            && let Some(cache) = &self.cache
            && let Err(e) = store(cache, &pulled)
        {
            tracing::warn!(plugin = %oci, dir = %cache.display(), "cannot cache the plugin: {e}");
        }
        Ok(pulled.wasm)
    }
}

/// `e`, the failure to pull `oci` by its digest, with the digest its tag names now when the
/// reference has a tag beside the digest and the registry does not serve the pinned digest:
/// the operator sees both digests, whether the pin or the tag is the one that is off.
fn beside_its_tag(client: &RegistryClient, oci: &OciPlugin, e: OciError) -> OciError {
    let (OciPin::Digest(pinned), Some(tag)) = (&oci.pin, &oci.tag) else {
        return e;
    };
    let missing = matches!(&e, OciError::Status { status, .. } if status.as_u16() == 404)
        || matches!(e, OciError::DigestMismatch { .. });
    if !missing {
        return e;
    }
    let by_tag = OciPlugin {
        pin: OciPin::Tag(tag.clone()),
        tag: None,
        ..oci.clone()
    };
    // The tag's manifest is enough to name its digest; its component is not fetched.
    match on_own_runtime(client.manifest(&by_tag)) {
        Ok(Ok((_, current))) if current != *pinned => OciError::PinnedElsewhere {
            reference: oci.to_string(),
            pinned: pinned.clone(),
            tag: tag.clone(),
            current,
            cause: Box::new(e),
        },
        _ => e,
    }
}

/// Runs `future` to completion on a current-thread runtime of its own, on its own thread.
pub(crate) fn on_own_runtime<F>(future: F) -> Result<F::Output, OciError>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|s| {
        let joined = s
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| rt.block_on(future))
            })
            .join();
        match joined {
            Ok(result) => {
                result.map_err(|e| OciError::Client(format!("cannot start a runtime: {e}")))
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// A plugin's name in logs and errors.
pub fn source_name(source: &PluginSource) -> String {
    match source {
        PluginSource::File(path) => path.file_stem().map_or_else(
            || path.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        ),
        PluginSource::Oci(oci) => oci.name().to_owned(),
    }
}

fn manifest_path(cache: &Path, digest: &Sha256Digest) -> PathBuf {
    cache.join("sha256").join(format!("{}.json", digest.hex()))
}

fn component_path(cache: &Path, digest: &Sha256Digest) -> PathBuf {
    cache.join("sha256").join(format!("{}.wasm", digest.hex()))
}

/// The cached component of the manifest `pin`, verified again; `None` when not cached.
fn cached(cache: &Path, pin: &Sha256Digest) -> Result<Option<Vec<u8>>, String> {
    let manifest = match std::fs::read(manifest_path(cache, pin)) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if artifact::sha256_of(&manifest) != *pin {
        return Err("the manifest no longer matches its digest".into());
    }
    let layer = plugin_layer(&manifest)?;
    let wasm = match std::fs::read(component_path(cache, &layer.digest)) {
        Ok(w) => w,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if artifact::sha256_of(&wasm) != layer.digest {
        return Err("the component no longer matches its digest".into());
    }
    Ok(Some(wasm))
}

/// Writes the component, then the manifest (so a manifest is only there with its component).
fn store(cache: &Path, pulled: &Pulled) -> std::io::Result<()> {
    std::fs::create_dir_all(cache.join("sha256"))?;
    let layer = artifact::sha256_of(&pulled.wasm);
    write_atomically(&component_path(cache, &layer), &pulled.wasm)?;
    write_atomically(&manifest_path(cache, &pulled.digest), &pulled.manifest)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::super::check::{Inspection, WorldKind};
    use super::*;

    #[test]
    fn a_cached_copy_is_served_only_while_both_files_still_verify() {
        let dir = tempfile::tempdir().unwrap();
        let wasm = b"\0asm pretend component".to_vec();
        let inspection = Inspection {
            world: WorldKind::Backend,
            imports: vec![],
            exports: vec![],
            runnable: Ok(()),
        };
        let manifest = artifact::manifest(&wasm, &inspection, "p.wasm");
        let digest = artifact::sha256_of(&manifest);
        assert_eq!(cached(dir.path(), &digest), Ok(None));
        let pulled = Pulled {
            digest: digest.clone(),
            manifest,
            wasm: wasm.clone(),
        };
        store(dir.path(), &pulled).unwrap();
        assert_eq!(cached(dir.path(), &digest), Ok(Some(wasm.clone())));

        let layer = artifact::sha256_of(&wasm);
        std::fs::write(component_path(dir.path(), &layer), b"\0asm tampered").unwrap();
        let err = cached(dir.path(), &digest).unwrap_err();
        assert!(err.contains("no longer matches"), "{err}");
    }
}
