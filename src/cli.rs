//! Command line: clap derive at the edge; a validated configuration goes inward. Every
//! error leaves as one line on stderr (`streamml-sensor: <cause chain>`) with exit code 2
//! for bad usage/input and 1 for a run that failed part-way.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::capture::synth::{SynthConfig, SynthSource};

#[derive(Parser, Debug)]
#[command(
    name = "streamml-sensor",
    version,
    about = "Network anomaly-detection sensor: AF_XDP capture, nfstream-compatible flows, Half-Space Trees, PCAP evidence",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
    /// Live capture (no subcommand): `streamml-sensor --iface IF [--queues N] ...`.
    #[command(flatten)]
    pub live: crate::capture::live::LiveArgs,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Replay a capture and write one row per bidirectional flow (nfstream's columns).
    Flows(FlowsArgs),
    /// Run the whole pipeline over a capture (packet time): flows, windows, Half-Space
    /// Trees, alerts.jsonl and zstd PCAP evidence; prints a summary.
    Replay(crate::replay::ReplayArgs),
    /// Detection quality on labelled synthetic captures: window-mode ROC-AUC per seed.
    EvalWindows(crate::eval::EvalArgs),
    /// Generate a deterministic synthetic capture (benign traffic, optional attacks).
    Synth(SynthArgs),
    /// Evidence tools: `recover` dumps the shard rings to a .pcap.zst.
    Evidence(crate::evidence::EvidenceArgs),
    /// What this kernel and NIC offer and what the sensor would use, without capturing;
    /// each problem with its fix. Exit 1 when a problem would stop capture.
    Doctor(crate::capture::doctor::DoctorArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutFormat {
    Csv,
    Jsonl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AccountingArg {
    Link,
    Ip,
    Transport,
    Payload,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KeyArg {
    #[value(name = "5-tuple")]
    FiveTuple,
    #[value(name = "ip-pair")]
    IpPair,
}

/// A duration in seconds that must be finite and > 0.
pub fn positive_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!("'{s}' must be a number of seconds > 0"));
    }
    if v > 1e9 {
        return Err(format!("'{s}' is too large (at most 1e9 s)"));
    }
    Ok(v)
}

fn positive_usize(s: &str) -> Result<usize, String> {
    let v: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a positive integer"))?;
    if v == 0 {
        return Err(format!("'{s}' must be at least 1"));
    }
    Ok(v)
}

#[derive(Args, Debug)]
pub struct FlowsArgs {
    /// pcap or pcapng file to replay.
    pub capture: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: OutFormat,
    /// Idle timeout in seconds (nfstream's idle_timeout).
    #[arg(long, value_name = "S", default_value = "120", value_parser = positive_seconds, allow_negative_numbers = true)]
    pub idle_timeout: f64,
    /// Active timeout in seconds (nfstream's active_timeout).
    #[arg(long, value_name = "S", default_value = "1800", value_parser = positive_seconds, allow_negative_numbers = true)]
    pub active_timeout: f64,
    /// Record direction, size and inter-arrival time of the first N packets (0: off).
    #[arg(long, value_name = "N", default_value = "0")]
    pub splt: u16,
    /// Scorer shards (default: cores minus one reader, at least 1).
    #[arg(long, value_name = "S", value_parser = positive_usize)]
    pub shards: Option<usize>,
    /// What a packet's size counts: link (frame), ip, transport or payload.
    #[arg(long, value_enum, default_value = "link")]
    pub accounting: AccountingArg,
    /// Shard key: 5-tuple (balance) or ip-pair (a host pair's flows stay together).
    #[arg(long, value_enum, default_value = "5-tuple")]
    pub key: KeyArg,
    /// Flow-table capacity per shard; the least recently used flow is evicted beyond it.
    #[arg(long, value_name = "N", default_value = "1048576", value_parser = positive_usize)]
    pub capacity: usize,
    /// Decode GTP-U tunnels (the inner packet is the flow).
    #[arg(long, default_value = "true", action = clap::ArgAction::Set)]
    pub decode_tunnels: bool,
    /// Output file (default: standard output). Written to FILE.tmp, renamed when complete.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the counters (packets, drops by reason, flows) to stderr at the end.
    #[arg(long)]
    pub stats: bool,
    /// Memory for sorting the output (MiB); larger outputs are sorted in runs on disk.
    #[arg(long, value_name = "MIB", default_value = "256", value_parser = positive_usize)]
    pub sort_buffer_mib: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SynthPreset {
    /// Benign traffic only.
    Benign,
    /// The benchmark capture: ~1M packets, ~100k flows.
    Bench,
    /// Benign background with one episode of each attack kind.
    Labelled,
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
    /// Output pcap file.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: PathBuf,
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    let _ = e.print();
                    return ExitCode::SUCCESS;
                }
                _ => {
                    eprintln!("streamml-sensor: {}", one_line_clap(&e));
                    return ExitCode::from(2);
                }
            }
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("streamml-sensor: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// clap's rendered error on one line: without the "error: " prefix, the usage and the
/// help hint; continuation lines (e.g. the missing argument names) joined with spaces.
fn one_line_clap(e: &clap::Error) -> String {
    let s = e.render().to_string();
    let mut parts = Vec::new();
    for l in s.lines() {
        let l = l.trim();
        if l.starts_with("Usage:") || l.starts_with("For more information") {
            break;
        }
        if !l.is_empty() {
            parts.push(l.trim_start_matches("error:").trim());
        }
    }
    if parts.is_empty() {
        "invalid arguments".to_string()
    } else {
        parts.join(" ")
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.cmd {
        Some(Cmd::Flows(a)) => crate::pipeline::flows_command(a),
        Some(Cmd::Synth(a)) => synth_command(a),
        Some(Cmd::Replay(a)) => crate::replay::replay_command(a),
        Some(Cmd::EvalWindows(a)) => crate::eval::eval_command(a),
        Some(Cmd::Evidence(a)) => crate::evidence::recover::run(a),
        Some(Cmd::Doctor(a)) => crate::capture::doctor::run(&a),
        None if cli.live.iface.is_some() => {
            crate::capture::live::run(&cli.live)?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            bail!("no command given (or --iface for live capture); try 'streamml-sensor --help'")
        }
    }
}

fn synth_command(a: SynthArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = match a.preset {
        SynthPreset::Benign => SynthConfig {
            seed: a.seed,
            duration_s: a.minutes * 60.0,
            ..SynthConfig::default()
        },
        SynthPreset::Bench => SynthConfig::bench_capture(a.seed),
        SynthPreset::Labelled => SynthConfig::labelled(a.seed, a.minutes),
    };
    if a.max_packets.is_some() {
        cfg.max_packets = a.max_packets;
    }
    if let Some(lp) = &a.labels {
        let j = serde_json::json!({
            "seed": cfg.seed,
            "start_ns": cfg.start_ns,
            "duration_s": cfg.duration_s,
            "episodes": cfg.episodes,
        });
        std::fs::write(lp, serde_json::to_vec_pretty(&j)?)
            .with_context(|| format!("writing {}", lp.display()))?;
    }
    let tmp = tmp_path(&a.output);
    let f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
    let mut src = SynthSource::new(cfg);
    let n = crate::capture::synth::write_pcap(&mut src, &mut w, a.nanos, |_| {})?;
    w.flush()
        .and_then(|_| w.get_ref().sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    drop(w);
    std::fs::rename(&tmp, &a.output)
        .with_context(|| format!("renaming {} to {}", tmp.display(), a.output.display()))?;
    eprintln!("wrote {n} packets to {}", a.output.display());
    Ok(ExitCode::SUCCESS)
}

/// `FILE` → `FILE.tmp` in the same directory (so the final rename is atomic).
pub fn tmp_path(p: &std::path::Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}
