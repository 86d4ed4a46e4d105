//! Wiring of the stages for one source: a reader (this thread) decodes frames and routes
//! them over the shard rings to S scorer threads, each driving its own [`ShardWorker`].
//! Used by `flows` and `replay` (file sources) and by the bench mode (synthetic source).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;

use std::io::Write;

use super::builder::{spawn_shards, ShardPanicked};
use super::reader::{run_reader, ReaderStage};
use crate::capture::{CaptureError, PacketSource};
use crate::evidence::ring::EvidenceRing;
use crate::filter::ProfileFilters;
use crate::flow::export::FlowRecord;
use crate::flow::table::{FlowConfig, FlowTable};
use crate::output::RunSorter;
use crate::shard::{self, FullPolicy, KeyMode, Router, ShardWorker};
use crate::stats::{self, Snapshot, StageLatency};
use crate::wire::DecodeOptions;

pub use super::reader::{ReaderCounters, TICK_NS, TIME_JUMP_NS};

/// Pipeline settings shared by the file-driven commands.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    pub shards: usize,
    pub ring_capacity: usize,
    pub key_mode: KeyMode,
    pub policy: FullPolicy,
    pub decode: DecodeOptions,
}

/// Default number of scorer shards: cores minus the reader thread, at least 1.
pub fn default_shards(readers: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_sub(readers).max(1)
}

/// A run that failed part-way (a stage broke, not the input): the command exits 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RunFailed(pub String);

/// Result of a pipeline run.
pub struct RunResult<W> {
    /// The workers of the shards that finished, in shard order.
    pub workers: Vec<W>,
    /// Shards whose thread panicked (their workers are lost).
    pub failed: Vec<ShardPanicked>,
    pub reader: Arc<ReaderCounters>,
    pub router: Arc<shard::RouterCounters>,
    /// The source error that ended the run early, if any (frames before it were processed).
    pub source_error: Option<CaptureError>,
    /// Packet-clock span of the input.
    pub first_ts_ns: Option<u64>,
    pub last_ts_ns: Option<u64>,
    /// The reader's evidence ring, handed back (its records stay readable).
    pub ring: Option<EvidenceRing>,
}

/// Builds one worker per shard, stopping at the first error.
pub fn build_workers<W, E>(shards: usize, mk: impl Fn(usize) -> Result<W, E>) -> Result<Vec<W>, E> {
    (0..shards).map(mk).collect()
}

/// Reads `source` to its end in this thread and runs one worker per shard on scorer
/// threads (`workers.len()` shards; built by the caller, so that a worker that cannot be
/// built is an error before anything runs). No evidence ring, every packet in every
/// profile.
pub fn run<W>(source: &mut dyn PacketSource, cfg: &PipelineConfig, workers: Vec<W>) -> RunResult<W>
where
    W: ShardWorker + Send + 'static,
{
    run_with(source, cfg, None, None, workers)
}

/// [`run`] with the reader appending every frame to `ring` and marking packets with the
/// profiles of `filters`.
pub fn run_with<W>(
    source: &mut dyn PacketSource,
    cfg: &PipelineConfig,
    ring: Option<EvidenceRing>,
    filters: Option<ProfileFilters>,
    workers: Vec<W>,
) -> RunResult<W>
where
    W: ShardWorker + Send + 'static,
{
    run_watched(
        source,
        cfg,
        ring,
        filters,
        workers,
        Arc::default(),
        None,
        |_| {},
    )
}

/// The reader's and the router's counters of a running pipeline, for another thread to
/// read while it runs (the bench mode's status line).
#[derive(Clone)]
pub struct Watch {
    pub reader: Arc<ReaderCounters>,
    pub router: Arc<shard::RouterCounters>,
}

/// [`run_with`], counting the reader's frames in `counters` (which another thread may
/// read while the run goes on: the metrics publisher), with the reader sampling
/// `latency` and `on_start` given the counters to watch once the shards run, before the
/// first frame is read.
#[allow(clippy::too_many_arguments)] // the pipeline's parts, then the watch hooks
pub fn run_watched<W>(
    source: &mut dyn PacketSource,
    cfg: &PipelineConfig,
    ring: Option<EvidenceRing>,
    filters: Option<ProfileFilters>,
    workers: Vec<W>,
    counters: Arc<ReaderCounters>,
    latency: Option<Arc<StageLatency>>,
    on_start: impl FnOnce(Watch),
) -> RunResult<W>
where
    W: ShardWorker + Send + 'static,
{
    assert_eq!(workers.len(), cfg.shards, "one worker per shard");
    let (mut producers, shards) =
        spawn_shards(workers, 1, cfg.ring_capacity, &[]).expect("spawning a scorer thread");
    let producers = producers.pop().expect("one reader");
    let router = Router::new(producers, cfg.policy, cfg.key_mode);
    let mut stage =
        ReaderStage::new(router, cfg.decode, ring, filters, counters).with_latency(latency);
    let reader = stage.counters().clone();
    let router = stage.router_counters();
    on_start(Watch {
        reader: reader.clone(),
        router: router.clone(),
    });
    let source_error = run_reader(source, &mut stage, None).err();
    let (first_ts_ns, last_ts_ns) = (stage.first_ts_ns, stage.last_ts_ns);
    let ring = stage.finish(); // closes the rings: scorers drain and finish
    let (workers, failed) = shards.join();
    RunResult {
        workers,
        failed,
        reader,
        router,
        source_error,
        first_ts_ns,
        last_ts_ns,
        ring,
    }
}

/// A shard that only meters flows: exported flows are formatted (with id 0, replaced at
/// the merge) and buffered in a [`RunSorter`].
struct FlowWorker {
    table: FlowTable,
    sorter: RunSorter,
    jsonl: bool,
    line: Vec<u8>,
    err: Option<std::io::Error>,
    /// At the end of input, format half of the flows still in the table on a second
    /// thread into this sorter (a core that would otherwise wait: the reader is done).
    finish_helper: Option<RunSorter>,
}

/// Fewest flows left at the end of input worth a second formatting thread.
const SPLIT_FLUSH_MIN: usize = 4096;

impl FlowWorker {
    fn emit_record(
        sorter: &mut RunSorter,
        line: &mut Vec<u8>,
        jsonl: bool,
        err: &mut Option<std::io::Error>,
        r: FlowRecord<'_>,
    ) {
        line.clear();
        if jsonl {
            r.write_jsonl(line, 0);
        } else {
            r.write_csv(line, 0);
        }
        if err.is_none() {
            if let Err(e) = sorter.push(&r.sort_key(), line) {
                *err = Some(e);
            }
        }
    }
}

impl ShardWorker for FlowWorker {
    #[inline]
    fn on_packet(&mut self, rec: &shard::PacketRecord) {
        if rec.lag_ms > 0 {
            self.on_tick(rec.ts_ns + u64::from(rec.lag_ms) * 1_000_000);
        }
        let (sorter, line, jsonl, err) =
            (&mut self.sorter, &mut self.line, self.jsonl, &mut self.err);
        self.table.update(rec.ts_ns, &rec.meta, &mut |r| {
            Self::emit_record(sorter, line, jsonl, err, r)
        });
    }

    fn on_tick(&mut self, now_ns: u64) {
        let (sorter, line, jsonl, err) =
            (&mut self.sorter, &mut self.line, self.jsonl, &mut self.err);
        self.table.advance(now_ns, &mut |r| {
            Self::emit_record(sorter, line, jsonl, err, r)
        });
    }

    /// Runs of packets go through the table's batched update (prefetching the flows a few
    /// packets ahead); ticks in between are handled in order.
    fn on_msgs(&mut self, msgs: &[shard::Msg]) {
        let mut i = 0;
        while i < msgs.len() {
            // A run: packets in timestamp order (an out-of-order packet first moves the
            // clock, see `PacketRecord::lag_ms`, so it ends a run).
            let run = msgs[i..]
                .iter()
                .enumerate()
                .position(|(k, m)| match m {
                    shard::Msg::Packet(r) => k > 0 && r.lag_ms > 0,
                    shard::Msg::Tick(_) => true,
                })
                .unwrap_or(msgs.len() - i);
            if run > 0 {
                if let shard::Msg::Packet(r) = &msgs[i] {
                    if r.lag_ms > 0 {
                        self.on_tick(r.ts_ns + u64::from(r.lag_ms) * 1_000_000);
                    }
                }
                let (sorter, line, jsonl, err) =
                    (&mut self.sorter, &mut self.line, self.jsonl, &mut self.err);
                self.table.update_batch(
                    &msgs[i..i + run],
                    |m| match m {
                        shard::Msg::Packet(r) => (r.ts_ns, &r.meta),
                        shard::Msg::Tick(_) => unreachable!("runs hold packets only"),
                    },
                    &mut |r| Self::emit_record(sorter, line, jsonl, err, r),
                );
                i += run;
            }
            if let Some(shard::Msg::Tick(t)) = msgs.get(i) {
                self.on_tick(*t);
                i += 1;
            }
        }
    }

    fn finish(&mut self) {
        let (sorter, line, jsonl, err) =
            (&mut self.sorter, &mut self.line, self.jsonl, &mut self.err);
        if let Some(helper) = self.finish_helper.as_mut() {
            if self.table.len() >= SPLIT_FLUSH_MIN {
                // Format both halves at once, then drop the flows from the table (which
                // also counts them as flushed). The merge sorts by key, so which sorter
                // holds a row does not change the output.
                let slots = self.table.live_slots();
                let (mine, theirs) = slots.split_at(slots.len() / 2);
                let table = &self.table;
                let helper_err = std::thread::scope(|sc| {
                    let h = sc.spawn(move || {
                        let mut line = Vec::with_capacity(2048);
                        let mut err = None;
                        for &s in theirs {
                            Self::emit_record(helper, &mut line, jsonl, &mut err, table.record(s));
                        }
                        err
                    });
                    for &s in mine {
                        Self::emit_record(sorter, line, jsonl, err, table.record(s));
                    }
                    h.join().unwrap_or_else(|_| {
                        Some(std::io::Error::other("flow formatting thread panicked"))
                    })
                });
                if err.is_none() {
                    *err = helper_err;
                }
                self.table.flush(&mut |_| {});
                return;
            }
        }
        self.table
            .flush(&mut |r| Self::emit_record(sorter, line, jsonl, err, r));
    }
}

/// Writes the shards' sorted flow buffers to `out`, merged and numbered in sorted order:
/// the CSV header (or nothing, for JSON lines), then one row per flow. The one flow
/// writer of `flows`, `replay --flows` and live `--flows-out`.
pub fn write_sorted_flows(
    out: &mut dyn Write,
    jsonl: bool,
    splt: u16,
    sorters: Vec<RunSorter>,
) -> std::io::Result<u64> {
    if !jsonl {
        let header = FlowRecord::csv_header(splt);
        out.write_all(header.as_bytes())?;
        if !header.ends_with('\n') {
            out.write_all(b"\n")?;
        }
    }
    let n = crate::output::merge(sorters, |id, line| write_with_id(out, jsonl, id, line))?;
    out.flush()?;
    Ok(n)
}

/// Replaces the placeholder id 0 at the start of a formatted flow line with `id`.
fn write_with_id(w: &mut dyn Write, jsonl: bool, id: u64, line: &[u8]) -> std::io::Result<()> {
    const JSON_PREFIX: &[u8] = b"{\"id\":0";
    if jsonl {
        debug_assert!(line.starts_with(JSON_PREFIX));
        write!(w, "{{\"id\":{id}")?;
        w.write_all(&line[JSON_PREFIX.len()..])
    } else {
        debug_assert!(line.starts_with(b"0,"));
        write!(w, "{id}")?;
        w.write_all(&line[1..])
    }
}

/// What `flows` runs: the flow table's settings, the shards, the output format.
#[derive(Clone, Debug)]
pub struct FlowsJob {
    pub flow: FlowConfig,
    pub shards: usize,
    /// Entries of each reader->shard ring.
    pub ring_capacity: usize,
    pub key_mode: KeyMode,
    pub decode: DecodeOptions,
    pub jsonl: bool,
    /// Memory for sorting the output, bytes (larger outputs are sorted in runs on disk).
    pub sort_buffer_bytes: usize,
    /// Where sorted runs spill.
    pub spill_dir: PathBuf,
}

/// What a `flows` run gave.
pub struct FlowsOutcome {
    /// Every named counter (reader, decoder, shards, flow tables, source), plus
    /// `flows.written`.
    pub stats: Snapshot,
    /// The source error that ended the run early, if any (the flows of every packet
    /// before it were written).
    pub source_error: Option<CaptureError>,
}

/// Meters the flows of `source` on `job.shards` scorer threads and writes them to `out`,
/// sorted and numbered (CSV with its header, or JSON lines).
pub fn run_flows(
    source: &mut dyn PacketSource,
    job: &FlowsJob,
    out: &mut dyn Write,
) -> anyhow::Result<FlowsOutcome> {
    let shards = job.shards;
    let pcfg = PipelineConfig {
        shards,
        ring_capacity: job.ring_capacity,
        key_mode: job.key_mode,
        policy: FullPolicy::Wait,
        decode: job.decode,
    };
    let jsonl = job.jsonl;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The flow tables at full capacity, the queues and the sort buffers must fit before
    // anything is allocated.
    let mut need = super::limits::MemoryNeed::default();
    need.flow_tables(&job.flow, shards);
    need.shard_queues(1, shards, job.ring_capacity);
    let sort = job.sort_buffer_bytes as u64;
    need.add(
        "sort buffers",
        if shards < cores {
            sort + sort / 2
        } else {
            sort
        },
    );
    need.threads = shards as u64 + 2;
    super::limits::check_memory(
        &need,
        "--capacity (flow.capacity), --shards or --sort-buffer-mib",
    )?;
    let workers = build_workers(shards, |_s| {
        Ok::<_, anyhow::Error>(FlowWorker {
            table: FlowTable::new(job.flow).map_err(|e| anyhow::anyhow!("flow table: {e}"))?,
            sorter: RunSorter::new(job.sort_buffer_bytes / shards, job.spill_dir.clone()),
            jsonl,
            line: Vec::with_capacity(2048),
            err: None,
            // a spare core at the end of input: shards (and the reader) fewer than cores
            finish_helper: (shards < cores)
                .then(|| RunSorter::new(job.sort_buffer_bytes / shards / 2, job.spill_dir.clone())),
        })
    })?;
    let res = run(source, &pcfg, workers);
    if let Some(f) = res.failed.first() {
        return Err(RunFailed(f.to_string()).into());
    }
    let mut snap = Snapshot::new();
    res.reader.snapshot_into(&mut snap);
    stats::merge_into(&mut snap, res.router.named());
    let mut sorters = Vec::new();
    for w in res.workers {
        stats::merge_into(&mut snap, w.table.counters().named());
        if let Some(e) = w.err {
            return Err(anyhow::Error::new(e).context("buffering flow output"));
        }
        sorters.push(w.sorter);
        sorters.extend(w.finish_helper);
    }
    let n = write_sorted_flows(out, jsonl, job.flow.splt, sorters).context("writing flows")?;
    snap.insert("flows.written".into(), n);
    Ok(FlowsOutcome {
        stats: snap,
        source_error: res.source_error,
    })
}
