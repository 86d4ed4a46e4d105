//! Named counters. Each counter has exactly one writer thread (the owner of the state it
//! counts); the stats/report thread reads with `Relaxed` loads. A single writer makes an
//! increment a plain load + store — no locked instruction on the hot path.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// A single-writer counter, readable from any thread.
#[derive(Debug, Default)]
#[repr(transparent)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Counter(AtomicU64::new(0))
    }

    /// Adds `n`. Only the owning thread may call this (single-writer contract).
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline(always)]
    pub fn inc(&self) {
        self.add(1)
    }

    /// Sets the value (a gauge; only the owning thread may call this).
    #[inline(always)]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    #[inline(always)]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A snapshot of named counters: `name → value`, sorted by name.
pub type Snapshot = BTreeMap<String, u64>;

/// Adds `(name, value)` pairs into a snapshot (summing values that share a name, e.g. the
/// same counter from several shards).
pub fn merge_into<'a>(snap: &mut Snapshot, items: impl IntoIterator<Item = (&'a str, u64)>) {
    for (k, v) in items {
        *snap.entry(k.to_string()).or_insert(0) += v;
    }
}

/// Counter names, as constants: a typo is a compile error, not a counter that reads 0.
pub mod name {
    pub const READER_FRAMES: &str = "reader.frames";
    pub const READER_BYTES: &str = "reader.bytes";
    pub const READER_DECODED: &str = "reader.decoded";
    pub const SHARD_ROUTED: &str = "shard.routed";
    pub const SHARD_RING_FULL: &str = "shard.ring_full";
    pub const FLOW_PACKETS: &str = "flow.packets";
    pub const FLOW_CREATED: &str = "flow.created";
    pub const FLOW_EXPIRED_IDLE: &str = "flow.expired_idle";
    pub const FLOW_EXPIRED_ACTIVE: &str = "flow.expired_active";
    pub const FLOW_EVICTED: &str = "flow.evicted";
    pub const FLOW_FLUSHED: &str = "flow.flushed";
    pub const FLOW_ACTIVE: &str = "flow.active";
    pub const FLOWS_WRITTEN: &str = "flows.written";
    pub const FLOWS_WRITE_ERRORS: &str = "flows.write_errors";
    pub const DETECT_ALERTS: &str = "detect.alerts";
    pub const DETECT_ALERTS_LOST: &str = "detect.alerts_lost";
    pub const DETECT_ALERT_SUMMARIES: &str = "detect.alert_summaries";
    pub const ALERTS_INCIDENTS_MERGED: &str = "alerts.incidents_merged";
    pub const ALERTS_NO_EVIDENCE: &str = "alerts.no_evidence";
    pub const DETECT_EVIDENCE_QUEUE_FULL: &str = "detect.evidence_queue_full";
    pub const ALERTS_RECEIVED: &str = "alerts.received";
    pub const ALERTS_WRITTEN: &str = "alerts.written";
    pub const ALERTS_WRITE_ERRORS: &str = "alerts.write_errors";
    pub const ALERTS_LOST_QUEUE_FULL: &str = "alerts.lost_queue_full";
    pub const EVIDENCE_FILES_WRITTEN: &str = "evidence.files_written";
    pub const EVIDENCE_EMPTY: &str = "evidence.empty";
    pub const EVIDENCE_WRITE_ERRORS: &str = "evidence.write_errors";
    pub const EVIDENCE_NO_RING: &str = "evidence.no_ring";
    pub const EVIDENCE_DROPPED_PENDING_FULL: &str = "evidence.dropped_pending_full";
    pub const EVIDENCE_DROPPED_QUEUE_FULL: &str = "evidence.dropped_queue_full";
    pub const EVIDENCE_RECORDS_LOST_OVERWRITTEN: &str = "evidence.records_lost_overwritten";
    pub const STATS_WRITE_ERRORS: &str = "stats.write_errors";
    pub const ALERTS_SINK_ERRORS: &str = "alerts.sink_errors";
    pub const RETENTION_DELETE_ERRORS: &str = "retention.delete_errors";
    pub const EVIDENCE_FILES_AT_START: &str = "evidence.files_at_start";
    pub const EVIDENCE_FILES_KEPT: &str = "evidence.files_kept";
    pub const EVIDENCE_DELETED_SUPERSEDED: &str = "evidence.deleted_superseded";
    pub const EVIDENCE_DELETED_OLDEST: &str = "evidence.deleted_oldest";
    pub const EVIDENCE_DELETED_GONE: &str = "evidence.deleted_gone";
}

/// A latency histogram (nanoseconds, 3 significant digits, 1 ns .. 1 h) that one or more
/// threads record samples into and a report thread reads while they run. Callers sample
/// (one packet or batch in N), so the lock is taken a few thousand times a second at
/// most and is not contended in practice.
#[derive(Debug)]
pub struct Latency {
    h: std::sync::Mutex<hdrhistogram::Histogram<u64>>,
}

impl Default for Latency {
    fn default() -> Self {
        Latency::new()
    }
}

/// p50/p99/p99.9/max of a [`Latency`], in nanoseconds (0 with no samples).
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_ns: u64,
    pub p99_ns: u64,
    pub p999_ns: u64,
    pub max_ns: u64,
    pub mean_ns: f64,
}

impl Latency {
    pub fn new() -> Latency {
        let h = hdrhistogram::Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
            .expect("valid histogram bounds");
        Latency {
            h: std::sync::Mutex::new(h),
        }
    }

    /// Records one sample (saturated into the histogram's range).
    #[inline]
    pub fn record(&self, ns: u64) {
        if let Ok(mut h) = self.h.lock() {
            h.saturating_record(ns.max(1));
        }
    }

    pub fn percentiles(&self) -> Percentiles {
        let Ok(h) = self.h.lock() else {
            return Percentiles::default();
        };
        if h.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            samples: h.len(),
            p50_ns: h.value_at_quantile(0.5),
            p99_ns: h.value_at_quantile(0.99),
            p999_ns: h.value_at_quantile(0.999),
            max_ns: h.max(),
            mean_ns: h.mean(),
        }
    }

    /// Forgets every sample (a new trial).
    pub fn reset(&self) {
        if let Ok(mut h) = self.h.lock() {
            h.reset();
        }
    }
}

/// The bench mode's latency stages, each a sampled [`Latency`]. A stage that does not
/// apply to a run (e.g. no alert) has no samples.
#[derive(Debug, Default)]
pub struct StageLatency {
    /// Frame timestamp (XDP program or generator) to the reader taking the frame: one
    /// frame in [`StageLatency::EVERY`].
    pub ts_to_reader: Latency,
    /// Frame timestamp to a scorer taking it off its ring (the reader's part plus the
    /// ring residence): the first packet of one ring chunk in `CHUNK_EVERY`.
    pub ts_to_scorer: Latency,
    /// Scorer time per packet: a whole chunk of up to 256 messages timed, divided by its
    /// length (same sampling).
    pub scorer_per_packet: Latency,
    /// One Half-Space Trees score + learn (scaling and threshold included): one sample in 8.
    pub hst_per_sample: Latency,
    /// Alert time (the window's end or the flow's last packet) to its evidence file
    /// written and closed (includes the post-trigger span the writer waits for).
    pub alert_to_evidence: Latency,
}

impl StageLatency {
    /// One frame in this many is timestamped by the reader.
    pub const EVERY: u32 = 1024;
    /// One Half-Space Trees call in this many is timed.
    pub const HST_EVERY: u32 = 8;
    /// One scorer ring chunk (up to 256 messages) in this many is timed.
    pub const CHUNK_EVERY: u32 = 16;

    pub fn stages(&self) -> [(&'static str, &Latency); 5] {
        [
            ("ts_to_reader", &self.ts_to_reader),
            ("ts_to_scorer", &self.ts_to_scorer),
            ("scorer_per_packet", &self.scorer_per_packet),
            ("hst_per_sample", &self.hst_per_sample),
            ("alert_to_evidence", &self.alert_to_evidence),
        ]
    }
}

/// Every counter after the source that counts something the sensor did not fully handle:
/// a packet not decoded or not routed, a flow cut short, an alert or its evidence lost or
/// not written, an output that failed. (Decoder reasons are `decoder.*`, see
/// [`crate::wire::WireError::name`]; live capture adds the XDP program's and the kernel's.)
pub const DROPS: [&str; 14] = [
    name::SHARD_RING_FULL,
    name::FLOW_EVICTED,
    name::DETECT_ALERTS_LOST,
    name::ALERTS_WRITE_ERRORS,
    name::EVIDENCE_WRITE_ERRORS,
    name::EVIDENCE_NO_RING,
    name::EVIDENCE_DROPPED_PENDING_FULL,
    name::EVIDENCE_DROPPED_QUEUE_FULL,
    name::EVIDENCE_RECORDS_LOST_OVERWRITTEN,
    name::FLOWS_WRITE_ERRORS,
    name::STATS_WRITE_ERRORS,
    name::ALERTS_LOST_QUEUE_FULL,
    name::ALERTS_SINK_ERRORS,
    name::RETENTION_DELETE_ERRORS,
];

/// Checks that the counters of a run add up, so that nothing goes uncounted:
/// - every frame read was decoded or dropped for a named reason:
///   `reader.frames = reader.decoded + Σ decoder.*`;
/// - every decoded packet was routed or dropped at a full ring:
///   `reader.decoded = shard.routed + shard.ring_full`;
/// - every routed packet reached a flow table: `shard.routed = flow.packets`;
/// - every flow created ended one way or is still open:
///   `flow.created = flow.expired_idle + flow.expired_active + flow.flushed + flow.evicted
///   + flow.active`, and a written flow output holds every ended flow;
/// - every alert raised (and budget summary sent) reached the writer or was lost:
///   `detect.alerts + detect.alert_summaries = alerts.received + detect.alerts_lost`;
/// - every alert the writer received has its evidence written, a named reason why not,
///   asked for none (a budget summary) or was merged into another shard's alert of its
///   incident:
///   `alerts.received = evidence.files_written + evidence.empty + evidence.write_errors +
///   evidence.no_ring + evidence.dropped_pending_full + evidence.dropped_queue_full +
///   alerts.no_evidence + alerts.incidents_merged`;
/// - every evidence file found at start or written is kept or was deleted for a named
///   reason: `evidence.files_at_start + evidence.files_written =
///   evidence.deleted_superseded + evidence.deleted_oldest + evidence.deleted_gone +
///   retention.delete_errors + evidence.files_kept`.
///
/// Groups whose counters are absent (a run without alerts, without flows output) are not
/// checked. Returns one line per equation that does not hold.
pub fn conservation(s: &Snapshot) -> Vec<String> {
    use name::*;
    let has = |k: &str| s.contains_key(k);
    let g = |k: &str| s.get(k).copied().unwrap_or(0);
    let mut bad = Vec::new();
    let mut eq = |what: &str, left: u64, right: u64, terms: &str| {
        if left != right {
            bad.push(format!("{what}: {left} != {right} ({terms})"));
        }
    };
    if has(READER_FRAMES) {
        let decoder: u64 = s
            .iter()
            .filter(|(k, _)| k.starts_with("decoder."))
            .map(|(_, v)| v)
            .sum();
        eq(
            READER_FRAMES,
            g(READER_FRAMES),
            g(READER_DECODED) + decoder,
            "reader.decoded + decoder.*",
        );
    }
    if has(SHARD_ROUTED) {
        eq(
            READER_DECODED,
            g(READER_DECODED),
            g(SHARD_ROUTED) + g(SHARD_RING_FULL),
            "shard.routed + shard.ring_full",
        );
    }
    if has(FLOW_PACKETS) {
        eq(
            SHARD_ROUTED,
            g(SHARD_ROUTED),
            g(FLOW_PACKETS),
            "flow.packets",
        );
    }
    if has(FLOW_CREATED) {
        let ended =
            g(FLOW_EXPIRED_IDLE) + g(FLOW_EXPIRED_ACTIVE) + g(FLOW_FLUSHED) + g(FLOW_EVICTED);
        eq(
            FLOW_CREATED,
            g(FLOW_CREATED),
            ended + g(FLOW_ACTIVE),
            "flow.expired_idle + flow.expired_active + flow.flushed + flow.evicted + flow.active",
        );
        if has(FLOWS_WRITTEN) && g(FLOWS_WRITE_ERRORS) == 0 && g(FLOWS_WRITTEN) > 0 {
            eq(FLOWS_WRITTEN, g(FLOWS_WRITTEN), ended, "flows ended");
        }
    }
    if has("detect.host_events") {
        eq(
            "detect.host_events",
            g("detect.host_events"),
            g("detect.host_scored") + g("detect.host_skipped_rate"),
            "detect.host_scored + detect.host_skipped_rate",
        );
        eq(
            "detect.host_table_inserted",
            g("detect.host_table_inserted"),
            g("detect.host_table_evicted") + g("detect.host_table_live"),
            "detect.host_table_evicted + detect.host_table_live",
        );
    }
    if has(ALERTS_RECEIVED) {
        eq(
            "detect.alerts + detect.alert_summaries",
            g(DETECT_ALERTS) + g(DETECT_ALERT_SUMMARIES),
            g(ALERTS_RECEIVED) + g(DETECT_ALERTS_LOST),
            "alerts.received + detect.alerts_lost",
        );
        eq(
            ALERTS_RECEIVED,
            g(ALERTS_RECEIVED),
            g(EVIDENCE_FILES_WRITTEN)
                + g(EVIDENCE_EMPTY)
                + g(EVIDENCE_WRITE_ERRORS)
                + g(EVIDENCE_NO_RING)
                + g(EVIDENCE_DROPPED_PENDING_FULL)
                + g(EVIDENCE_DROPPED_QUEUE_FULL)
                + g(ALERTS_NO_EVIDENCE)
                + g(ALERTS_INCIDENTS_MERGED),
            "evidence.files_written + evidence.empty + evidence.write_errors + evidence.no_ring + evidence.dropped_pending_full + evidence.dropped_queue_full + alerts.no_evidence + alerts.incidents_merged",
        );
    }
    if has(EVIDENCE_FILES_KEPT) {
        eq(
            "evidence.files_at_start + evidence.files_written",
            g(EVIDENCE_FILES_AT_START) + g(EVIDENCE_FILES_WRITTEN),
            g(EVIDENCE_DELETED_SUPERSEDED)
                + g(EVIDENCE_DELETED_OLDEST)
                + g(EVIDENCE_DELETED_GONE)
                + g(RETENTION_DELETE_ERRORS)
                + g(EVIDENCE_FILES_KEPT),
            "evidence.deleted_superseded + evidence.deleted_oldest + evidence.deleted_gone + retention.delete_errors + evidence.files_kept",
        );
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_and_merge() {
        let c = Counter::new();
        c.inc();
        c.add(4);
        assert_eq!(c.get(), 5);
        let mut s = Snapshot::new();
        merge_into(&mut s, [("a", 1), ("b", 2)]);
        merge_into(&mut s, [("a", 3)]);
        assert_eq!(s["a"], 4);
        assert_eq!(s["b"], 2);
    }

    #[test]
    fn conservation_finds_what_does_not_add_up() {
        let mut s = Snapshot::new();
        merge_into(
            &mut s,
            [
                ("reader.frames", 10),
                ("reader.decoded", 8),
                ("decoder.not_ip", 2),
                ("shard.routed", 7),
                ("shard.ring_full", 1),
                ("flow.packets", 7),
                ("flow.created", 3),
                ("flow.expired_idle", 1),
                ("flow.flushed", 2),
                ("flows.written", 3),
            ],
        );
        assert!(conservation(&s).is_empty(), "{:?}", conservation(&s));
        *s.get_mut("decoder.not_ip").unwrap() = 1;
        *s.get_mut("flows.written").unwrap() = 2;
        let bad = conservation(&s);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].starts_with("reader.frames: 10 != 9"), "{bad:?}");
        assert!(bad[1].starts_with("flows.written: 2 != 3"), "{bad:?}");
    }
}
