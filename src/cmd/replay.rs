//! `streamml-sensor replay CAPTURE`: the whole pipeline over a capture file, packet time
//! as the clock; prints a summary.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;

use crate::capture::pcap::PcapFileSource;
use crate::config::{self, Overrides};
use crate::engine::pipeline;
use crate::engine::replay::run_replay;
use crate::evidence::statedir::{self, StateDir};
use crate::output::{check_output, OutputFile};
use crate::stats;

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// pcap or pcapng file to replay.
    pub capture: PathBuf,
    /// Configuration file (default: the embedded config/sensor.toml).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// State directory: alerts.jsonl, evidence/, ring/, models/.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Scorer shards, 1 to 256 (default: from the config, else cores minus one, at least 1).
    #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..=256))]
    pub shards: Option<u64>,
    /// Override every profile's tree seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Also write the flows (nfstream columns, CSV) to this file.
    #[arg(long, value_name = "FILE")]
    pub flows: Option<PathBuf>,
    /// Write the final counters as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub stats_json: Option<PathBuf>,
    /// Evidence ring size in MiB, 1 to 65536 (overrides the config); the ring must fit the
    /// free space of the state directory.
    #[arg(long, value_name = "MIB", value_parser = super::ring_mib)]
    pub ring_mib: Option<u64>,
    /// Serve Prometheus metrics at http://ADDR/metrics (HOST:PORT, or PORT alone for
    /// 127.0.0.1; overrides [metrics] listen).
    #[arg(long, value_name = "ADDR", value_parser = super::metrics_addr)]
    pub metrics_listen: Option<String>,
    /// Export every flow as IPFIX over UDP to this collector (overrides [ipfix] collector).
    #[arg(long, value_name = "HOST:PORT", value_parser = super::ipfix_addr)]
    pub ipfix: Option<String>,
    /// Publish alerts to NATS JetStream at this server (nats://HOST:PORT; overrides
    /// [nats] server), spooled in the state directory until acknowledged.
    #[arg(long, value_name = "URL", value_parser = super::nats_addr)]
    pub nats: Option<String>,
}

/// `streamml-sensor replay`.
pub fn run(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let cfg = config::load_with(
        a.config.as_deref(),
        &Overrides {
            seed: a.seed,
            ring_mib: a.ring_mib,
            shards: a.shards.map(|s| s as usize),
            state_dir: a.state_dir.clone(),
            metrics_listen: a.metrics_listen.clone(),
            ipfix: a.ipfix.clone(),
            nats: a.nats.clone(),
            ..Overrides::default()
        },
    )?;
    // SIGINT/SIGTERM end the read as if the capture ended there (see capture::interrupt).
    crate::capture::interrupt::install().context("installing signal handlers")?;
    // Served before the capture is opened: a FIFO or standard input may wait for a writer.
    let metrics = super::start_metrics(cfg.metrics_listen, Vec::new())?;
    let mut source = PcapFileSource::open(&a.capture)?;
    // Outputs checked before the first packet (not after a whole capture).
    if let Some(p) = &a.flows {
        check_output(p, &[a.capture.as_path()]).context("--flows")?;
    }
    if let Some(p) = &a.stats_json {
        check_output(p, &[a.capture.as_path()]).context("--stats-json")?;
    }
    let root = statedir::resolve(cfg.state_dir.as_deref())?;
    let (state, _state_lock) = StateDir::create_locked(&root)?;
    let shards = if cfg.shards > 0 {
        cfg.shards
    } else {
        crate::engine::limits::auto_shards(pipeline::default_shards(1), &cfg.flow_config())
    };
    let t0 = std::time::Instant::now();
    let out = run_replay(
        &mut source,
        cfg,
        state,
        shards,
        a.flows.clone(),
        metrics.as_ref().map(|m| m.0.clone()),
    )?;
    let secs = t0.elapsed().as_secs_f64();
    let mut snap = out.stats;
    stats::merge_into(&mut snap, source.counters.named());
    super::mark_interrupted(&mut snap, out.source_error.as_ref());
    let g = |k: &str| snap.get(k).copied().unwrap_or(0);
    let drops: Vec<(String, u64)> = snap
        .iter()
        .filter(|(k, v)| {
            **v > 0 && (k.starts_with("decoder.") || stats::DROPS.contains(&k.as_str()))
        })
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    eprintln!(
        "replay: {} packets ({} decoded) in {:.2} s ({:.0} packets/s), {} flows, {} windows scored, {} flows scored",
        g("reader.frames"),
        g("reader.decoded"),
        secs,
        g("reader.frames") as f64 / secs.max(1e-9),
        g("flow.created"),
        g("detect.windows_scored"),
        g("detect.flows_scored"),
    );
    eprintln!(
        "replay: {} alerts ({} lines written), {} evidence files ({} packets), state dir {}",
        g("detect.alerts"),
        g("alerts.written"),
        g("evidence.files_written"),
        g("evidence.packets_written"),
        out.state.root().display()
    );
    if drops.is_empty() {
        eprintln!("replay: drops: none");
    } else {
        let s: Vec<String> = drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
        eprintln!("replay: drops and errors: {}", s.join(" "));
    }
    if let Some((hub, _server)) = &metrics {
        hub.publish(snap.clone(), Vec::new());
    }
    super::warn_if_not_conserved(&snap);
    super::warn_time_jumps(&snap);
    if let Some(p) = &a.stats_json {
        let mut f = OutputFile::create(p, &[a.capture.as_path()])?;
        f.w.write_all(&serde_json::to_vec_pretty(&snap)?)
            .with_context(|| format!("writing {}", p.display()))?;
        f.commit()?;
    }
    if let Some(e) = out.source_error {
        return Ok(super::source_error_exit(&e));
    }
    Ok(ExitCode::SUCCESS)
}
