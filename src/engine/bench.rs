//! The bench mode's runs (`streamml-sensor bench`): the engine's own pipelines with
//! sampled stage latencies and counters watched while they run.
//!
//! - [`run_synthetic`]: the in-process generator ([`GenSource`]) is the reader's source
//!   (the replay pipeline: one reader loop, S scorer shards, evidence ring and writer,
//!   detection on). As fast as it goes, the reader waits for the scorers (the pipeline's
//!   own ceiling); at a fixed rate a full ring drops and counts, as live capture does.
//! - [`run_generate`]: a private namespace pair and veth ([`VethLab`]), live capture
//!   (the live engine, in this process, on a thread moved into the sensor's namespace)
//!   on the near end, `streamml-pktgen` on the far end for each trial; a fixed rate, the
//!   generator's maximum, or an RFC 2544 zero-loss search (binary search on the offered
//!   rate for the highest one with nothing lost over a trial).
//! - [`run_passive`]: live capture on an interface while something else sends.
//!
//! Nothing here prints: progress goes to a callback, the result is a [`BenchReport`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::Serialize;

use crate::capture::gen::{GenConfig, GenSource};
use crate::capture::netns::{self, VethLab};
use crate::config::Config;
use crate::engine::live::{LiveHooks, LiveOptions, StatsReport};
use crate::engine::replay::{self, ReplayHooks, ReplayWatch};
use crate::evidence::statedir::StateDir;
use crate::shard::FullPolicy;
use crate::stats::{Percentiles, Snapshot, StageLatency};

/// One status update (about once a second).
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// Seconds since the run started.
    pub t_s: f64,
    /// What is being done ("synthetic", "trial 3/8 at 1.20 Mpps", ...).
    pub phase: String,
    /// Frames offered per second over the last interval (generated, or the trial's rate).
    pub offered_pps: f64,
    /// Frames received per second over the last interval.
    pub received_pps: f64,
    /// Frames lost so far (every named reason).
    pub drops: u64,
    /// p99 of the frame-timestamp → reader latency so far in this phase, ns.
    pub p99_ns: u64,
    /// CPU use of the whole process over the last interval, percent of one core.
    pub cpu_pct: f64,
}

/// A point of the timeline (the plot's data).
pub type TimelinePoint = Progress;

/// One trial of `--generate`.
#[derive(Debug, Clone, Serialize)]
pub struct Trial {
    pub n: u32,
    /// The rate asked of the generator, frames/s in total (0: as fast as it goes).
    pub requested_pps: f64,
    /// What it sent, per second of the trial.
    pub offered_pps: f64,
    pub seconds: f64,
    pub sent: u64,
    pub received: u64,
    /// Frames lost, by named reason (before and after the sockets).
    pub drops: BTreeMap<String, u64>,
    /// sent − received − drops before the sockets (0 when everything is counted).
    pub unaccounted: i64,
    pub zero_loss: bool,
    pub latency: BTreeMap<String, Percentiles>,
    /// Seconds after the run's start at which the trial began and ended.
    pub start_s: f64,
    pub end_s: f64,
}

/// The machine a run was made on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub cpu_model: String,
    pub kernel: String,
    /// 1-minute load average when the run started.
    pub load_average: f64,
}

impl Machine {
    pub fn here() -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let load_average = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0.0);
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel,
            load_average,
        }
    }
}

/// What a bench run measured. Every field is documented in docs/bench.md (the test
/// suite checks that each is there and filled).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// "synthetic", "generate" or "passive".
    pub mode: String,
    pub machine: Machine,
    pub settings: serde_json::Value,
    pub duration_s: f64,
    /// Frames the generator sent (synthetic: generated; generate: completed by the
    /// generator's sockets over every trial; passive: what reached the XDP program).
    pub generated: u64,
    /// Frames that reached a scorer's flow table (synthetic) or the sensor's readers
    /// (generate, passive).
    pub received: u64,
    /// Every drop counter by name (0 when nothing was lost there).
    pub drops: BTreeMap<String, u64>,
    /// generated − received − drops on the frames' path (0: every frame is accounted for).
    pub unaccounted: i64,
    /// How many frames may legitimately be unaccounted (in flight when the counters were
    /// read); 0: read after the pipeline drained.
    pub in_flight_tolerance: u64,
    pub received_pps: f64,
    pub received_bps: f64,
    /// received_pps divided by the scorer shards.
    pub pps_per_scorer_core: f64,
    /// Frames received per CPU second of the scorer threads (`scorer-*`): what one scorer
    /// core would take if it had the core to itself (on a shared machine the wall-clock
    /// rate above is bounded by the CPU the scheduler gave).
    pub pps_per_scorer_cpu_second: f64,
    /// Frames received per CPU second of the reader threads (`xsk-q*`; synthetic: the
    /// main thread, which also runs the generator).
    pub pps_per_reader_cpu_second: f64,
    pub shards: Vec<ShardRate>,
    pub queues: Vec<QueueRate>,
    pub latency: BTreeMap<String, Percentiles>,
    /// The latency sampling: one frame in N at the reader, one ring chunk in M at a
    /// scorer, one Half-Space Trees call in K.
    pub latency_sampling: serde_json::Value,
    /// CPU seconds per thread (name → seconds) and of the whole process.
    pub cpu_seconds: BTreeMap<String, f64>,
    pub cpu_seconds_process: f64,
    /// Peak resident memory of the process, bytes.
    pub rss_max_bytes: u64,
    pub detection: BTreeMap<String, u64>,
    /// Every named counter of the pipeline at the end.
    pub pipeline: Snapshot,
    pub timeline: Vec<TimelinePoint>,
    /// `--generate`: each trial.
    pub trials: Vec<Trial>,
    /// `--generate` search: the highest offered rate with zero loss (frames/s), or null.
    pub zero_loss_pps: Option<f64>,
    /// Set when a signal stopped the run (its number).
    pub interrupted_by_signal: Option<i32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShardRate {
    pub shard: usize,
    pub packets: u64,
    pub pps: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueueRate {
    pub queue: u32,
    pub packets: u64,
    pub pps: f64,
    pub bps: f64,
}

/// CPU ticks per second (`sysconf(_SC_CLK_TCK)`, 100 on Linux).
fn clk_tck() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |v| v as f64)
}

/// user+system ticks from a /proc stat line (fields 14 and 15, after the comm).
fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat[open + 1..close].to_string();
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let u: u64 = f.get(11)?.parse().ok()?;
    let s: u64 = f.get(12)?.parse().ok()?;
    Some((comm, u + s))
}

/// The process's CPU seconds (threads that ended included).
pub fn process_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_ticks(&s))
        .map_or(0.0, |(_, t)| t as f64 / clk_tck())
}

/// CPU seconds per thread, by thread id: (name, seconds).
fn thread_cpu() -> BTreeMap<u64, (String, f64)> {
    let mut m = BTreeMap::new();
    let hz = clk_tck();
    if let Ok(d) = std::fs::read_dir("/proc/self/task") {
        for e in d.filter_map(Result::ok) {
            let Ok(tid) = e.file_name().to_string_lossy().parse::<u64>() else {
                continue;
            };
            if let Some((comm, t)) = std::fs::read_to_string(e.path().join("stat"))
                .ok()
                .and_then(|s| stat_ticks(&s))
            {
                m.insert(tid, (comm, t as f64 / hz));
            }
        }
    }
    m
}

/// Peak resident memory (VmHWM), bytes.
pub fn rss_max_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .map_or(0, |kb: u64| kb * 1024)
}

/// Per-thread CPU as last seen: threads that ended keep their last reading (so a thread
/// loses at most one sampling interval).
#[derive(Default)]
struct ThreadCpu {
    seen: BTreeMap<u64, (String, f64)>,
}

impl ThreadCpu {
    fn sample(&mut self) {
        for (tid, v) in thread_cpu() {
            self.seen.insert(tid, v);
        }
    }

    /// name → seconds; several threads of one name are numbered (`name#2`).
    fn by_name(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (name, s) in self.seen.values() {
            let mut k = name.clone();
            let mut i = 2;
            while out.contains_key(&k) {
                k = format!("{name}#{i}");
                i += 1;
            }
            out.insert(k, *s);
        }
        out
    }
}

/// Frames per CPU second of the threads whose name starts with one of `prefixes`.
fn per_cpu_second(frames: u64, cpu: &BTreeMap<String, f64>, prefixes: &[&str]) -> f64 {
    let s: f64 = cpu
        .iter()
        .filter(|(k, _)| prefixes.iter().any(|p| k.starts_with(p)))
        .map(|(_, v)| v)
        .sum();
    if s > 0.0 {
        frames as f64 / s
    } else {
        0.0
    }
}

fn latency_map(l: &StageLatency) -> BTreeMap<String, Percentiles> {
    l.stages()
        .iter()
        .map(|(k, v)| (k.to_string(), v.percentiles()))
        .collect()
}

fn latency_sampling() -> serde_json::Value {
    serde_json::json!({
        "reader_one_frame_in": StageLatency::EVERY,
        "scorer_one_chunk_in": StageLatency::CHUNK_EVERY,
        "scorer_chunk_max_messages": 256,
        "hst_one_call_in": StageLatency::HST_EVERY,
        "clock": "CLOCK_REALTIME through the vDSO (no system call)",
    })
}

const DETECTION_KEYS: [&str; 6] = [
    "detect.windows_scored",
    "detect.flows_scored",
    "detect.alerts",
    "alerts.written",
    "evidence.files_written",
    "evidence.packets_written",
];

fn detection(s: &Snapshot) -> BTreeMap<String, u64> {
    DETECTION_KEYS
        .iter()
        .map(|k| (k.to_string(), s.get(*k).copied().unwrap_or(0)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Synthetic

/// `bench --synthetic`.
pub struct SyntheticJob {
    pub gen: GenConfig,
    pub cfg: Config,
    pub shards: usize,
    pub state: StateDir,
    /// Asked once per generator batch whether to stop (a signal).
    pub stop: Option<fn() -> bool>,
    pub settings: serde_json::Value,
}

/// Runs the in-process generator through the replay pipeline; `progress` is called
/// about once a second from a watcher thread.
pub fn run_synthetic(
    job: SyntheticJob,
    progress: Box<dyn FnMut(&Progress) + Send>,
) -> anyhow::Result<BenchReport> {
    let machine = Machine::here();
    let latency = Arc::new(StageLatency::default());
    let mut src = GenSource::new(job.gen.clone(), job.stop).map_err(anyhow::Error::msg)?;
    let generated = src.generated.clone();
    let done = Arc::new(AtomicBool::new(false));
    type Watcher = std::thread::JoinHandle<(Vec<TimelinePoint>, ThreadCpu)>;
    let watcher: Arc<Mutex<Option<Watcher>>> = Arc::default();
    let policy = if job.gen.rate_pps.is_some() {
        FullPolicy::Drop
    } else {
        FullPolicy::Wait
    };
    let started = Instant::now();
    let on_start = {
        let (done, latency, watcher, generated) = (
            done.clone(),
            latency.clone(),
            watcher.clone(),
            generated.clone(),
        );
        let mut progress = progress;
        move |w: ReplayWatch| {
            let h = std::thread::Builder::new()
                .name("bench-status".into())
                .spawn(move || {
                    let mut timeline = Vec::new();
                    let mut cpu = ThreadCpu::default();
                    let mut last = (Instant::now(), 0u64, 0u64, process_cpu_seconds());
                    let mut next = Instant::now() + Duration::from_secs(1);
                    while !done.load(Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                        // Every 100 ms: a thread that ends loses at most that much.
                        cpu.sample();
                        if Instant::now() < next {
                            continue;
                        }
                        next += Duration::from_secs(1);
                        let gen = generated.get();
                        let recv: u64 = w.flows.iter().map(|f| f.packets.get()).sum();
                        let drops = w.pipeline.router.ring_full.get()
                            + w.pipeline
                                .reader
                                .frames
                                .get()
                                .saturating_sub(w.pipeline.reader.decoded.get());
                        let now = Instant::now();
                        let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
                        let c = process_cpu_seconds();
                        let p = Progress {
                            t_s: started.elapsed().as_secs_f64(),
                            phase: "synthetic".into(),
                            offered_pps: (gen - last.1) as f64 / dt,
                            received_pps: recv.saturating_sub(last.2) as f64 / dt,
                            drops,
                            p99_ns: latency.ts_to_scorer.percentiles().p99_ns,
                            cpu_pct: (c - last.3) / dt * 100.0,
                        };
                        last = (now, gen, recv, c);
                        progress(&p);
                        timeline.push(p);
                    }
                    cpu.sample();
                    (timeline, cpu)
                })
                .ok();
            *watcher.lock().unwrap_or_else(|p| p.into_inner()) = h;
        }
    };
    let hooks = ReplayHooks {
        policy,
        latency: Some(latency.clone()),
        on_start: Some(Box::new(on_start)),
        metrics: None,
    };
    let shards = job.shards;
    let out = replay::run_replay_with(&mut src, job.cfg, job.state, shards, None, hooks);
    let wall = started.elapsed().as_secs_f64();
    done.store(true, Relaxed);
    let h = watcher.lock().unwrap_or_else(|p| p.into_inner()).take();
    let (timeline, mut cpu) = h
        .and_then(|h| h.join().ok())
        .unwrap_or_else(|| (Vec::new(), ThreadCpu::default()));
    cpu.sample();
    let out = out?;
    let s = &out.stats;
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    let generated = generated.get();
    let received = g("flow.packets");
    let mut drops: BTreeMap<String, u64> = s
        .iter()
        .filter(|(k, _)| k.starts_with("decoder."))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for k in crate::stats::DROPS {
        drops.insert(k.to_string(), g(k));
    }
    let path_drops: u64 = drops
        .iter()
        .filter(|(k, _)| k.starts_with("decoder.") || *k == "shard.ring_full")
        .map(|(_, v)| v)
        .sum();
    let unaccounted = generated as i64 - received as i64 - path_drops as i64;
    let bytes = g("reader.bytes");
    let rate = received as f64 / wall.max(1e-9);
    // Per shard: flow.packets of each shard is not kept apart in the snapshot; the
    // watcher's counters are, so read them from the run's outcome per shard.
    let shards_v = out
        .per_shard_packets
        .iter()
        .enumerate()
        .map(|(i, &p)| ShardRate {
            shard: i,
            packets: p,
            pps: p as f64 / wall.max(1e-9),
        })
        .collect();
    Ok(BenchReport {
        mode: "synthetic".into(),
        machine,
        settings: job.settings,
        duration_s: wall,
        generated,
        received,
        drops,
        unaccounted,
        in_flight_tolerance: 0,
        received_pps: rate,
        received_bps: bytes as f64 * 8.0 / wall.max(1e-9),
        pps_per_scorer_core: rate / shards.max(1) as f64,
        pps_per_scorer_cpu_second: per_cpu_second(received, &cpu.by_name(), &["scorer-"]),
        pps_per_reader_cpu_second: per_cpu_second(
            g("reader.frames"),
            &cpu.by_name(),
            &["streamml-sensor"],
        ),
        shards: shards_v,
        queues: vec![QueueRate {
            queue: 0,
            packets: g("reader.frames"),
            pps: g("reader.frames") as f64 / wall.max(1e-9),
            bps: bytes as f64 * 8.0 / wall.max(1e-9),
        }],
        latency: latency_map(&latency),
        latency_sampling: latency_sampling(),
        cpu_seconds: cpu.by_name(),
        cpu_seconds_process: process_cpu_seconds(),
        rss_max_bytes: rss_max_bytes(),
        detection: detection(s),
        pipeline: out.stats.clone(),
        timeline,
        trials: Vec::new(),
        zero_loss_pps: None,
        interrupted_by_signal: crate::capture::interrupt::requested(),
    })
}

// ---------------------------------------------------------------------------------------
// Live runs (generate, passive)

/// The live counters the bench reads while capture runs.
#[derive(Debug, Clone, Default)]
struct LiveSample {
    packets: u64,
    drops: BTreeMap<String, u64>,
}

impl LiveSample {
    fn of(r: &StatsReport) -> LiveSample {
        LiveSample {
            packets: r.packets_received,
            drops: r
                .drops
                .iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect(),
        }
    }

    /// Drops on the frames' way to the sockets and in the reader (the packet path).
    fn path_drops(&self) -> u64 {
        self.drops
            .iter()
            .filter(|(k, _)| is_path_drop(k))
            .map(|(_, v)| v)
            .sum()
    }
}

/// Frames dropped before the sockets: the generator's peer, the XDP program, the kernel's
/// socket statistics. Of the kernel's, only `rx_dropped` and `rx_ring_full` count frames:
/// `rx_fill_ring_empty_descs` is a cause that copy mode also counts in `rx_dropped` (the
/// kernel increments both for one frame that finds the fill ring empty; summing both
/// counted each such frame twice), and `rx_invalid_descs` counts bad fill descriptors,
/// skipped (a frame that then finds none is in `rx_dropped`). Both stay in `drops`, by
/// name, and a trial with either moved is not zero loss.
fn is_pre_socket_drop(k: &str) -> bool {
    matches!(k, "peer.tx_dropped" | "rx_dropped" | "rx_ring_full") || k.starts_with("xdp.")
}

/// Counters that name the cause of a drop counted elsewhere (see [`is_pre_socket_drop`]).
fn is_drop_cause(k: &str) -> bool {
    matches!(k, "rx_fill_ring_empty_descs" | "rx_invalid_descs")
}

/// Every drop of a frame on its path (before the sockets, the decoder, the shard rings).
fn is_path_drop(k: &str) -> bool {
    is_pre_socket_drop(k) || k.starts_with("decoder.") || k == "shard.ring_full"
}

/// Shared between the capture thread's hook and the driver.
#[derive(Default)]
struct LiveLink {
    latest: Mutex<Option<(Instant, LiveSample)>>,
    reports: std::sync::atomic::AtomicU64,
    stop: AtomicBool,
}

/// Live capture on a thread (in `netns`, when given), with the bench's hooks.
struct LiveRun {
    link: Arc<LiveLink>,
    handle: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    stopped_by: Arc<AtomicI32>,
    stats_json: PathBuf,
}

impl LiveRun {
    fn start(
        mut o: LiveOptions,
        lab: Option<&VethLab>,
        latency: Arc<StageLatency>,
        stats_json: PathBuf,
    ) -> anyhow::Result<LiveRun> {
        let link = Arc::new(LiveLink::default());
        let stopped_by = Arc::new(AtomicI32::new(0));
        let hook_link = link.clone();
        o.stats_json = Some(stats_json.clone());
        o.report_interval = 0.0;
        o.duration = None;
        // A bench run does not reload its configuration on SIGHUP.
        o.reload = None;
        o.hooks = LiveHooks {
            latency: Some(latency),
            on_report: Some(Arc::new(move |r: &StatsReport| {
                *hook_link.latest.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((Instant::now(), LiveSample::of(r)));
                hook_link.reports.fetch_add(1, Relaxed);
                !hook_link.stop.load(Relaxed)
            })),
            report_every: Duration::from_millis(100),
            stopped_by: Some(stopped_by.clone()),
        };
        let ns = lab.map(|l| l.ns_sensor.clone());
        let handle = std::thread::Builder::new()
            .name("bench-capture".into())
            .spawn(move || {
                if let Some(ns) = ns {
                    netns::enter(&ns).with_context(|| format!("entering namespace {ns}"))?;
                }
                crate::engine::live::run(o).map(|_| ())
            })
            .context("starting the capture thread")?;
        Ok(LiveRun {
            link,
            handle: Some(handle),
            stopped_by,
            stats_json,
        })
    }

    fn finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Waits (bounded) until capture runs (its first report).
    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let end = Instant::now() + Duration::from_secs(30);
        while self.link.reports.load(Relaxed) == 0 {
            if self.finished() {
                return Err(self
                    .join()
                    .err()
                    .unwrap_or_else(|| anyhow!("capture stopped")));
            }
            if Instant::now() > end {
                bail!("capture did not start within 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The latest counters and a report count that moves on with each new one.
    fn latest(&self) -> (u64, LiveSample) {
        let n = self.link.reports.load(Relaxed);
        let s = self
            .link
            .latest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        (n, s)
    }

    /// A report taken after this call (bounded wait).
    fn fresh(&self) -> LiveSample {
        let n0 = self.link.reports.load(Relaxed);
        let end = Instant::now() + Duration::from_secs(2);
        while self.link.reports.load(Relaxed) < n0 + 2 && Instant::now() < end && !self.finished() {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.latest().1
    }

    /// Waits until the counters stop moving (frames in flight have arrived): three
    /// reports in a row with the same received and dropped counts, at most 3 s.
    fn settled(&self) -> LiveSample {
        let end = Instant::now() + Duration::from_secs(3);
        let mut prev = self.fresh();
        let mut same = 0;
        while same < 3 && Instant::now() < end && !self.finished() {
            let cur = self.fresh();
            if cur.packets == prev.packets && cur.path_drops() == prev.path_drops() {
                same += 1;
            } else {
                same = 0;
            }
            prev = cur;
        }
        prev
    }

    fn join(&mut self) -> anyhow::Result<()> {
        self.link.stop.store(true, Relaxed);
        match self.handle.take() {
            Some(h) => h
                .join()
                .unwrap_or_else(|_| Err(anyhow!("the capture thread panicked"))),
            None => Ok(()),
        }
    }

    /// Stops capture and reads its final stats document.
    fn finish(mut self) -> anyhow::Result<(serde_json::Value, Option<i32>)> {
        self.join()?;
        let doc: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&self.stats_json)
                .with_context(|| format!("reading {}", self.stats_json.display()))?,
        )
        .context("the capture's stats")?;
        let sig = match self.stopped_by.load(Relaxed) {
            0 => None,
            s => Some(s),
        };
        Ok((doc, sig))
    }
}

impl Drop for LiveRun {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// How `--generate` chooses its offered rates.
#[derive(Debug, Clone, PartialEq)]
pub enum RateMode {
    /// One trial at this many frames/s in total.
    Fixed(f64),
    /// One trial as fast as the generator sends.
    Max,
    /// RFC 2544 throughput: a trial at the generator's maximum, then a binary search.
    Search {
        /// Stop when the bracket is narrower than this fraction of the upper end.
        resolution: f64,
        max_trials: u32,
    },
}

/// `bench --generate`.
pub struct GenerateJob {
    /// Live capture's options; `iface` and `queues` are replaced by the lab's.
    pub live: LiveOptions,
    pub queues: u32,
    pub size: usize,
    pub flows: u32,
    /// streamml-pktgen's `--proto`: `udp` or `tcp-syn`.
    pub proto: String,
    pub trial: Duration,
    pub rate: RateMode,
    pub pktgen: PathBuf,
    /// Work directory (the capture's stats file).
    pub work: PathBuf,
    pub settings: serde_json::Value,
}

/// The next rate of a binary search with `lo` passing (0: none yet) and `hi` failing, or
/// None when the bracket is within `resolution` of `hi`.
pub fn next_search_rate(lo: f64, hi: f64, resolution: f64) -> Option<f64> {
    if hi <= 0.0 || (hi - lo) <= resolution * hi {
        None
    } else {
        Some((lo + hi) / 2.0)
    }
}

/// A running generator child process (ours: killed by its PID on drop).
struct Pktgen {
    child: std::process::Child,
}

impl Drop for Pktgen {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

struct Driver<'a> {
    job: Option<&'a GenerateJob>,
    lab: Option<&'a VethLab>,
    run: &'a LiveRun,
    latency: &'a StageLatency,
    started: Instant,
    progress: Box<dyn FnMut(&Progress) + Send + 'a>,
    timeline: Vec<Progress>,
    /// At the last tick: when, frames received, process CPU seconds, frames that reached
    /// the host (received + dropped before the sockets).
    last: (Instant, u64, f64, u64),
}

impl Driver<'_> {
    /// A status update; `offered_pps` 0 (the generator's maximum): what reached the host.
    fn tick(&mut self, phase: &str, offered_pps: f64) {
        let (_, s) = self.run.latest();
        let now = Instant::now();
        let dt = now.duration_since(self.last.0).as_secs_f64().max(1e-9);
        let c = process_cpu_seconds();
        let pre: u64 = s
            .drops
            .iter()
            .filter(|(k, _)| is_pre_socket_drop(k))
            .map(|(_, v)| v)
            .sum();
        let arrived = s.packets + pre;
        let offered_pps = if offered_pps > 0.0 {
            offered_pps
        } else {
            arrived.saturating_sub(self.last.3) as f64 / dt
        };
        let p = Progress {
            t_s: self.started.elapsed().as_secs_f64(),
            phase: phase.to_string(),
            offered_pps,
            received_pps: s.packets.saturating_sub(self.last.1) as f64 / dt,
            drops: s.path_drops(),
            p99_ns: self.latency.ts_to_reader.percentiles().p99_ns,
            cpu_pct: (c - self.last.2) / dt * 100.0,
        };
        self.last = (now, s.packets, c, arrived);
        (self.progress)(&p);
        self.timeline.push(p);
    }

    /// One trial at `pps` in total (0: as fast as the generator goes). None: capture
    /// stopped (a signal) during it.
    fn trial(&mut self, n: u32, of: u32, pps: f64) -> anyhow::Result<Option<Trial>> {
        let (Some(job), Some(lab)) = (self.job, self.lab) else {
            bail!("a trial needs the generator and its namespaces");
        };
        let q = job.queues;
        let secs = job.trial.as_secs_f64();
        let phase = if pps > 0.0 {
            format!("trial {n}/{of} at {:.3} Mpps", pps / 1e6)
        } else {
            format!("trial {n}/{of} at the generator's maximum")
        };
        let base = self.run.settled();
        let tx0 = lab.peer_stat("tx_dropped").map_err(anyhow::Error::msg)?;
        for (_, l) in self.latency.stages().iter().take(3) {
            l.reset();
        }
        let per_queue = pps / f64::from(q);
        let count = if pps > 0.0 {
            (per_queue * secs).ceil().max(1.0) as u64
        } else {
            100_000_000_000
        };
        // Per queue, at least 1 frame/s (0 would mean as fast as it goes).
        let pps_arg = if pps > 0.0 {
            per_queue.round().max(1.0) as u64
        } else {
            0
        };
        let qlist: Vec<String> = (0..q).map(|i| i.to_string()).collect();
        let args: Vec<String> = vec![
            "netns".into(),
            "exec".into(),
            lab.ns_peer.clone(),
            job.pktgen.to_string_lossy().into_owned(),
            "--iface".into(),
            netns::PEER_IF.into(),
            "--queues".into(),
            qlist.join(","),
            "--count".into(),
            count.to_string(),
            "--pps".into(),
            pps_arg.to_string(),
            "--duration".into(),
            format!("{secs}"),
            "--size".into(),
            job.size.to_string(),
            "--flows".into(),
            job.flows.to_string(),
            "--proto".into(),
            job.proto.clone(),
            "--dst-mac".into(),
            netns::SENSOR_MAC.into(),
            "--src-mac".into(),
            netns::PEER_MAC.into(),
            "--src".into(),
            netns::PEER_ADDR.into(),
            "--dst".into(),
            netns::SENSOR_ADDR.into(),
        ];
        let start_s = self.started.elapsed().as_secs_f64();
        let child = std::process::Command::new("ip")
            .args(&args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("starting streamml-pktgen")?;
        let mut gen = Pktgen { child };
        // Bounded: the generator stops itself at --duration; past that and a margin it is
        // killed (by its PID).
        let end = Instant::now() + job.trial + Duration::from_secs(10);
        let mut next_tick = Instant::now() + Duration::from_secs(1);
        let status = loop {
            if let Some(s) = gen
                .child
                .try_wait()
                .context("waiting for streamml-pktgen")?
            {
                break s;
            }
            if self.run.finished() {
                return Ok(None); // a signal stopped capture; the generator is killed
            }
            if Instant::now() >= end {
                bail!("streamml-pktgen ran past its --duration (killed)");
            }
            if Instant::now() >= next_tick {
                next_tick += Duration::from_secs(1);
                self.tick(&phase, pps);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out = String::new();
        let mut err = String::new();
        use std::io::Read;
        if let Some(mut o) = gen.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        if let Some(mut e) = gen.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        if !status.success() {
            bail!("streamml-pktgen failed ({status}): {}", err.trim());
        }
        let v: serde_json::Value = serde_json::from_str(out.trim())
            .with_context(|| format!("streamml-pktgen's report {out:?}"))?;
        let sent = v["sent"].as_u64().unwrap_or(0);
        let gen_s = v["elapsed_s"].as_f64().unwrap_or(secs).max(1e-9);
        let after = self.run.settled();
        let end_s = self.started.elapsed().as_secs_f64();
        self.tick(&phase, sent as f64 / gen_s);
        let tx1 = lab.peer_stat("tx_dropped").map_err(anyhow::Error::msg)?;
        let mut drops: BTreeMap<String, u64> = after
            .drops
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.saturating_sub(*base.drops.get(k).unwrap_or(&0)),
                )
            })
            .collect();
        drops.insert("peer.tx_dropped".into(), tx1.saturating_sub(tx0));
        let received = after.packets - base.packets;
        let pre: u64 = drops
            .iter()
            .filter(|(k, _)| is_pre_socket_drop(k))
            .map(|(_, v)| v)
            .sum();
        let path: u64 = drops
            .iter()
            .filter(|(k, _)| is_path_drop(k))
            .map(|(_, v)| v)
            .sum();
        let unaccounted = sent as i64 - received as i64 - pre as i64;
        Ok(Some(Trial {
            n,
            requested_pps: pps,
            offered_pps: sent as f64 / gen_s,
            seconds: gen_s,
            sent,
            received,
            zero_loss: sent > 0
                && received == sent
                && path == 0
                && drops.iter().all(|(k, v)| !is_drop_cause(k) || *v == 0),
            drops,
            unaccounted,
            latency: latency_map(self.latency),
            start_s,
            end_s,
        }))
    }
}

/// `bench --generate`: see the module doc. Signals: SIGINT/SIGTERM stop capture (the
/// capture thread takes them), the generator is killed, the namespaces are deleted, and
/// the report says which signal.
pub fn run_generate(
    job: GenerateJob,
    progress: Box<dyn FnMut(&Progress) + Send>,
) -> anyhow::Result<BenchReport> {
    let machine = Machine::here();
    if !job.pktgen.exists() {
        bail!(
            "{}: streamml-pktgen not found (it is installed next to streamml-sensor; STREAMML_PKTGEN=PATH names another)",
            job.pktgen.display()
        );
    }
    // Blocked before any thread starts: every thread inherits the mask, and only the
    // capture loop's sigtimedwait takes them.
    let signals = crate::engine::live::Signals::block();
    let lab = VethLab::create(job.queues)
        .map_err(|e| anyhow!("creating the test namespaces and veth pair: {e}"))?;
    let latency = Arc::new(StageLatency::default());
    let mut live = job.live.clone();
    live.iface = netns::SENSOR_IF.into();
    live.queues = Some(job.queues);
    let mut run = LiveRun::start(
        live,
        Some(&lab),
        latency.clone(),
        job.work.join("capture-stats.json"),
    )?;
    run.wait_ready()?;
    let started = Instant::now();
    let first = run.latest().1;
    let first_arrived = first.packets
        + first
            .drops
            .iter()
            .filter(|(k, _)| is_pre_socket_drop(k))
            .map(|(_, v)| v)
            .sum::<u64>();
    let mut d = Driver {
        job: Some(&job),
        lab: Some(&lab),
        run: &run,
        latency: &latency,
        started,
        progress,
        timeline: Vec::new(),
        last: (
            Instant::now(),
            first.packets,
            process_cpu_seconds(),
            first_arrived,
        ),
    };
    let mut trials: Vec<Trial> = Vec::new();
    let mut best: Option<usize> = None;
    let mut interrupted = false;
    let res: anyhow::Result<()> = (|| {
        match &job.rate {
            RateMode::Fixed(r) => {
                let Some(t) = d.trial(1, 1, *r)? else {
                    interrupted = true;
                    return Ok(());
                };
                trials.push(t);
            }
            RateMode::Max => {
                let Some(t) = d.trial(1, 1, 0.0)? else {
                    interrupted = true;
                    return Ok(());
                };
                trials.push(t);
            }
            RateMode::Search {
                resolution,
                max_trials,
            } => {
                let of = *max_trials;
                let Some(t) = d.trial(1, of, 0.0)? else {
                    interrupted = true;
                    return Ok(());
                };
                let (mut lo, mut hi) = (0.0, t.offered_pps);
                if t.zero_loss {
                    best = Some(0);
                    lo = hi;
                }
                trials.push(t);
                while (trials.len() as u32) < of {
                    let Some(r) = next_search_rate(lo, hi, *resolution) else {
                        break;
                    };
                    let Some(t) = d.trial(trials.len() as u32 + 1, of, r)? else {
                        interrupted = true;
                        return Ok(());
                    };
                    if t.zero_loss {
                        lo = r;
                        best = Some(trials.len());
                    } else {
                        hi = r;
                    }
                    trials.push(t);
                }
            }
        }
        Ok(())
    })();
    let timeline = std::mem::take(&mut d.timeline);
    drop(d);
    let mut cpu = ThreadCpu::default();
    cpu.sample();
    let finished = run.finish();
    drop(lab); // the namespaces, the veth pair and the program on it
    let pending = signals.wait(Duration::ZERO);
    drop(signals);
    res?;
    let (doc, sig) = finished?;
    let sig = sig.or(pending);
    if interrupted && sig.is_none() {
        bail!("capture stopped during a trial");
    }
    let zero_loss_pps = match &job.rate {
        RateMode::Search { .. } => Some(best.map_or(0.0, |i| trials[i].offered_pps)),
        _ => None,
    };
    let shown = best.or(trials.len().checked_sub(1));
    let wall: f64 = trials.iter().map(|t| t.seconds).sum::<f64>().max(1e-9);
    let pipeline: Snapshot = serde_json::from_value(doc["pipeline"].clone()).unwrap_or_default();
    let mut drops: BTreeMap<String, u64> = BTreeMap::new();
    for t in &trials {
        for (k, v) in &t.drops {
            *drops.entry(k.clone()).or_insert(0) += v;
        }
    }
    if let Some(m) = doc["drops"].as_object() {
        for k in m.keys() {
            drops.entry(k.clone()).or_insert(0);
        }
    }
    let generated: u64 = trials.iter().map(|t| t.sent).sum();
    let received: u64 = trials.iter().map(|t| t.received).sum();
    let unaccounted: i64 = trials.iter().map(|t| t.unaccounted).sum();
    let (rate, bps) = shown.map_or((0.0, 0.0), |i| {
        let t = &trials[i];
        let r = t.received as f64 / t.seconds.max(1e-9);
        (r, r * job.size as f64 * 8.0)
    });
    let shards = doc["mode"]["shards"].as_u64().unwrap_or(1) as usize;
    let queues = doc["queues"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|q| {
                    let p = q["packets_received"].as_u64().unwrap_or(0);
                    let b = q["bytes_received"].as_u64().unwrap_or(0);
                    QueueRate {
                        queue: q["queue"].as_u64().unwrap_or(0) as u32,
                        packets: p,
                        pps: p as f64 / wall,
                        bps: b as f64 * 8.0 / wall,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let latency_shown = shown.map_or_else(|| latency_map(&latency), |i| trials[i].latency.clone());
    let mut latency_out = latency_shown;
    for k in ["hst_per_sample", "alert_to_evidence"] {
        let l = latency
            .stages()
            .iter()
            .find(|(n, _)| *n == k)
            .map(|(_, l)| l.percentiles())
            .unwrap_or_default();
        latency_out.insert(k.to_string(), l);
    }
    Ok(BenchReport {
        mode: "generate".into(),
        machine,
        settings: job.settings.clone(),
        duration_s: started.elapsed().as_secs_f64(),
        generated,
        received,
        drops,
        unaccounted,
        in_flight_tolerance: 0,
        received_pps: rate,
        received_bps: bps,
        pps_per_scorer_core: rate / shards.max(1) as f64,
        pps_per_scorer_cpu_second: per_cpu_second(received, &cpu.by_name(), &["scorer-"]),
        pps_per_reader_cpu_second: per_cpu_second(received, &cpu.by_name(), &["xsk-q"]),
        shards: per_shard(&doc, wall),
        queues,
        latency: latency_out,
        latency_sampling: latency_sampling(),
        cpu_seconds: cpu.by_name(),
        cpu_seconds_process: process_cpu_seconds(),
        rss_max_bytes: rss_max_bytes(),
        detection: detection(&pipeline),
        pipeline,
        timeline,
        trials,
        zero_loss_pps,
        interrupted_by_signal: sig,
    })
}

/// `bench --iface IF`: live capture on an interface of this namespace while something
/// else sends (an external pktgen, e.g. packaging/pktgen/pktgen.sh on another box).
pub struct PassiveJob {
    pub live: LiveOptions,
    pub duration: Duration,
    pub work: PathBuf,
    pub settings: serde_json::Value,
}

/// Captures for `job.duration` (or until SIGINT/SIGTERM) and reports what arrived. The
/// sender is not ours: `generated` is what reached the XDP program (`xdp.seen`); frames
/// the NIC dropped before it are only in the NIC's own counters (`ethtool -S`).
pub fn run_passive(
    job: PassiveJob,
    progress: Box<dyn FnMut(&Progress) + Send>,
) -> anyhow::Result<BenchReport> {
    let machine = Machine::here();
    let signals = crate::engine::live::Signals::block();
    let latency = Arc::new(StageLatency::default());
    let mut run = LiveRun::start(
        job.live.clone(),
        None,
        latency.clone(),
        job.work.join("capture-stats.json"),
    )?;
    run.wait_ready()?;
    let started = Instant::now();
    let first = run.latest().1;
    let mut d = Driver {
        job: None,
        lab: None,
        run: &run,
        latency: &latency,
        started,
        progress,
        timeline: Vec::new(),
        last: (
            Instant::now(),
            first.packets,
            process_cpu_seconds(),
            first.packets
                + first
                    .drops
                    .iter()
                    .filter(|(k, _)| is_pre_socket_drop(k))
                    .map(|(_, v)| v)
                    .sum::<u64>(),
        ),
    };
    let end = started + job.duration;
    let mut next = started + Duration::from_secs(1);
    while Instant::now() < end && !run.finished() {
        std::thread::sleep(Duration::from_millis(20));
        if Instant::now() >= next {
            next += Duration::from_secs(1);
            d.tick("passive", 0.0);
        }
    }
    let timeline = std::mem::take(&mut d.timeline);
    drop(d);
    let wall = started.elapsed().as_secs_f64().max(1e-9);
    let mut cpu = ThreadCpu::default();
    cpu.sample();
    let finished = run.finish();
    let pending = signals.wait(Duration::ZERO);
    drop(signals);
    let (doc, sig) = finished?;
    let sig = sig.or(pending);
    let pipeline: Snapshot = serde_json::from_value(doc["pipeline"].clone()).unwrap_or_default();
    let drops: BTreeMap<String, u64> = doc["drops"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default();
    let generated = doc["xdp"]["seen"].as_u64().unwrap_or(0);
    let received = doc["packets_received"].as_u64().unwrap_or(0);
    let pre: u64 = drops
        .iter()
        .filter(|(k, _)| is_pre_socket_drop(k))
        .map(|(_, v)| v)
        .sum();
    let bytes = doc["bytes_received"].as_u64().unwrap_or(0);
    let shards = doc["mode"]["shards"].as_u64().unwrap_or(1) as usize;
    let queues = doc["queues"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|q| {
                    let p = q["packets_received"].as_u64().unwrap_or(0);
                    let b = q["bytes_received"].as_u64().unwrap_or(0);
                    QueueRate {
                        queue: q["queue"].as_u64().unwrap_or(0) as u32,
                        packets: p,
                        pps: p as f64 / wall,
                        bps: b as f64 * 8.0 / wall,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    let rate = received as f64 / wall;
    Ok(BenchReport {
        mode: "passive".into(),
        machine,
        settings: job.settings,
        duration_s: wall,
        generated,
        received,
        drops,
        unaccounted: generated as i64 - received as i64 - pre as i64,
        in_flight_tolerance: 0,
        received_pps: rate,
        received_bps: bytes as f64 * 8.0 / wall,
        pps_per_scorer_core: rate / shards.max(1) as f64,
        pps_per_scorer_cpu_second: per_cpu_second(received, &cpu.by_name(), &["scorer-"]),
        pps_per_reader_cpu_second: per_cpu_second(received, &cpu.by_name(), &["xsk-q"]),
        shards: per_shard(&doc, wall),
        queues,
        latency: latency_map(&latency),
        latency_sampling: latency_sampling(),
        cpu_seconds: cpu.by_name(),
        cpu_seconds_process: process_cpu_seconds(),
        rss_max_bytes: rss_max_bytes(),
        detection: detection(&pipeline),
        pipeline,
        timeline,
        trials: Vec::new(),
        zero_loss_pps: None,
        interrupted_by_signal: sig,
    })
}

/// Per shard packets from the live stats document's `shards`.
fn per_shard(doc: &serde_json::Value, wall: f64) -> Vec<ShardRate> {
    doc["shards"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|sh| {
                    let p = sh["packets"].as_u64().unwrap_or(0);
                    ShardRate {
                        shard: sh["shard"].as_u64().unwrap_or(0) as usize,
                        packets: p,
                        pps: p as f64 / wall,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_bisects_until_the_resolution() {
        // Capacity 0.62 of the maximum: pass below, fail above.
        let cap = 0.62;
        let (mut lo, mut hi) = (0.0, 1.0);
        let mut n = 0;
        while let Some(r) = next_search_rate(lo, hi, 0.05) {
            if r <= cap {
                lo = r
            } else {
                hi = r
            }
            n += 1;
            assert!(n < 20);
        }
        assert!(lo <= cap && hi > cap, "{lo} {hi}");
        assert!(hi - lo <= 0.05, "{lo} {hi}");
        assert_eq!(n, 5);
        assert_eq!(next_search_rate(0.0, 0.0, 0.1), None);
    }

    #[test]
    fn proc_stat_fields() {
        let l = "123 (scorer 0) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0";
        assert_eq!(stat_ticks(l), Some(("scorer 0".into(), 300)));
        assert!(process_cpu_seconds() >= 0.0);
        assert!(rss_max_bytes() > 0);
    }
}
