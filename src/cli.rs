//! Command line: clap derive, then a validated config goes inward.

use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "streamml-sensor", version, about = "Network anomaly-detection sensor")]
pub struct Cli {}

pub fn main() -> ExitCode {
    let _cli = Cli::parse();
    ExitCode::SUCCESS
}
