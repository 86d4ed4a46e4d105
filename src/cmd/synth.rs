//! `streamml-sensor synth`: a deterministic synthetic capture (benign traffic, optional
//! attack episodes), for tests, benchmarks and the quick start.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

use super::positive_seconds;
use crate::capture::synth::{SynthConfig, SynthSource};
use crate::output::{check_output, OutputFile};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SynthPreset {
    /// Benign traffic only.
    Benign,
    /// The benchmark capture: ~1M packets, ~100k flows.
    Bench,
    /// Benign background with one episode of each attack kind.
    Labelled,
    /// ~55 minutes at ~1 500 pps: a SYN flood followed by 12 quiet minutes, then a
    /// low-rate brute force, an infected host's slow outbound scan and C2 beaconing
    /// (`--minutes` is ignored).
    Deployment,
    /// The deployment preset's benign background alone (~1 500 pps), `--minutes` long.
    Background,
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    #[arg(long, value_enum, default_value = "benign")]
    pub preset: SynthPreset,
    #[arg(long, default_value = "1")]
    pub seed: u64,
    /// Length of the capture in minutes (benign and labelled presets).
    #[arg(long, default_value = "10", value_parser = positive_seconds)]
    pub minutes: f64,
    /// Stop after this many packets.
    #[arg(long)]
    pub max_packets: Option<u64>,
    /// Write nanosecond timestamps.
    #[arg(long)]
    pub nanos: bool,
    /// Where to write the episodes (attack kind, start, duration, addresses) as JSON.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Output pcap file (`-`: standard output, e.g. into `replay -`).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
}

pub fn run(a: SynthArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = match a.preset {
        SynthPreset::Benign => SynthConfig {
            seed: a.seed,
            duration_s: a.minutes * 60.0,
            ..SynthConfig::default()
        },
        SynthPreset::Bench => SynthConfig::bench_capture(a.seed),
        SynthPreset::Labelled => SynthConfig::labelled(a.seed, a.minutes),
        SynthPreset::Deployment => SynthConfig::deployment(a.seed),
        SynthPreset::Background => SynthConfig {
            episodes: Vec::new(),
            duration_s: a.minutes * 60.0,
            ..SynthConfig::deployment(a.seed)
        },
    };
    if a.max_packets.is_some() {
        cfg.max_packets = a.max_packets;
    }
    let stdout = a.output.as_os_str() == "-";
    // Both outputs checked before anything is generated.
    if !stdout {
        check_output(&a.output, &[])?;
    }
    if let Some(lp) = &a.labels {
        check_output(lp, &[])?;
    }
    if let Some(lp) = &a.labels {
        let j = serde_json::json!({
            "seed": cfg.seed,
            "start_ns": cfg.start_ns,
            "duration_s": cfg.duration_s,
            "episodes": cfg.episodes,
        });
        let mut f = OutputFile::create(lp, &[])?;
        f.w.write_all(&serde_json::to_vec_pretty(&j)?)
            .with_context(|| format!("writing {}", lp.display()))?;
        f.commit()?;
    }
    let mut src = SynthSource::new(cfg);
    if stdout {
        let w = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
        let n = crate::capture::synth::write_pcap(&mut src, w, a.nanos, |_| {})
            .context("writing to standard output")?;
        eprintln!("wrote {n} packets to standard output");
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = OutputFile::create(&a.output, &[])?;
    let n = crate::capture::synth::write_pcap(&mut src, &mut out.w, a.nanos, |_| {})
        .with_context(|| format!("writing {}", a.output.display()))?;
    out.commit()?;
    eprintln!("wrote {n} packets to {}", a.output.display());
    Ok(ExitCode::SUCCESS)
}
