//! Load generator: simulated Envoy proxies and generated mesh scenarios.
//! (Being written; see issue 8.)

use anyhow::{Result, bail};

/// Arguments of `pilotfish loadgen`.
#[derive(clap::Args, Debug)]
pub struct LoadgenArgs {}

pub fn run(_args: LoadgenArgs) -> Result<()> {
    bail!("pilotfish loadgen is not built yet")
}
