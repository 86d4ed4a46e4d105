//! The evidence writer thread: for each alert from the scorers it waits until the
//! post-trigger span has passed in *packet time*, copies the matching records out of the
//! shard's ring (seq-checked, never blocking the scorer), writes them as
//! `evidence/<UTC time>_<profile>_<alert id>.pcap.zst`, and appends the alert line to
//! alerts.jsonl (and any further [`Sink`]).
//!
//! Protocol (the lead wires it; see `docs/evidence.md`):
//! - A scorer sends an alert with [`AlertSender::send`] (never blocks; live) or
//!   [`AlertSender::send_blocking`] (replay: back-pressure keeps runs deterministic).
//! - A scorer reports its packet clock with [`AlertSender::clock`]`(shard, ts_ns,
//!   ring.last_seq())` — e.g. on every tick — after any alert it raised at or before that
//!   time. An alert is due when its shard's clock reaches `to_ts_ns`; its evidence is the
//!   ring records with `seq <=` the seq of that first clock and `from_ts_ns <= ts <=
//!   to_ts_ns` in scope. Tying the copy to the clock's seq (not to when the thread gets
//!   round to it) makes replays reproducible.
//! - When every `AlertSender` is dropped (end of input), everything pending is copied up
//!   to the rings' heads and written, and the thread ends.
//!
//! Two ring layouts ([`EvidenceWriter::spawn`] and [`EvidenceWriter::spawn_shared`]):
//! - *per shard*: ring `i` belongs to shard `i`; a request's `shard` picks both the ring and
//!   the clock, and the clock's seq bounds the copy (above);
//! - *shared*: any number of rings (live capture: one per reader thread, each holding a
//!   mix of every shard's packets) and `shards` clocks. A request's `shard` picks only the
//!   clock; its evidence is copied from every ring (each up to its head at copy time, the
//!   clock's seq is ignored) and merged by timestamp ([`RecordBuf::sort_by_time`]). With one
//!   ring (replay) nothing is re-sorted: the file is in ring order, as with per-shard rings.
//!   `WriterConfig::settle_ns` delays a due request a little, so that a reader that
//!   stamped a frame just before `to_ts_ns` has appended it before the copy.
//!
//! Never blocking the scorer: a full queue drops the evidence, not the alert — the alert
//! goes through a second, larger queue and is logged with `evidence.dropped = true`
//! (counted as `evidence.dropped_queue_full`); only if that queue is full too is the alert
//! itself lost (`alerts.lost_queue_full`). Disk errors are counted and logged (one line,
//! rate-limited) and never stop the thread; files appear only when complete.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};

use super::alertlog::{Alert, AlertLog, AlertMode, Sink};
use super::file::{sanitize, FileConfig, PcapZstWriter};
use super::retention::{Deleted, Retention, RetentionLimits};
use super::ring::{End, RecordBuf, RecordView, RingReader, Start};
use super::statedir::StateDir;
use super::time;
use crate::stats::{self, Counter, Snapshot};

/// A predicate over ring records (e.g. a profile's compiled BPF filter).
pub type RecordFilter = Arc<dyn Fn(&RecordView<'_>) -> bool + Send + Sync>;

/// Where log lines go (default: stderr, prefixed `streamml-sensor: `).
pub type LogFn = Arc<dyn Fn(&str) + Send + Sync>;

/// Which packets of the span belong to an alert's evidence.
#[derive(Clone)]
pub enum Scope {
    /// The packets whose ring record carries this flow hash (the scorer's symmetric hash).
    Flow { hash: u64 },
    /// Every packet of the shard in the span, optionally filtered (e.g. the profile's
    /// packet filter).
    Window { filter: Option<RecordFilter> },
}

impl std::fmt::Debug for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Flow { hash } => write!(f, "Flow({hash:#x})"),
            Scope::Window { filter } => write!(f, "Window(filtered: {})", filter.is_some()),
        }
    }
}

/// What evidence an alert wants.
#[derive(Clone, Debug)]
pub struct EvidenceRequest {
    /// The shard whose ring holds the packets (index into the writer's rings).
    pub shard: usize,
    /// Pre-trigger start (packet time, inclusive).
    pub from_ts_ns: u64,
    /// Post-trigger end (packet time, inclusive): the alert is due when the shard's clock
    /// reaches it.
    pub to_ts_ns: u64,
    pub scope: Scope,
    /// Bytes kept per packet and packets kept per file (the profile's `snaplen` and
    /// `max_packets`).
    pub limits: EvidenceLimits,
}

/// How much of the span an evidence file keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvidenceLimits {
    /// Bytes kept of each packet (0: as the ring stored them).
    pub snaplen: u32,
    /// Packets kept, the first in time order (0: every packet of the span); the rest are
    /// counted as `evidence.packets_capped`.
    pub max_packets: u64,
}

impl EvidenceRequest {
    /// The span `[alert_ts - pre, alert_ts + post]`.
    pub fn around(shard: usize, alert_ts_ns: u64, pre_ns: u64, post_ns: u64, scope: Scope) -> Self {
        EvidenceRequest {
            shard,
            from_ts_ns: alert_ts_ns.saturating_sub(pre_ns),
            to_ts_ns: alert_ts_ns.saturating_add(post_ns),
            scope,
            limits: EvidenceLimits::default(),
        }
    }
}

/// Settings of the evidence writer.
pub struct WriterConfig {
    pub state: StateDir,
    /// Alerts with evidence that may wait in the queue (full: evidence dropped).
    pub queue: usize,
    /// Alerts whose evidence was dropped that may wait (full: the alert is lost).
    pub overflow_queue: usize,
    /// Alerts waiting for their post-trigger span, at most (more: evidence dropped).
    pub max_pending: usize,
    pub retention: RetentionLimits,
    pub file: FileConfig,
    /// Write alert lines in (timestamp, shard, alert id) order, held until every shard's
    /// clock has passed them (deterministic output for replay). Otherwise lines are written
    /// as soon as their evidence is done.
    pub ordered: bool,
    pub log: LogFn,
    /// At most one log line per kind of error per this interval.
    pub log_every: Duration,
    /// Further sinks after alerts.jsonl.
    pub extra_sinks: Vec<Box<dyn Sink>>,
    /// A request is due when its shard's clock reaches `to_ts_ns + settle_ns` (live
    /// capture: frames from several readers, stamped in wall-clock time, reach the rings
    /// in slightly different orders). 0: at `to_ts_ns` (replay).
    pub settle_ns: u64,
    /// Log rotation: when this generation changes (live capture bumps it on SIGHUP), the
    /// writer closes alerts.jsonl and opens the file at its path anew, before the next
    /// line (within 200 ms when idle). Lines written before that went to the file the
    /// descriptor pointed at (renamed by logrotate: nothing is lost either way).
    pub reopen: Option<Arc<AtomicU64>>,
    /// Bench mode: the time from an alert (its packet time, wall-clock in live capture)
    /// to its evidence file written, one sample per file.
    pub latency: Option<Arc<crate::stats::StageLatency>>,
}

impl WriterConfig {
    pub fn new(state: StateDir) -> WriterConfig {
        WriterConfig {
            state,
            queue: 256,
            overflow_queue: 4096,
            max_pending: 10_000,
            retention: RetentionLimits::default(),
            file: FileConfig::default(),
            ordered: false,
            log: Arc::new(|s: &str| eprintln!("streamml-sensor: {s}")),
            log_every: Duration::from_secs(10),
            extra_sinks: Vec::new(),
            settle_ns: 0,
            reopen: None,
            latency: None,
        }
    }
}

enum Msg {
    Alert(Box<Alert>, Option<EvidenceRequest>),
    Clock { shard: usize, ts_ns: u64, seq: u64 },
}

/// Counters updated by the scorers (several writers: atomic adds, only when a queue is
/// full, never on the normal path).
#[derive(Debug, Default)]
pub struct SenderCounters {
    pub evidence_dropped_queue_full: AtomicU64,
    pub alerts_lost_queue_full: AtomicU64,
    pub clocks_dropped: AtomicU64,
}

/// The scorers' handle: cheap to clone (one per scorer).
#[derive(Clone)]
pub struct AlertSender {
    tx: Sender<Msg>,
    overflow: Sender<Box<Alert>>,
    ctr: Arc<SenderCounters>,
}

/// What happened to a sent alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendOutcome {
    Queued,
    /// The queue was full: the alert will be logged with `evidence.dropped = true`.
    EvidenceDropped,
    /// Both queues were full (or the writer is gone): the alert is lost (counted).
    AlertLost,
}

impl AlertSender {
    /// Sends an alert; never blocks.
    pub fn send(&self, alert: Alert, evidence: Option<EvidenceRequest>) -> SendOutcome {
        match self.tx.try_send(Msg::Alert(Box::new(alert), evidence)) {
            Ok(()) => SendOutcome::Queued,
            Err(TrySendError::Full(Msg::Alert(mut a, ev))) => {
                if ev.is_some() {
                    a.evidence.dropped = true;
                    self.ctr
                        .evidence_dropped_queue_full
                        .fetch_add(1, Ordering::Relaxed);
                }
                match self.overflow.try_send(a) {
                    Ok(()) if ev.is_some() => SendOutcome::EvidenceDropped,
                    Ok(()) => SendOutcome::Queued,
                    Err(_) => {
                        self.ctr
                            .alerts_lost_queue_full
                            .fetch_add(1, Ordering::Relaxed);
                        SendOutcome::AlertLost
                    }
                }
            }
            Err(_) => {
                self.ctr
                    .alerts_lost_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                SendOutcome::AlertLost
            }
        }
    }

    /// Sends an alert, waiting for room (replay).
    pub fn send_blocking(&self, alert: Alert, evidence: Option<EvidenceRequest>) -> SendOutcome {
        match self.tx.send(Msg::Alert(Box::new(alert), evidence)) {
            Ok(()) => SendOutcome::Queued,
            Err(_) => {
                self.ctr
                    .alerts_lost_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                SendOutcome::AlertLost
            }
        }
    }

    /// Reports that `shard` has appended every record up to `last_seq` and its packet
    /// clock reached `ts_ns`. Never blocks; dropped (counted) if the queue is full.
    pub fn clock(&self, shard: usize, ts_ns: u64, last_seq: u64) {
        if self
            .tx
            .try_send(Msg::Clock {
                shard,
                ts_ns,
                seq: last_seq,
            })
            .is_err()
        {
            self.ctr.clocks_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// [`AlertSender::clock`], waiting for room (replay).
    pub fn clock_blocking(&self, shard: usize, ts_ns: u64, last_seq: u64) {
        let _ = self.tx.send(Msg::Clock {
            shard,
            ts_ns,
            seq: last_seq,
        });
    }

    pub fn counters(&self) -> &SenderCounters {
        &self.ctr
    }
}

/// Counters of the writer thread (single writer: that thread).
#[derive(Debug, Default)]
pub struct WriterCounters {
    pub alerts_received: Counter,
    pub alerts_written: Counter,
    pub alerts_write_errors: Counter,
    pub alerts_out_of_order: Counter,
    pub sink_errors: Counter,
    pub files_written: Counter,
    pub packets_written: Counter,
    pub bytes_written: Counter,
    pub write_errors: Counter,
    pub empty: Counter,
    pub truncated: Counter,
    pub packets_capped: Counter,
    pub records_lost_overwritten: Counter,
    pub link_skipped: Counter,
    pub dropped_pending_full: Counter,
    pub no_ring: Counter,
    pub retention_deleted_files: Counter,
    pub retention_deleted_bytes: Counter,
    pub retention_delete_errors: Counter,
    /// Deletions by reason (see `retention`): an older file of an incident with a newer
    /// one; the oldest file of the owner profile holding the most; already gone.
    pub deleted_superseded: Counter,
    pub deleted_oldest: Counter,
    pub deleted_gone: Counter,
    /// Evidence files found in the directory at start, and kept now.
    pub files_at_start: Counter,
    pub files_kept: Counter,
    /// Evidence files renamed into the incident they joined (`@` names), and renames that
    /// failed (the file keeps its own name: its own incident for retention).
    pub files_renamed: Counter,
    pub rename_errors: Counter,
    pub stale_tmp_removed: Counter,
    pub alertlog_repaired_bytes: Counter,
    /// Alerts that asked for no evidence (budget summaries).
    pub no_evidence: Counter,
    /// Window alerts merged into another shard's alert of the same incident (no line).
    pub incidents_merged: Counter,
    /// Alerts written as `anomaly_update` of an incident already written (window alerts
    /// of another shard, alerts that share a host with an open incident).
    pub incidents_updated: Counter,
    /// Incidents opened (alert lines with `event_type` "anomaly").
    pub incidents_opened: Counter,
}

impl WriterCounters {
    pub fn snapshot_into(&self, s: &mut Snapshot) {
        stats::merge_into(
            s,
            [
                ("alerts.received", self.alerts_received.get()),
                ("alerts.written", self.alerts_written.get()),
                ("alerts.write_errors", self.alerts_write_errors.get()),
                ("alerts.out_of_order", self.alerts_out_of_order.get()),
                ("alerts.sink_errors", self.sink_errors.get()),
                ("alerts.incidents_merged", self.incidents_merged.get()),
                ("alerts.no_evidence", self.no_evidence.get()),
                ("alerts.incidents_updated", self.incidents_updated.get()),
                ("alerts.incidents_opened", self.incidents_opened.get()),
                (
                    "alerts.log_repaired_bytes",
                    self.alertlog_repaired_bytes.get(),
                ),
                ("evidence.files_written", self.files_written.get()),
                ("evidence.packets_written", self.packets_written.get()),
                ("evidence.bytes_written", self.bytes_written.get()),
                ("evidence.write_errors", self.write_errors.get()),
                ("evidence.empty", self.empty.get()),
                ("evidence.truncated", self.truncated.get()),
                ("evidence.packets_capped", self.packets_capped.get()),
                (
                    "evidence.records_lost_overwritten",
                    self.records_lost_overwritten.get(),
                ),
                ("evidence.link_skipped", self.link_skipped.get()),
                (
                    "evidence.dropped_pending_full",
                    self.dropped_pending_full.get(),
                ),
                ("evidence.no_ring", self.no_ring.get()),
                ("evidence.stale_tmp_removed", self.stale_tmp_removed.get()),
                ("evidence.deleted_superseded", self.deleted_superseded.get()),
                ("evidence.deleted_oldest", self.deleted_oldest.get()),
                ("evidence.deleted_gone", self.deleted_gone.get()),
                ("evidence.files_at_start", self.files_at_start.get()),
                ("evidence.files_kept", self.files_kept.get()),
                ("evidence.files_renamed", self.files_renamed.get()),
                ("evidence.rename_errors", self.rename_errors.get()),
                (
                    "retention.deleted_files",
                    self.retention_deleted_files.get(),
                ),
                (
                    "retention.deleted_bytes",
                    self.retention_deleted_bytes.get(),
                ),
                (
                    "retention.delete_errors",
                    self.retention_delete_errors.get(),
                ),
            ],
        );
    }
}

impl SenderCounters {
    pub fn snapshot_into(&self, s: &mut Snapshot) {
        stats::merge_into(
            s,
            [
                (
                    "evidence.dropped_queue_full",
                    self.evidence_dropped_queue_full.load(Ordering::Relaxed),
                ),
                (
                    "alerts.lost_queue_full",
                    self.alerts_lost_queue_full.load(Ordering::Relaxed),
                ),
                (
                    "evidence.clocks_dropped",
                    self.clocks_dropped.load(Ordering::Relaxed),
                ),
            ],
        );
    }
}

/// The running writer thread.
pub struct EvidenceWriterHandle {
    thread: JoinHandle<()>,
    counters: Arc<WriterCounters>,
    sender_counters: Arc<SenderCounters>,
}

impl EvidenceWriterHandle {
    /// All evidence/alert counters now.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::new();
        self.counters.snapshot_into(&mut s);
        self.sender_counters.snapshot_into(&mut s);
        s
    }

    pub fn counters(&self) -> &Arc<WriterCounters> {
        &self.counters
    }

    /// Waits for the thread to finish (after every sender is dropped) and returns the
    /// final counters.
    pub fn join(self) -> Snapshot {
        let s = match self.thread.join() {
            Ok(()) => None,
            Err(_) => Some(()),
        };
        let mut snap = Snapshot::new();
        self.counters.snapshot_into(&mut snap);
        self.sender_counters.snapshot_into(&mut snap);
        if s.is_some() {
            snap.insert("evidence.writer_panicked".into(), 1);
        }
        snap
    }
}

/// Adds the deletions between two retention tallies to the counters.
fn count_deleted(c: &WriterCounters, before: &Deleted, now: &Deleted) {
    c.deleted_superseded.add(now.superseded - before.superseded);
    c.deleted_oldest.add(now.oldest - before.oldest);
    c.deleted_gone.add(now.gone - before.gone);
    c.retention_deleted_files
        .add(now.superseded + now.oldest - before.superseded - before.oldest);
    c.retention_deleted_bytes.add(now.bytes - before.bytes);
    c.retention_delete_errors.add(now.errors - before.errors);
}

/// The evidence writer (see the module doc).
pub struct EvidenceWriter;

impl EvidenceWriter {
    /// Starts the writer thread over the shard rings (index = shard): a request's `shard`
    /// picks its ring and its clock.
    pub fn spawn(
        config: WriterConfig,
        rings: Vec<RingReader>,
    ) -> std::io::Result<(AlertSender, EvidenceWriterHandle)> {
        let shards = rings.len();
        Self::spawn_with(config, rings, shards, false)
    }

    /// Starts the writer thread over `rings` shared by `shards` scorer shards: a request's
    /// `shard` picks only its clock; its evidence comes from every ring, merged by time.
    pub fn spawn_shared(
        config: WriterConfig,
        rings: Vec<RingReader>,
        shards: usize,
    ) -> std::io::Result<(AlertSender, EvidenceWriterHandle)> {
        Self::spawn_with(config, rings, shards, true)
    }

    fn spawn_with(
        config: WriterConfig,
        rings: Vec<RingReader>,
        shards: usize,
        shared: bool,
    ) -> std::io::Result<(AlertSender, EvidenceWriterHandle)> {
        let (tx, rx) = bounded(config.queue.max(1));
        let (otx, orx) = bounded(config.overflow_queue.max(1));
        let counters = Arc::new(WriterCounters::default());
        let sender_counters = Arc::new(SenderCounters::default());
        let mut log = RateLog::new(config.log.clone(), config.log_every);
        let evidence_dir = config.state.evidence_dir();
        let retention = match Retention::scan(&evidence_dir, config.retention) {
            Ok(r) => {
                counters.stale_tmp_removed.add(r.stale_tmp_removed);
                counters.files_at_start.add(r.found_at_start);
                count_deleted(&counters, &Default::default(), &r.deleted);
                counters.files_kept.set(r.files() as u64);
                r
            }
            Err(e) => {
                log.log("retention", || {
                    format!("evidence: scanning {}: {e}", evidence_dir.display())
                });
                // Start with an empty list; new files are still bounded.
                Retention::new(config.retention)
            }
        };
        let alert_log = AlertLog::new(&config.state.alerts_path());
        counters
            .alertlog_repaired_bytes
            .add(alert_log.repaired_bytes);
        let mut st = State {
            reopen: config.reopen,
            reopened: 0,
            rings,
            shared,
            settle_ns: config.settle_ns,
            latency: config.latency,
            evidence_dir,
            file: config.file,
            ordered: config.ordered,
            max_pending: config.max_pending,
            alert_log,
            sinks: config.extra_sinks,
            retention,
            log,
            ctr: counters.clone(),
            pending: (0..shards).map(|_| Vec::new()).collect(),
            n_pending: 0,
            clocks: vec![None; shards],
            done: BTreeMap::new(),
            arrival: 0,
            last_emitted: None,
            buf: RecordBuf::new(),
            tmp: RecordBuf::new(),
            recent: std::collections::VecDeque::new(),
            open: std::collections::VecDeque::new(),
        };
        let thread = std::thread::Builder::new()
            .name("evidence-writer".into())
            .spawn(move || st.run(rx, orx))?;
        Ok((
            AlertSender {
                tx,
                overflow: otx,
                ctr: sender_counters.clone(),
            },
            EvidenceWriterHandle {
                thread,
                counters,
                sender_counters,
            },
        ))
    }
}

/// One log line per kind per interval, with a count of the suppressed ones.
struct RateLog {
    f: LogFn,
    every: Duration,
    last: HashMap<&'static str, (Instant, u64)>,
}

impl RateLog {
    fn new(f: LogFn, every: Duration) -> RateLog {
        RateLog {
            f,
            every,
            last: HashMap::new(),
        }
    }

    fn log(&mut self, kind: &'static str, msg: impl FnOnce() -> String) {
        let now = Instant::now();
        match self.last.get_mut(kind) {
            Some((t, suppressed)) if now.duration_since(*t) < self.every => {
                *suppressed += 1;
            }
            Some((t, suppressed)) => {
                let n = std::mem::take(suppressed);
                *t = now;
                let m = msg();
                if n > 0 {
                    (self.f)(&format!("{m} ({n} similar messages suppressed)"));
                } else {
                    (self.f)(&m);
                }
            }
            None => {
                self.last.insert(kind, (now, 0));
                (self.f)(&msg());
            }
        }
    }
}

struct Pending {
    alert: Box<Alert>,
    req: EvidenceRequest,
    arrival: u64,
}

/// Order of alert lines: (timestamp, shard, alert id, arrival).
type LineKey = (u64, u32, u64, u64);

struct State {
    /// [`WriterConfig::reopen`] and the generation last acted on.
    reopen: Option<Arc<AtomicU64>>,
    reopened: u64,
    rings: Vec<RingReader>,
    /// Every request reads every ring (see the module doc); else ring = shard.
    shared: bool,
    settle_ns: u64,
    latency: Option<Arc<crate::stats::StageLatency>>,
    evidence_dir: PathBuf,
    file: FileConfig,
    ordered: bool,
    max_pending: usize,
    alert_log: AlertLog,
    sinks: Vec<Box<dyn Sink>>,
    retention: Retention,
    log: RateLog,
    ctr: Arc<WriterCounters>,
    pending: Vec<Vec<Pending>>,
    n_pending: usize,
    /// Latest clock per shard: (ts_ns, seq).
    clocks: Vec<Option<(u64, u64)>>,
    /// Finished alerts waiting for their turn (ordered mode).
    done: BTreeMap<LineKey, Box<Alert>>,
    arrival: u64,
    last_emitted: Option<LineKey>,
    buf: RecordBuf,
    /// One ring's copy before it is merged into `buf` (shared rings).
    tmp: RecordBuf,
    /// Window incidents already collected: (profile, from, to, incident id, shard), newest
    /// last.
    recent: std::collections::VecDeque<(String, u64, u64, u64, u32)>,
    /// Incidents whose line was written, that later alerts may join, newest last.
    open: std::collections::VecDeque<OpenIncident>,
}

/// An incident whose first line was written (see [`State::join_incident`]).
struct OpenIncident {
    id: u64,
    /// Its key: the name stem of its first line's evidence file, `TIME_PROFILE_ID`.
    key: String,
    /// Packet time spanned by its alerts.
    from: u64,
    to: u64,
    /// The hosts the alert that opened it names (at most [`INCIDENT_HOSTS`]).
    hosts: Vec<IpAddr>,
}

/// An alert joins an open incident whose span, widened by this much on either side,
/// overlaps its own, when they name a common host.
pub const INCIDENT_GRACE_NS: u64 = 10_000_000_000;
/// Hosts remembered per incident.
pub const INCIDENT_HOSTS: usize = 16;
/// Incidents that may still be joined (the oldest is forgotten first).
const OPEN_INCIDENTS: usize = 256;
/// A window alert names the hosts that are the source or destination of at least this
/// share of its window's packets (at most 4).
const WINDOW_HOST_SHARE: f64 = 0.25;

/// The packet time an alert covers: its window, its flow's first to last packet, or its
/// own time.
fn alert_span(a: &Alert) -> (u64, u64) {
    let t = a.ts_ns();
    if let Some(w) = a.anomaly.window {
        return (w.start.min(t), w.end.max(t));
    }
    match a
        .anomaly
        .extra
        .get("flow_first_seen_ms")
        .and_then(|v| v.as_u64())
    {
        Some(ms) => (ms.saturating_mul(1_000_000).min(t), t),
        None => (t, t),
    }
}

/// The hosts an alert names: its flow's two endpoints, and any `anomaly.host` or
/// `anomaly.hosts` (IP address strings; window alerts get `hosts` from their packets, a
/// host-behaviour alert names its host).
pub fn alert_hosts(a: &Alert) -> Vec<IpAddr> {
    let mut v = Vec::new();
    if let Some(f) = &a.flow {
        v.push(f.src_ip);
        v.push(f.dest_ip);
    }
    let x = &a.anomaly.extra;
    let strs = x.get("host").into_iter().chain(
        x.get("hosts")
            .and_then(|h| h.as_array())
            .into_iter()
            .flatten(),
    );
    for h in strs {
        if let Some(ip) = h.as_str().and_then(|s| s.parse::<IpAddr>().ok()) {
            if !v.contains(&ip) {
                v.push(ip);
            }
        }
    }
    v
}

/// The hosts that are the source or destination of at least [`WINDOW_HOST_SHARE`] of the
/// records of `buf` in `[from, to]` (at most 4, most packets first).
fn window_hosts(buf: &RecordBuf, from: u64, to: u64) -> Vec<IpAddr> {
    let opts = crate::wire::DecodeOptions::default();
    let mut counts: HashMap<IpAddr, u64> = HashMap::new();
    let mut total = 0u64;
    for v in buf.iter() {
        if v.ts_ns() < from || v.ts_ns() > to {
            continue;
        }
        let Some(link) = crate::wire::LinkType::from_linktype(u32::from(v.link())) else {
            continue;
        };
        let Ok(m) = crate::wire::decode(v.data, v.meta.orig_len, link, &opts) else {
            continue;
        };
        total += 1;
        let (s, d) = (
            ip_of(&m.src_ip, m.ip_version),
            ip_of(&m.dst_ip, m.ip_version),
        );
        *counts.entry(s).or_insert(0) += 1;
        if d != s {
            *counts.entry(d).or_insert(0) += 1;
        }
    }
    let mut top: Vec<(u64, IpAddr)> = counts
        .into_iter()
        .filter(|&(_, n)| total > 0 && n as f64 >= WINDOW_HOST_SHARE * total as f64)
        .map(|(ip, n)| (n, ip))
        .collect();
    top.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    top.truncate(4);
    top.into_iter().map(|(_, ip)| ip).collect()
}

fn ip_of(b: &[u8; 16], version: u8) -> IpAddr {
    if version == 6 {
        IpAddr::V6(std::net::Ipv6Addr::from(*b))
    } else {
        IpAddr::V4(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

/// The name stem of an alert's evidence file, `TIME_PROFILE_ID` (its incident's key when
/// it opens one).
fn file_stem(a: &Alert) -> String {
    format!(
        "{}_{}_{}",
        time::compact_utc(a.ts_ns()),
        sanitize(&a.anomaly.profile),
        a.alert_id
    )
}

/// Window incidents remembered after their line was written (for `anomaly_update`).
const RECENT_INCIDENTS: usize = 64;

/// Whether two window alerts' evidence spans overlap.
fn spans_overlap(a: &EvidenceRequest, b: &EvidenceRequest) -> bool {
    a.from_ts_ns < b.to_ts_ns && b.from_ts_ns < a.to_ts_ns
}

/// The union of two window filters (None: every packet).
fn filter_union(a: Option<RecordFilter>, b: Option<RecordFilter>) -> Option<RecordFilter> {
    match (a, b) {
        (Some(a), Some(b)) => Some(Arc::new(move |v: &RecordView<'_>| a(v) || b(v))),
        _ => None,
    }
}

impl State {
    /// Reopens alerts.jsonl when the reopen generation moved (log rotation).
    fn check_reopen(&mut self) {
        let Some(g) = self.reopen.as_ref().map(|g| g.load(Ordering::Acquire)) else {
            return;
        };
        if g == self.reopened {
            return;
        }
        self.reopened = g;
        let path = self.alert_log.path().display().to_string();
        match self.alert_log.reopen() {
            Ok(()) => self.log.log("reopen", || format!("reopened {path}")),
            Err(e) => {
                // Retried at the next alert, like any alerts.jsonl that cannot be opened.
                self.log
                    .log("alertlog", || format!("evidence: reopening {path}: {e}"))
            }
        }
    }

    fn run(&mut self, rx: Receiver<Msg>, orx: Receiver<Box<Alert>>) {
        loop {
            self.check_reopen();
            while let Ok(a) = orx.try_recv() {
                self.ctr.alerts_received.inc();
                self.finish(a);
            }
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(Msg::Alert(a, ev)) => {
                    self.ctr.alerts_received.inc();
                    self.on_alert(a, ev)
                }
                Ok(Msg::Clock { shard, ts_ns, seq }) => self.on_clock(shard, ts_ns, seq),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            self.emit_ready(false);
        }
        // End of input: everything left, up to each ring's head.
        while let Ok(a) = orx.try_recv() {
            self.ctr.alerts_received.inc();
            self.finish(a);
        }
        for shard in 0..self.pending.len() {
            let mut ps = std::mem::take(&mut self.pending[shard]);
            ps.sort_by_key(|p| (p.req.to_ts_ns, p.arrival));
            // Shared rings: each ring is copied up to its own head anyway.
            let head = if self.shared {
                u64::MAX
            } else {
                self.rings[shard].head_seq()
            };
            for p in ps {
                self.n_pending -= 1;
                self.collect(p, head);
            }
        }
        self.emit_ready(true);
        if let Err(e) = self.alert_log.flush() {
            self.ctr.alerts_write_errors.inc();
            let path = self.alert_log.path().display().to_string();
            self.log
                .log("alertlog", || format!("evidence: syncing {path}: {e}"));
        }
        for s in &mut self.sinks {
            let _ = s.flush();
        }
    }

    fn on_alert(&mut self, mut a: Box<Alert>, ev: Option<EvidenceRequest>) {
        a.incident_id = Some(a.alert_id);
        let Some(req) = ev else {
            self.ctr.no_evidence.inc();
            self.finish(a);
            return;
        };
        if a.anomaly.mode == AlertMode::Window {
            if let Scope::Window { filter } = &req.scope {
                // Another shard's alert of the same profile whose span overlaps, not yet
                // collected: one incident, one line, the evidence of both shards.
                // (A shard's own alerts are separate windows: its cooldown decides.)
                let shard = a.anomaly.shard;
                let same = |p: &Pending| {
                    p.alert.anomaly.mode == AlertMode::Window
                        && p.alert.anomaly.profile == a.anomaly.profile
                        && matches!(p.req.scope, Scope::Window { .. })
                        && spans_overlap(&p.req, &req)
                        && p.alert.anomaly.shard != shard
                        && !p.alert.anomaly.extra.get("shards").is_some_and(|v| {
                            v.as_array()
                                .is_some_and(|v| v.iter().any(|x| x.as_u64() == Some(shard.into())))
                        })
                };
                if let Some(p) = self.pending.iter_mut().flatten().find(|p| same(p)) {
                    // The line is the earliest alert's (time, shard, id), whatever order
                    // the shards' alerts arrived in; the score the highest.
                    let key = |x: &Alert| (x.ts_ns(), x.anomaly.shard, x.alert_id);
                    if key(&a) < key(&p.alert) {
                        let extra = std::mem::take(&mut p.alert.anomaly.extra);
                        let score = p.alert.anomaly.score;
                        std::mem::swap(&mut p.alert, &mut a);
                        // The merged line keeps what was merged so far (`shards`).
                        let mine = std::mem::replace(&mut p.alert.anomaly.extra, extra);
                        for (k, v) in mine {
                            p.alert.anomaly.extra.entry(k).or_insert(v);
                        }
                        a.anomaly.score = score;
                    }
                    p.req.from_ts_ns = p.req.from_ts_ns.min(req.from_ts_ns);
                    p.req.to_ts_ns = p.req.to_ts_ns.max(req.to_ts_ns);
                    if let Scope::Window { filter: pf } = &mut p.req.scope {
                        *pf = filter_union(pf.take(), filter.clone());
                    }
                    let x = &mut p.alert.anomaly.extra;
                    let shards = x
                        .entry("shards")
                        .or_insert_with(|| serde_json::json!([p.alert.anomaly.shard]));
                    if let Some(v) = shards.as_array_mut() {
                        for sh in [p.alert.anomaly.shard, a.anomaly.shard] {
                            v.push(serde_json::Value::from(sh));
                        }
                        v.sort_by_key(|s| s.as_u64());
                        v.dedup();
                    }
                    if a.anomaly.score > p.alert.anomaly.score {
                        p.alert.anomaly.score = a.anomaly.score;
                    }
                    self.ctr.incidents_merged.inc();
                    return;
                }
                // Its incident's line is already written: this alert updates it.
                if let Some(r) = self.recent.iter().rev().find(|r| {
                    r.0 == a.anomaly.profile
                        && r.4 != a.anomaly.shard
                        && r.1 < req.to_ts_ns
                        && req.from_ts_ns < r.2
                }) {
                    a.incident_id = Some(r.3);
                    a.event_type = "anomaly_update".to_string();
                    self.ctr.incidents_updated.inc();
                }
            }
        }
        if req.shard >= self.clocks.len() || self.rings.is_empty() {
            self.ctr.no_ring.inc();
            a.evidence.error = Some(format!("no evidence ring for shard {}", req.shard));
            self.finish(a);
            return;
        }
        if self.n_pending >= self.max_pending {
            self.ctr.dropped_pending_full.inc();
            a.evidence.dropped = true;
            self.finish(a);
            return;
        }
        self.arrival += 1;
        let p = Pending {
            alert: a,
            req,
            arrival: self.arrival,
        };
        match self.clocks[p.req.shard] {
            Some((_, seq)) if self.is_due(&p) => self.collect(p, seq),
            _ => {
                self.n_pending += 1;
                let s = p.req.shard;
                self.pending[s].push(p);
            }
        }
    }

    fn on_clock(&mut self, shard: usize, ts_ns: u64, seq: u64) {
        if shard >= self.clocks.len() {
            return;
        }
        let c = &mut self.clocks[shard];
        match c {
            Some((t, s)) => {
                *t = (*t).max(ts_ns);
                *s = (*s).max(seq);
            }
            None => *c = Some((ts_ns, seq)),
        }
        // A window request may wait on every shard's clock (see `is_due`): look at all.
        for sh in 0..self.pending.len() {
            let Some((_, s)) = self.clocks[sh] else {
                continue;
            };
            if !self.pending[sh].iter().any(|p| self.is_due(p)) {
                continue;
            }
            let all = std::mem::take(&mut self.pending[sh]);
            let (mut due, rest): (Vec<_>, Vec<_>) = all.into_iter().partition(|p| self.is_due(p));
            self.pending[sh] = rest;
            due.sort_by_key(|p| (p.req.to_ts_ns, p.arrival));
            for p in due {
                self.n_pending -= 1;
                self.collect(p, s);
            }
        }
    }

    /// A request is due when its shard's clock is past its end plus the settle time; a
    /// window alert's (with several shards) when every shard's clock is past that plus the
    /// alert's look-back, so that the other shards' alerts of the incident have arrived.
    fn is_due(&self, p: &Pending) -> bool {
        let Some((t, _)) = self.clocks.get(p.req.shard).copied().flatten() else {
            return false;
        };
        if t < self.due_at(&p.req) {
            return false;
        }
        if p.alert.anomaly.mode != AlertMode::Window || self.clocks.len() < 2 {
            return true;
        }
        // Another shard's window alert whose span overlaps this one starts before this
        // one's end, so (with the same window and pre_s) it is raised before that shard's
        // clock passes the end plus (alert time - span start): waiting for it makes the
        // merge independent of thread timing. A shard that has sent no clock yet does not
        // hold it back.
        let horizon = self
            .due_at(&p.req)
            .saturating_add(p.alert.ts_ns().saturating_sub(p.req.from_ts_ns));
        self.clocks
            .iter()
            .all(|c| c.is_none_or(|(t, _)| t >= horizon))
    }

    /// Clock time at which a request is due.
    fn due_at(&self, req: &EvidenceRequest) -> u64 {
        req.to_ts_ns.saturating_add(self.settle_ns)
    }

    /// Copies the records of `req` from one ring (up to `seq_bound`) into `out`.
    fn copy_one(
        reader: &RingReader,
        req: &EvidenceRequest,
        seq_bound: u64,
        out: &mut RecordBuf,
    ) -> super::ring::CopyStats {
        // A clock may promise more than the ring holds yet (e.g. u64::MAX from a scorer
        // whose ring is written by the reader): never look past the head.
        let seq_bound = seq_bound.min(reader.head_seq());
        let end = End {
            seq: seq_bound,
            ts_ns: req.to_ts_ns,
        };
        let from = Start::TsNs(req.from_ts_ns);
        match &req.scope {
            Scope::Flow { hash } => {
                let h = *hash;
                reader.copy_range(from, end, |v| v.flow_hash() == h, out)
            }
            Scope::Window { filter: Some(f) } => reader.copy_range(from, end, |v| f(v), out),
            Scope::Window { filter: None } => reader.copy_range(from, end, |_| true, out),
        }
    }

    /// Copies the evidence of `p` (records up to `seq_bound`; shared rings: every ring up
    /// to its head) and writes its file.
    fn collect(&mut self, p: Pending, seq_bound: u64) {
        let Pending { mut alert, req, .. } = p;
        if alert.anomaly.mode == AlertMode::Window && alert.event_type == "anomaly" {
            if self.recent.len() >= RECENT_INCIDENTS {
                self.recent.pop_front();
            }
            self.recent.push_back((
                alert.anomaly.profile.clone(),
                req.from_ts_ns,
                req.to_ts_ns,
                alert.incident_id.unwrap_or(alert.alert_id),
                alert.anomaly.shard,
            ));
        }
        let (mut lost, mut start_overwritten) = (0u64, false);
        if !self.shared || self.rings.len() == 1 {
            let ring = if self.shared { 0 } else { req.shard };
            let bound = if self.shared { u64::MAX } else { seq_bound };
            let st = Self::copy_one(&self.rings[ring], &req, bound, &mut self.buf);
            lost += st.lost_overwritten;
            start_overwritten |= st.start_overwritten;
        } else {
            self.buf.clear();
            for reader in &self.rings {
                let st = Self::copy_one(reader, &req, u64::MAX, &mut self.tmp);
                lost += st.lost_overwritten;
                start_overwritten |= st.start_overwritten;
                for v in self.tmp.iter() {
                    self.buf.push(&v);
                }
            }
            self.buf.sort_by_time();
        }
        self.ctr.records_lost_overwritten.add(lost);
        if start_overwritten || lost > 0 {
            alert.evidence.truncated = true;
            self.ctr.truncated.inc();
        }
        if self.buf.is_empty() {
            self.ctr.empty.inc();
            self.finish(alert);
            return;
        }
        // One link type per PCAP: the most common one.
        let mut links: Vec<(u16, u64)> = Vec::new();
        let mut snaplen = 0u32;
        for v in self.buf.iter() {
            snaplen = snaplen.max(v.meta.cap_len);
            match links.iter_mut().find(|(l, _)| *l == v.link()) {
                Some((_, n)) => *n += 1,
                None => links.push((v.link(), 1)),
            }
        }
        links.sort_by_key(|&(l, n)| (std::cmp::Reverse(n), l));
        let link = links[0].0;
        let skipped: u64 = links[1..].iter().map(|&(_, n)| n).sum();
        self.ctr.link_skipped.add(skipped);
        let name = format!("{}.pcap.zst", file_stem(&alert));
        // A window alert names the hosts of most of its window's packets (so that other
        // alerts naming one of them can join its incident).
        if alert.anomaly.mode == AlertMode::Window && !alert.anomaly.extra.contains_key("hosts") {
            let (from, to) = alert_span(&alert);
            let hosts = window_hosts(&self.buf, from, to);
            if !hosts.is_empty() {
                alert.anomaly.extra.insert(
                    "hosts".into(),
                    serde_json::Value::from(
                        hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
                    ),
                );
            }
        }
        let dest = self.evidence_dir.join(&name);
        let lim = req.limits;
        // The profile's snaplen when it cuts something (else the file says 65535, as
        // before: no packet was cut to it).
        let snaplen = match lim.snaplen {
            s if s > 0 && s < snaplen => s,
            _ => snaplen.max(65_535),
        };
        let max = match lim.max_packets {
            0 => u64::MAX,
            m => m,
        };
        let of_link = links[0].1;
        self.ctr.packets_capped.add(of_link.saturating_sub(max));
        let res = (|| {
            let mut w = PcapZstWriter::create(&dest, link, snaplen, self.file)?;
            for v in self
                .buf
                .iter()
                .filter(|v| v.link() == link)
                .take(usize::try_from(max).unwrap_or(usize::MAX))
            {
                w.write_record(&v)?;
            }
            w.finish()
        })();
        match res {
            Ok(fin) => {
                self.ctr.files_written.inc();
                if let Some(l) = &self.latency {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64);
                    l.alert_to_evidence
                        .record(now.saturating_sub(alert.ts_ns()));
                }
                self.ctr.packets_written.add(fin.packets);
                self.ctr.bytes_written.add(fin.bytes);
                let fname = fin
                    .path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or(name);
                alert.evidence.path = Some(format!("evidence/{fname}"));
                alert.evidence.packets = fin.packets;
                let before = self.retention.deleted;
                if let Some(e) = self.retention.add(fin.path, fin.bytes) {
                    self.log
                        .log("retention", || format!("evidence: retention: {e}"));
                }
                count_deleted(&self.ctr, &before, &self.retention.deleted);
                self.ctr.files_kept.set(self.retention.files() as u64);
            }
            Err(e) => {
                self.ctr.write_errors.inc();
                let msg = format!("writing {}: {e}", dest.display());
                self.log.log("evidence", || format!("evidence: {msg}"));
                alert.evidence.error = Some(msg);
            }
        }
        self.finish(alert);
    }

    /// The alert is complete: write it now, or hold it for ordering.
    fn finish(&mut self, a: Box<Alert>) {
        if self.ordered {
            self.arrival += 1;
            let key = (a.ts_ns(), a.anomaly.shard, a.alert_id, self.arrival);
            self.done.insert(key, a);
        } else {
            self.emit(a);
        }
    }

    fn emit_ready(&mut self, all: bool) {
        if !self.ordered {
            return;
        }
        // Nothing older than every shard's clock can still arrive.
        let watermark = if all {
            u64::MAX
        } else {
            self.clocks
                .iter()
                .map(|c| c.map_or(0, |(t, _)| t))
                .min()
                .unwrap_or(0)
        };
        let pending_min = if all {
            None
        } else {
            self.pending
                .iter()
                .flatten()
                .map(|p| (p.alert.ts_ns(), p.alert.anomaly.shard, p.alert.alert_id))
                .min()
        };
        while let Some(entry) = self.done.first_entry() {
            let k = *entry.key();
            if !all && k.0 >= watermark {
                break;
            }
            if let Some(pm) = pending_min {
                if (pm.0, pm.1, pm.2) < (k.0, k.1, k.2) {
                    break;
                }
            }
            let a = entry.remove();
            if self.last_emitted.is_some_and(|l| k < l) {
                self.ctr.alerts_out_of_order.inc();
            }
            self.last_emitted = Some(k);
            self.emit(a);
        }
    }

    /// Incidents across shards and profiles (at the line's turn, so in ordered mode in
    /// line order, independent of thread timing): an alert that names a host (see
    /// [`alert_hosts`]) joins the newest open incident that names one of its hosts and
    /// whose span, widened by [`INCIDENT_GRACE_NS`] on either side, overlaps its own: it
    /// becomes an `anomaly_update` of that `incident_id`, and its evidence file is renamed
    /// `OWN@INCIDENT.pcap.zst` (retention keeps it with its incident). Window alerts of
    /// several shards were already merged or marked as updates in `on_alert`. An
    /// `anomaly` line that joins nothing opens an incident.
    fn join_incident(&mut self, a: &mut Alert) {
        if a.event_type != "anomaly" && a.event_type != "anomaly_update" {
            return;
        }
        let (from, to) = alert_span(a);
        let hosts = alert_hosts(a);
        let g = INCIDENT_GRACE_NS;
        let found = if a.event_type == "anomaly_update" {
            self.open.iter().rposition(|o| Some(o.id) == a.incident_id)
        } else if hosts.is_empty() {
            None
        } else {
            let i = self.open.iter().rposition(|o| {
                o.from.saturating_sub(g) <= to
                    && from <= o.to.saturating_add(g)
                    && o.hosts.iter().any(|h| hosts.contains(h))
            });
            if let Some(o) = i.and_then(|i| self.open.get(i)) {
                a.incident_id = Some(o.id);
                a.event_type = "anomaly_update".to_string();
                self.ctr.incidents_updated.inc();
            }
            i
        };
        let Some(i) = found else {
            if a.event_type == "anomaly" {
                self.ctr.incidents_opened.inc();
                if self.open.len() >= OPEN_INCIDENTS {
                    self.open.pop_front();
                }
                let mut hosts = hosts;
                hosts.truncate(INCIDENT_HOSTS);
                self.open.push_back(OpenIncident {
                    id: a.incident_id.unwrap_or(a.alert_id),
                    key: file_stem(a),
                    from,
                    to,
                    hosts,
                });
            }
            return;
        };
        // The incident stays open while alerts join it; its hosts stay those of the alert
        // that opened it (no chains from host to host across a busy network).
        let o = &mut self.open[i];
        o.from = o.from.min(from);
        o.to = o.to.max(to);
        let key = o.key.clone();
        self.rename_into(a, &key);
    }

    /// Renames an update's evidence file into its incident (`OWN@KEY.pcap.zst`). A file
    /// retention has deleted meanwhile is left alone; a failed rename keeps the old name
    /// (counted, logged).
    fn rename_into(&mut self, a: &mut Alert, key: &str) {
        let Some(rel) = a.evidence.path.clone() else {
            return;
        };
        let Some(name) = rel.strip_prefix("evidence/") else {
            return;
        };
        let old = self.evidence_dir.join(name);
        if !self.retention.holds(&old) {
            return;
        }
        let new_name = super::retention::update_name(name, key);
        let new = self.evidence_dir.join(&new_name);
        use nix::fcntl::{renameat2, RenameFlags};
        let res = match renameat2(None, &old, None, &new, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOSYS) => {
                // Filesystem without RENAME_NOREPLACE (one writer per state directory).
                if new.exists() {
                    Err(std::io::Error::from(std::io::ErrorKind::AlreadyExists))
                } else {
                    std::fs::rename(&old, &new)
                }
            }
            Err(e) => Err(std::io::Error::from(e)),
        };
        match res {
            Ok(()) => {
                self.retention.renamed(&old, new);
                a.evidence.path = Some(format!("evidence/{new_name}"));
                self.ctr.files_renamed.inc();
            }
            Err(e) => {
                self.ctr.rename_errors.inc();
                self.log.log("rename", || {
                    format!(
                        "evidence: renaming {} into its incident: {e}",
                        old.display()
                    )
                });
            }
        }
    }

    fn emit(&mut self, mut a: Box<Alert>) {
        self.join_incident(&mut a);
        let a = &*a;
        match self.alert_log.send_alert(a) {
            Ok(()) => self.ctr.alerts_written.inc(),
            Err(e) => {
                self.ctr.alerts_write_errors.inc();
                let path = self.alert_log.path().display().to_string();
                self.log
                    .log("alertlog", || format!("evidence: appending to {path}: {e}"));
            }
        }
        for s in &mut self.sinks {
            if let Err(e) = s.send_alert(a) {
                self.ctr.sink_errors.inc();
                let name = s.name().to_string();
                self.log
                    .log("sink", || format!("evidence: sink {name}: {e}"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::pcap::PcapFileSource;
    use crate::capture::PacketSource;
    use crate::evidence::alertlog::AlertMode;
    use crate::evidence::ring::{EvidenceRing, RingConfig};
    use std::io::Read;

    /// (ts, bytes) of the packets in an evidence file, read back with the pcap reader.
    fn read_evidence(state: &StateDir, a: &Alert) -> Vec<(u64, Vec<u8>)> {
        let p = state
            .root()
            .join(a.evidence.path.as_ref().expect("evidence path"));
        let mut b = Vec::new();
        zstd::stream::read::Decoder::new(std::fs::File::open(&p).unwrap())
            .unwrap()
            .read_to_end(&mut b)
            .unwrap();
        let plain = state.root().join("check.pcap");
        std::fs::write(&plain, &b).unwrap();
        let mut src = PcapFileSource::open(&plain).unwrap();
        let mut out = Vec::new();
        while let Some(f) = src.next_frame().unwrap() {
            out.push((f.ts_ns, f.data.to_vec()));
        }
        out
    }

    /// Shared rings (live capture: one per reader): a real capture's frames alternate
    /// between two rings; a window request and a flow request of either shard get the
    /// frames of both rings in their span, merged in time order.
    #[test]
    fn shared_rings_merge_every_ring_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::create(dir.path()).unwrap();
        let mut rings: Vec<EvidenceRing> = (0..2)
            .map(|q| {
                EvidenceRing::create(
                    &state.ring_path(q),
                    &RingConfig {
                        size_bytes: 1 << 20,
                        snaplen: 65_535,
                        shard: q as u32,
                    },
                )
                .unwrap()
            })
            .collect();
        let mut src = PcapFileSource::open(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/pcaps/basic/443-curl.pcap"),
        )
        .unwrap();
        // (ts, ring seq, flow hash, bytes)
        type Rec = (u64, u64, u64, Vec<u8>);
        let mut frames: Vec<Rec> = Vec::new();
        let mut i = 0u64;
        while let Some(f) = src.next_frame().unwrap() {
            let h = i % 3;
            let seq = rings[(i % 2) as usize].append(f.ts_ns, f.orig_len, f.link, h, f.data);
            frames.push((f.ts_ns, seq, h, f.data.to_vec()));
            i += 1;
        }
        assert!(frames.len() > 50, "{}", frames.len());
        let mut cfg = WriterConfig::new(state.clone());
        cfg.file.fsync = false;
        cfg.settle_ns = 1;
        let readers = rings.iter().map(|r| r.reader()).collect();
        let (tx, h) = EvidenceWriter::spawn_shared(cfg, readers, 2).unwrap();
        let (from, to) = (frames[10].0, frames[40].0);
        let a1 = Alert::new(1, to, "w", AlertMode::Window, 0.9, 0.5, 1);
        let r1 = EvidenceRequest {
            shard: 1,
            from_ts_ns: from,
            to_ts_ns: to,
            scope: Scope::Window { filter: None },
            limits: EvidenceLimits::default(),
        };
        let a2 = Alert::new(2, to, "f", AlertMode::Flow, 0.9, 0.5, 0);
        let r2 = EvidenceRequest {
            shard: 0,
            from_ts_ns: 0,
            to_ts_ns: u64::MAX - 1,
            scope: Scope::Flow { hash: 1 },
            limits: EvidenceLimits::default(),
        };
        // A shard beyond the clocks has no ring.
        let a3 = Alert::new(3, to, "x", AlertMode::Flow, 0.9, 0.5, 2);
        let r3 = EvidenceRequest {
            shard: 2,
            ..r1.clone()
        };
        assert_eq!(tx.send_blocking(a1, Some(r1)), SendOutcome::Queued);
        assert_eq!(tx.send_blocking(a2, Some(r2)), SendOutcome::Queued);
        assert_eq!(tx.send_blocking(a3, Some(r3)), SendOutcome::Queued);
        // The clock's seq is ignored with shared rings (0 would copy nothing).
        tx.clock_blocking(1, frames.last().unwrap().0, 0);
        drop(tx);
        let snap = h.join();
        assert_eq!(snap["evidence.files_written"], 2);
        assert_eq!(snap["evidence.no_ring"], 1);
        let text = std::fs::read_to_string(state.alerts_path()).unwrap();
        let alerts: Vec<Alert> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(alerts.len(), 3);
        let by_id = |id: u64| alerts.iter().find(|a| a.alert_id == id).unwrap();
        let want = |keep: &dyn Fn(&Rec) -> bool| {
            let mut v: Vec<_> = frames.iter().filter(|f| keep(f)).cloned().collect();
            v.sort_by_key(|f| (f.0, f.1));
            v.into_iter().map(|f| (f.0, f.3)).collect::<Vec<_>>()
        };
        let w1 = want(&|f| f.0 >= from && f.0 <= to);
        assert_eq!(w1.len(), 31);
        assert_eq!(read_evidence(&state, by_id(1)), w1);
        assert_eq!(by_id(1).evidence.packets, 31);
        let w2 = want(&|f| f.2 == 1);
        assert_eq!(read_evidence(&state, by_id(2)), w2);
        assert!(by_id(3).evidence.error.is_some());
    }
}
