//! Live capture: `streamml-sensor --iface IF [--queues N] ...`.
//!
//! Startup checks the interface and privileges first (one clear line per failure), loads
//! the XDP program, binds one AF_XDP socket per queue and registers it, attaches the
//! program, and starts one reader thread per queue (pinned unless `--no-pin`). The main
//! thread waits for signals and prints a stats line every `--report-interval` seconds.
//!
//! Shutdown (SIGINT, SIGTERM, `--duration`, or a reader failing): detach the XDP program
//! so no new frames arrive, let each reader drain its RX ring, collect the final counters,
//! print the summary, write `--stats-json`, exit 0 (2 on failure). The program is also
//! detached when startup fails half-way or on panic (the loader detaches in `Drop`); a
//! program left by SIGKILL is recognised by name and replaced by the next start.
//! SIGHUP reopens alerts.jsonl (log rotation: logrotate renames the file, then signals;
//! the evidence writer closes the renamed file and creates a new one before its next
//! line), prints a stats line and rewrites the `--stats-json` file with the counters so
//! far, then reloads the configuration (`reload_wanted`): a changed, valid one ends the
//! run as SIGTERM does (models saved) with [`Ended::Reload`], and the command layer
//! executes the sensor again; otherwise capture goes on.
//!
//! The pipeline is the one `replay` runs (same configuration, same scorer): each reader
//! appends every frame to its own evidence ring (`ring/shard-<queue>.ring` in the state
//! directory, continued after a crash so that `evidence recover` still finds the earlier
//! run's packets), decodes it in place ([`crate::wire::decode`]), marks it with the
//! profiles whose packet filter it matches, and routes the `PacketMeta` over a bounded
//! SPSC ring to the scorer shard of its symmetric flow hash (a full ring drops and counts,
//! `shard.ring_full`). Each shard ([`crate::engine::scorer::Scorer`]) meters flows, closes
//! windows and scores both with each profile's Half-Space Trees; alerts go to the evidence
//! writer without ever waiting (a full queue drops the evidence and counts it). The writer
//! serves each alert from every reader's ring, merged by time, once the shard's clock has
//! passed the post-trigger end. Clocks are wall-clock capture times; an idle reader sends
//! ticks, so flows expire, windows close and evidence is written when traffic stops. At
//! shutdown readers drain, shards flush and score their flows, the writer writes what is
//! pending, and `--flows-out` is written sorted like `flows`.
#![allow(unsafe_code)] // signal masks and dup of the socket fd; every block has a SAFETY comment

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Serialize;

use crate::capture::afxdp::now_ns;
use crate::capture::afxdp::{
    AfXdpSource, BindMode, Idle, KernelStats, QueueStats, XskConfig, ZeroCopy,
};
use crate::capture::probe::{Fallback, Feature, Refused};
use crate::capture::sys::{check_privileges, iface_exists, iface_info_with, probe_af_xdp};
use crate::capture::xdp::{
    AttachMode, Attached, LoadOptions, SampleBy, SensorProgram, TsCarrier, XdpAction, XdpCounters,
    XdpSettings, MAX_QUEUES,
};
use crate::config::Config;
use crate::engine::builder;
use crate::engine::models::{self, ModelCounters, Saver};
use crate::engine::pipeline::ReaderCounters;
use crate::engine::pipeline::RunFailed;
use crate::engine::reader::{run_reader, ReaderStage};
use crate::engine::scorer::{FlowOutputSetup, Scorer, ScorerCounters, ScorerSetup};
use crate::evidence::ring::{EvidenceRing, Opened, RingConfig};
use crate::evidence::statedir::{self, StateDir};
use crate::evidence::writer::{EvidenceWriter, EvidenceWriterHandle};
use crate::filter::ProfileFilters;
use crate::flow::table::FlowCounters;
use crate::output::{check_output, OutputFile};
use crate::shard::{FullPolicy, Router, RouterCounters};
use crate::sink::ipfix::IpfixExporter;
use crate::sink::nats::NatsPublisher;
use crate::stats::{self, Snapshot};
use crate::wire::{DecodeOptions, WireError};

/// The start-up line naming what capture got for each optional feature, and each
/// fallback with its reason.
fn features_line(m: &ModeReport) -> String {
    let mut s = format!(
        "features: XDP {}, AF_XDP {}, timestamps {} ({}), need_wakeup {}, busy_poll {}, frame {} B, {} of {} queues",
        m.attach.name(),
        m.bind.name(),
        m.timestamps,
        m.timestamp_carrier.name(),
        if m.need_wakeup { "on" } else { "off" },
        if m.busy_poll_us > 0 {
            format!("{} us", m.busy_poll_us)
        } else {
            "off".into()
        },
        m.frame_size,
        m.queues,
        m.interface_queues
    );
    if m.fallbacks.is_empty() {
        s.push_str("; no fallbacks");
    } else {
        s.push_str("; fallbacks: ");
        let v: Vec<String> = m.fallbacks.iter().map(|f| f.to_string()).collect();
        s.push_str(&v.join("; "));
    }
    s
}

/// Where the per-interface locks live: `$RUNTIME_DIRECTORY` (systemd sets it from the
/// unit's `RuntimeDirectory=streamml-sensor`; the first entry when it lists several), else
/// /run/streamml-sensor (the package's tmpfiles.d creates it, owned by the `streamml`
/// user, so that the service and a sensor started by hand lock the same files).
fn lock_dir() -> PathBuf {
    std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|v| {
            v.to_string_lossy()
                .split(':')
                .next()
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("/run/streamml-sensor"))
}

/// An exclusive flock per (network namespace, interface): a second sensor on the same
/// interface is refused instead of stealing the first one's XDP program.
struct IfaceLock {
    _file: File,
    path: PathBuf,
    /// `<lock>.prog`: the id of the XDP program this run attached, so that the next start
    /// after a kill recognises the leftover without reading its name (which needs
    /// CAP_SYS_ADMIN, a capability the service does not have).
    prog_path: PathBuf,
    /// This run wrote the record (and removes it at exit); an earlier run's record stays
    /// until a run replaces that program.
    wrote_record: bool,
}

impl IfaceLock {
    fn take(iface: &str) -> anyhow::Result<IfaceLock> {
        // This thread's namespace (the bench mode captures from a thread moved into a
        // namespace of its own).
        let netns = std::fs::metadata("/proc/thread-self/ns/net")
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap_or(0);
        let dir = lock_dir();
        let dir = dir.as_path();
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!("{netns}-{iface}.lock"));
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let pid = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "{iface}: another streamml-sensor (pid {}) is capturing on it",
                pid.trim()
            );
        }
        f.set_len(0)?;
        write!(f, "{}", std::process::id())?;
        let prog_path = path.with_extension("prog");
        Ok(IfaceLock {
            _file: f,
            path,
            prog_path,
            wrote_record: false,
        })
    }

    /// The program id recorded by an earlier run on this interface (killed before it could
    /// remove the record), if any.
    fn recorded_prog(&self) -> Option<u32> {
        std::fs::read_to_string(&self.prog_path)
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Records the id of the program this run attached. Best effort: without the record a
    /// leftover is still recognised by its name where the name can be read.
    fn record_prog(&mut self, id: Option<u32>) {
        self.wrote_record = true;
        match id {
            Some(id) => {
                let _ = std::fs::write(&self.prog_path, format!("{id}\n"));
            }
            None => {
                let _ = std::fs::remove_file(&self.prog_path);
            }
        }
    }
}

impl Drop for IfaceLock {
    fn drop(&mut self) {
        if self.wrote_record {
            let _ = std::fs::remove_file(&self.prog_path);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// /sys/class/net/IF/threaded set to 1 while capturing, the old value restored on drop.
/// Through a sysfs of the capture thread's network namespace (`bench --generate` captures
/// in a namespace it entered with setns, where /sys shows another one's interfaces).
struct ThreadedNapi {
    iface: String,
    old: String,
}

impl ThreadedNapi {
    fn rel(iface: &str) -> PathBuf {
        PathBuf::from(format!("class/net/{iface}/threaded"))
    }

    fn enable(iface: &str) -> anyhow::Result<ThreadedNapi> {
        let rel = Self::rel(iface);
        let old = crate::capture::sys::with_netns_sysfs(iface, |sys| {
            let path = sys.join(&rel);
            let old = std::fs::read_to_string(&path)?;
            std::fs::write(&path, "1")?;
            Ok(old)
        })
        .with_context(|| {
            format!(
                "{iface}: threaded NAPI: writing 1 to /sys/{}",
                rel.display()
            )
        })?;
        Ok(ThreadedNapi {
            iface: iface.to_string(),
            old: old.trim().to_string(),
        })
    }
}

impl Drop for ThreadedNapi {
    fn drop(&mut self) {
        let rel = Self::rel(&self.iface);
        let _ = crate::capture::sys::with_netns_sysfs(&self.iface, |sys| {
            std::fs::write(sys.join(&rel), &self.old)
        });
    }
}

// ---------------------------------------------------------------------------------------
// Readers

struct Reader {
    queue: u32,
    core: Option<usize>,
    bind: BindMode,
    ebusy_retries: u32,
    stats: Arc<QueueStats>,
    rc: Arc<ReaderCounters>,
    router: Arc<RouterCounters>,
    /// dup of the socket fd, for XDP_STATISTICS while the reader runs and after it ends.
    stats_fd: OwnedFd,
    handle: Option<JoinHandle<anyhow::Result<()>>>,
}

/// How long a reader waits on an empty queue before it sends the shards a clock tick.
const IDLE_TICK: Duration = Duration::from_millis(250);

/// How long after an alert's post-trigger end (in shard clock time) the evidence writer
/// waits before it copies: readers stamp a whole RX batch at once and append it to their
/// ring while another reader's frames already move a shard's clock on.
const EVIDENCE_SETTLE: Duration = Duration::from_millis(250);

/// A scorer shard's thread and the counters the main thread reads while it runs.
struct Shard {
    flow: Arc<FlowCounters>,
    detect: Arc<ScorerCounters>,
}

/// One reader's evidence ring as opened at start-up.
#[derive(Debug, Serialize, Clone)]
pub struct RingReport {
    pub queue: u32,
    pub path: PathBuf,
    /// "created", or "resumed" (an earlier run's records kept for `evidence recover`).
    pub opened: &'static str,
    /// Valid records of earlier runs found in a resumed ring.
    pub earlier_records: u64,
}

// ---------------------------------------------------------------------------------------
// Stats

/// Per-queue part of the stats JSON.
#[derive(Debug, Serialize)]
pub struct QueueReport {
    pub queue: u32,
    pub core: Option<usize>,
    pub bind: BindMode,
    pub packets_received: u64,
    pub bytes_received: u64,
    pub batches: u64,
    pub syscalls: u64,
    /// Frames timestamped at batch read because no XDP timestamp was in front of them.
    pub no_xdp_timestamp: u64,
    pub ebusy_retries: u32,
    pub xdp: XdpCounters,
    pub kernel: KernelStats,
    pub decoded: u64,
}

/// Per scorer shard part of the stats JSON.
#[derive(Debug, Serialize, Clone)]
pub struct ShardReport {
    pub shard: usize,
    /// Packets its flow table took.
    pub packets: u64,
    pub flows_created: u64,
    pub windows_scored: u64,
    pub flows_scored: u64,
    pub alerts: u64,
}

/// How capture actually runs.
#[derive(Debug, Serialize, Clone)]
pub struct ModeReport {
    /// "native" or "skb": where the XDP program runs.
    pub attach: Attached,
    /// "copy" or "zero-copy" as XDP_OPTIONS reports (the first queue's; all are bound alike).
    pub bind: BindMode,
    pub zero_copy_requested: ZeroCopy,
    pub xdp_action: XdpAction,
    pub sample_percent: f64,
    pub sample_by: SampleBy,
    /// Where frame timestamps come from: "xdp" (the XDP program, per frame, through XDP
    /// metadata) or "batch" (the time the reader read the frame's RX batch).
    pub timestamps: &'static str,
    /// How XDP timestamps reach the reader: "metadata" (XDP metadata), "headroom" (a
    /// header the program pushes in front of the frame, where the kernel refuses XDP
    /// metadata) or "none".
    pub timestamp_carrier: TsCarrier,
    pub idle: Idle,
    /// Bound with XDP_USE_NEED_WAKEUP (obtained, not asked for).
    pub need_wakeup: bool,
    /// Busy polling in effect (0: off, also when the kernel refused it).
    pub busy_poll_us: u32,
    /// UMEM frame size in bytes.
    pub frame_size: u32,
    /// RX queues read, and how many the interface has.
    pub queues: u32,
    pub interface_queues: u32,
    /// Every optional feature that was asked for (or on by default) and not obtained:
    /// what is used instead and why. Empty when everything was granted.
    pub fallbacks: Vec<Fallback>,
    pub threaded_napi: bool,
    pub pinned: bool,
    /// Scorer shards.
    pub shards: usize,
}

/// Detection settings in effect (for the stats JSON).
#[derive(Debug, Serialize, Clone)]
pub struct DetectionSetup {
    /// The configuration file (or "default sensor.toml").
    pub config: String,
    pub profiles: Vec<String>,
    pub state_dir: PathBuf,
    pub rings: Vec<RingReport>,
}

/// The `--stats-json` document. Schema in docs/live.md.
#[derive(Debug, Serialize)]
pub struct StatsReport {
    pub interface: String,
    pub duration_s: f64,
    pub packets_received: u64,
    pub bytes_received: u64,
    pub mode: ModeReport,
    pub xdp: XdpCounters,
    pub kernel: KernelStats,
    pub decoded: u64,
    pub drops: serde_json::Map<String, serde_json::Value>,
    pub queues: Vec<QueueReport>,
    /// Per scorer shard (the pipeline's counters below are summed over shards).
    pub shards: Vec<ShardReport>,
    /// Every named counter of the pipeline after the sockets (reader.*, decoder.*,
    /// shard.*, flow.*, flows.*, detect.*, alerts.*, evidence.*, retention.*), summed
    /// over readers and shards; the same names as `replay --stats-json`.
    pub pipeline: Snapshot,
    /// The detect.* and alerts.* counters (also in `pipeline`).
    pub detection: Snapshot,
    /// The evidence.* and retention.* counters (also in `pipeline`).
    pub evidence: Snapshot,
    pub setup: DetectionSetup,
    pub replaced_program: Option<serde_json::Value>,
    /// This run started from a SIGHUP reload: how long capture paused (from the previous
    /// image's XDP detach to this one's attach) and how many frames reached the interface
    /// meanwhile, uncaptured (its `rx_packets` counter over the pause; null when the
    /// counter could not be read). Null for a run that was not a reload.
    pub reload: Option<serde_json::Value>,
}

/// What the start-up found that the stats report: a program replaced, the reload's pause.
struct StartFacts {
    replaced: Option<serde_json::Value>,
    reload: Option<serde_json::Value>,
}

/// The parts of the pipeline after the readers, for the stats.
struct Pipeline {
    ipfix: Option<IpfixExporter>,
    nats: Option<NatsPublisher>,
    /// The sinks' final counters once they have finished.
    sinks_final: Option<Snapshot>,
    shards: Vec<Shard>,
    threads: Option<builder::Shards<Scorer>>,
    writer: Option<EvidenceWriterHandle>,
    /// The writer's final counters once it has finished.
    writer_final: Option<Snapshot>,
    /// Warm-restart counters, and the thread writing `models/`.
    models: Arc<ModelCounters>,
    saver: Option<Saver>,
    flows_written: u64,
    flows_write_errors: u64,
    /// Stats reports that could not be made or written (capture went on).
    stats_write_errors: u64,
    setup: DetectionSetup,
}

/// Counters every report shows, present even when 0.
const DETECT_KEYS: [&str; 7] = [
    "detect.windows_scored",
    "detect.windows_incomplete",
    "detect.flows_scored",
    "detect.alerts",
    "detect.alerts_in_cooldown",
    "detect.evidence_queue_full",
    "detect.alerts_lost",
];

fn collect(
    iface: &str,
    prog: &SensorProgram,
    readers: &[Reader],
    pipe: &Pipeline,
    mode: &ModeReport,
    started: Instant,
    start: &StartFacts,
) -> anyhow::Result<StatsReport> {
    let xdp_q = prog.counters(readers.len() as u32)?;
    let xdp_total = prog.counters_total()?;
    let mut kernel = KernelStats::default();
    let mut snap = Snapshot::new();
    let mut queues = Vec::with_capacity(readers.len());
    let (mut pkts, mut bytes, mut decoded) = (0, 0, 0);
    for (r, x) in readers.iter().zip(xdp_q) {
        let k = crate::capture::afxdp::kernel_stats(r.stats_fd.as_raw_fd()).unwrap_or_default();
        kernel.add(&k);
        let q = QueueReport {
            queue: r.queue,
            core: r.core,
            bind: r.bind,
            packets_received: r.stats.packets.load(Relaxed),
            bytes_received: r.stats.bytes.load(Relaxed),
            batches: r.stats.batches.load(Relaxed),
            syscalls: r.stats.syscalls.load(Relaxed),
            no_xdp_timestamp: r.stats.no_xdp_timestamp.load(Relaxed),
            ebusy_retries: r.ebusy_retries,
            xdp: x,
            kernel: k,
            decoded: r.rc.decoded.get(),
        };
        r.rc.snapshot_into(&mut snap);
        stats::merge_into(&mut snap, r.router.named());
        pkts += q.packets_received;
        bytes += q.bytes_received;
        decoded += q.decoded;
        queues.push(q);
    }
    for k in DETECT_KEYS {
        snap.entry(k.to_string()).or_insert(0);
    }
    let mut shards = Vec::with_capacity(pipe.shards.len());
    for (i, sh) in pipe.shards.iter().enumerate() {
        stats::merge_into(&mut snap, sh.flow.named());
        sh.detect.snapshot_into(&mut snap);
        shards.push(ShardReport {
            shard: i,
            packets: sh.flow.packets.get(),
            flows_created: sh.flow.created.get(),
            windows_scored: sh.detect.windows_scored.get(),
            flows_scored: sh.detect.flows_scored.get(),
            alerts: sh.detect.alerts.get(),
        });
    }
    pipe.models.snapshot_into(&mut snap);
    let writer_snap = match (&pipe.writer_final, &pipe.writer) {
        (Some(s), _) => s.clone(),
        (None, Some(w)) => w.snapshot(),
        (None, None) => Snapshot::new(),
    };
    for (k, v) in writer_snap {
        *snap.entry(k).or_insert(0) += v;
    }
    match &pipe.sinks_final {
        Some(f) => snap.extend(f.clone()),
        None => {
            if let Some(x) = &pipe.ipfix {
                x.snapshot_into(&mut snap);
            }
            if let Some(n) = &pipe.nats {
                n.counters().snapshot_into(&mut snap);
            }
        }
    }
    stats::merge_into(
        &mut snap,
        [
            ("flows.written", pipe.flows_written),
            ("flows.write_errors", pipe.flows_write_errors),
            ("stats.write_errors", pipe.stats_write_errors),
        ],
    );
    let group = |prefixes: &[&str]| -> Snapshot {
        snap.iter()
            .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    };
    let detection = group(&["detect.", "alerts.", "models."]);
    let evidence = group(&["evidence.", "retention."]);
    let mut drops = serde_json::Map::new();
    let mut put = |k: &str, v: u64| {
        drops.insert(k.to_string(), serde_json::Value::from(v));
    };
    put("xdp.filtered", xdp_total.filtered);
    put("xdp.sampled_out", xdp_total.sampled_out);
    put("xdp.redirect_failed", xdp_total.redirect_failed);
    put("rx_dropped", kernel.rx_dropped);
    put("rx_invalid_descs", kernel.rx_invalid_descs);
    put("rx_ring_full", kernel.rx_ring_full);
    put("rx_fill_ring_empty_descs", kernel.rx_fill_ring_empty_descs);
    for e in WireError::ALL {
        put(e.name(), snap.get(e.name()).copied().unwrap_or(0));
    }
    for k in [
        "shard.ring_full",
        "flow.evicted",
        "evidence.dropped_queue_full",
        "evidence.dropped_pending_full",
        "evidence.records_lost_overwritten",
        "alerts.lost_queue_full",
    ] {
        put(k, snap.get(k).copied().unwrap_or(0));
    }
    Ok(StatsReport {
        interface: iface.into(),
        duration_s: started.elapsed().as_secs_f64(),
        packets_received: pkts,
        bytes_received: bytes,
        mode: mode.clone(),
        xdp: xdp_total,
        kernel,
        decoded,
        drops,
        queues,
        shards,
        pipeline: snap,
        detection,
        evidence,
        setup: pipe.setup.clone(),
        replaced_program: start.replaced.clone(),
        reload: start.reload.clone(),
    })
}

/// Publishes a report to `/metrics` (a report that could not be made is skipped).
fn publish_metrics(
    hub: &crate::sink::metrics::MetricsHub,
    r: anyhow::Result<StatsReport>,
    shards: &[Shard],
) {
    if let Ok(r) = r {
        publish_report(hub, &r, shards);
    }
}

/// The pipeline counters, the sockets' and XDP program's drops, and per-queue packets.
fn publish_report(hub: &crate::sink::metrics::MetricsHub, r: &StatsReport, shards: &[Shard]) {
    let mut snap = r.pipeline.clone();
    for (k, v) in &r.drops {
        if let Some(v) = v.as_u64() {
            snap.entry(format!("capture.{k}")).or_insert(v);
        }
    }
    snap.insert("capture.packets_received".into(), r.packets_received);
    snap.insert("capture.bytes_received".into(), r.bytes_received);
    let mut labelled = Vec::new();
    for q in &r.queues {
        let l = vec![("queue".to_string(), q.queue.to_string())];
        labelled.push((
            "queue.packets_received".into(),
            l.clone(),
            q.packets_received,
        ));
        labelled.push(("queue.bytes_received".into(), l.clone(), q.bytes_received));
        labelled.push(("queue.decoded".into(), l, q.decoded));
    }
    for (i, sh) in shards.iter().enumerate() {
        let mut one = Snapshot::new();
        stats::merge_into(&mut one, sh.flow.named());
        sh.detect.snapshot_into(&mut one);
        crate::sink::metrics::per_shard(i, &one, &mut labelled);
    }
    hub.publish(snap, labelled);
}

fn write_json(path: &Path, r: &StatsReport) -> anyhow::Result<()> {
    let mut s = serde_json::to_string_pretty(r)?;
    s.push('\n');
    let mut f = OutputFile::create(path, &[])?;
    f.w.write_all(s.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    f.commit()?;
    Ok(())
}

fn line(r: &StatsReport, prev: Option<(&StatsReport, f64)>) -> String {
    let rate = match prev {
        Some((p, dt)) if dt > 0.0 => format!(
            " ({:.1} kpps)",
            (r.packets_received - p.packets_received) as f64 / dt / 1e3
        ),
        _ => String::new(),
    };
    let per_q: Vec<String> = r
        .queues
        .iter()
        .map(|q| format!("q{}={}", q.queue, q.packets_received))
        .collect();
    let g = |k: &str| r.pipeline.get(k).copied().unwrap_or(0);
    format!(
        "{}: rx {} frames{} {} bytes [{}] | xdp seen {} redirected {} sampled_out {} filtered {} redirect_failed {} | kernel rx_dropped {} rx_ring_full {} rx_fill_ring_empty_descs {} rx_invalid_descs {} | flows {} ring_full {} | detect windows {} flows {} alerts {} (cooldown {}) | evidence files {} packets {} dropped {} errors {}",
        r.interface,
        r.packets_received,
        rate,
        r.bytes_received,
        per_q.join(" "),
        r.xdp.seen,
        r.xdp.redirected,
        r.xdp.sampled_out,
        r.xdp.filtered,
        r.xdp.redirect_failed,
        r.kernel.rx_dropped,
        r.kernel.rx_ring_full,
        r.kernel.rx_fill_ring_empty_descs,
        r.kernel.rx_invalid_descs,
        g("flow.created"),
        g("shard.ring_full"),
        g("detect.windows_scored"),
        g("detect.flows_scored"),
        g("detect.alerts"),
        g("detect.alerts_in_cooldown"),
        g("evidence.files_written"),
        g("evidence.packets_written"),
        g("evidence.dropped_queue_full")
            + g("evidence.dropped_pending_full")
            + g("alerts.lost_queue_full"),
        g("evidence.write_errors") + g("alerts.write_errors"),
    )
}
// ---------------------------------------------------------------------------------------
// Signals

/// SIGINT, SIGTERM and SIGHUP blocked in this thread (and the threads it starts), taken
/// only by [`Signals::wait`]; unblocked on drop.
pub struct Signals {
    set: libc::sigset_t,
}

impl Signals {
    /// Blocks SIGINT, SIGTERM and SIGHUP in this thread (and in threads spawned after),
    /// so they are taken only by `wait`.
    pub fn block() -> Signals {
        // SAFETY: sigset manipulation on a local set, then pthread_sigmask on it.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGHUP);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Signals { set }
        }
    }

    /// The next signal within `timeout`, if any.
    pub fn wait(&self, timeout: Duration) -> Option<i32> {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: set and ts are valid; info may be null.
        let s = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &ts) };
        (s > 0).then_some(s)
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        // SAFETY: unblocks the set blocked in `block`.
        unsafe { libc::pthread_sigmask(libc::SIG_UNBLOCK, &self.set, std::ptr::null_mut()) };
    }
}

// ---------------------------------------------------------------------------------------
// Run

/// One line on stderr; a stderr that cannot be written (closed, a full disk) does not stop
/// capture.
fn log(msg: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr().lock(), "streamml-sensor: {msg}");
}

/// Brings an evidence ring's pages into the page cache at start-up, so that the readers'
/// first lap through the ring does not pay for them (measured: a fresh 256 MiB ring cost
/// the readers 10-20 % of their frames while its pages were first touched, most of it the
/// kernel zeroing new page-cache pages). A ring just created holds only zeros past its
/// header: writing zeros over its data area changes nothing in it but allocates the blocks
/// and pages now. A resumed ring (an earlier run's records) is only read ahead.
fn warm_ring(ring: &EvidenceRing, created: bool) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let info = ring.reader().info();
    let data_off = info.file_len - info.data_len;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(created)
        .open(ring.path())?;
    if created && info.head_seq == 0 {
        let zeros = vec![0u8; 1 << 20];
        let mut off = data_off;
        while off < info.file_len {
            let n = (info.file_len - off).min(zeros.len() as u64) as usize;
            f.write_all_at(&zeros[..n], off)?;
            off += n as u64;
        }
    } else {
        // SAFETY: posix_fadvise on an fd we own; it only advises the page cache.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
    }
    Ok(())
}

/// What live capture runs with: built by the command layer from the command line and the
/// configuration (already loaded with its overrides).
#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub iface: String,
    /// RX queues to read [None: all the interface has].
    pub queues: Option<u32>,
    pub xdp_mode: AttachMode,
    /// Replace an XDP program that is not ours.
    pub force: bool,
    pub xdp: XdpSettings,
    pub xsk: XskConfig,
    /// Choose the UMEM frame size by the interface's MTU (`xsk.frame_size` otherwise).
    pub frame_size_auto: bool,
    /// Cores for the readers (queue i on the i-th, cycling) [None: every core].
    pub reader_cores: Option<Vec<usize>>,
    /// Pin reader and scorer threads.
    pub pin: bool,
    pub threaded_napi: bool,
    /// Seconds between stats lines (0: none).
    pub report_interval: f64,
    pub stats_json: Option<PathBuf>,
    /// Stop after this many seconds.
    pub duration: Option<f64>,
    pub cfg: Config,
    pub flows_out: Option<PathBuf>,
    pub flows_jsonl: bool,
    /// What the bench mode adds (nothing by default).
    pub hooks: LiveHooks,
    /// Where SIGHUP re-reads the configuration from (None: SIGHUP does not reload).
    pub reload: Option<ReloadSource>,
    /// This run is a reload's second half: where the pause began.
    pub reloaded_from: Option<ReloadGap>,
    /// Where the running counters are published for `/metrics` (the command serves it).
    pub metrics: Option<Arc<crate::sink::metrics::MetricsHub>>,
}

/// Called with the counters so far; false stops capture.
pub type ReportHook = Arc<dyn Fn(&StatsReport) -> bool + Send + Sync>;

/// The bench mode's hooks into live capture: sampled stage latencies, the counters
/// handed out while capture runs, and a way to stop it.
#[derive(Clone, Default)]
pub struct LiveHooks {
    pub latency: Option<Arc<crate::stats::StageLatency>>,
    /// Called by the main loop every `report_every` (first once capture runs) with the
    /// counters so far; returning false stops capture as SIGTERM does.
    pub on_report: Option<ReportHook>,
    pub report_every: Duration,
    /// Set to the signal that stopped capture, when one did.
    pub stopped_by: Option<Arc<std::sync::atomic::AtomicI32>>,
}

impl std::fmt::Debug for LiveHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveHooks")
            .field("latency", &self.latency.is_some())
            .field("on_report", &self.on_report.is_some())
            .field("report_every", &self.report_every)
            .finish()
    }
}

/// The configuration file and the command-line settings that override it, as the sensor
/// was started with: what SIGHUP reads again.
#[derive(Clone, Debug)]
pub struct ReloadSource {
    /// None: the embedded default configuration.
    pub path: Option<PathBuf>,
    pub overrides: crate::config::Overrides,
}

/// How a live run ended without an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// A stop signal or `--duration`.
    Stopped,
    /// SIGHUP found a new, valid configuration: the run stopped as at SIGTERM (models
    /// saved) so that the caller starts the sensor again with it, handing it the gap.
    Reload(ReloadGap),
}

/// Where a reload's capture pause began: when the XDP program was detached
/// (CLOCK_MONOTONIC) and the interface's `rx_packets` then. Handed to the next image in
/// the environment ([`ReloadGap::ENV`]); that image measures the pause and the frames
/// that arrived uncaptured when it attaches its program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReloadGap {
    pub detached_ns: u64,
    pub rx_packets: Option<u64>,
}

impl ReloadGap {
    pub const ENV: &'static str = "STREAMML_RELOAD_GAP";

    /// `DETACHED_NS:RX_PACKETS` (`-` for an unknown counter).
    pub fn encode(&self) -> String {
        match self.rx_packets {
            Some(rx) => format!("{}:{rx}", self.detached_ns),
            None => format!("{}:-", self.detached_ns),
        }
    }

    pub fn decode(s: &str) -> Option<ReloadGap> {
        let (t, rx) = s.split_once(':')?;
        Some(ReloadGap {
            detached_ns: t.parse().ok()?,
            rx_packets: if rx == "-" {
                None
            } else {
                Some(rx.parse().ok()?)
            },
        })
    }

    /// The stats' `reload` object: the pause up to `attached_ns`; the frames counted
    /// from the detach to `rx_before` the attach (not captured); those counted during
    /// the attach (`rx_before` to `rx_after`: captured or not, the bound of the count's
    /// uncertainty).
    pub fn report(
        &self,
        attached_ns: u64,
        rx_before: Option<u64>,
        rx_after: Option<u64>,
    ) -> serde_json::Value {
        let delta = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(b.wrapping_sub(a)),
            _ => None,
        };
        serde_json::json!({
            "pause_ms": attached_ns.saturating_sub(self.detached_ns) as f64 / 1e6,
            "frames_uncaptured": delta(self.rx_packets, rx_before),
            "frames_during_attach": delta(rx_before, rx_after),
        })
    }
}

/// SIGHUP's reload part (separate from the stats and anything else SIGHUP does, so that
/// they compose): reads the configuration again, file and command-line overrides. True
/// when it is valid and differs from the running one; an invalid one is refused with one
/// line and the running configuration stays.
fn reload_wanted(o: &LiveOptions) -> bool {
    let Some(src) = &o.reload else {
        return false;
    };
    match crate::config::load_with(src.path.as_deref(), &src.overrides) {
        Err(e) => {
            log(format_args!(
                "reload: {e}; keeping the running configuration"
            ));
            false
        }
        Ok(new) if format!("{new:?}") == format!("{:?}", o.cfg) => {
            log("reload: configuration unchanged");
            false
        }
        Ok(_) => {
            log("reload: configuration changed: stopping and starting again with it (profiles with unchanged detector settings keep their models)");
            true
        }
    }
}

/// Runs live capture until a stop signal (or `--duration`). Errors are meant to be printed
/// as one line (`{:#}`).
pub fn run(o: LiveOptions) -> anyhow::Result<Ended> {
    let iface = o.iface.as_str();
    let cfg = Arc::new(o.cfg.clone());
    let refused = Refused::from_env().map_err(anyhow::Error::msg)?;
    let info = iface_info_with(iface, refused)?;
    if !info.up {
        bail!("{iface}: interface is down (ip link set {iface} up)");
    }
    let mut fallbacks: Vec<Fallback> = Vec::new();
    if let Some(f) = &info.channels_fallback {
        fallbacks.push(f.clone());
    }
    let mut queues = o.queues.unwrap_or(info.rx_queues);
    if queues > info.rx_queues {
        // RSS spreads traffic over the queues the NIC has: reading all of them is
        // reading everything.
        fallbacks.push(Fallback {
            feature: "queues",
            using: info.rx_queues.to_string(),
            reason: format!(
                "--queues {queues} but the interface has {} RX queue{} (ethtool -L {iface} combined {queues} to have more)",
                info.rx_queues,
                if info.rx_queues == 1 { "" } else { "s" }
            ),
        });
        queues = info.rx_queues;
    } else if queues < info.rx_queues {
        log(format_args!(
            "{iface}: reading {queues} of {} RX queues: frames on queues {queues}..{} are not captured (counted as xdp.redirect_failed)",
            info.rx_queues,
            info.rx_queues - 1
        ));
    }
    if queues > MAX_QUEUES {
        bail!("--queues {queues}: at most {MAX_QUEUES} are supported");
    }
    let mut xsk = o.xsk.clone();
    xsk.refused = refused;
    // Frames up to MTU + Ethernet + two VLAN tags must fit a UMEM frame after the kernel's
    // headroom (and the timestamp header, if the program pushes one).
    let mtu = crate::capture::sys::iface_mtu(iface).unwrap_or(1500);
    if o.frame_size_auto {
        xsk.frame_size = crate::capture::sys::frame_size_for(mtu, TsCarrier::Headroom);
    }
    for (name, v) in [
        ("--fill-size", xsk.fill_size),
        ("--rx-size", xsk.rx_size),
        ("--frame-size", xsk.frame_size),
    ] {
        if !v.is_power_of_two() {
            bail!("{name} {v}: must be a power of two");
        }
    }
    if !(2048..=4096).contains(&xsk.frame_size) {
        bail!(
            "--frame-size {}: must be 2048 or 4096 (the kernel's aligned UMEM chunks)",
            xsk.frame_size
        );
    }
    let umem_bytes = queues as u64 * xsk.fill_size as u64 * xsk.frame_size as u64;
    check_privileges(umem_bytes).with_context(|| iface.to_string())?;
    probe_af_xdp()?;
    let mut lock = IfaceLock::take(iface)?;
    let recorded_prog = lock.recorded_prog();
    // Fail now, not after the capture, if an output cannot be written (a device, a
    // directory, a missing directory, a link); nothing is created or truncated yet.
    if let Some(p) = &o.stats_json {
        check_output(p, &[]).context("--stats-json")?;
    }
    if let Some(p) = &o.flows_out {
        check_output(p, &[]).context("--flows-out")?;
    }

    // Memory: the flow tables at full capacity, the detectors, the queues and the UMEMs
    // must fit before anything is allocated.
    let nshards = if cfg.shards > 0 {
        cfg.shards
    } else {
        crate::engine::limits::auto_shards(
            crate::engine::pipeline::default_shards(queues as usize),
            &cfg.flow_config(),
        )
    };
    let mut need = crate::engine::limits::MemoryNeed::default();
    need.flow_tables(&cfg.flow_config(), nshards);
    need.detectors(&cfg, nshards);
    need.shard_queues(queues as usize, nshards, cfg.ring_capacity.min(1 << 16));
    need.add("UMEM", umem_bytes);
    if let Some(x) = &cfg.ipfix {
        need.add(
            "ipfix.queue",
            (x.queue * std::mem::size_of::<crate::sink::ipfix::ExportedFlow>()) as u64,
        );
    }
    need.mapped = u64::from(queues).saturating_mul(cfg.ring_bytes);
    need.threads = u64::from(queues) + nshards as u64 + 3;
    crate::engine::limits::check_memory(
        &need,
        "--flow-capacity (flow.capacity), the profiles' hst, --shards, --queues or --fill-size",
    )?;
    let cores_online = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cfg.shards > cores_online {
        log(format_args!(
            "warning: {} scorer shards on {cores_online} cores: the threads share the cores (frames are dropped when they fall behind)",
            cfg.shards
        ));
    }

    // State directory and one evidence ring per queue, continued if a crashed run left
    // them (their records stay readable by `evidence recover`). The file system must hold
    // every ring before the first is created.
    let state_root = statedir::resolve(cfg.state_dir.as_deref())?;
    let (state, _state_lock) = StateDir::create_locked(&state_root)?;
    let ring_paths: Vec<PathBuf> = (0..queues).map(|q| state.ring_path(q as usize)).collect();
    crate::engine::limits::check_ring_space(&state.ring_dir(), &ring_paths, cfg.ring_bytes)?;
    let mut rings = Vec::with_capacity(queues as usize);
    let mut ring_reports: Vec<RingReport> = Vec::with_capacity(queues as usize);
    for q in 0..queues {
        let path = state.ring_path(q as usize);
        let opened = EvidenceRing::open_or_create(
            &path,
            &RingConfig {
                size_bytes: cfg.ring_bytes,
                snaplen: cfg.ring_snaplen,
                shard: q,
            },
        );
        let (ring, opened) = match opened {
            Ok(r) => r,
            Err(e) => {
                // The disk filled after the check (another writer): the rings this start
                // created hold nothing yet, so they go too.
                drop(rings);
                for r in ring_reports.iter().filter(|r| r.opened == "created") {
                    let _ = std::fs::remove_file(&r.path);
                }
                return Err(anyhow::Error::new(e).context("evidence ring"));
            }
        };
        let earlier = match opened {
            Opened::Created => 0,
            Opened::Resumed { records, .. } => records,
        };
        warm_ring(&ring, opened == Opened::Created)
            .with_context(|| format!("evidence ring {}", path.display()))?;
        if earlier > 0 {
            log(format_args!(
                "{}: kept {earlier} packets of an earlier run (streamml-sensor evidence recover)",
                path.display()
            ));
        }
        ring_reports.push(RingReport {
            queue: q,
            path,
            opened: match opened {
                Opened::Created => "created",
                Opened::Resumed { .. } => "resumed",
            },
            earlier_records: earlier,
        });
        rings.push(ring);
    }

    let cores: Option<Vec<usize>> = if !o.pin {
        None
    } else {
        Some(match &o.reader_cores {
            Some(c) => c.clone(),
            None => core_affinity::get_core_ids()
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.id)
                .collect(),
        })
        .filter(|v: &Vec<usize>| !v.is_empty())
    };

    // Refuse a foreign program before touching anything.
    if let Some(ex) = crate::capture::xdp::query_attached(iface, info.ifindex)? {
        let ex = ex.with_record(recorded_prog);
        if !ex.is_ours() && !o.force {
            return Err(crate::capture::xdp::XdpError::Foreign {
                iface: iface.into(),
                existing: ex,
            }
            .into());
        }
    }

    let settings = o.xdp.clone();
    let (mut prog, loaded) = SensorProgram::load(
        iface,
        info.ifindex,
        &settings,
        LoadOptions {
            refuse_xdp_meta: refused.has(Feature::XdpMeta),
            refuse_xdp_head: refused.has(Feature::XdpHead),
        },
    )?;
    fallbacks.extend(loaded.fallbacks.iter().cloned());
    xsk.ts_carrier = loaded.carrier;
    let max_frame = crate::capture::sys::max_frame_bytes(xsk.frame_size, loaded.carrier);
    if mtu + crate::capture::sys::L2_OVERHEAD > max_frame {
        // Frames longer than a UMEM frame need multi-buffer AF_XDP, which the sensor does
        // not use: the kernel drops them and counts them (rx_dropped).
        fallbacks.push(Fallback {
            feature: "jumbo",
            using: format!("frames up to {max_frame} bytes; longer ones dropped by the kernel, counted in rx_dropped"),
            reason: format!(
                "MTU {mtu} exceeds what a {} B UMEM frame holds (ip link set {iface} mtu {} to capture every frame)",
                xsk.frame_size,
                crate::capture::sys::max_frame_bytes(4096, loaded.carrier) - crate::capture::sys::L2_OVERHEAD
            ),
        });
    }

    // Signals are blocked before any thread exists, so every thread inherits the mask.
    let signals = Signals::block();
    let stop = Arc::new(AtomicBool::new(false));

    // Sockets first, then the program: no frame is redirected to an empty XSKMAP slot.
    let mut sources = Vec::with_capacity(queues as usize);
    for q in 0..queues {
        let stats = Arc::new(QueueStats::default());
        let src = AfXdpSource::open(iface, q, &xsk, stop.clone(), stats.clone())?;
        for f in &src.fallbacks {
            if !fallbacks.contains(f) {
                fallbacks.push(f.clone());
            }
        }
        prog.register_socket(q, src.fd())?;
        sources.push((src, stats));
    }
    prog.set_recorded_id(recorded_prog);
    // A reload's pause ends with the attach: the interface's counter just before it (what
    // came before was not captured) and just after it (what came during the attach
    // syscall may or may not have been).
    let rx_before = o
        .reloaded_from
        .and_then(|_| crate::capture::sys::iface_rx_packets(iface));
    let report = prog.attach(o.xdp_mode, o.force, refused.has(Feature::Native))?;
    let reload_report = o.reloaded_from.map(|g| {
        let r = g.report(
            crate::capture::sys::monotonic_ns(),
            rx_before,
            crate::capture::sys::iface_rx_packets(iface),
        );
        log(format_args!(
            "reload: capture paused {:.1} ms (XDP program detached to attached again); {}",
            r["pause_ms"].as_f64().unwrap_or(0.0),
            match r["frames_uncaptured"].as_u64() {
                Some(n) => format!(
                    "{n} frames reached {iface} meanwhile, not captured (and {} during the attach itself, captured or not)",
                    r["frames_during_attach"].as_u64().unwrap_or(0)
                ),
                None => format!("frames meanwhile unknown ({iface}'s rx_packets unreadable)"),
            }
        ));
        r
    });
    lock.record_prog(prog.prog_id());
    if let Some(e) = &report.native_error {
        fallbacks.push(Fallback::new(Feature::Native, "skb", e.clone()));
    }
    let replaced_json = report.replaced.as_ref().map(|ex| {
        log(format_args!(
            "{iface}: replaced {} XDP program {} (id {}, {} mode)",
            if ex.is_ours() { "a leftover" } else { "another" },
            ex.name.as_deref().unwrap_or(if ex.recorded {
                "(name unreadable without CAP_SYS_ADMIN; the id this sensor recorded)"
            } else {
                "?"
            }),
            ex.id,
            ex.mode.name()
        ));
        serde_json::json!({"id": ex.id, "name": ex.name, "mode": ex.mode.name(), "ours": ex.is_ours()})
    });
    let start = StartFacts {
        replaced: replaced_json,
        reload: reload_report,
    };
    let napi = if o.threaded_napi {
        Some(ThreadedNapi::enable(iface)?)
    } else {
        None
    };

    let bind = sources[0].0.bind_mode();
    let need_wakeup = sources[0].0.need_wakeup();
    let busy_poll_us = if sources[0].0.busy_poll() {
        o.xsk.busy_poll_us
    } else {
        0
    };
    let nq = sources.len();
    let mode = ModeReport {
        attach: report.mode,
        bind,
        zero_copy_requested: o.xsk.zero_copy,
        xdp_action: o.xdp.action,
        sample_percent: o.xdp.sample_percent,
        sample_by: o.xdp.sample_by,
        timestamps: if loaded.carrier == TsCarrier::None {
            "batch"
        } else {
            "xdp"
        },
        timestamp_carrier: loaded.carrier,
        idle: o.xsk.idle,
        need_wakeup,
        busy_poll_us,
        frame_size: xsk.frame_size,
        queues,
        interface_queues: info.rx_queues,
        fallbacks: fallbacks.clone(),
        threaded_napi: o.threaded_napi,
        pinned: cores.is_some(),
        shards: nshards,
    };

    // The pipeline, as replay wires it: S scorer shards (flows, windows, Half-Space Trees
    // per profile), each draining one ring per reader; one evidence writer over every
    // reader's evidence ring, never waited for.
    let decode = DecodeOptions {
        decode_tunnels: cfg.decode_tunnels,
    };
    let mut wcfg = crate::engine::replay::writer_config(&cfg, &state);
    wcfg.settle_ns = EVIDENCE_SETTLE.as_nanos() as u64;
    // SIGHUP: alerts.jsonl is reopened (log rotation, as eve.json users expect).
    let reopen_alerts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    wcfg.reopen = Some(reopen_alerts.clone());
    wcfg.latency = o.hooks.latency.clone();
    let sink_log: Arc<dyn Fn(&str) + Send + Sync> =
        Arc::new(|s: &str| eprintln!("streamml-sensor: {s}"));
    let nats = match &cfg.nats {
        Some(n) => {
            let dir = state.root().join("spool").join("nats");
            let (sink, publisher) = NatsPublisher::start(n.clone(), &dir, sink_log.clone())
                .with_context(|| format!("--nats: opening the spool {}", dir.display()))?;
            wcfg.extra_sinks.push(Box::new(sink));
            Some(publisher)
        }
        None => None,
    };
    // Live: a full export queue drops the flow record (counted), never stalls a scorer.
    let (flow_export, ipfix) = match &cfg.ipfix {
        Some(icfg) => {
            let (tx, ex) = IpfixExporter::spawn(icfg.clone(), sink_log.clone())
                .with_context(|| format!("--ipfix {}", icfg.collector))?;
            (Some(tx), Some(ex))
        }
        None => (None, None),
    };
    let (sender, writer) =
        EvidenceWriter::spawn_shared(wcfg, rings.iter().map(|r| r.reader()).collect(), nshards)
            .context("starting the evidence writer")?;
    // Warm restart: the models the last run with this state directory saved.
    let model_counters = Arc::new(ModelCounters::default());
    let loaded = models::load(&state, &cfg, nshards, &model_counters, &mut models::say);
    let (sink, saver) = Saver::spawn(&state, &cfg, nshards, model_counters.clone(), models::say)
        .context("starting the model saver")?;
    let jsonl = o.flows_jsonl;
    let spill_dir = o
        .flows_out
        .as_ref()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    let setup = ScorerSetup {
        cfg: cfg.clone(),
        shards: nshards,
        key_mode: cfg.key,
        sender: Some(sender),
        // Live: a full alert queue drops the evidence (counted), never stalls a scorer.
        blocking: false,
        window_filters: crate::engine::replay::window_filters(&cfg, nshards, decode),
        flow_output: o
            .flows_out
            .as_ref()
            .map(|_| FlowOutputSetup { jsonl, spill_dir }),
        keep_windows: false,
        latency: o.hooks.latency.clone(),
        models: Some(sink),
        flow_export,
    };
    let reader_cores: Vec<usize> = cores
        .as_ref()
        .map(|c| (0..nq).map(|i| c[i % c.len()]).collect())
        .unwrap_or_default();
    let scorer_cores: Vec<usize> = cores
        .as_ref()
        .map(|c| {
            c.iter()
                .copied()
                .filter(|x| !reader_cores.contains(x))
                .collect()
        })
        .unwrap_or_default();
    // The same bound as replay: packets queued for the scorers are already in the reader's
    // evidence ring, so the queue must stay a small part of the ring (see
    // `replay::replay_ring_capacity`); a full queue drops and counts, as always live.
    let ring_records = rings
        .iter()
        .map(|r| r.capacity_records())
        .min()
        .unwrap_or(0);
    let shard_ring_capacity =
        crate::engine::replay::replay_ring_capacity(cfg.ring_capacity, ring_records, nshards);
    let mut scorers = builder::scorers(&setup).map_err(anyhow::Error::msg)?;
    Scorer::install_models(loaded, &mut scorers);
    let shards: Vec<Shard> = scorers
        .iter()
        .map(|s| Shard {
            flow: s.table().counters().clone(),
            detect: s.counters().clone(),
        })
        .collect();
    let (producers, shard_threads) =
        builder::spawn_shards(scorers, nq, shard_ring_capacity, &scorer_cores)
            .context("spawning a scorer thread")?;
    drop(setup); // the scorers hold the only alert senders now
    let mut pipe = Pipeline {
        ipfix,
        nats,
        sinks_final: None,
        shards,
        threads: Some(shard_threads),
        writer: Some(writer),
        writer_final: None,
        models: model_counters,
        saver: Some(saver),
        flows_written: 0,
        flows_write_errors: 0,
        stats_write_errors: 0,
        setup: DetectionSetup {
            config: cfg.source.clone(),
            profiles: cfg.profiles.iter().map(|p| p.name.clone()).collect(),
            state_dir: state.root().to_path_buf(),
            rings: ring_reports,
        },
    };

    let mut readers = Vec::with_capacity(nq);
    for (i, (((src, stats), prods), ring)) in
        sources.into_iter().zip(producers).zip(rings).enumerate()
    {
        let queue = src.queue();
        let core = reader_cores.get(i).copied();
        // SAFETY: dup(2) of a valid fd; the result is a new fd we own.
        let dup = unsafe { libc::fcntl(src.fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            bail!(
                "dup of the AF_XDP socket: {}",
                std::io::Error::last_os_error()
            );
        }
        // SAFETY: dup is a fresh fd.
        let stats_fd = unsafe { OwnedFd::from_raw_fd(dup) };
        let router = Router::new(prods, FullPolicy::Drop, cfg.key);
        let router_ctr = router.counters.clone();
        let rc = Arc::new(ReaderCounters::default());
        let stage_rc = rc.clone();
        let latency = o.hooks.latency.clone();
        let exprs: Vec<String> = cfg.profiles.iter().map(|p| p.filter.clone()).collect();
        let bind = src.bind_mode();
        let ebusy_retries = src.ebusy_retries;
        let handle = std::thread::Builder::new()
            .name(format!("xsk-q{queue}"))
            .spawn(move || {
                if let Some(c) = core {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: c }) {
                        log(format_args!("queue {queue}: could not pin to core {c}"));
                    }
                }
                // The profile filters are not `Send`: built here, on the reader's thread.
                let filters = ProfileFilters::new(exprs.iter().map(String::as_str));
                let mut stage =
                    ReaderStage::new(router, decode, Some(ring), Some(filters), stage_rc)
                        .with_latency(latency);
                let mut src = src;
                let res = run_reader(&mut src, &mut stage, Some((IDLE_TICK, now_ns)));
                drop(stage.finish()); // closes this reader's rings
                res.map_err(|e| anyhow!(e))
            })
            .context("spawning a reader thread")?;
        readers.push(Reader {
            queue,
            core,
            bind,
            ebusy_retries,
            stats,
            rc,
            router: router_ctr,
            stats_fd,
            handle: Some(handle),
        });
    }

    if let Some(w) = cfg.no_detection_warning() {
        log(format_args!("warning: {w}"));
    }
    if let Some(w) = cfg.host_sharding_warning(nshards) {
        log(format_args!("warning: {w}"));
    }
    log(format_args!("{}", features_line(&mode)));
    let started = Instant::now();
    log(format_args!(
        "capturing on {iface}: {queues} queue{}, XDP {} mode, AF_XDP {} mode, sample {}%, {} shard{}, profiles [{}], state dir {}, pid {}",
        if queues == 1 { "" } else { "s" },
        report.mode.name(),
        bind.name(),
        o.xdp.sample_percent,
        nshards,
        if nshards == 1 { "" } else { "s" },
        pipe.setup.profiles.join(", "),
        state.root().display(),
        std::process::id()
    ));

    if let Some(hub) = &o.metrics {
        let name = |v: serde_json::Result<serde_json::Value>| {
            v.ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        hub.add_info(
            "capture_mode",
            vec![
                ("attach".into(), name(serde_json::to_value(mode.attach))),
                ("bind".into(), name(serde_json::to_value(mode.bind))),
                ("timestamps".into(), mode.timestamps.to_string()),
                (
                    "carrier".into(),
                    name(serde_json::to_value(mode.timestamp_carrier)),
                ),
                ("interface".into(), iface.to_string()),
            ],
        );
    }
    // Main loop: signals, reports, reader health, --duration.
    let interval = (o.report_interval > 0.0).then(|| Duration::from_secs_f64(o.report_interval));
    let deadline = o
        .duration
        .map(|d| started + Duration::from_secs_f64(d.max(0.0)));
    let mut next_report = interval.map(|i| Instant::now() + i);
    let mut prev: Option<(StatsReport, Instant)> = None;
    let mut failure: Option<anyhow::Error> = None;
    let hook_every = o.hooks.report_every.max(Duration::from_millis(10));
    let mut next_hook = o.hooks.on_report.as_ref().map(|_| Instant::now());
    let mut reload = false;
    loop {
        if let (Some(t), Some(hook)) = (next_hook, &o.hooks.on_report) {
            if Instant::now() >= t {
                next_hook = Some((t + hook_every).max(Instant::now()));
                match collect(iface, &prog, &readers, &pipe, &mode, started, &start) {
                    Ok(r) => {
                        if !hook(&r) {
                            break;
                        }
                    }
                    Err(e) => {
                        pipe.stats_write_errors += 1;
                        log(format_args!("stats: {e:#} (capture goes on)"));
                    }
                }
            }
        }
        let now = Instant::now();
        let mut wake = now + Duration::from_millis(200);
        if let Some(t) = next_hook {
            wake = wake.min(t);
        }
        if let Some(t) = next_report {
            wake = wake.min(t);
        }
        if let Some(d) = deadline {
            if now >= d {
                break;
            }
            wake = wake.min(d);
        }
        match signals.wait(wake.saturating_duration_since(now)) {
            Some(sig @ (libc::SIGINT | libc::SIGTERM)) => {
                if let Some(s) = &o.hooks.stopped_by {
                    s.store(sig, Relaxed);
                }
                break;
            }
            Some(libc::SIGHUP) => {
                reopen_alerts.fetch_add(1, std::sync::atomic::Ordering::Release);
                // A report that cannot be made or written is logged and counted; capture
                // goes on.
                match collect(iface, &prog, &readers, &pipe, &mode, started, &start) {
                    Ok(r) => {
                        log(line(&r, None));
                        if let Some(p) = &o.stats_json {
                            if let Err(e) = write_json(p, &r) {
                                pipe.stats_write_errors += 1;
                                log(format_args!("--stats-json: {e:#} (capture goes on)"));
                            }
                        }
                    }
                    Err(e) => {
                        pipe.stats_write_errors += 1;
                        log(format_args!("stats: {e:#} (capture goes on)"));
                    }
                }
                if reload_wanted(&o) {
                    reload = true;
                    break;
                }
            }
            _ => {}
        }
        if let Some(hub) = &o.metrics {
            let r = collect(iface, &prog, &readers, &pipe, &mode, started, &start);
            publish_metrics(hub, r, &pipe.shards);
        }
        if !iface_exists(iface) {
            failure = Some(anyhow!("{iface}: the interface disappeared"));
            break;
        }
        if let Some(r) = readers
            .iter_mut()
            .find(|r| r.handle.as_ref().is_some_and(|h| h.is_finished()))
        {
            let res = r.handle.take().expect("checked").join();
            failure = Some(match res {
                Ok(Err(e)) => e.context(format!("{iface} queue {}", r.queue)),
                Ok(Ok(())) => anyhow!("{iface} queue {}: reader stopped", r.queue),
                Err(_) => anyhow!("{iface} queue {}: reader panicked", r.queue),
            });
            break;
        }
        if let (Some(t), Some(i)) = (next_report, interval) {
            if Instant::now() >= t {
                match collect(iface, &prog, &readers, &pipe, &mode, started, &start) {
                    Ok(r) => {
                        let pr = prev.as_ref().map(|(p, at)| (p, at.elapsed().as_secs_f64()));
                        log(line(&r, pr));
                        prev = Some((r, Instant::now()));
                    }
                    Err(e) => {
                        pipe.stats_write_errors += 1;
                        log(format_args!("stats: {e:#} (capture goes on)"));
                    }
                }
                next_report = Some(t + i);
            }
        }
    }

    // Shutdown: no new frames, drain, final counters.
    drop(napi);
    let detach = prog.detach();
    // A reload's pause begins here: read right after the detach, so that a frame is
    // either captured by this run or counted as uncaptured by the next (up to the frames
    // in flight between the two reads: microseconds).
    let gap = reload.then(|| ReloadGap {
        detached_ns: crate::capture::sys::monotonic_ns(),
        rx_packets: crate::capture::sys::iface_rx_packets(iface),
    });
    std::thread::sleep(Duration::from_millis(20)); // in-flight NAPI polls finish
    stop.store(true, Relaxed);
    for r in &mut readers {
        if let Some(h) = r.handle.take() {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failure.get_or_insert(e.context(format!("{iface} queue {}", r.queue)));
                }
                Err(_) => {
                    failure.get_or_insert(anyhow!("{iface} queue {}: reader panicked", r.queue));
                }
            }
        }
    }
    // Readers are gone, so are their rings' producers: the shards drain, flush their
    // flows (scoring them) and drop their incomplete windows, and report the end of time
    // to the evidence writer.
    let mut sorters = Vec::new();
    let (mut scorers, failed) = pipe.threads.take().map(|t| t.join()).unwrap_or_default();
    for s in &mut scorers {
        if let Some(e) = s.io_error() {
            pipe.flows_write_errors += 1;
            log(format_args!("--flows-out: buffering flows: {e}"));
        }
        if let Some(so) = s.take_flow_sorter() {
            sorters.push(so);
        }
    }
    if let Some(f) = failed.first() {
        failure.get_or_insert(RunFailed(f.to_string()).into());
    }
    // Per profile: what its detectors scored (over all shards) and the highest score.
    for (pi, p) in cfg.profiles.iter().enumerate() {
        let (mut w, mut f, mut max) = (0u64, 0u64, 0.0f64);
        for s in &scorers {
            if let Some(&(_, sw, sf, sm)) = s.detector_summary().get(pi) {
                w += sw;
                f += sf;
                max = max.max(sm);
            }
        }
        log(format_args!(
            "profile {}: {w} windows and {f} flows scored, highest score {max:.3}",
            p.name
        ));
    }
    // The scorers hold the last alert senders: dropping them lets the writer copy what
    // is pending (up to the rings' heads), write it and finish.
    drop(scorers);
    if let Some(s) = pipe.saver.take() {
        s.join();
    }
    if let Some(w) = pipe.writer.take() {
        pipe.writer_final = Some(w.join());
    }
    // The scorers (flow senders) and the writer (the NATS sink) are gone: the exporter
    // sends what it holds, the NATS thread publishes what the drain time allows.
    let mut sinks_final = Snapshot::new();
    if let Some(x) = pipe.ipfix.take() {
        sinks_final.extend(x.join());
    }
    if let Some(n) = pipe.nats.take() {
        sinks_final.extend(n.finish());
    }
    pipe.sinks_final = Some(sinks_final);
    if let Some(p) = &o.flows_out {
        if pipe.flows_write_errors == 0 {
            let res = OutputFile::create(p, &[])
                .map_err(std::io::Error::other)
                .and_then(|mut f| {
                    let n = crate::engine::pipeline::write_sorted_flows(
                        &mut f.w, jsonl, cfg.splt, sorters,
                    )?;
                    f.commit().map_err(std::io::Error::other)?;
                    Ok(n)
                });
            match res {
                Ok(n) => pipe.flows_written = n,
                Err(e) => {
                    pipe.flows_write_errors += 1;
                    log(format_args!("--flows-out {}: {e}", p.display()));
                }
            }
        }
    }
    let last = collect(iface, &prog, &readers, &pipe, &mode, started, &start);
    if let Some(hub) = &o.metrics {
        if let Ok(r) = &last {
            publish_report(hub, r, &pipe.shards);
        }
    }
    match last {
        Ok(r) => {
            log(format_args!(
                "summary: {} | {:.1} kpps average over {:.1} s",
                line(&r, None),
                r.packets_received as f64 / r.duration_s.max(1e-9) / 1e3,
                r.duration_s
            ));
            if let Some(p) = &o.stats_json {
                if let Err(e) = write_json(p, &r) {
                    failure.get_or_insert(e.context("--stats-json"));
                }
            }
        }
        Err(e) => {
            failure.get_or_insert(e);
        }
    }
    drop(signals);
    detach?;
    match failure {
        Some(e) => Err(e),
        None => match gap {
            Some(g) => Ok(Ended::Reload(g)),
            None => Ok(Ended::Stopped),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::ReloadGap;

    #[test]
    fn reload_gap_round_trips_and_reports_the_pause() {
        let g = ReloadGap {
            detached_ns: 5_000_000_000,
            rx_packets: Some(100),
        };
        assert_eq!(ReloadGap::decode(&g.encode()), Some(g));
        let unknown = ReloadGap {
            rx_packets: None,
            ..g
        };
        assert_eq!(ReloadGap::decode(&unknown.encode()), Some(unknown));
        for bad in ["", "5", "x:1", "5:y", "5:1:2"] {
            assert_eq!(ReloadGap::decode(bad), None, "{bad}");
        }
        let r = g.report(5_250_000_000, Some(350), Some(360));
        assert_eq!(r["pause_ms"].as_f64(), Some(250.0));
        assert_eq!(r["frames_uncaptured"].as_u64(), Some(250));
        assert_eq!(r["frames_during_attach"].as_u64(), Some(10));
        let r = unknown.report(5_250_000_000, Some(350), None);
        assert!(r["frames_uncaptured"].is_null() && r["frames_during_attach"].is_null());
    }
}
