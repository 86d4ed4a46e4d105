//! `check-config [FILE]`: validates a configuration exactly as the sensor does at start
//! (the same reading limits, the same checks, the same one-line errors and exit code 2)
//! and prints the effective configuration as TOML: every key with the value the sensor
//! would use, defaults filled in. FILE defaults to the embedded sensor.toml.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::config::{self, Overrides, RawConfig};

#[derive(Args, Debug)]
pub struct CheckConfigArgs {
    /// The configuration file [default: the embedded sensor.toml].
    pub file: Option<PathBuf>,
}

pub fn run(a: &CheckConfigArgs) -> anyhow::Result<ExitCode> {
    // The sensor's own path: its errors are the sensor's errors.
    let cfg = config::load_with(a.file.as_deref(), &Overrides::default())?;
    if let Some(w) = cfg.no_detection_warning() {
        super::warn(&w);
    }
    let raw = match &a.file {
        // Read again for the raw keys (it validated a moment ago).
        Some(p) => RawConfig::load(p)?,
        None => RawConfig::default_config(),
    };
    let text = toml::to_string(&raw.effective()).context("printing the configuration")?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "# {}: valid; the effective configuration (defaults filled in)",
        cfg.source
    )?;
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
