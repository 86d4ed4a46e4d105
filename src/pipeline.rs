//! Wiring of the stages for one source: a reader (this thread) decodes frames and routes
//! them over the shard rings to S scorer threads, each driving its own [`ShardWorker`].
//! Used by `flows` and `replay` (file sources) and by the bench mode (synthetic source).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::capture::{CaptureError, PacketSource};
use crate::shard::{self, FullPolicy, KeyMode, Router, ShardWorker};
use crate::stats::{self, Counter, Snapshot};
use crate::wire::{self, DecodeOptions, WireError};

/// How often the reader sends a clock tick to every shard, in packet time.
pub const TICK_NS: u64 = 1_000_000_000;

/// Decoder counters of one reader: frames seen, decoded, and dropped per reason.
#[derive(Debug, Default)]
pub struct ReaderCounters {
    pub frames: Counter,
    pub bytes: Counter,
    pub decoded: Counter,
    pub by_reason: [Counter; WireError::ALL.len()],
}

impl ReaderCounters {
    #[inline]
    pub fn count_err(&self, e: WireError) {
        self.by_reason[e.index()].inc();
    }

    pub fn snapshot_into(&self, s: &mut Snapshot) {
        stats::merge_into(
            s,
            [
                ("reader.frames", self.frames.get()),
                ("reader.bytes", self.bytes.get()),
                ("reader.decoded", self.decoded.get()),
            ],
        );
        stats::merge_into(
            s,
            WireError::ALL
                .iter()
                .map(|e| (e.name(), self.by_reason[e.index()].get())),
        );
    }
}

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

/// Result of a pipeline run.
pub struct RunResult<W> {
    pub workers: Vec<W>,
    pub reader: Arc<ReaderCounters>,
    pub router: Arc<shard::RouterCounters>,
    /// The source error that ended the run early, if any (frames before it were processed).
    pub source_error: Option<CaptureError>,
    /// Packet-clock span of the input.
    pub first_ts_ns: Option<u64>,
    pub last_ts_ns: Option<u64>,
}

/// Reads `source` to its end in this thread and runs one worker per shard on scorer
/// threads. Workers are built on their own thread by `make_worker(shard_index)`.
pub fn run<W, F>(
    source: &mut dyn PacketSource,
    cfg: &PipelineConfig,
    make_worker: F,
) -> RunResult<W>
where
    W: ShardWorker + Send + 'static,
    F: Fn(usize) -> W + Send + Sync + 'static,
{
    let make_worker = Arc::new(make_worker);
    let mut producers = Vec::with_capacity(cfg.shards);
    let mut handles = Vec::with_capacity(cfg.shards);
    for s in 0..cfg.shards {
        let (p, c) = shard::ring(cfg.ring_capacity);
        producers.push(p);
        let mk = make_worker.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("scorer-{s}"))
                .spawn(move || {
                    let mut w = mk(s);
                    shard::run_shard(std::slice::from_ref(&c), &mut w);
                    w
                })
                .expect("spawning a scorer thread"),
        );
    }
    let router = Router::new(producers, cfg.policy, cfg.key_mode);
    let rc = Arc::new(ReaderCounters::default());
    let mut next_tick = 0u64;
    let mut source_error = None;
    let (mut first, mut last) = (None, None);
    loop {
        match source.next_frame() {
            Ok(Some(f)) => {
                rc.frames.inc();
                rc.bytes.add(u64::from(f.orig_len));
                first.get_or_insert(f.ts_ns);
                last = Some(last.map_or(f.ts_ns, |l: u64| l.max(f.ts_ns)));
                match wire::decode(f.data, f.orig_len, f.link, &cfg.decode) {
                    Ok(m) => {
                        rc.decoded.inc();
                        router.route(f.ts_ns, &m);
                    }
                    Err(e) => rc.count_err(e),
                }
                if f.ts_ns >= next_tick {
                    router.tick(f.ts_ns);
                    next_tick = f.ts_ns.saturating_add(TICK_NS);
                }
            }
            Ok(None) => break,
            Err(e) => {
                source_error = Some(e);
                break;
            }
        }
    }
    let router_counters = router.counters.clone();
    drop(router); // closes the rings: scorers drain and finish
    let workers = handles
        .into_iter()
        .map(|h| h.join().expect("a scorer thread panicked"))
        .collect();
    RunResult {
        workers,
        reader: rc,
        router: router_counters,
        source_error,
        first_ts_ns: first,
        last_ts_ns: last,
    }
}

/// Writes `path` atomically: `FILE.tmp`, then rename.
pub struct AtomicFile {
    tmp: PathBuf,
    dst: PathBuf,
    pub w: std::io::BufWriter<std::fs::File>,
}

impl AtomicFile {
    pub fn create(dst: &Path) -> anyhow::Result<Self> {
        let tmp = crate::cli::tmp_path(dst);
        let f =
            std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(AtomicFile {
            tmp,
            dst: dst.to_path_buf(),
            w: std::io::BufWriter::with_capacity(1 << 20, f),
        })
    }

    pub fn commit(self) -> anyhow::Result<()> {
        let AtomicFile { tmp, dst, w } = self;
        let f = w
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &dst)
            .with_context(|| format!("renaming {} to {}", tmp.display(), dst.display()))?;
        Ok(())
    }
}

/// `streamml-sensor flows`.
pub fn flows_command(a: crate::cli::FlowsArgs) -> anyhow::Result<ExitCode> {
    let _ = a;
    anyhow::bail!("flows: not wired yet")
}
