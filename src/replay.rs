//! `streamml-sensor replay`: the whole pipeline over a capture file, with packet
//! timestamps as the clock — flows, windows, Half-Space Trees, alerts and evidence —
//! deterministic for a given capture, configuration and seed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::capture::pcap::PcapFileSource;
use crate::capture::{Frame, LinkType, PacketSource};
use crate::config::{self, Config, RawConfig};
use crate::evidence::retention::RetentionLimits;
use crate::evidence::ring::{EvidenceRing, RingConfig};
use crate::evidence::statedir::{self, StateDir};
use crate::evidence::writer::{EvidenceWriter, RecordFilter, WriterConfig};
use crate::filter::{ProfileFilters, SharedFilter};
use crate::pipeline::{self, PipelineConfig};
use crate::scorer::{FlowOutputSetup, Scorer, ScorerSetup, WindowFilterFactory};
use crate::shard::{self, FullPolicy, KeyMode};
use crate::stats::{self, Snapshot};
use crate::wire::{self, DecodeOptions, PacketMeta};

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
    /// Scorer shards (default: from the config, else cores minus one, at least 1).
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
    /// Evidence ring size in MiB (overrides the config).
    #[arg(long, value_name = "MIB")]
    pub ring_mib: Option<u64>,
}

/// Loads, overrides and validates the configuration (errors name file and key).
pub fn load_config(
    path: Option<&std::path::Path>,
    seed: Option<u64>,
    ring_mib: Option<u64>,
) -> anyhow::Result<Config> {
    let (mut raw, name) = match path {
        Some(p) => (RawConfig::load(p)?, p.display().to_string()),
        None => (
            RawConfig::default_config(),
            "default sensor.toml".to_string(),
        ),
    };
    if let Some(s) = seed {
        for (i, p) in raw.profiles.iter_mut().enumerate() {
            p.hst.seed = s.wrapping_add(i as u64);
        }
    }
    if let Some(m) = ring_mib {
        raw.evidence.ring_mib = m;
    }
    let cfg = raw.validate(&name)?;
    crate::filter::validate(&cfg).map_err(anyhow::Error::msg)?;
    Ok(cfg)
}

/// The evidence filter of a window alert: packets of `shard` (under the configured key)
/// that match the profile's packet filter. Shared with live capture.
pub fn window_filter_factory(
    expr: &str,
    shards: usize,
    key: KeyMode,
    decode: DecodeOptions,
) -> WindowFilterFactory {
    let expr = expr.trim().to_string();
    let bpf: Option<Arc<SharedFilter>> = if expr.is_empty() {
        None
    } else {
        SharedFilter::new(&expr, LinkType::Ethernet)
            .ok()
            .map(Arc::new)
    };
    Arc::new(move |shard: usize| -> RecordFilter {
        let bpf = bpf.clone();
        Arc::new(move |v: &crate::evidence::ring::RecordView<'_>| {
            let link = LinkType::from_linktype(u32::from(v.link())).unwrap_or(LinkType::Ethernet);
            let Ok(m) = wire::decode(v.data, v.orig_len(), link, &decode) else {
                return false;
            };
            if shards > 1 && shard::shard_of(shard::symmetric_hash(&m, key), shards) != shard {
                return false;
            }
            match &bpf {
                Some(f) if link == LinkType::Ethernet => f.matches(v.data),
                _ => true,
            }
        })
    })
}

/// Capacity of each reader→shard ring in replay.
///
/// The reader appends every frame to the evidence ring *before* a scorer sees it, and in
/// replay it waits for room instead of dropping, so it runs up to `shards × capacity`
/// packets ahead of the scorers. Every record of that lead is ring space the scorers'
/// alerts can no longer use: with the configured 65 536 slots and a 64 MiB ring the lead
/// was ~45 % of the ring, and flow alerts (raised when a flow expires, up to
/// `idle_timeout` after its last packet) found their packets already overwritten. The
/// lead is therefore held to 1/16 of the records the ring holds even when every record is
/// snaplen long.
pub fn replay_ring_capacity(configured: usize, ring_records: u64, shards: usize) -> usize {
    let lead = ring_records / 16 / shards.max(1) as u64;
    configured
        .min(1 << 16)
        .min(lead.clamp(64, 1 << 16) as usize)
}

/// The window-scope evidence filter of each profile (None for profiles without window
/// mode), for [`ScorerSetup::window_filters`]. Shared with live capture.
pub fn window_filters(
    cfg: &Config,
    shards: usize,
    decode: DecodeOptions,
) -> Vec<Option<WindowFilterFactory>> {
    cfg.profiles
        .iter()
        .map(|p| {
            p.mode
                .window()
                .then(|| window_filter_factory(&p.filter, shards, cfg.key, decode))
        })
        .collect()
}

/// The evidence writer's settings from the configuration (queue, retention). Shared with
/// live capture.
pub fn writer_config(cfg: &Config, state: &StateDir) -> WriterConfig {
    let mut wcfg = WriterConfig::new(state.clone());
    wcfg.queue = cfg.evidence_queue;
    wcfg.retention = RetentionLimits {
        max_bytes: cfg.evidence_max_bytes,
        max_files: cfg.evidence_max_files,
    };
    wcfg
}

/// Result of a replay run, for the command and for tests/benchmarks.
pub struct ReplayOutcome {
    pub stats: Snapshot,
    pub source_error: Option<crate::capture::CaptureError>,
    pub state: StateDir,
    pub flows_written: u64,
}

/// Runs the full pipeline over `source`.
pub fn run_replay(
    source: &mut dyn PacketSource,
    cfg: Config,
    state: StateDir,
    shards: usize,
    flows_out: Option<PathBuf>,
) -> anyhow::Result<(ReplayOutcome, Vec<Scorer>)> {
    let cfg = Arc::new(cfg);
    let decode = DecodeOptions {
        decode_tunnels: cfg.decode_tunnels,
    };
    let mut ring = EvidenceRing::create(
        &state.ring_path(0),
        &RingConfig {
            size_bytes: cfg.ring_bytes,
            snaplen: cfg.ring_snaplen,
            shard: 0,
        },
    )
    .with_context(|| {
        format!(
            "creating the evidence ring in {}",
            state.ring_dir().display()
        )
    })?;
    let mut wcfg = writer_config(&cfg, &state);
    wcfg.ordered = true;
    // One reader, one ring: every shard's evidence comes from it.
    let (sender, writer) = EvidenceWriter::spawn_shared(wcfg, vec![ring.reader()], shards)
        .context("starting the evidence writer")?;
    let window_filters = window_filters(&cfg, shards, decode);
    let spill_dir = flows_out
        .as_ref()
        .and_then(|p| p.parent().map(|d| d.to_path_buf()))
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let setup = ScorerSetup {
        cfg: cfg.clone(),
        shards,
        key_mode: cfg.key,
        sender: Some(sender),
        blocking: true,
        window_filters,
        flow_output: flows_out.as_ref().map(|_| FlowOutputSetup {
            jsonl: false,
            spill_dir,
        }),
        keep_windows: false,
    };
    let pcfg = PipelineConfig {
        shards,
        ring_capacity: replay_ring_capacity(cfg.ring_capacity, ring.capacity_records(), shards),
        key_mode: cfg.key,
        policy: FullPolicy::Wait,
        decode,
    };
    let mut filters = ProfileFilters::new(&cfg);
    let mut hook = |f: &Frame<'_>, m: Option<&PacketMeta>| -> u16 {
        let h = m.map_or(0, |m| shard::symmetric_hash(m, KeyMode::FiveTuple));
        ring.append(f.ts_ns, f.orig_len, f.link, h, f.data);
        filters.mask(f.data, f.link)
    };
    let workers = pipeline::build_workers(shards, |s| Scorer::new(s, setup.clone()))
        .map_err(anyhow::Error::msg)?;
    let res = pipeline::run_with_hook(source, &pcfg, &mut hook, workers);
    drop(setup); // the last sender outside the scorers
    let mut snap = Snapshot::new();
    res.reader.snapshot_into(&mut snap);
    stats::merge_into(&mut snap, res.router.named());
    let mut scorers = res.workers;
    let mut sorters = Vec::new();
    for w in &mut scorers {
        stats::merge_into(&mut snap, w.table().counters().named());
        w.counters().snapshot_into(&mut snap);
        if let Some(e) = w.io_error() {
            return Err(anyhow::Error::new(e).context("buffering flow output"));
        }
        if let Some(s) = w.take_flow_sorter() {
            sorters.push(s);
        }
    }
    // The scorers hold the last alert senders: drop them so the writer can finish.
    let summaries: Vec<_> = scorers.iter().map(|w| w.detector_summary()).collect();
    let kept: Vec<Scorer> = Vec::new();
    drop(scorers);
    let wsnap = writer.join();
    for (k, v) in wsnap {
        *snap.entry(k).or_insert(0) += v;
    }
    let _ = summaries;
    let mut flows_written = 0;
    if let Some(path) = &flows_out {
        let mut f = pipeline::AtomicFile::create(path)?;
        use std::io::Write;
        let header = crate::flow::FlowRecord::csv_header(cfg.splt);
        f.w.write_all(header.as_bytes())?;
        flows_written = crate::output::merge(sorters, |id, line| {
            write!(f.w, "{id}")?;
            f.w.write_all(&line[1..])
        })?;
        f.commit()?;
    }
    snap.insert("replay.flows_written".into(), flows_written);
    Ok((
        ReplayOutcome {
            stats: snap,
            source_error: res.source_error,
            state,
            flows_written,
        },
        kept,
    ))
}

/// `streamml-sensor replay`.
pub fn replay_command(a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let cfg = load_config(a.config.as_deref(), a.seed, a.ring_mib)?;
    let mut source = PcapFileSource::open(&a.capture)?;
    let root = statedir::resolve(a.state_dir.as_deref())?;
    let (state, _state_lock) = StateDir::create_locked(&root)?;
    let shards = a
        .shards
        .map(|s| s as usize)
        .or((cfg.shards > 0).then_some(cfg.shards))
        .unwrap_or_else(|| pipeline::default_shards(1));
    let t0 = std::time::Instant::now();
    let (out, _) = run_replay(&mut source, cfg, state, shards, a.flows.clone())?;
    let secs = t0.elapsed().as_secs_f64();
    let mut snap = out.stats;
    stats::merge_into(&mut snap, source.counters.named());
    let g = |k: &str| snap.get(k).copied().unwrap_or(0);
    let drops: Vec<(String, u64)> = snap
        .iter()
        .filter(|(k, v)| {
            **v > 0
                && (k.starts_with("decoder.")
                    || k.ends_with("ring_full")
                    || k.contains("dropped")
                    || k.contains("lost")
                    || k.contains("errors")
                    || k.contains("evicted"))
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
        "replay: {} alerts, {} evidence files ({} packets), state dir {}",
        g("detect.alerts"),
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
    if let Some(p) = &a.stats_json {
        let j = serde_json::to_vec_pretty(&snap)?;
        std::fs::write(p, j).with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(e) = out.source_error {
        eprintln!("streamml-sensor: {e}");
        return Ok(ExitCode::from(1));
    }
    let _ = config::MAX_PROFILES;
    Ok(ExitCode::SUCCESS)
}
