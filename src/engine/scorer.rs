//! The scorer shard: one thread per shard owns a flow table, the window accumulators and
//! detectors of every profile, and sends alerts (with evidence requests) to the evidence
//! writer. Everything here runs on packet time.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::config::{Config, Scope as CfgScope};
use crate::detect::detector::{Detector, DetectorKind, Learn, Verdict};
use crate::detect::features::{flow_values, FLOW_FEATURES, HOST_FEATURES, WINDOW_FEATURES};
use crate::detect::host::{Beacon, Conn, HostState, BEACON_MAX_CV, N_HOST_VALUES};
use crate::detect::window::{WindowAcc, WindowVector};
use crate::engine::models::{Loaded, ModelSink};
use crate::evidence::alertlog::{
    Alert, AlertMode, FeatureContribution, FlowKey as EveKey, WindowSpan,
};
use crate::evidence::writer::{AlertSender, EvidenceLimits, EvidenceRequest, RecordFilter, Scope};
use crate::flow::export::FlowRecord;
use crate::flow::table::{Accounting, FlowTable};
use crate::flow::FlowState;
use crate::output::RunSorter;
use crate::shard::{self, KeyMode, PacketRecord, ShardWorker};
use crate::stats::{self, Counter, Snapshot, StageLatency};
use crate::wire::PacketMeta;

/// Named counters of one scorer shard.
#[derive(Debug, Default)]
pub struct ScorerCounters {
    pub windows_scored: Counter,
    /// Windows cut by the end of input, not scored.
    pub windows_incomplete: Counter,
    pub flows_scored: Counter,
    pub alerts: Counter,
    pub alerts_in_cooldown: Counter,
    pub evidence_queue_full: Counter,
    pub alerts_lost: Counter,
    /// Alerts beyond the profile's `max_alerts_per_min`, reported by summaries only.
    pub alerts_over_budget: Counter,
    /// Summary lines (`event_type` "anomaly_summary") written for them.
    pub alert_summaries: Counter,
    /// Active flows scored (`active_packets`, `active_interval_s`).
    pub flows_scored_active: Counter,
    /// Flow alerts raised while the flow was active.
    pub alerts_while_active: Counter,
    /// Flows scored but not learnt: they overlapped an open incident of the shard.
    pub flows_not_learnt: Counter,
    /// Windows scored but not learnt: they alerted (or would have, in cooldown).
    pub windows_not_learnt: Counter,
    /// Host events (connection starts) seen by host profiles.
    pub host_events: Counter,
    /// Host events scored by the trees.
    pub host_scored: Counter,
    /// Host events over the profile's `host_rate` (token bucket): not scored.
    pub host_skipped_rate: Counter,
    /// Host samples scored but not learnt (open incident, or they alerted).
    pub host_not_learnt: Counter,
    /// Host samples over the threshold whose host was never answered (a spoofed or
    /// unreachable source): not alerted.
    pub host_unanswered: Counter,
    /// Host pairs found beaconing (`detect::host::BEACON_MIN_CONNS`), alerting or not.
    pub host_beacons: Counter,
    /// Beacons not alerted because `beacon_ignore_hosts`/`beacon_ignore_ports` name them.
    pub host_beacons_ignored: Counter,
    /// Host, pair and socket table entries inserted and evicted (LRU), and live at the
    /// last clock tick: inserted = evicted + live.
    pub host_table_inserted: Counter,
    pub host_table_evicted: Counter,
    pub host_table_live: Counter,
}

impl ScorerCounters {
    pub fn snapshot_into(&self, s: &mut Snapshot) {
        stats::merge_into(
            s,
            [
                ("detect.windows_scored", self.windows_scored.get()),
                ("detect.windows_incomplete", self.windows_incomplete.get()),
                ("detect.flows_scored", self.flows_scored.get()),
                ("detect.alerts", self.alerts.get()),
                ("detect.alerts_in_cooldown", self.alerts_in_cooldown.get()),
                ("detect.evidence_queue_full", self.evidence_queue_full.get()),
                ("detect.alerts_lost", self.alerts_lost.get()),
                ("detect.alerts_over_budget", self.alerts_over_budget.get()),
                ("detect.alert_summaries", self.alert_summaries.get()),
                ("detect.flows_not_learnt", self.flows_not_learnt.get()),
                ("detect.flows_scored_active", self.flows_scored_active.get()),
                ("detect.alerts_while_active", self.alerts_while_active.get()),
                ("detect.windows_not_learnt", self.windows_not_learnt.get()),
                ("detect.host_events", self.host_events.get()),
                ("detect.host_scored", self.host_scored.get()),
                ("detect.host_skipped_rate", self.host_skipped_rate.get()),
                ("detect.host_not_learnt", self.host_not_learnt.get()),
                ("detect.host_unanswered", self.host_unanswered.get()),
                ("detect.host_beacons", self.host_beacons.get()),
                (
                    "detect.host_beacons_ignored",
                    self.host_beacons_ignored.get(),
                ),
                ("detect.host_table_inserted", self.host_table_inserted.get()),
                ("detect.host_table_evicted", self.host_table_evicted.get()),
                ("detect.host_table_live", self.host_table_live.get()),
            ],
        );
    }
}

/// Shared, read-only inputs of every scorer.
#[derive(Clone)]
pub struct ScorerSetup {
    pub cfg: Arc<Config>,
    pub shards: usize,
    pub key_mode: KeyMode,
    /// Where alerts go (None: kept in `Scorer::alerts`, for tests and benchmarks).
    pub sender: Option<AlertSender>,
    /// Replay: wait for room in the alert queue (lossless, deterministic).
    pub blocking: bool,
    /// Window-scope evidence filter per profile (shard membership + profile filter).
    pub window_filters: Vec<Option<WindowFilterFactory>>,
    /// Format exported flows into a sorted buffer (replay `--flows`).
    pub flow_output: Option<FlowOutputSetup>,
    /// Record every window vector with its score (evaluation).
    pub keep_windows: bool,
    /// Bench mode: sampled stage latencies (ring chunks, Half-Space Trees calls).
    pub latency: Option<Arc<StageLatency>>,
    /// Checkpoint the detectors into `models/` (warm restart, `engine::models`).
    pub models: Option<ModelSink>,
    /// Hand every exported flow to the IPFIX exporter (`--ipfix`).
    pub flow_export: Option<crate::sink::ipfix::FlowExportSender>,
}

/// Builds the evidence filter for a window alert of `(shard)`.
pub type WindowFilterFactory = Arc<dyn Fn(usize) -> RecordFilter + Send + Sync>;

#[derive(Clone)]
pub struct FlowOutputSetup {
    pub jsonl: bool,
    pub spill_dir: std::path::PathBuf,
}

/// One scored window, kept when `keep_windows` is set.
#[derive(Clone, Debug)]
pub struct ScoredWindow {
    pub profile: usize,
    pub shard: usize,
    pub vector: WindowVector,
    pub score: f64,
    pub alerted: bool,
}

struct ProfState {
    window: Option<(WindowAcc, Detector)>,
    flow: Option<Detector>,
    host: Option<HostModel>,
    window_cooldown_until: u64,
    /// Flow alert cooldown per host-pair hash, pruned as it expires.
    flow_cooldown: HashMap<u64, u64>,
    budget: Budget,
}

/// A host profile's state on one shard: the tables and sketches, the trees, the
/// per-host alert cooldown, and the table counts last published to the counters.
struct HostModel {
    state: HostState,
    det: Detector,
    cooldown: HashMap<u64, u64>,
    published: [u64; 3],
}

/// A profile's alert budget in the current minute of packet time, and what it held back.
#[derive(Default)]
struct Budget {
    minute: u64,
    used: u32,
    suppressed: u64,
    first_ns: u64,
    last_ns: u64,
    max_score: f64,
    mode: Option<AlertMode>,
}

/// How long after its last anomalous window an incident stays open: flows active until
/// then are not learnt (they belong to the incident).
pub const INCIDENT_GRACE_NS: u64 = 10_000_000_000;
/// Incident spans remembered per shard (flows are exported up to the idle timeout later).
const INCIDENT_SPANS: usize = 16;

/// Everything but the flow table, so that table callbacks can borrow it.
struct Ctx {
    shard: usize,
    setup: ScorerSetup,
    profiles: Vec<ProfState>,
    counters: Arc<ScorerCounters>,
    alert_n: u64,
    now_ns: u64,
    x: Vec<f64>,
    /// Alerts raised when there is no sender.
    alerts: Vec<Alert>,
    windows: Vec<ScoredWindow>,
    flow_sorter: Option<RunSorter>,
    line: Vec<u8>,
    io_error: Option<std::io::Error>,
    /// Recent incident spans of this shard (packet time, ns), newest last; a ring of
    /// [`INCIDENT_SPANS`].
    incidents: [(u64, u64); INCIDENT_SPANS],
    n_incidents: usize,
    /// Profiles that score active flows (bit per profile).
    active_mask: u16,
    /// Half-Space Trees calls until the next timed one (bench mode).
    hst_sample_left: u32,
    /// Profiles of mode `host` (bit per profile).
    host_mask: u16,
    /// A host event's values (every feature of `HOST_FEATURES`).
    hx: [f64; N_HOST_VALUES],
    decode: crate::wire::DecodeOptions,
}

/// A scorer shard (see the module doc).
pub struct Scorer {
    table: FlowTable,
    ctx: Ctx,
    last_clock_ns: u64,
    /// Clock ticks handled (the fault injection counts them).
    ticks: u64,
    /// Ring chunks until the next timed one (bench mode).
    chunk_sample_left: u32,
    /// Packet time of the next periodic model checkpoint (0: not yet set).
    next_checkpoint_ns: u64,
}

/// Test aid: `STREAMML_FAULT=scorer-panic` makes shard 0 panic at its third clock tick,
/// to show that a broken stage ends the run with an error after the others drained.
pub const FAULT_ENV: &str = "STREAMML_FAULT";

fn fault_injected(name: &str) -> bool {
    std::env::var(FAULT_ENV).is_ok_and(|v| v.split(',').any(|f| f.trim() == name))
}

fn ip_of(b: &[u8; 16], v: u8) -> IpAddr {
    if v == 6 {
        IpAddr::V6(Ipv6Addr::from(*b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

/// Symmetric hash of a flow's host pair (flow-alert cooldown key).
fn host_pair_hash(f: &FlowState) -> u64 {
    let m = PacketMeta {
        src_ip: f.key.src_ip,
        dst_ip: f.key.dst_ip,
        ..PacketMeta::default()
    };
    shard::symmetric_hash(&m, KeyMode::IpPair)
}

/// The 5-tuple symmetric hash of a flow (what the reader stores in ring records).
pub fn flow_ring_hash(f: &FlowState) -> u64 {
    let m = PacketMeta {
        src_ip: f.key.src_ip,
        dst_ip: f.key.dst_ip,
        src_port: f.key.src_port,
        dst_port: f.key.dst_port,
        vlan_id: f.key.vlan_id,
        tunnel_id: f.key.tunnel_id,
        ip_version: f.key.ip_version,
        protocol: f.key.protocol,
        ..PacketMeta::default()
    };
    shard::symmetric_hash(&m, KeyMode::FiveTuple)
}

impl Scorer {
    pub fn new(shard: usize, setup: ScorerSetup) -> Result<Scorer, String> {
        let cfg = setup.cfg.clone();
        let table = FlowTable::new(cfg.flow_config())?;
        let mut profiles = Vec::new();
        for p in &cfg.profiles {
            let window = if p.mode.window() {
                Some((
                    WindowAcc::new(p.window_ns, 1 << 16),
                    Detector::new(&p.detector_config(DetectorKind::Window))?,
                ))
            } else {
                None
            };
            let flow = if p.mode.flow() {
                Some(Detector::new(&p.detector_config(DetectorKind::Flow))?)
            } else {
                None
            };
            let host = if p.mode.host() {
                Some(HostModel {
                    state: HostState::new(p.host_table, p.host_rate),
                    det: Detector::new(&p.detector_config(DetectorKind::Host))?,
                    cooldown: HashMap::new(),
                    published: [0; 3],
                })
            } else {
                None
            };
            profiles.push(ProfState {
                window,
                flow,
                host,
                window_cooldown_until: 0,
                flow_cooldown: HashMap::new(),
                budget: Budget::default(),
            });
        }
        let flow_sorter = setup
            .flow_output
            .as_ref()
            .map(|o| RunSorter::new(32 << 20, o.spill_dir.clone()));
        Ok(Scorer {
            table,
            last_clock_ns: 0,
            ticks: 0,
            next_checkpoint_ns: 0,
            ctx: Ctx {
                shard,
                setup,
                profiles,
                counters: Arc::new(ScorerCounters::default()),
                alert_n: 0,
                now_ns: 0,
                x: vec![0.0; FLOW_FEATURES.len().max(WINDOW_FEATURES.len())],
                alerts: Vec::new(),
                windows: Vec::new(),
                flow_sorter,
                line: Vec::with_capacity(2048),
                io_error: None,
                incidents: [(0, 0); INCIDENT_SPANS],
                n_incidents: 0,
                active_mask: cfg
                    .profiles
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| {
                        p.mode.flow() && (p.active_packets > 0 || p.active_interval_ms > 0)
                    })
                    .fold(0u16, |m, (i, _)| m | (1 << i)),
                hst_sample_left: 0,
                host_mask: cfg
                    .profiles
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.mode.host())
                    .fold(0u16, |m, (i, _)| m | (1 << i)),
                hx: [0.0; N_HOST_VALUES],
                decode: crate::wire::DecodeOptions {
                    decode_tunnels: cfg.decode_tunnels,
                },
            },
            chunk_sample_left: 0,
        })
    }

    pub fn counters(&self) -> &Arc<ScorerCounters> {
        &self.ctx.counters
    }

    pub fn table(&self) -> &FlowTable {
        &self.table
    }

    /// Alerts kept locally (no sender).
    pub fn alerts(&self) -> &[Alert] {
        &self.ctx.alerts
    }

    pub fn scored_windows(&self) -> &[ScoredWindow] {
        &self.ctx.windows
    }

    pub fn take_flow_sorter(&mut self) -> Option<RunSorter> {
        self.ctx.flow_sorter.take()
    }

    pub fn io_error(&mut self) -> Option<std::io::Error> {
        self.ctx.io_error.take()
    }

    /// Final state of each profile's detectors: (name, windows/flows scored, max score).
    pub fn detector_summary(&self) -> Vec<(usize, u64, u64, f64)> {
        self.ctx
            .profiles
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let w = p.window.as_ref().map_or(0, |(_, d)| d.seen);
                let f = p.flow.as_ref().map_or(0, |d| d.seen)
                    + p.host.as_ref().map_or(0, |h| h.det.seen);
                let m = p
                    .window
                    .as_ref()
                    .map_or(0.0, |(_, d)| d.max_score)
                    .max(p.flow.as_ref().map_or(0.0, |d| d.max_score))
                    .max(p.host.as_ref().map_or(0.0, |h| h.det.max_score));
                (i, w, f, m)
            })
            .collect()
    }

    /// Warm restart: puts the restored detectors of every warm profile into the scorers
    /// (shard order).
    pub fn install_models(loaded: Loaded, scorers: &mut [Scorer]) {
        for (pi, per_shard) in loaded.profiles.into_iter().enumerate() {
            for (s, (w, f)) in per_shard.into_iter().flatten().enumerate() {
                if let Some(sc) = scorers.get_mut(s) {
                    sc.set_detectors(pi, w, f);
                }
            }
        }
    }

    /// Warm restart: puts profile `pi`'s restored detectors in place of the new ones
    /// (`flow`: the flow detector, or a host profile's host detector; the host tables
    /// and sketches start empty).
    pub fn set_detectors(&mut self, pi: usize, window: Option<Detector>, flow: Option<Detector>) {
        let ps = &mut self.ctx.profiles[pi];
        if let (Some((_, slot)), Some(d)) = (ps.window.as_mut(), window) {
            *slot = d;
        }
        match (ps.flow.as_mut(), ps.host.as_mut(), flow) {
            (Some(slot), _, Some(d)) => *slot = d,
            (None, Some(h), Some(d)) => h.det = d,
            _ => {}
        }
    }

    /// Hands every profile's detectors to the model saver once the checkpoint interval
    /// has passed (packet time), or unconditionally at the end of the run (`last`).
    /// Called at ticks and at finish, never per packet.
    fn checkpoint(&mut self, now_ns: u64, last: bool) {
        let Some(sink) = &self.ctx.setup.models else {
            return;
        };
        if !last {
            if sink.interval_ns == 0 {
                return;
            }
            if self.next_checkpoint_ns == 0 {
                self.next_checkpoint_ns = now_ns.saturating_add(sink.interval_ns);
                return;
            }
            if now_ns < self.next_checkpoint_ns {
                return;
            }
            self.next_checkpoint_ns = now_ns.saturating_add(sink.interval_ns);
        }
        let (shard, shards) = (self.ctx.shard, self.ctx.setup.shards);
        for (pi, ps) in self.ctx.profiles.iter().enumerate() {
            let window = ps.window.as_ref().map(|(_, d)| d);
            let second = ps.flow.as_ref().or(ps.host.as_ref().map(|h| &h.det));
            sink.submit(pi, shard, shards, now_ns, window, second, last);
        }
    }

    fn send_clock(&mut self, force: bool) {
        let now = self.ctx.now_ns;
        if let Some(s) = &self.ctx.setup.sender {
            // A clock message at most every 10 ms of packet time.
            if force || now >= self.last_clock_ns.saturating_add(10_000_000) {
                self.last_clock_ns = now;
                if self.ctx.setup.blocking {
                    s.clock_blocking(self.ctx.shard, now, u64::MAX);
                } else {
                    s.clock(self.ctx.shard, now, u64::MAX);
                }
            }
        }
    }
}

impl Ctx {
    /// `det.observe(x)`, timed one call in `StageLatency::HST_EVERY` in bench mode.
    #[inline]
    fn observe(
        latency: &Option<Arc<StageLatency>>,
        left: &mut u32,
        det: &mut Detector,
        x: &[f64],
        learn: Learn,
    ) -> (f64, Option<Verdict>) {
        let Some(l) = latency else {
            return det.observe_with(x, learn);
        };
        if *left > 0 {
            *left -= 1;
            return det.observe_with(x, learn);
        }
        *left = StageLatency::HST_EVERY - 1;
        let t0 = std::time::Instant::now();
        let r = det.observe_with(x, learn);
        l.hst_per_sample.record(t0.elapsed().as_nanos() as u64);
        r
    }

    fn on_flow_export(&mut self, r: FlowRecord<'_>) {
        if let Some(x) = &self.setup.flow_export {
            x.push(&r);
        }
        let f = r.flow;
        let end_ns = f.last_seen_ms.saturating_mul(1_000_000);
        for pi in 0..self.profiles.len() {
            if f.user_tag & (1 << pi) == 0 {
                continue;
            }
            if let Some((w, _)) = &mut self.profiles[pi].window {
                w.flow_closed(f.duration_ms().saturating_mul(1_000_000));
            }
            if self.profiles[pi].flow.is_none() {
                continue;
            }
            let p = &self.setup.cfg.profiles[pi];
            let d = p.flow_features.len();
            flow_values(f, &p.flow_features, &mut self.x[..d]);
            // Learning hygiene: a flow that overlapped an incident of this shard (a flood,
            // a scan) is scored but not learnt, so the incident does not become normal.
            let first_ns = f.first_seen_ms().saturating_mul(1_000_000);
            let learn = if self.in_incident(first_ns, end_ns) {
                self.counters.flows_not_learnt.inc();
                Learn::Never
            } else {
                Learn::Always
            };
            let det = self.profiles[pi].flow.as_mut().expect("flow detector");
            let (_score, verdict) = Self::observe(
                &self.setup.latency,
                &mut self.hst_sample_left,
                det,
                &self.x[..d],
                learn,
            );
            self.counters.flows_scored.inc();
            if f.user_flags & (1 << pi) != 0 {
                // Alerted while active: one flow, one alert.
                continue;
            }
            if let Some(v) = verdict {
                let h = flow_ring_hash(f);
                // Cooldown per host pair: a scan's thousand flows are one incident.
                let pair = host_pair_hash(f);
                let cd = &mut self.profiles[pi].flow_cooldown;
                if cd.get(&pair).is_some_and(|&until| end_ns < until) {
                    self.counters.alerts_in_cooldown.inc();
                    continue;
                }
                if cd.len() > 4096 {
                    cd.retain(|_, until| *until > end_ns);
                }
                cd.insert(pair, end_ns.saturating_add(p.cooldown_ns));
                if self.within_budget(pi, end_ns, AlertMode::Flow, v.score) {
                    self.raise_flow_alert(pi, f, h, end_ns, &v);
                }
            }
        }
        if let Some(sorter) = &mut self.flow_sorter {
            self.line.clear();
            let jsonl = self.setup.flow_output.as_ref().is_some_and(|o| o.jsonl);
            if jsonl {
                r.write_jsonl(&mut self.line, 0);
            } else {
                r.write_csv(&mut self.line, 0);
            }
            if self.io_error.is_none() {
                if let Err(e) = sorter.push(&r.sort_key(), &self.line) {
                    self.io_error = Some(e);
                }
            }
        }
    }

    /// Scores an active flow for every flow profile whose `active_packets` or
    /// `active_interval_s` is due at this packet; `prev_ms` is the flow's last-seen ms
    /// before it. Not learnt (a partial flow is not a sample of finished flows); a flow
    /// alerts at most once (`user_flags`).
    fn score_active(&mut self, f: &mut FlowState, prev_ms: u64) {
        let cfg = self.setup.cfg.clone();
        let n = f.packets();
        let first = f.first_seen_ms();
        for pi in 0..self.profiles.len() {
            let bit = 1u16 << pi;
            if f.user_tag & bit == 0 || f.user_flags & bit != 0 {
                continue;
            }
            let p = &cfg.profiles[pi];
            let by_count = p.active_packets > 0 && n.is_multiple_of(u64::from(p.active_packets));
            let by_time = p.active_interval_ms > 0
                && (f.last_seen_ms - first) / p.active_interval_ms
                    > (prev_ms.max(first) - first) / p.active_interval_ms;
            if !(by_count || by_time) || self.profiles[pi].flow.is_none() {
                continue;
            }
            let d = p.flow_features.len();
            flow_values(f, &p.flow_features, &mut self.x[..d]);
            let det = self.profiles[pi].flow.as_mut().expect("flow detector");
            let (_score, verdict) = det.observe_with(&self.x[..d], Learn::Never);
            self.counters.flows_scored_active.inc();
            let Some(v) = verdict else { continue };
            let now = f.last_seen_ms.saturating_mul(1_000_000);
            let pair = host_pair_hash(f);
            let cd = &mut self.profiles[pi].flow_cooldown;
            if cd.get(&pair).is_some_and(|&until| now < until) {
                self.counters.alerts_in_cooldown.inc();
                continue;
            }
            cd.insert(pair, now.saturating_add(p.cooldown_ns));
            f.user_flags |= bit;
            if self.within_budget(pi, now, AlertMode::Flow, v.score) {
                let h = flow_ring_hash(f);
                self.raise_flow_alert(pi, f, h, now, &v);
                self.counters.alerts_while_active.inc();
            }
        }
    }

    /// True when `[from, to]` overlaps an incident span of this shard.
    fn in_incident(&self, from: u64, to: u64) -> bool {
        if self.setup.cfg.learn_during_incidents {
            return false;
        }
        let n = self.n_incidents.min(INCIDENT_SPANS);
        self.incidents[..n]
            .iter()
            .any(|&(a, b)| from <= b && to >= a)
    }

    /// Opens an incident span, or extends the newest one when they overlap.
    fn mark_incident(&mut self, from: u64, to: u64) {
        if self.n_incidents > 0 {
            let last = &mut self.incidents[(self.n_incidents - 1) % INCIDENT_SPANS];
            if from <= last.1 {
                last.0 = last.0.min(from);
                last.1 = last.1.max(to);
                return;
            }
        }
        self.incidents[self.n_incidents % INCIDENT_SPANS] = (from, to);
        self.n_incidents += 1;
    }

    /// The profile's alert budget: true when an alert at `ts` may be raised; otherwise it
    /// is counted for the minute's summary.
    fn within_budget(&mut self, pi: usize, ts: u64, mode: AlertMode, score: f64) -> bool {
        let limit = self.setup.cfg.profiles[pi].max_alerts_per_min;
        if limit == 0 {
            return true;
        }
        // Minutes of the shard's clock (alerts are raised in its order; a flow alert's
        // own time is its last packet, up to the idle timeout earlier).
        let minute = self.now_ns.max(ts) / 60_000_000_000;
        if minute != self.profiles[pi].budget.minute {
            self.flush_summary(pi);
            let b = &mut self.profiles[pi].budget;
            b.minute = minute;
            b.used = 0;
        }
        let b = &mut self.profiles[pi].budget;
        if b.used < limit {
            b.used += 1;
            return true;
        }
        if b.suppressed == 0 {
            b.first_ns = ts;
            b.max_score = 0.0;
        }
        b.suppressed += 1;
        b.last_ns = b.last_ns.max(ts);
        b.max_score = b.max_score.max(score);
        b.mode = Some(mode);
        self.counters.alerts_over_budget.inc();
        false
    }

    /// Writes the summary of the alerts the budget held back (if any) and resets it.
    fn flush_summary(&mut self, pi: usize) {
        let b = &mut self.profiles[pi].budget;
        if b.suppressed == 0 {
            return;
        }
        let (minute, used) = (b.minute, b.used);
        let (n, first, last, score, mode) = (
            b.suppressed,
            b.first_ns,
            b.last_ns,
            b.max_score,
            b.mode.unwrap_or(AlertMode::Flow),
        );
        b.suppressed = 0;
        b.first_ns = 0;
        b.last_ns = 0;
        let cfg = self.setup.cfg.clone();
        let p = &cfg.profiles[pi];
        let id = self.next_alert_id();
        // Timestamped at the end of its budget minute.
        let ts = (minute + 1) * 60_000_000_000 - 1;
        let mut a = Alert::new(id, ts, &p.name, mode, score, 0.0, self.shard as u32);
        a.event_type = "anomaly_summary".to_string();
        let x = &mut a.anomaly.extra;
        x.insert("suppressed".into(), serde_json::Value::from(n));
        x.insert(
            "minute_start_ns".into(),
            serde_json::Value::from(minute * 60_000_000_000),
        );
        x.insert("alerts_in_minute".into(), serde_json::Value::from(used));
        x.insert(
            "max_alerts_per_min".into(),
            serde_json::Value::from(p.max_alerts_per_min),
        );
        // The span of the held-back alerts' own times.
        x.insert("first_ts_ns".into(), serde_json::Value::from(first));
        x.insert("last_ts_ns".into(), serde_json::Value::from(last));
        self.counters.alert_summaries.inc();
        self.send_summary(a);
    }

    /// Summaries of every profile whose budget minute ended before `now`.
    fn flush_due_summaries(&mut self, now: u64) {
        for pi in 0..self.profiles.len() {
            let b = &self.profiles[pi].budget;
            if b.suppressed > 0 && now / 60_000_000_000 > b.minute {
                self.flush_summary(pi);
            }
        }
    }

    fn next_alert_id(&mut self) -> u64 {
        let id = self.alert_n * self.setup.shards as u64 + self.shard as u64;
        self.alert_n += 1;
        id
    }

    fn top_features(names: &[&str], idx: &[usize], v: &Verdict) -> Vec<FeatureContribution> {
        v.top
            .iter()
            .map(|c| FeatureContribution {
                name: names[idx[c.feature]].to_string(),
                value: c.value,
                contribution: c.contribution,
            })
            .collect()
    }

    fn raise_flow_alert(&mut self, pi: usize, f: &FlowState, hash: u64, ts_ns: u64, v: &Verdict) {
        let cfg = self.setup.cfg.clone();
        let p = &cfg.profiles[pi];
        let id = self.next_alert_id();
        let mut a = Alert::new(
            id,
            ts_ns,
            &p.name,
            AlertMode::Flow,
            v.score,
            v.threshold,
            self.shard as u32,
        );
        a.flow = Some(EveKey {
            src_ip: ip_of(&f.key.src_ip, f.key.ip_version),
            src_port: f.key.src_port,
            dest_ip: ip_of(&f.key.dst_ip, f.key.ip_version),
            dest_port: f.key.dst_port,
            proto: f.key.protocol,
            vlan: (f.key.vlan_id != 0).then_some(f.key.vlan_id),
        });
        a.anomaly.top_features = Self::top_features(&FLOW_FEATURES, &p.flow_features, v);
        a.anomaly.extra.insert(
            "flow_first_seen_ms".into(),
            serde_json::Value::from(f.first_seen_ms()),
        );
        a.anomaly
            .extra
            .insert("flow_packets".into(), serde_json::Value::from(f.packets()));
        let from = f
            .first_seen_ms()
            .saturating_mul(1_000_000)
            .saturating_sub(p.pre_ns);
        let ev = match p.scope_flow {
            CfgScope::Flow => EvidenceRequest {
                shard: self.shard,
                from_ts_ns: from,
                to_ts_ns: ts_ns.saturating_add(p.post_ns),
                scope: Scope::Flow { hash },
                limits: Self::limits(p),
            },
            CfgScope::Window | CfgScope::Host => {
                self.window_request(pi, from, ts_ns.saturating_add(p.post_ns))
            }
        };
        self.send(a, ev);
    }

    fn window_request(&self, pi: usize, from: u64, to: u64) -> EvidenceRequest {
        let filter = self
            .setup
            .window_filters
            .get(pi)
            .and_then(|f| f.as_ref())
            .map(|mk| mk(self.shard));
        EvidenceRequest {
            shard: self.shard,
            from_ts_ns: from,
            to_ts_ns: to,
            scope: Scope::Window { filter },
            limits: Self::limits(&self.setup.cfg.profiles[pi]),
        }
    }

    /// The profile's `[profile.evidence]` snaplen and max_packets.
    fn limits(p: &crate::config::Profile) -> EvidenceLimits {
        EvidenceLimits {
            snaplen: p.snaplen,
            max_packets: p.max_evidence_packets,
        }
    }

    fn on_window(&mut self, pi: usize, wv: &WindowVector) {
        let cfg = self.setup.cfg.clone();
        let p = &cfg.profiles[pi];
        let d = p.window_features.len();
        for (k, &i) in p.window_features.iter().enumerate() {
            self.x[k] = wv.values[i];
        }
        let Some((_, det)) = self.profiles[pi].window.as_mut() else {
            return;
        };
        let learn = if self.setup.cfg.learn_during_incidents {
            Learn::Always
        } else {
            Learn::UnlessAlerting
        };
        let (score, verdict) = Self::observe(
            &self.setup.latency,
            &mut self.hst_sample_left,
            det,
            &self.x[..d],
            learn,
        );
        self.counters.windows_scored.inc();
        let mut alerted = false;
        if let Some(v) = verdict {
            if learn == Learn::UnlessAlerting {
                self.counters.windows_not_learnt.inc();
            }
            // The window opens (or extends) an incident of this shard.
            self.mark_incident(
                wv.start_ns.saturating_sub(p.window_ns),
                wv.end_ns.saturating_add(INCIDENT_GRACE_NS),
            );
            let ps = &mut self.profiles[pi];
            if wv.end_ns < ps.window_cooldown_until {
                self.counters.alerts_in_cooldown.inc();
            } else if self.within_budget(pi, wv.end_ns, AlertMode::Window, v.score) {
                let ps = &mut self.profiles[pi];
                ps.window_cooldown_until = wv.end_ns.saturating_add(p.cooldown_ns);
                alerted = true;
                let id = self.next_alert_id();
                let mut a = Alert::new(
                    id,
                    wv.end_ns,
                    &p.name,
                    AlertMode::Window,
                    v.score,
                    v.threshold,
                    self.shard as u32,
                );
                a.anomaly.window = Some(WindowSpan {
                    start: wv.start_ns,
                    end: wv.end_ns,
                });
                a.anomaly.top_features =
                    Self::top_features(&WINDOW_FEATURES, &p.window_features, &v);
                let from = wv.start_ns.saturating_sub(p.pre_ns);
                let to = wv.end_ns.saturating_add(p.post_ns);
                let ev = match p.scope_window {
                    // A window has no single flow or host: take the window's packets.
                    CfgScope::Window | CfgScope::Flow | CfgScope::Host => {
                        self.window_request(pi, from, to)
                    }
                };
                self.send(a, ev);
            }
        }
        if self.setup.keep_windows {
            self.windows.push(ScoredWindow {
                profile: pi,
                shard: self.shard,
                vector: *wv,
                score,
                alerted,
            });
        }
    }

    /// A line without evidence (budget summaries).
    fn send_summary(&mut self, a: Alert) {
        match &self.setup.sender {
            None => self.alerts.push(a),
            Some(s) => {
                let out = if self.setup.blocking {
                    s.send_blocking(a, None)
                } else {
                    s.send(a, None)
                };
                if out == crate::evidence::writer::SendOutcome::AlertLost {
                    self.counters.alerts_lost.inc();
                }
            }
        }
    }

    fn send(&mut self, a: Alert, ev: EvidenceRequest) {
        self.counters.alerts.inc();
        match &self.setup.sender {
            None => self.alerts.push(a),
            Some(s) => {
                use crate::evidence::writer::SendOutcome;
                let out = if self.setup.blocking {
                    s.send_blocking(a, Some(ev))
                } else {
                    s.send(a, Some(ev))
                };
                match out {
                    SendOutcome::Queued => {}
                    SendOutcome::EvidenceDropped => self.counters.evidence_queue_full.inc(),
                    SendOutcome::AlertLost => self.counters.alerts_lost.inc(),
                }
            }
        }
    }

    /// Host profiles' clock tick: sketch decay, table counters.
    fn host_tick(&mut self, now_ns: u64) {
        if self.host_mask == 0 {
            return;
        }
        for ps in &mut self.profiles {
            if let Some(h) = &mut ps.host {
                h.state.tick(now_ns);
            }
        }
        self.publish_host_tables();
    }

    /// Adds what the host tables inserted and evicted since the last call to the
    /// counters, and sets the live count.
    fn publish_host_tables(&mut self) {
        let (mut live, mut had_live) = (0u64, self.counters.host_table_live.get());
        for ps in &mut self.profiles {
            let Some(h) = &mut ps.host else { continue };
            let c = h.state.counts();
            let ins: u64 = c.iter().map(|x| x.inserted).sum();
            let ev: u64 = c.iter().map(|x| x.evicted).sum();
            self.counters.host_table_inserted.add(ins - h.published[0]);
            self.counters.host_table_evicted.add(ev - h.published[1]);
            h.published = [ins, ev, 0];
            live += c.iter().map(|x| x.live).sum::<u64>();
        }
        // A counter only adds: add the difference (wrapping: it may shrink).
        had_live = live.wrapping_sub(had_live);
        self.counters.host_table_live.add(had_live);
    }

    /// One packet for the host profiles in its mask: the sender's statistics; a flow's
    /// first reply (its initiator was answered, or reset); an ICMP unreachable; and for
    /// the first packet of a new flow, a host event of its sender (scored within the
    /// profile's rate).
    #[inline]
    fn host_packet(&mut self, rec: &PacketRecord, size: u32, created: bool, f: &FlowState) {
        use crate::wire::tcp_flags::RST;
        let m = &rec.meta;
        let t = rec.ts_ns;
        let first_reply = !created && f.d2s.packets == 1 && m.src_ip != f.key.src_ip;
        let unreachable = (m.protocol == 1 && m.ip_version == 4 && m.icmp_type == 3)
            || (m.protocol == 58 && m.icmp_type == 1);
        let mut bits = rec.profiles & self.host_mask;
        while bits != 0 {
            let pi = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let Some(h) = self.profiles.get_mut(pi).and_then(|p| p.host.as_mut()) else {
                continue;
            };
            let hi = h.state.packet(&m.src_ip, m.ip_version, size, t);
            if first_reply {
                h.state
                    .answered(&f.key.src_ip, m.ip_version, m.tcp_flags & RST != 0, t);
            }
            if unreachable {
                h.state.unreachable(&m.dst_ip, m.ip_version, t);
            }
            if created {
                self.counters.host_events.inc();
                let sample = h.state.take_token(t);
                let c = Conn {
                    src_ip: &m.src_ip,
                    dst_ip: &m.dst_ip,
                    ip_version: m.ip_version,
                    protocol: m.protocol,
                    dst_port: m.dst_port,
                };
                let beacon = h.state.connection(hi, &c, t, sample, &mut self.hx);
                if sample {
                    self.score_host(pi, hi, f, t);
                } else {
                    self.counters.host_skipped_rate.inc();
                }
                if let Some(b) = beacon {
                    self.beacon_alert(pi, hi, f, t, b);
                }
            }
        }
    }

    /// Scores the host event in `self.hx` (host slot `hi`, connection `f`, at `t`).
    fn score_host(&mut self, pi: usize, hi: u32, f: &FlowState, t: u64) {
        let cfg = self.setup.cfg.clone();
        let p = &cfg.profiles[pi];
        let d = p.host_features.len();
        for (k, &i) in p.host_features.iter().enumerate() {
            self.x[k] = self.hx[i];
        }
        // Learning hygiene: nothing is learnt during an open incident of the shard, and a
        // sample that alerts is not learnt either.
        let learn = if cfg.learn_during_incidents {
            Learn::Always
        } else if self.in_incident(t, t) {
            Learn::Never
        } else {
            Learn::UnlessAlerting
        };
        let Some(h) = self.profiles[pi].host.as_mut() else {
            return;
        };
        let (_score, verdict) = Self::observe(
            &self.setup.latency,
            &mut self.hst_sample_left,
            &mut h.det,
            &self.x[..d],
            learn,
        );
        self.counters.host_scored.inc();
        if learn == Learn::Never || (learn == Learn::UnlessAlerting && verdict.is_some()) {
            self.counters.host_not_learnt.inc();
        }
        let Some(v) = verdict else { return };
        // A host none of whose connections was ever answered may be a spoofed address
        // (a SYN flood's sources): it is not named (the window profile covers floods).
        if !h.state.answered_ever(hi) {
            self.counters.host_unanswered.inc();
            return;
        }
        let (ip, ver) = h.state.host_ip(hi);
        let key = u64::from_le_bytes(ip[..8].try_into().expect("8 bytes"))
            ^ u64::from_le_bytes(ip[8..].try_into().expect("8 bytes")).rotate_left(7)
            ^ u64::from(ver);
        // Cooldown per host: a brute force's sessions, a scan's probes are one incident.
        if h.cooldown.get(&key).is_some_and(|&until| t < until) {
            self.counters.alerts_in_cooldown.inc();
            return;
        }
        if h.cooldown.len() > 4096 {
            h.cooldown.retain(|_, until| *until > t);
        }
        h.cooldown.insert(key, t.saturating_add(p.cooldown_ns));
        if !self.within_budget(pi, t, AlertMode::Host, v.score) {
            return;
        }
        let id = self.next_alert_id();
        let mut a = Alert::new(
            id,
            t,
            &p.name,
            AlertMode::Host,
            v.score,
            v.threshold,
            self.shard as u32,
        );
        a.anomaly.top_features = Self::top_features(&HOST_FEATURES, &p.host_features, &v);
        self.send_host_alert(pi, a, (ip, ver), "connection", f, t);
    }

    /// A pair of host slot `hi` found beaconing (outside the trees: see
    /// `detect::host::BEACON_MIN_CONNS`): one alert per pair, `host_event` "beacon", the
    /// score 1 − the intervals' CV against the threshold 1 − `BEACON_MAX_CV`.
    #[cold]
    fn beacon_alert(&mut self, pi: usize, hi: u32, f: &FlowState, t: u64, b: Beacon) {
        let Some(h) = self.profiles[pi].host.as_mut() else {
            return;
        };
        self.counters.host_beacons.inc();
        let p = &self.setup.cfg.profiles[pi];
        let (src, dst) = (
            ip_of(&f.key.src_ip, f.key.ip_version),
            ip_of(&f.key.dst_ip, f.key.ip_version),
        );
        if p.beacon_ignore_ports.contains(&f.key.dst_port)
            || p.beacon_ignore_hosts
                .iter()
                .any(|n| n.contains(src) || n.contains(dst))
        {
            self.counters.host_beacons_ignored.inc();
            return;
        }
        if !h.state.answered_ever(hi) {
            self.counters.host_unanswered.inc();
            return;
        }
        let (ip, ver) = h.state.host_ip(hi);
        let score = 1.0 - b.cv;
        if !self.within_budget(pi, t, AlertMode::Host, score) {
            return;
        }
        let id = self.next_alert_id();
        let cfg = self.setup.cfg.clone();
        let mut a = Alert::new(
            id,
            t,
            &cfg.profiles[pi].name,
            AlertMode::Host,
            score,
            1.0 - BEACON_MAX_CV,
            self.shard as u32,
        );
        a.anomaly.extra.insert(
            "beacon".into(),
            serde_json::json!({
                "period_s": b.period_s,
                "cv": b.cv,
                "connections": b.connections,
                "dst_rarity": b.dst_rarity,
            }),
        );
        self.send_host_alert(pi, a, (ip, ver), "beacon", f, t);
    }

    /// Completes a host alert (the scored connection's key, `anomaly.host`,
    /// `anomaly.host_event`) and sends it with the profile's evidence request.
    fn send_host_alert(
        &mut self,
        pi: usize,
        mut a: Alert,
        (ip, ver): ([u8; 16], u8),
        event: &str,
        f: &FlowState,
        t: u64,
    ) {
        let cfg = self.setup.cfg.clone();
        let p = &cfg.profiles[pi];
        a.flow = Some(EveKey {
            src_ip: ip_of(&f.key.src_ip, f.key.ip_version),
            src_port: f.key.src_port,
            dest_ip: ip_of(&f.key.dst_ip, f.key.ip_version),
            dest_port: f.key.dst_port,
            proto: f.key.protocol,
            vlan: (f.key.vlan_id != 0).then_some(f.key.vlan_id),
        });
        let host = ip_of(&ip, ver);
        a.anomaly
            .extra
            .insert("host".into(), serde_json::Value::from(host.to_string()));
        a.anomaly
            .extra
            .insert("host_event".into(), serde_json::Value::from(event));
        let (from, to) = (t.saturating_sub(p.pre_ns), t.saturating_add(p.post_ns));
        let ev = match p.scope_host {
            CfgScope::Host => {
                let decode = self.decode;
                let filter: RecordFilter =
                    Arc::new(move |r: &crate::evidence::ring::RecordView<'_>| {
                        let link = crate::wire::LinkType::from_linktype(u32::from(r.link()))
                            .unwrap_or(crate::wire::LinkType::Ethernet);
                        crate::wire::decode(r.data, r.orig_len(), link, &decode)
                            .is_ok_and(|m| m.src_ip == ip || m.dst_ip == ip)
                    });
                EvidenceRequest {
                    shard: self.shard,
                    from_ts_ns: from,
                    to_ts_ns: to,
                    scope: Scope::Window {
                        filter: Some(filter),
                    },
                    limits: Self::limits(p),
                }
            }
            CfgScope::Flow => EvidenceRequest {
                shard: self.shard,
                from_ts_ns: from,
                to_ts_ns: to,
                scope: Scope::Flow {
                    hash: flow_ring_hash(f),
                },
                limits: Self::limits(p),
            },
            CfgScope::Window => self.window_request(pi, from, to),
        };
        self.send(a, ev);
    }

    fn advance_windows(&mut self, now_ns: u64) {
        for pi in 0..self.profiles.len() {
            let mut closed: Option<WindowVector> = None;
            if let Some((w, _)) = &mut self.profiles[pi].window {
                w.advance(now_ns, &mut |v| closed = Some(*v));
            }
            if let Some(v) = closed {
                self.on_window(pi, &v);
            }
        }
    }
}

impl ShardWorker for Scorer {
    #[inline]
    fn on_packet(&mut self, rec: &PacketRecord) {
        if rec.lag_ms > 0 {
            // Out of order: move the flow clock to the reader's first (see `lag_ms`).
            let ctx = &mut self.ctx;
            let clock = rec.ts_ns + u64::from(rec.lag_ms) * 1_000_000;
            self.table.advance(clock, &mut |r| ctx.on_flow_export(r));
        }
        let ctx = &mut self.ctx;
        if rec.ts_ns > ctx.now_ns {
            ctx.now_ns = rec.ts_ns;
        }
        let mask = rec.profiles;
        let created = self
            .table
            .update_tagged(rec.ts_ns, &rec.meta, mask, &mut |r| ctx.on_flow_export(r));
        if mask & ctx.active_mask != 0 {
            if let Some((f, prev)) = self.table.last_updated() {
                ctx.score_active(f, prev);
            }
        }
        let size = match ctx.setup.cfg.accounting {
            Accounting::Link => rec.meta.wire_len,
            Accounting::Ip => rec.meta.ip_size,
            Accounting::Transport => rec.meta.transport_size,
            Accounting::Payload => rec.meta.payload_size,
        };
        if mask & ctx.host_mask != 0 {
            if let Some((f, _)) = self.table.last_updated() {
                ctx.host_packet(rec, size, created, f);
            }
        }
        let mut m = mask;
        while m != 0 {
            let pi = m.trailing_zeros() as usize;
            m &= m - 1;
            if pi >= ctx.profiles.len() {
                break;
            }
            let mut closed: Option<WindowVector> = None;
            if let Some((w, _)) = &mut ctx.profiles[pi].window {
                w.packet(rec.ts_ns, u64::from(rec.hash), &rec.meta, size, &mut |v| {
                    closed = Some(*v)
                });
                if created {
                    w.new_flow();
                }
            }
            if let Some(v) = closed {
                ctx.on_window(pi, &v);
            }
        }
        self.send_clock(false);
    }

    /// The default (one message at a time); in bench mode one chunk in
    /// `StageLatency::CHUNK_EVERY` is timed: two clock reads (vDSO, no system call) for
    /// the whole chunk.
    fn on_msgs(&mut self, msgs: &[shard::Msg]) {
        let sample = match &self.ctx.setup.latency {
            Some(_) if self.chunk_sample_left == 0 && !msgs.is_empty() => {
                self.chunk_sample_left = StageLatency::CHUNK_EVERY - 1;
                true
            }
            Some(_) => {
                self.chunk_sample_left = self.chunk_sample_left.saturating_sub(1);
                false
            }
            None => false,
        };
        let t0 = if sample {
            crate::capture::afxdp::now_ns()
        } else {
            0
        };
        for m in msgs {
            match m {
                shard::Msg::Packet(r) => self.on_packet(r),
                shard::Msg::Tick(t) => self.on_tick(*t),
            }
        }
        if sample {
            let t1 = crate::capture::afxdp::now_ns();
            if let Some(l) = &self.ctx.setup.latency {
                if let Some(shard::Msg::Packet(r)) = msgs.first() {
                    l.ts_to_scorer.record(t0.saturating_sub(r.ts_ns));
                }
                l.scorer_per_packet
                    .record(t1.saturating_sub(t0) / msgs.len() as u64);
            }
        }
    }

    fn on_tick(&mut self, now_ns: u64) {
        self.ticks += 1;
        if self.ticks == 3 && self.ctx.shard == 0 && fault_injected("scorer-panic") {
            panic!("injected fault ({FAULT_ENV}=scorer-panic)");
        }
        let ctx = &mut self.ctx;
        if now_ns > ctx.now_ns {
            ctx.now_ns = now_ns;
        }
        self.table.advance(now_ns, &mut |r| ctx.on_flow_export(r));
        ctx.advance_windows(now_ns);
        ctx.host_tick(now_ns);
        ctx.flush_due_summaries(now_ns);
        self.send_clock(true);
        self.checkpoint(now_ns, false);
    }

    fn finish(&mut self) {
        let ctx = &mut self.ctx;
        self.table.flush(&mut |r| ctx.on_flow_export(r));
        for pi in 0..ctx.profiles.len() {
            if let Some((w, _)) = &mut ctx.profiles[pi].window {
                if w.flush() {
                    ctx.counters.windows_incomplete.inc();
                }
            }
        }
        for pi in 0..ctx.profiles.len() {
            ctx.flush_summary(pi);
        }
        ctx.publish_host_tables();
        self.checkpoint(self.ctx.now_ns, true);
        self.ctx.now_ns = u64::MAX;
        self.send_clock(true);
    }
}
