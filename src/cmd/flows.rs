//! `streamml-sensor flows CAPTURE`: one row per bidirectional flow, nfstream's columns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use super::{positive_seconds, AccountingArg, KeyArg, OutFormat};
use crate::capture::pcap::PcapFileSource;
use crate::config::{self, Overrides};
use crate::engine::pipeline::{default_shards, run_flows, FlowsJob};
use crate::output::OutputFile;
use crate::stats;
use crate::wire::DecodeOptions;

#[derive(Args, Debug)]
pub struct FlowsArgs {
    /// pcap or pcapng file to replay.
    pub capture: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: OutFormat,
    /// Configuration file: its [sensor] and [flow] settings apply (shards, ring capacity,
    /// key, timeouts, capacity, accounting, splt, decode_tunnels); the options below
    /// override it [default: the embedded sensor.toml].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Idle timeout in seconds (nfstream's idle_timeout) [default: flow.idle_timeout_s, 120].
    #[arg(long, value_name = "S", value_parser = positive_seconds, allow_negative_numbers = true)]
    pub idle_timeout: Option<f64>,
    /// Active timeout in seconds (nfstream's active_timeout) [default: flow.active_timeout_s,
    /// 1800].
    #[arg(long, value_name = "S", value_parser = positive_seconds, allow_negative_numbers = true)]
    pub active_timeout: Option<f64>,
    /// Record direction, size and inter-arrival time of the first N packets (0: off)
    /// [default: flow.splt, 0].
    #[arg(long, value_name = "N")]
    pub splt: Option<u16>,
    /// Scorer shards, 1 to 256 (more than the cores is allowed: the output is the same)
    /// [default: sensor.shards, else cores minus one reader, at least 1].
    #[arg(long, value_name = "S", value_parser = super::shard_count)]
    pub shards: Option<usize>,
    /// What a packet's size counts: link (frame), ip, transport or payload
    /// [default: flow.accounting, link].
    #[arg(long, value_enum)]
    pub accounting: Option<AccountingArg>,
    /// Shard key: 5-tuple (balance) or ip-pair (a host pair's flows stay together)
    /// [default: sensor.key, 5-tuple].
    #[arg(long, value_enum)]
    pub key: Option<KeyArg>,
    /// Flow-table capacity per shard, 1 to 2^30; the least recently used flow is evicted
    /// beyond it; the tables at full capacity must fit the memory available
    /// [default: flow.capacity, 1048576].
    #[arg(long, value_name = "N", value_parser = super::flow_capacity)]
    pub capacity: Option<usize>,
    /// Decode GTP-U tunnels (the inner packet is the flow) [default: flow.decode_tunnels,
    /// true].
    #[arg(long, action = clap::ArgAction::Set)]
    pub decode_tunnels: Option<bool>,
    /// Output file (default: standard output). Written to FILE.tmp, renamed when complete.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the counters (packets, drops by reason, flows) to stderr at the end.
    #[arg(long)]
    pub stats: bool,
    /// Memory for sorting the output (MiB, 1 to 65536); larger outputs are sorted in runs
    /// on disk.
    #[arg(long, value_name = "MIB", default_value = "256", value_parser = super::sort_buffer_mib)]
    pub sort_buffer_mib: usize,
}

/// `streamml-sensor flows`.
pub fn run(a: FlowsArgs) -> anyhow::Result<ExitCode> {
    let cfg = config::load_with(
        a.config.as_deref(),
        &Overrides {
            idle_timeout_s: a.idle_timeout,
            active_timeout_s: a.active_timeout,
            splt: a.splt,
            shards: a.shards,
            accounting: a.accounting.map(Into::into),
            key: a.key.map(Into::into),
            flow_capacity: a.capacity,
            decode_tunnels: a.decode_tunnels,
            ..Overrides::default()
        },
    )?;
    let flow = cfg.flow_config();
    flow.validate().map_err(anyhow::Error::msg)?;
    // SIGINT/SIGTERM end the read as if the capture ended there (see capture::interrupt).
    crate::capture::interrupt::install().context("installing signal handlers")?;
    let mut source = PcapFileSource::open(&a.capture)?;
    let shards = if cfg.shards > 0 {
        cfg.shards
    } else {
        crate::engine::limits::auto_shards(default_shards(1), &flow)
    };
    // Output is opened before the run so that an unwritable path fails fast.
    let spill_dir = match &a.output {
        Some(p) => p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(".")),
        None => std::env::temp_dir(),
    };
    let mut out_file = match &a.output {
        Some(p) => Some(OutputFile::create(p, &[a.capture.as_path()])?),
        None => None,
    };
    let job = FlowsJob {
        flow,
        shards,
        key_mode: cfg.key,
        // A file reader waits for room instead of dropping: a longer queue would only
        // hold more memory (16384 measured as fast as 65536).
        ring_capacity: cfg.ring_capacity.min(16384),
        decode: DecodeOptions {
            decode_tunnels: cfg.decode_tunnels,
        },
        jsonl: a.format == OutFormat::Jsonl,
        sort_buffer_bytes: a.sort_buffer_mib << 20,
        spill_dir,
    };
    let outcome = {
        let stdout = std::io::stdout();
        let mut lock;
        let w: &mut dyn Write = match out_file.as_mut() {
            Some(f) => &mut f.w,
            None => {
                lock = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
                &mut lock as &mut dyn Write
            }
        };
        let out_name = a.output.as_ref().map_or_else(
            || "standard output".to_string(),
            |p| p.display().to_string(),
        );
        // A write error names the output (a stage that failed says which itself).
        run_flows(&mut source, &job, w).map_err(|e| {
            if e.downcast_ref::<std::io::Error>().is_some() {
                e.context(out_name)
            } else {
                e
            }
        })?
    };
    if let Some(f) = out_file {
        f.commit()?;
    }
    let mut snap = outcome.stats;
    stats::merge_into(&mut snap, source.counters.named());
    super::mark_interrupted(&mut snap, outcome.source_error.as_ref());
    super::warn_if_not_conserved(&snap);
    super::warn_time_jumps(&snap);
    if a.stats {
        for (k, v) in &snap {
            eprintln!("{k} {v}");
        }
    }
    if let Some(e) = outcome.source_error {
        // The flows of every packet before the fault (or the signal) were written.
        return Ok(super::source_error_exit(&e));
    }
    Ok(ExitCode::SUCCESS)
}
