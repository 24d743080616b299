//! `shoal plugin check`: what a component is, what it needs, and whether this host can run
//! it, found by compiling it and linking it exactly as a real load would.

use std::fmt;

use super::bindings::backend::BackendPre;
use super::bindings::health::PolicyPre;
use super::engine::{LoadError, PluginEngine};

/// The export that marks a storage backend.
const BACKEND_EXPORT: &str = "shoal:backend/storage@0.1.0";

/// Which shoal world a component implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorldKind {
    /// `shoal:backend/backend`: a storage backend.
    Backend,
    /// `shoal:health/policy`: a health-check policy.
    Policy,
    /// Neither: it exports none of the shoal worlds' functions.
    Unknown,
}

impl WorldKind {
    /// The world's WIT name, as the `dev.shoal.plugin.world` annotation carries it.
    pub fn id(self) -> &'static str {
        match self {
            WorldKind::Backend => "shoal:backend/backend@0.1.0",
            WorldKind::Policy => "shoal:health/policy@0.1.0",
            WorldKind::Unknown => "unknown",
        }
    }
}

impl fmt::Display for WorldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WorldKind::Backend => "shoal:backend/backend@0.1.0 (storage backend)",
            WorldKind::Policy => "shoal:health/policy@0.1.0 (health-check policy)",
            WorldKind::Unknown => "none of shoal's worlds",
        })
    }
}

/// What `inspect` found.
#[derive(Debug)]
pub struct Inspection {
    /// The world the exports match.
    pub world: WorldKind,
    /// Every import, by name (`wasi:http/outgoing-handler@0.2.12`, ...).
    pub imports: Vec<String>,
    /// Every export, by name.
    pub exports: Vec<String>,
    /// `Ok` when this host links it; otherwise why not.
    pub runnable: Result<(), String>,
}

impl Inspection {
    /// True when the component is a shoal plugin this host can instantiate.
    pub fn ok(&self) -> bool {
        self.world != WorldKind::Unknown && self.runnable.is_ok()
    }
}

impl fmt::Display for Inspection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "world: {}", self.world)?;
        writeln!(f, "imports:")?;
        for name in &self.imports {
            writeln!(f, "  {name}")?;
        }
        writeln!(f, "exports:")?;
        for name in &self.exports {
            writeln!(f, "  {name}")?;
        }
        match &self.runnable {
            Ok(()) => writeln!(f, "runnable: yes, this host links every import"),
            Err(why) => writeln!(f, "runnable: no: {why}"),
        }
    }
}

/// Compiles `wasm` and tries to link it for the world its exports match.
pub fn inspect(engine: &PluginEngine, name: &str, wasm: &[u8]) -> Result<Inspection, LoadError> {
    let component = engine.component(name, wasm)?;
    let ty = component.component_type();
    let wt = &engine.inner.engine;
    let imports: Vec<String> = ty.imports(wt).map(|(n, _)| n.to_owned()).collect();
    let exports: Vec<String> = ty.exports(wt).map(|(n, _)| n.to_owned()).collect();
    let has = |n: &str| exports.iter().any(|e| e == n);
    let world = if has(BACKEND_EXPORT) {
        WorldKind::Backend
    } else if has("observe") && has("healthy") {
        WorldKind::Policy
    } else {
        WorldKind::Unknown
    };
    let linked = match world {
        WorldKind::Backend => engine
            .inner
            .backend_linker
            .instantiate_pre(&component)
            .and_then(BackendPre::new)
            .map(drop),
        WorldKind::Policy => engine
            .inner
            .policy_linker
            .instantiate_pre(&component)
            .and_then(PolicyPre::new)
            .map(drop),
        WorldKind::Unknown => Err(wasmtime::format_err!(
            "it exports neither `{BACKEND_EXPORT}` nor `observe`/`healthy`"
        )),
    };
    Ok(Inspection {
        world,
        imports,
        exports,
        runnable: linked.map_err(|e| format!("{e:#}")),
    })
}

/// `shoal plugin check FILE`: prints the inspection; fails when FILE is not a runnable
/// shoal plugin.
pub fn run_check(file: &std::path::Path) -> anyhow::Result<std::process::ExitCode> {
    let wasm =
        std::fs::read(file).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
    let engine = PluginEngine::new(super::PluginLimits::default(), None)?;
    let name = file
        .file_stem()
        .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned());
    let inspection = inspect(&engine, &name, &wasm)?;
    print!("{inspection}");
    Ok(if inspection.ok() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}
