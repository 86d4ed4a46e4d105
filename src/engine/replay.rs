//! `streamml-sensor replay`: the whole pipeline over a capture file, with packet
//! timestamps as the clock — flows, windows, Half-Space Trees, alerts and evidence —
//! deterministic for a given capture, configuration and seed.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use crate::capture::{LinkType, PacketSource};
use crate::config::Config;
use crate::engine::builder;
use crate::engine::models::{self, ModelCounters, Saver};
use crate::engine::pipeline::{self, PipelineConfig, RunFailed};
use crate::engine::scorer::{FlowOutputSetup, ScorerSetup, WindowFilterFactory};
use crate::evidence::retention::RetentionLimits;
use crate::evidence::ring::{EvidenceRing, RingConfig};
use crate::evidence::statedir::StateDir;
use crate::evidence::writer::{EvidenceWriter, RecordFilter, WriterConfig};
use crate::filter::{ProfileFilters, SharedFilter};
use crate::shard::{self, FullPolicy, KeyMode};
use crate::sink::ipfix::IpfixExporter;
use crate::sink::metrics::MetricsHub;
use crate::sink::nats::NatsPublisher;
use crate::stats::{self, Snapshot};
use crate::wire::{self, DecodeOptions};

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
    /// Packets each shard's flow table took, in shard order.
    pub per_shard_packets: Vec<u64>,
}

/// How often the metrics publisher snapshots the running counters.
pub const METRICS_PUBLISH: std::time::Duration = std::time::Duration::from_millis(200);

/// Runs the full pipeline over `source`. With `metrics`, the running counters are
/// published to it every [`METRICS_PUBLISH`] (the command publishes the final ones).
pub fn run_replay(
    source: &mut dyn PacketSource,
    cfg: Config,
    state: StateDir,
    shards: usize,
    flows_out: Option<PathBuf>,
    metrics: Option<Arc<MetricsHub>>,
) -> anyhow::Result<ReplayOutcome> {
    run_replay_with(
        source,
        cfg,
        state,
        shards,
        flows_out,
        ReplayHooks {
            metrics,
            ..ReplayHooks::default()
        },
    )
}

/// What the bench mode changes in a replay run: what a full ring does, the sampled stage
/// latencies, and the counters to watch while it runs.
pub struct ReplayHooks {
    /// `Wait` (replay: lossless, the reader waits for the scorers) or `Drop` (as live
    /// capture: a full ring drops the packet and counts it, and alerts never wait).
    pub policy: FullPolicy,
    pub latency: Option<Arc<crate::stats::StageLatency>>,
    /// Given the counters once the pipeline runs, before the first frame.
    pub on_start: Option<Box<dyn FnOnce(ReplayWatch)>>,
    /// Where the running counters are published for `/metrics`.
    pub metrics: Option<Arc<MetricsHub>>,
}

impl Default for ReplayHooks {
    fn default() -> Self {
        ReplayHooks {
            policy: FullPolicy::Wait,
            latency: None,
            on_start: None,
            metrics: None,
        }
    }
}

/// Counters of a running replay, readable from another thread.
#[derive(Clone)]
pub struct ReplayWatch {
    pub pipeline: pipeline::Watch,
    pub flows: Vec<Arc<crate::flow::table::FlowCounters>>,
    pub detect: Vec<Arc<crate::engine::scorer::ScorerCounters>>,
}

/// [`run_replay`] with [`ReplayHooks`].
pub fn run_replay_with(
    source: &mut dyn PacketSource,
    cfg: Config,
    state: StateDir,
    shards: usize,
    flows_out: Option<PathBuf>,
    hooks: ReplayHooks,
) -> anyhow::Result<ReplayOutcome> {
    let cfg = Arc::new(cfg);
    let decode = DecodeOptions {
        decode_tunnels: cfg.decode_tunnels,
    };
    // Memory and the ring's disk space, before anything is allocated or created.
    let mut need = super::limits::MemoryNeed::default();
    need.flow_tables(&cfg.flow_config(), shards);
    need.detectors(&cfg, shards);
    need.shard_queues(1, shards, cfg.ring_capacity.min(1 << 16));
    need.mapped = cfg.ring_bytes;
    if let Some(x) = &cfg.ipfix {
        need.add(
            "ipfix.queue",
            (x.queue * std::mem::size_of::<crate::sink::ipfix::ExportedFlow>()) as u64,
        );
    }
    need.threads = shards as u64 + 3;
    super::limits::check_memory(&need, "flow.capacity, the profiles' hst or --shards")?;
    super::limits::check_ring_space(&state.ring_dir(), &[state.ring_path(0)], cfg.ring_bytes)?;
    let ring = EvidenceRing::create(
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
    wcfg.latency = hooks.latency.clone();
    let nats = match &cfg.nats {
        Some(n) => {
            let dir = state.root().join("spool").join("nats");
            let (sink, publisher) = NatsPublisher::start(
                n.clone(),
                &dir,
                Arc::new(|s: &str| eprintln!("streamml-sensor: {s}")),
            )
            .with_context(|| format!("--nats: opening the spool {}", dir.display()))?;
            wcfg.extra_sinks.push(Box::new(sink));
            Some(publisher)
        }
        None => None,
    };
    // One reader, one ring: every shard's evidence comes from it.
    let (sender, writer) = EvidenceWriter::spawn_shared(wcfg, vec![ring.reader()], shards)
        .context("starting the evidence writer")?;
    let (flow_export, ipfix) = match &cfg.ipfix {
        Some(icfg) => {
            let (tx, ex) = IpfixExporter::spawn(
                icfg.clone(),
                Arc::new(|s: &str| eprintln!("streamml-sensor: {s}")),
            )
            .with_context(|| format!("--ipfix {}", icfg.collector))?;
            // Replay is lossless: a scorer waits for the exporter.
            (Some(tx.blocking()), Some(ex))
        }
        None => (None, None),
    };
    // Started: a configuration that detects nothing says so (once every check passed,
    // so that a refused run stays one line).
    for w in [
        cfg.no_detection_warning(),
        cfg.host_sharding_warning(shards),
    ]
    .into_iter()
    .flatten()
    {
        use std::io::Write;
        let _ = writeln!(std::io::stderr().lock(), "streamml-sensor: warning: {w}");
    }
    let window_filters = window_filters(&cfg, shards, decode);
    // Warm restart: the models the last run with this state directory saved.
    let model_counters = Arc::new(ModelCounters::default());
    let loaded = models::load(&state, &cfg, shards, &model_counters, &mut models::say);
    let (sink, saver) = Saver::spawn(&state, &cfg, shards, model_counters, models::say)
        .context("starting the model saver")?;
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
        blocking: hooks.policy == FullPolicy::Wait,
        window_filters,
        flow_output: flows_out.as_ref().map(|_| FlowOutputSetup {
            jsonl: false,
            spill_dir,
        }),
        keep_windows: false,
        latency: hooks.latency.clone(),
        models: Some(sink),
        flow_export,
    };
    let pcfg = PipelineConfig {
        shards,
        ring_capacity: replay_ring_capacity(cfg.ring_capacity, ring.capacity_records(), shards),
        key_mode: cfg.key,
        policy: hooks.policy,
        decode,
    };
    let filters = ProfileFilters::new(cfg.profiles.iter().map(|p| p.filter.as_str()));
    let mut workers = builder::scorers(&setup).map_err(anyhow::Error::msg)?;
    crate::engine::scorer::Scorer::install_models(loaded, &mut workers);
    let ring_reader = ring.reader();
    let flows: Vec<_> = workers
        .iter()
        .map(|w| w.table().counters().clone())
        .collect();
    let detect: Vec<_> = workers.iter().map(|w| w.counters().clone()).collect();
    let on_start = hooks.on_start;
    let reader_counters: Arc<pipeline::ReaderCounters> = Arc::default();
    let publisher = hooks.metrics.map(|hub| {
        let rc = reader_counters.clone();
        let flow: Vec<_> = workers
            .iter()
            .map(|w| w.table().counters().clone())
            .collect();
        let detect: Vec<_> = workers.iter().map(|w| w.counters().clone()).collect();
        let wc = writer.counters().clone();
        let ipfix_ctr = ipfix.as_ref().map(|x| x.counters());
        let nats_ctr = nats.as_ref().map(|x| x.counters());
        Publisher::start(move || {
            let mut snap = Snapshot::new();
            let mut labelled = Vec::new();
            rc.snapshot_into(&mut snap);
            for (i, (f, d)) in flow.iter().zip(&detect).enumerate() {
                let mut one = Snapshot::new();
                stats::merge_into(&mut one, f.named());
                d.snapshot_into(&mut one);
                crate::sink::metrics::per_shard(i, &one, &mut labelled);
                stats::merge_into(&mut snap, one.iter().map(|(k, v)| (k.as_str(), *v)));
            }
            wc.snapshot_into(&mut snap);
            if let Some(x) = &ipfix_ctr {
                x.snapshot_into(&mut snap);
            }
            if let Some(x) = &nats_ctr {
                x.snapshot_into(&mut snap);
            }
            hub.publish(snap, labelled);
        })
    });
    let res = pipeline::run_watched(
        source,
        &pcfg,
        Some(ring),
        Some(filters),
        workers,
        reader_counters,
        hooks.latency,
        move |w| {
            if let Some(f) = on_start {
                f(ReplayWatch {
                    pipeline: w,
                    flows,
                    detect,
                })
            }
        },
    );
    drop(setup); // the last sender outside the scorers
    let mut snap = Snapshot::new();
    res.reader.snapshot_into(&mut snap);
    stats::merge_into(&mut snap, res.router.named());
    let mut scorers = res.workers;
    let per_shard_packets = scorers
        .iter()
        .map(|w| w.table().counters().packets.get())
        .collect();
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
    drop(scorers);
    saver.join().snapshot_into(&mut snap);
    let wsnap = writer.join();
    for (k, v) in wsnap {
        *snap.entry(k).or_insert(0) += v;
    }
    // The scorers (the last flow senders) are gone: the exporter sends what it holds.
    if let Some(x) = ipfix {
        snap.extend(x.join());
    }
    // Every alert is in the spool: publish what the drain time allows.
    if let Some(n) = nats {
        snap.extend(n.finish());
    }
    drop(publisher);
    // The ring outlived the writer's reads.
    drop(res.ring);
    drop(ring_reader);
    if let Some(f) = res.failed.first() {
        // Every other stage has drained and written what it had.
        return Err(RunFailed(f.to_string()).into());
    }
    let mut flows_written = 0;
    if let Some(path) = &flows_out {
        let mut f = crate::output::OutputFile::create(path, &[])?;
        flows_written =
            crate::engine::pipeline::write_sorted_flows(&mut f.w, false, cfg.splt, sorters)
                .with_context(|| format!("writing {}", path.display()))?;
        f.commit()?;
    }
    snap.insert("replay.flows_written".into(), flows_written);
    if flows_out.is_some() {
        snap.insert(stats::name::FLOWS_WRITTEN.into(), flows_written);
    }
    Ok(ReplayOutcome {
        stats: snap,
        source_error: res.source_error,
        state,
        flows_written,
        per_shard_packets,
    })
}

/// A thread that calls `f` every [`METRICS_PUBLISH`] until dropped (and once more then).
pub struct Publisher {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Publisher {
    pub fn start(f: impl Fn() + Send + 'static) -> Publisher {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::Builder::new()
            .name("metrics-publish".into())
            .spawn(move || {
                use std::sync::atomic::Ordering::Relaxed;
                while !s.load(Relaxed) {
                    f();
                    std::thread::park_timeout(METRICS_PUBLISH);
                }
                f();
            })
            .ok();
        Publisher { stop, handle }
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}
