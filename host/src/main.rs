//! `shoal`: one binary for every role. `main` only parses flags and hands off.

mod cli;
mod dev;
mod devcluster;
mod gc;
mod logging;
mod preflight;
mod preload;
mod roles;
mod serve;
mod uploads;

use clap::Parser;

fn main() -> std::process::ExitCode {
    shoal_metrics::mark_process_start();
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
