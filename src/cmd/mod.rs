//! Command line: clap derive at the edge; a validated configuration goes inward. Every
//! error leaves as one line on stderr (`streamml-sensor: <cause chain>`) with exit code 2
//! for bad usage/input and 1 for a run that failed part-way.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Parser, Subcommand, ValueEnum};

pub mod bench;
pub mod check_config;
pub mod dist;
pub mod doctor;
pub mod eval;
pub mod evidence;
pub mod flows;
pub mod live;
pub mod replay;
pub mod synth;

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
    pub live: live::LiveArgs,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Replay a capture and write one row per bidirectional flow (nfstream's columns).
    Flows(flows::FlowsArgs),
    /// Run the whole pipeline over a capture (packet time): flows, windows, Half-Space
    /// Trees, alerts.jsonl and zstd PCAP evidence; prints a summary.
    Replay(replay::ReplayArgs),
    /// Detection quality on labelled synthetic captures: window-mode ROC-AUC per seed.
    EvalWindows(eval::EvalArgs),
    /// Generate a deterministic synthetic capture (benign traffic, optional attacks).
    Synth(synth::SynthArgs),
    /// Evidence tools: `recover` dumps the shard rings to a .pcap.zst.
    Evidence(evidence::EvidenceArgs),
    /// What this kernel and NIC offer and what the sensor would use, without capturing;
    /// each problem with its fix. Exit 1 when a problem would stop capture.
    Doctor(doctor::DoctorArgs),
    /// Check a configuration file as the sensor would at start (the same errors, exit 2)
    /// and print the effective configuration, defaults filled in [default: the embedded
    /// sensor.toml].
    CheckConfig(check_config::CheckConfigArgs),
    /// Write the man pages and shell completions into a directory (packaging).
    #[command(hide = true)]
    DistAssets(dist::DistArgs),
    /// Size a box: the pipeline's ceiling with the in-process generator (--synthetic), or
    /// live capture on a private veth against streamml-pktgen (--generate), with a
    /// zero-loss rate search, latency histograms per stage, a status line, JSON and a plot.
    Bench(Box<bench::BenchArgs>),
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

impl From<AccountingArg> for crate::flow::table::Accounting {
    fn from(a: AccountingArg) -> Self {
        use crate::flow::table::Accounting;
        match a {
            AccountingArg::Link => Accounting::Link,
            AccountingArg::Ip => Accounting::Ip,
            AccountingArg::Transport => Accounting::Transport,
            AccountingArg::Payload => Accounting::Payload,
        }
    }
}

impl From<KeyArg> for crate::shard::KeyMode {
    fn from(k: KeyArg) -> Self {
        match k {
            KeyArg::FiveTuple => crate::shard::KeyMode::FiveTuple,
            KeyArg::IpPair => crate::shard::KeyMode::IpPair,
        }
    }
}

/// `--metrics-listen`: HOST:PORT, or PORT alone (127.0.0.1).
pub fn metrics_addr(s: &str) -> Result<String, String> {
    crate::config::parse_socket_addr(s, Some("127.0.0.1"))?;
    Ok(s.to_string())
}

/// `--ipfix`: HOST:PORT of a collector.
pub fn ipfix_addr(s: &str) -> Result<String, String> {
    let a = crate::config::parse_socket_addr(s, None)?;
    if a.port() == 0 {
        return Err(format!("\"{s}\": port 0"));
    }
    Ok(s.to_string())
}

/// `--nats`: nats://HOST:PORT or HOST:PORT.
pub fn nats_addr(s: &str) -> Result<String, String> {
    crate::config::parse_socket_addr(s.trim().strip_prefix("nats://").unwrap_or(s.trim()), None)?;
    Ok(s.to_string())
}

/// The metrics endpoint, when configured: the hub the run publishes to and the HTTP
/// thread (bound now: a port in use is a start-up error). Logs where it listens.
pub fn start_metrics(
    addr: Option<std::net::SocketAddr>,
    info: Vec<(String, crate::sink::metrics::Labels)>,
) -> anyhow::Result<
    Option<(
        std::sync::Arc<crate::sink::metrics::MetricsHub>,
        crate::sink::metrics::MetricsServer,
    )>,
> {
    let Some(addr) = addr else { return Ok(None) };
    let hub = crate::sink::metrics::MetricsHub::new(info);
    let server = crate::sink::metrics::MetricsServer::start(addr, hub.clone())?;
    eprintln!(
        "streamml-sensor: metrics at http://{}/metrics",
        server.local_addr()
    );
    Ok(Some((hub, server)))
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

/// Seconds that must be finite, >= 0 and at most 1e9 (0 where the option says what it
/// means).
pub fn non_negative_seconds(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number of seconds"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("'{s}' must be a number of seconds >= 0"));
    }
    if v > crate::config::MAX_SECONDS {
        return Err(format!("'{s}' is too large (at most 1e9 s)"));
    }
    Ok(v)
}

/// An integer in `lo..=hi`; the error says the range.
pub fn bounded_u64(s: &str, lo: u64, hi: u64) -> Result<u64, String> {
    let v: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not an integer between {lo} and {hi}"))?;
    if v < lo || v > hi {
        return Err(format!("'{s}' must be between {lo} and {hi}"));
    }
    Ok(v)
}

/// `--shards`: 1 to [`crate::config::MAX_SHARDS`] for every command.
pub fn shard_count(s: &str) -> Result<usize, String> {
    bounded_u64(s, 1, crate::config::MAX_SHARDS as u64).map(|v| v as usize)
}

/// A flow-table capacity: 1 to [`crate::config::MAX_FLOW_CAPACITY`].
pub fn flow_capacity(s: &str) -> Result<usize, String> {
    bounded_u64(s, 1, crate::config::MAX_FLOW_CAPACITY as u64).map(|v| v as usize)
}

/// `--ring-capacity`: 1 to [`crate::config::MAX_RING_CAPACITY`].
pub fn ring_capacity(s: &str) -> Result<usize, String> {
    bounded_u64(s, 1, crate::config::MAX_RING_CAPACITY as u64).map(|v| v as usize)
}

/// `--ring-mib`: 1 to [`crate::config::MAX_RING_MIB`].
pub fn ring_mib(s: &str) -> Result<u64, String> {
    bounded_u64(s, 1, crate::config::MAX_RING_MIB)
}

/// Most memory for sorting `flows`' output, MiB (`--sort-buffer-mib`): 64 GiB.
pub const MAX_SORT_BUFFER_MIB: usize = 65536;

/// `--sort-buffer-mib`: 1 to [`MAX_SORT_BUFFER_MIB`].
pub fn sort_buffer_mib(s: &str) -> Result<usize, String> {
    bounded_u64(s, 1, MAX_SORT_BUFFER_MIB as u64).map(|v| v as usize)
}

/// Prints a warning line (`streamml-sensor: warning: ...`); never fails.
pub fn warn(msg: &str) {
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr().lock(),
        "streamml-sensor: warning: {}",
        crate::config::one_line_text(msg)
    );
}

/// An error and its causes on one line: `context: error: cause`, leaving out a cause
/// whose text is already there (errors that print their source, e.g. `PATH: os error`,
/// and also hand it on as their cause), control characters escaped.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for c in e.chain() {
        let s = c.to_string();
        let s = s.trim();
        if s.is_empty() || out.contains(s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(s);
    }
    crate::config::one_line_text(&out)
}

pub fn positive_usize(s: &str) -> Result<usize, String> {
    let v: usize = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a positive integer"))?;
    if v == 0 {
        return Err(format!("'{s}' must be at least 1"));
    }
    Ok(v)
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    // A panic (a bug) is one line too, naming the thread and the place; the run then ends
    // with its error (a scorer shard's panic: after the other stages drained, exit 1).
    // Nothing printed here may panic: a stderr that cannot be written (closed, a full
    // disk) must not turn an error into an abort.
    std::panic::set_hook(Box::new(|info| {
        use std::io::Write;
        let thread = std::thread::current();
        let msg = crate::engine::builder::panic_message(info.payload());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let _ = writeln!(
            std::io::stderr().lock(),
            "streamml-sensor: internal error: thread '{}' panicked{at}: {}",
            thread.name().unwrap_or("?"),
            crate::config::one_line_text(&msg)
        );
    }));
    let say = |line: &str| {
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "streamml-sensor: {line}");
    };
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
                    say(&crate::config::one_line_text(&one_line_clap(&e)));
                    return ExitCode::from(2);
                }
            }
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(ce) = e.downcast_ref::<crate::capture::CaptureError>() {
                if matches!(ce, crate::capture::CaptureError::Interrupted { .. }) {
                    // Stopped before the first packet (e.g. a FIFO nobody wrote to).
                    return source_error_exit(ce);
                }
            }
            say(&error_line(&e));
            // A stage that broke part-way is a failed run (1); everything else was refused
            // before anything ran (2).
            if e.downcast_ref::<crate::engine::pipeline::RunFailed>()
                .is_some()
            {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
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
        Some(Cmd::Flows(a)) => flows::run(a),
        Some(Cmd::Synth(a)) => synth::run(a),
        Some(Cmd::Replay(a)) => replay::run(a),
        Some(Cmd::EvalWindows(a)) => eval::run(a),
        Some(Cmd::Evidence(a)) => evidence::run(a),
        Some(Cmd::Doctor(a)) => doctor::run(&a),
        Some(Cmd::CheckConfig(a)) => check_config::run(&a),
        Some(Cmd::DistAssets(a)) => dist::run(&a),
        Some(Cmd::Bench(a)) => bench::run(*a),
        None if cli.live.iface.is_some() => {
            live::run(&cli.live)?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            bail!("no command given (or --iface for live capture); try 'streamml-sensor --help'")
        }
    }
}

/// Ends a file command whose source stopped early: one line, and the exit code — 128 +
/// the signal for SIGINT/SIGTERM (the outputs are complete for the packets read before
/// it), 1 for a capture that stopped making sense part-way (likewise complete up to it).
pub fn source_error_exit(e: &crate::capture::CaptureError) -> ExitCode {
    {
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "streamml-sensor: {e}");
    }
    match e {
        crate::capture::CaptureError::Interrupted { signal, .. } => {
            ExitCode::from((128 + signal).clamp(0, 255) as u8)
        }
        _ => ExitCode::from(1),
    }
}

/// Puts `run.interrupted_by_signal` (the signal number) into the counters of a run that a
/// signal stopped, so `--stats`/`--stats-json` say the outputs are partial.
pub fn mark_interrupted(
    snap: &mut crate::stats::Snapshot,
    e: Option<&crate::capture::CaptureError>,
) {
    if let Some(crate::capture::CaptureError::Interrupted { signal, .. }) = e {
        snap.insert("run.interrupted_by_signal".into(), *signal as u64);
    }
}

/// Warning lines at the end of a file run whose timestamps jumped (`engine::reader::
/// TIME_JUMP_NS`): the flows and windows are on the capture's real clock, and the user
/// learns which packets were not metered at their own time.
pub fn warn_time_jumps(snap: &crate::stats::Snapshot) {
    let g = |k: &str| snap.get(k).copied().unwrap_or(0);
    let hours = crate::engine::pipeline::TIME_JUMP_NS / 3_600_000_000_000;
    let (jump, first, behind) = (
        g("capture.time_jump"),
        g("capture.time_jump_first_packet"),
        g("capture.time_behind"),
    );
    if jump > 0 {
        warn(&format!(
            "{jump} packet(s) dated more than {hours} h after the packets around them (the first is packet {first}) were metered at their neighbours' time (capture.time_jump)"
        ));
    }
    if behind > 0 {
        warn(&format!(
            "{behind} packet(s) dated more than {hours} h before the newest packet were metered at its time, as every late packet is (capture.time_behind)"
        ));
    }
}

/// Says so when a run's counters do not add up (`stats::conservation`): something went
/// uncounted, which is a bug to report; the outputs are still what was computed.
pub fn warn_if_not_conserved(snap: &crate::stats::Snapshot) {
    let bad = crate::stats::conservation(snap);
    if !bad.is_empty() {
        warn(&format!(
            "counters do not add up (please report): {}",
            bad.join("; ")
        ));
    }
}
