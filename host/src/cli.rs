//! Command-line surface of `shoal`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shoal_host::plugin;

/// shoal: a peer-to-peer container registry mirror with sandboxed WebAssembly storage backends.
#[derive(Parser, Debug)]
#[command(name = "shoal", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every role in one process on embedded defaults: a full OCI registry on one port.
    Dev(DevArgs),
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
}

/// Flags of `shoal dev`; each overrides the same setting from `--config`.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Address to listen on [default: 127.0.0.1:5000, or `listen` from --config].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Directory for blobs, manifests and uploads [default: ./shoal-data, or `data_dir`].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A dev-role YAML file (same keys as an origin's `backends:` and `auth:`, plus `listen`
    /// and `data_dir`).
    #[arg(long)]
    pub config: Option<PathBuf>,
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
        Command::Plugin {
            command: PluginCommand::Check { file },
        } => plugin::run_check(&file),
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
            match shoal_config::check(role, &file, &shoal_config::process_env) {
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
