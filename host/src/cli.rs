//! Command-line surface of `shoal`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal_host::plugin;

use crate::preflight::Preflight;

/// shoal: a peer-to-peer container registry mirror with sandboxed WebAssembly storage backends.
#[derive(Parser, Debug)]
#[command(name = "shoal", version)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the registry (push and pull) over the storage backends in one process, on embedded
    /// defaults: a full OCI registry on one port (the P2P roles are the commands below).
    Dev(DevArgs),
    /// Collect garbage once in a `shoal dev` data directory (refused while a `shoal dev` uses
    /// it, which collects by itself every `gc.interval`): blobs no tag, index or referrer
    /// reaches are deleted, from the backends too unless `gc.backends: false`.
    Gc(GcArgs),
    /// Run the whole P2P cluster on this machine as separate processes (tracker, origins,
    /// build-index, proxy, agents) from the configs in examples/devcluster/.
    Devcluster(DevClusterArgs),
    /// Run the node-local read-only registry that gets blobs from peers.
    Agent(RoleArgs),
    /// Run a seeder in front of the storage backends.
    Origin(RoleArgs),
    /// Run the announce service that hands out peers.
    Tracker(RoleArgs),
    /// Run the tag-to-digest service over the storage backends.
    BuildIndex(RoleArgs),
    /// Run the registry CI pushes to: blobs go to the origins, tags to the build-index.
    Proxy(RoleArgs),
    /// Make agents fetch an image's layers ahead of a rollout (each agent's `POST /preload`),
    /// showing each one's progress; exits 1 naming every agent that failed.
    Preload(PreloadArgs),
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Work with WebAssembly plugins.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand, Debug)]
enum PluginCommand {
    /// Report which world FILE implements, what it imports, and whether this host can run it.
    Check {
        /// The component (`.wasm`).
        file: PathBuf,
    },
    /// Run one export of FILE under the sandbox a role gives it, with the grants given here,
    /// and print the result: a backend's stat, download, upload, list or delete, or a health
    /// policy's decisions. Exits 1 when the export returns an error.
    Call(plugin::CallArgs),
    /// Store FILE in an OCI registry as a plugin artifact (refused unless `plugin check`
    /// passes) and print the reference a config pins: oci://REGISTRY/REPOSITORY@sha256:<hex>.
    Push {
        /// The component (`.wasm`).
        file: PathBuf,
        /// Where to push: REGISTRY/REPOSITORY:TAG, like 127.0.0.1:5000/plugins/my-store:v1.
        #[arg(value_name = "REGISTRY/REPOSITORY:TAG", value_parser = plugin::parse_reference)]
        target: shoal_config::OciPlugin,
        /// Speak plain HTTP to a registry that is not on loopback (loopback always is).
        #[arg(long)]
        plain_http: bool,
    },
    /// Fetch a plugin artifact to a file, verifying it against the digest the reference pins
    /// (or, for a tag, against its manifest), and print its pinned reference.
    Pull {
        /// oci://REGISTRY/REPOSITORY@sha256:<hex> (`oci://` optional), or `:TAG`.
        #[arg(value_name = "REFERENCE", value_parser = plugin::parse_reference)]
        reference: shoal_config::OciPlugin,
        /// The file to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Speak plain HTTP to a registry that is not on loopback (loopback always is).
        #[arg(long)]
        plain_http: bool,
    },
}

/// Flags of `shoal dev`; each overrides the same setting from `--config`.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Address to listen on: IP:PORT, localhost:PORT, or :PORT for every interface
    /// [default: 127.0.0.1:5000, or `listen` from --config].
    #[arg(long, value_parser = shoal_config::parse_listen)]
    pub listen: Option<SocketAddr>,
    /// Directory for blobs, manifests and uploads [default: ./shoal-data, or `data_dir`].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A dev-role YAML file (same keys as an origin's `backends:` and `auth:`, plus `listen`,
    /// `data_dir` and `access:` for credentials).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Flags of `shoal gc`.
#[derive(clap::Args, Debug)]
pub struct GcArgs {
    /// The `shoal dev` data directory [default: ./shoal-data, or `data_dir` from --config].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The dev-role YAML that `shoal dev` runs with (its backends and `gc:` settings).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Keep content younger than this, e.g. 10m [default: `gc.grace`, 1h].
    #[arg(long)]
    pub grace: Option<shoal_config::Duration>,
}

/// Flags of `shoal devcluster`.
#[derive(clap::Args, Debug)]
pub struct DevClusterArgs {
    /// How many agents to start.
    #[arg(long, default_value_t = 2)]
    pub agents: u32,
    /// How many origins to start (at most 9); with two or more, each blob has two replicas.
    #[arg(long, default_value_t = 2)]
    pub origins: u32,
    /// Directory for every process's config, data and log.
    #[arg(long, default_value = "./shoal-devcluster")]
    pub data_dir: PathBuf,
    /// First port of the layout: proxy on it, origins from +2, tracker +3, build-index +4,
    /// agents from +1000.
    #[arg(long, default_value_t = 15000)]
    pub base_port: u16,
}

/// Flags of the P2P roles (`shoal agent`, `origin`, `tracker`, `build-index`, `proxy`).
#[derive(clap::Args, Debug)]
pub struct RoleArgs {
    /// The role's YAML file (it may `extends:` a base file).
    #[arg(long)]
    pub config: PathBuf,
    /// Directory for the role's files (piece store, queues, the proxy's staging store) and the
    /// plugin cache; `store.root` moves the piece store (and an origin's queue) elsewhere.
    #[arg(long, default_value = "./shoal-data")]
    pub data_dir: PathBuf,
}

/// Flags of `shoal preload`.
#[derive(clap::Args, Debug)]
pub struct PreloadArgs {
    /// The image: REPOSITORY:TAG or REPOSITORY@sha256:<hex> (no tag: `latest`). A leading
    /// registry host (ghcr.io/org/app:1.0) is mapped to the agent's repository as containerd's
    /// `?ns=` is (`registry.mirrors`).
    #[arg(value_name = "IMAGE")]
    pub image: shoal_registry::ImageRef,
    /// The agents' registry addresses, HOST:PORT, comma-separated or the flag repeated.
    #[arg(long, required = true, value_delimiter = ',', value_name = "ADDR,...")]
    pub agents: Vec<shoal_config::HostPort>,
    /// Only the images of this platform in an image index, os/arch[/variant] (linux/amd64,
    /// linux/arm64/v8) [default: every image of the index].
    #[arg(long)]
    pub platform: Option<shoal_registry::manifest::Platform>,
    /// Reach the agents over HTTPS, trusting only this CA (PEM) [default: plain HTTP].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// A client certificate (PEM) for agents that require one; with --key and --ca.
    #[arg(long, value_name = "FILE", requires_all = ["key", "ca"])]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate FILE as the config of ROLE; print the effective config, or the errors.
    Check {
        /// agent, origin, tracker, build-index, proxy or dev.
        role: String,
        /// The YAML file (it may `extends:` a base file).
        file: PathBuf,
    },
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Dev(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::dev::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Gc(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::gc::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Devcluster(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::devcluster::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Agent(args) => run_role(args, |c: shoal_config::AgentConfig, d| {
            crate::roles::agent(c, d, crate::serve::signal())
        }),
        Command::Origin(args) => run_role(args, |c: shoal_config::OriginConfig, d| {
            crate::roles::origin(c, d, crate::serve::signal())
        }),
        Command::Tracker(args) => run_role(args, |c: shoal_config::TrackerConfig, d| {
            crate::roles::tracker(c, d, crate::serve::signal())
        }),
        Command::BuildIndex(args) => run_role(args, |c: shoal_config::BuildIndexConfig, d| {
            crate::roles::build_index(c, d, crate::serve::signal())
        }),
        Command::Proxy(args) => run_role(args, |c: shoal_config::ProxyConfig, d| {
            crate::roles::proxy(c, d, crate::serve::signal())
        }),
        Command::Preload(args) => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(crate::preload::run(args))
        }
        Command::Plugin { command } => match command {
            PluginCommand::Check { file } => plugin::run_check(&file),
            PluginCommand::Push {
                file,
                target,
                plain_http,
            } => plugin::run_push(&file, &target, plain_http),
            PluginCommand::Pull {
                reference,
                output,
                plain_http,
            } => plugin::run_pull(&reference, &output, plain_http),
            PluginCommand::Call(args) => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(plugin::run_call(args))
            }
        },
        Command::Config {
            command: ConfigCommand::Check { role, file },
        } => {
            let role: shoal_config::Role = match role.parse() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            use shoal_config::{
                AgentConfig, BuildIndexConfig, DevConfig, OriginConfig, ProxyConfig, Role,
                TrackerConfig,
            };
            let checked = match role {
                Role::Agent => check_as::<AgentConfig>(&file),
                Role::Origin => check_as::<OriginConfig>(&file),
                Role::Tracker => check_as::<TrackerConfig>(&file),
                Role::BuildIndex => check_as::<BuildIndexConfig>(&file),
                Role::Proxy => check_as::<ProxyConfig>(&file),
                Role::Dev => check_as::<DevConfig>(&file),
            };
            match checked {
                Ok(effective) => {
                    print!("{effective}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// `shoal config check` of `file` as a `C`: the file loads, and passes every check its start
/// makes before it creates anything ([`crate::preflight`]); the effective config, or why not.
fn check_as<C: shoal_config::RoleConfig + Preflight>(file: &Path) -> Result<String, String> {
    let config: C =
        shoal_config::load(file, &shoal_config::process_env).map_err(|e| e.to_string())?;
    crate::preflight::run(&config, file).map_err(|p| crate::preflight::message(&p))?;
    shoal_config::render(&config).map_err(|e| e.to_string())
}

/// Loads a role's config (errors name the key), makes the checks `config check` makes, and
/// runs the role on a fresh runtime; nothing is created before the checks pass.
fn run_role<C, F, Fut>(args: RoleArgs, run: F) -> anyhow::Result<ExitCode>
where
    C: shoal_config::RoleConfig + HasLog + Preflight,
    F: FnOnce(C, PathBuf) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let config: C = match shoal_config::load(&args.config, &shoal_config::process_env) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let checked = crate::preflight::run_at_start(&config, &args.config, &args.data_dir)
        .and_then(|()| crate::preflight::data_dir(&args.data_dir));
    if let Err(problems) = checked {
        eprintln!("{}", crate::preflight::message(&problems));
        return Ok(ExitCode::from(2));
    }
    crate::logging::init(config.log());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(config, args.data_dir))?;
    Ok(ExitCode::SUCCESS)
}

/// The roles' `log:` block.
trait HasLog {
    fn log(&self) -> &shoal_config::LogConfig;
}

macro_rules! has_log {
    ($($t:ty),*) => {$(
        impl HasLog for $t {
            fn log(&self) -> &shoal_config::LogConfig {
                &self.log
            }
        }
    )*};
}

has_log!(
    shoal_config::AgentConfig,
    shoal_config::OriginConfig,
    shoal_config::TrackerConfig,
    shoal_config::BuildIndexConfig,
    shoal_config::ProxyConfig
);
