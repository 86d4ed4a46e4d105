//! Command line: clap derive, then a validated config goes inward.

use std::process::ExitCode;

use clap::Parser;

use crate::capture::live::LiveArgs;

#[derive(Parser, Debug)]
#[command(
    name = "streamml-sensor",
    version,
    about = "Network anomaly-detection sensor"
)]
pub struct Cli {
    /// Live capture: `streamml-sensor --iface IF [--queues N] ...`.
    #[command(flatten)]
    pub live: LiveArgs,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::capture::live::main(&cli.live)
}
