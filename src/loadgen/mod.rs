//! Load generator for the performance work (issue 8): generated meshes,
//! simulated Envoys over real gRPC, and the floor server to compare with.
//!
//! * `scenario` writes S services × E workloads (× R VirtualServices) as
//!   Istio YAML, and `change` applies one change to it (`scenario.rs`);
//! * `run` starts N simulated Envoys against an ADS server, each on its own
//!   connection, measures initial sync and convergence on changes it applies
//!   itself, and reports (`run.rs`, `proxy.rs`, `wire.rs`, `report.rs`);
//! * `floor` serves pre-built responses of given sizes on the same gRPC
//!   stack, the baseline pilotfish's fan-out is compared with (`floor.rs`).
//!
//! `scripts/bench.sh` drives all of it against a release build of pilotfish.

pub mod floor;
pub mod proxy;
pub mod report;
pub mod run;
pub mod scenario;
pub mod wire;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Subcommand;

pub use self::floor::FloorArgs;
pub use self::run::RunArgs;
pub use self::scenario::{ChangeKind, ScenarioParams};

/// Arguments of `pilotfish loadgen`.
#[derive(clap::Args, Debug)]
pub struct LoadgenArgs {
    #[command(subcommand)]
    pub command: LoadgenCommand,
}

#[derive(Subcommand, Debug)]
pub enum LoadgenCommand {
    /// Write a generated mesh (S services × E workloads) as Istio YAML.
    Scenario(ScenarioArgs),
    /// Apply one change to a generated mesh, atomically.
    Change(ChangeArgs),
    /// Run N simulated Envoys against an ADS server and report.
    Run(RunArgs),
    /// Serve pre-built responses of given sizes: the baseline to compare with.
    Floor(FloorArgs),
}

#[derive(clap::Args, Debug)]
pub struct ScenarioArgs {
    /// Directory to write (created if missing; generated files are replaced).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long)]
    pub services: usize,
    /// Workloads (endpoints, simulated proxies) per service.
    #[arg(long)]
    pub endpoints: usize,
    #[arg(long, default_value_t = 1)]
    pub namespaces: usize,
    /// Services with a VirtualService (default: all of them).
    #[arg(long)]
    pub routes: Option<usize>,
}

#[derive(clap::Args, Debug)]
pub struct ChangeArgs {
    /// A directory written by `pilotfish loadgen scenario`.
    #[arg(long)]
    pub dir: PathBuf,
    #[arg(long, value_enum)]
    pub kind: ChangeKind,
    /// Change number, which picks the service changed (default: one more than the last).
    #[arg(long)]
    pub seq: Option<u64>,
}

pub fn run(args: LoadgenArgs) -> Result<()> {
    match args.command {
        LoadgenCommand::Scenario(a) => {
            let params = ScenarioParams {
                services: a.services,
                endpoints: a.endpoints,
                namespaces: a.namespaces,
                routes: a.routes.unwrap_or(a.services),
            };
            let files = scenario::generate(&a.out, params.clone())?;
            println!(
                "wrote {} services, {} workloads, {} VirtualServices in {} namespaces to {}:",
                params.services,
                params.services * params.endpoints,
                params.routes,
                params.namespaces,
                a.out.display()
            );
            for f in files {
                println!("  {}", f.display());
            }
            Ok(())
        }
        LoadgenCommand::Change(a) => {
            let summary = scenario::change(&a.dir, a.kind, a.seq)?;
            println!(
                "change {} ({}): {} [{}]",
                summary.seq,
                summary.kind.name(),
                summary.description,
                summary.files.join(", ")
            );
            Ok(())
        }
        LoadgenCommand::Run(a) => runtime()?.block_on(run::run(a)),
        LoadgenCommand::Floor(a) => runtime()?.block_on(floor::run(a)),
    }
}

/// A multi-thread runtime with one worker per core: proxies are tasks, never threads.
fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")
}

#[cfg(test)]
mod tests;
