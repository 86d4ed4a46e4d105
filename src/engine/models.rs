//! Warm restart: every profile's detectors, per shard, checkpointed into the state
//! directory's `models/` and loaded at the next start when the profile's configuration is
//! unchanged.
//!
//! - **Files**: `models/<profile>.<shard>.hstck`, one per profile and shard, in the
//!   checkpoint container of `detect::checkpoint` (magic, version, CRC-32). The payload:
//!   a tag, the profile's configuration hash ([`profile_hash`]), its name, the shard and the
//!   shard count, the packet time it was taken, then the window and/or flow detector's
//!   whole state ([`Detector::encode_state`]).
//! - **When**: each scorer serialises its own profiles at a clock tick once
//!   `sensor.checkpoint_interval_s` of packet time has passed since the last checkpoint,
//!   and once more when it finishes (end of input, SIGINT/SIGTERM, `--duration`), after
//!   its last flows were scored. A tick is not per packet (one per second of packet time,
//!   or an idle reader's) and never per packet. The scorer only copies its detectors
//!   (memcpy of the trees, scaler history and threshold window: 0.2–3.4 ms for the
//!   default profiles' 2.2 MB on a loaded 2-core VM, where encoding them on the scorer
//!   took 7–28 ms) and hands the copies
//!   over a bounded queue to one saver thread, which encodes and writes them (O_TMPFILE,
//!   fsync, link and rename: a reader, or a crash, sees the old file or the new one). A full queue skips
//!   that periodic checkpoint (`models.save_skipped`); the final ones wait for room.
//! - **Load**: before the scorers start, per profile: all of its shards' files are read
//!   and checked (container, hash, shard count, every model invariant) and only then put
//!   into the detectors — a profile is warm on every shard or cold on every shard. One
//!   line per profile says which and why.
//!
//! Counters: `models.loaded` / `models.cold_start` (profile-shards started warm / cold),
//! `models.corrupt` (files refused as damaged), `models.saved`, `models.save_errors`,
//! `models.save_skipped` (files).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::config::{Config, Profile};
use crate::detect::checkpoint::{corrupt, CheckpointError, Reader, Writer};
use crate::detect::detector::{Detector, DetectorKind};
use crate::detect::features::{FLOW_FEATURES, WINDOW_FEATURES};
use crate::evidence::statedir::StateDir;
use crate::output::OutputFile;
use crate::stats::Snapshot;

/// First field of a profile checkpoint's payload (a bare `ScaledHst` checkpoint has none).
const TAG: &str = "streamml-profile-models";
/// Layout of the payload after the tag.
const LAYOUT: u32 = 1;
/// File name extension.
pub const EXT: &str = "hstck";

/// The warm-restart counters (several threads write them: atomics, not `stats::Counter`).
#[derive(Debug, Default)]
pub struct ModelCounters {
    pub loaded: AtomicU64,
    pub cold_start: AtomicU64,
    pub corrupt: AtomicU64,
    pub saved: AtomicU64,
    pub save_errors: AtomicU64,
    pub save_skipped: AtomicU64,
}

impl ModelCounters {
    pub fn named(&self) -> [(&'static str, u64); 6] {
        [
            ("models.loaded", self.loaded.load(Relaxed)),
            ("models.cold_start", self.cold_start.load(Relaxed)),
            ("models.corrupt", self.corrupt.load(Relaxed)),
            ("models.saved", self.saved.load(Relaxed)),
            ("models.save_errors", self.save_errors.load(Relaxed)),
            ("models.save_skipped", self.save_skipped.load(Relaxed)),
        ]
    }

    pub fn snapshot_into(&self, s: &mut Snapshot) {
        crate::stats::merge_into(s, self.named());
    }
}

/// FNV-1a, 64 bits: stable across builds and platforms (unlike `std`'s hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The hash of everything that shapes what profile `pi`'s detectors learned: its mode,
/// packet filter and window length, per detector the feature names, log1p flags, trees
/// (count, height, window, seed), scaling, warm-up and threshold, the flow table settings
/// that shape flow features (timeouts, accounting, tunnel decoding), the shard key and
/// the shard count. Not in it (a change keeps the models): the profile's cooldown and
/// evidence settings, the state directory, ring sizes, capacities.
pub fn profile_hash(cfg: &Config, pi: usize, shards: usize) -> u64 {
    let p = &cfg.profiles[pi];
    let mut text = format!(
        "v1|shards={shards}|key={:?}|mode={:?}|filter={:?}|window_ns={}|idle={}|active={}|acct={:?}|tunnels={}",
        cfg.key,
        p.mode,
        p.filter,
        p.window_ns,
        cfg.idle_timeout_ns,
        cfg.active_timeout_ns,
        cfg.accounting,
        cfg.decode_tunnels
    );
    for (on, kind) in [
        (p.mode.window(), DetectorKind::Window),
        (p.mode.flow(), DetectorKind::Flow),
        (p.mode.host(), DetectorKind::Host),
    ] {
        if !on {
            continue;
        }
        let d = p.detector_config(kind);
        let names: Vec<&str> = d
            .features
            .iter()
            .map(|&i| match kind {
                DetectorKind::Flow => FLOW_FEATURES[i],
                DetectorKind::Window => WINDOW_FEATURES[i],
                DetectorKind::Host => crate::detect::features::HOST_FEATURES[i],
            })
            .collect();
        text += &format!(
            "|{kind:?}:features={names:?}|log1p={:?}|trees={}|height={}|window={}|seed={}|scaling={:?}|warmup={}|threshold={:?}|oor={}",
            d.log1p,
            d.n_trees,
            d.height,
            d.window_size,
            d.seed,
            d.scaling,
            d.warmup,
            d.threshold,
            d.require_out_of_range
        );
    }
    fnv1a(text.as_bytes())
}

/// `models/<profile>.<shard>.hstck`
pub fn checkpoint_path(models_dir: &Path, profile: &str, shard: usize) -> PathBuf {
    models_dir.join(format!("{profile}.{shard}.{EXT}"))
}

/// The checkpoint of one profile's detectors on one shard.
pub fn encode(
    p: &Profile,
    hash: u64,
    shard: usize,
    shards: usize,
    clock_ns: u64,
    window: Option<&Detector>,
    flow: Option<&Detector>,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.str(TAG);
    w.u32(LAYOUT);
    w.u64(hash);
    w.str(&p.name);
    w.u32(shard as u32);
    w.u32(shards as u32);
    w.u64(clock_ns);
    for d in [window, flow] {
        match d {
            Some(d) => {
                w.u8(1);
                d.encode_state(&mut w);
            }
            None => w.u8(0),
        }
    }
    w.finish()
}

/// What the head of a checkpoint says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub hash: u64,
    pub name: String,
    pub shard: u32,
    pub shards: u32,
    pub clock_ns: u64,
}

fn read_head(r: &mut Reader<'_>) -> Result<Head, CheckpointError> {
    let tag = r.str("payload tag")?;
    if tag != TAG {
        return Err(corrupt(format!(
            "not a profile checkpoint (payload tag {tag:?})"
        )));
    }
    let layout = r.u32("layout")?;
    if layout != LAYOUT {
        return Err(corrupt(format!(
            "profile checkpoint layout {layout} (this build reads {LAYOUT})"
        )));
    }
    Ok(Head {
        hash: r.u64("configuration hash")?,
        name: r.str("profile name")?,
        shard: r.u32("shard")?,
        shards: r.u32("shard count")?,
        clock_ns: r.u64("clock")?,
    })
}

/// The head of a profile checkpoint file (container checked, detectors not decoded): for
/// tools and tests that want to know what a file holds.
pub fn head(bytes: &[u8]) -> Result<Head, CheckpointError> {
    read_head(&mut Reader::open(bytes)?)
}

/// One shard's detectors decoded from a checkpoint (window, flow).
pub type Restored = (Option<Detector>, Option<Detector>);

/// Why a profile-shard checkpoint was not used.
enum Refusal {
    Missing,
    /// Valid, but for another configuration.
    Mismatch(String),
    /// Damaged: the cause (one line).
    Corrupt(CheckpointError),
}

/// Decodes one file for profile `p` on `shard` of `shards` (configuration hash `hash`).
fn read_one(
    path: &Path,
    p: &Profile,
    hash: u64,
    shard: usize,
    shards: usize,
) -> Result<(Head, Restored), Refusal> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Refusal::Missing),
        Err(e) => {
            return Err(Refusal::Corrupt(CheckpointError::Io {
                path: path.to_path_buf(),
                source: e,
            }))
        }
    };
    let mut r = Reader::open(&bytes).map_err(Refusal::Corrupt)?;
    let head = read_head(&mut r).map_err(Refusal::Corrupt)?;
    if head.shards as usize != shards {
        return Err(Refusal::Mismatch(format!(
            "shard count changed (checkpoint {}, now {shards})",
            head.shards
        )));
    }
    if head.hash != hash {
        return Err(Refusal::Mismatch("configuration changed".into()));
    }
    if head.name != p.name || head.shard as usize != shard {
        return Err(Refusal::Corrupt(corrupt(format!(
            "holds profile {:?} shard {}, not {:?} shard {shard}",
            head.name, head.shard, p.name
        ))));
    }
    let mut out: Restored = (None, None);
    // The second detector is the flow detector, or a host profile's host detector.
    let second = if p.mode.host() {
        DetectorKind::Host
    } else {
        DetectorKind::Flow
    };
    for (kind, on) in [
        (DetectorKind::Window, p.mode.window()),
        (second, p.mode.flow() || p.mode.host()),
    ] {
        let present = r.bool("detector present").map_err(Refusal::Corrupt)?;
        if present != on {
            return Err(Refusal::Corrupt(corrupt(format!(
                "{kind:?} detector {} but the profile {} one",
                if present { "present" } else { "absent" },
                if on { "has" } else { "has no" }
            ))));
        }
        if on {
            let mut d = Detector::new(&p.detector_config(kind)).map_err(|e| {
                Refusal::Corrupt(corrupt(format!("building the {kind:?} detector: {e}")))
            })?;
            d.decode_state_into(&mut r).map_err(Refusal::Corrupt)?;
            match kind {
                DetectorKind::Window => out.0 = Some(d),
                DetectorKind::Flow | DetectorKind::Host => out.1 = Some(d),
            }
        }
    }
    r.finish().map_err(Refusal::Corrupt)?;
    Ok((head, out))
}

/// The detectors of every shard for every profile that starts warm, from `models/`.
pub struct Loaded {
    /// Per profile: None (cold) or one `(window, flow)` per shard.
    pub profiles: Vec<Option<Vec<Restored>>>,
}

/// Reads `models/` for a run of `shards` shards: per profile, warm if every shard's file
/// is there, undamaged and for this configuration; else cold. Writes one line per profile
/// through `say` (a damaged file: a warning naming it and the cause). Never fails: any
/// problem is a cold start.
pub fn load(
    state: &StateDir,
    cfg: &Config,
    shards: usize,
    counters: &ModelCounters,
    say: &mut dyn FnMut(String),
) -> Loaded {
    let dir = state.models_dir();
    let mut profiles = Vec::with_capacity(cfg.profiles.len());
    for (pi, p) in cfg.profiles.iter().enumerate() {
        let hash = profile_hash(cfg, pi, shards);
        let mut got = Vec::with_capacity(shards);
        let mut refusal: Option<Refusal> = None;
        let mut missing = 0usize;
        let mut newest = 0u64;
        let mut corrupt_files = 0u64;
        for s in 0..shards {
            let path = checkpoint_path(&dir, &p.name, s);
            match read_one(&path, p, hash, s, shards) {
                Ok((head, dets)) => {
                    newest = newest.max(head.clock_ns);
                    got.push(dets);
                }
                Err(Refusal::Missing) => missing += 1,
                Err(Refusal::Corrupt(e)) => {
                    corrupt_files += 1;
                    let e = match e {
                        CheckpointError::Io { .. } | CheckpointError::InFile { .. } => {
                            e.to_string()
                        }
                        e => format!("{}: {e}", path.display()),
                    };
                    say(format!(
                        "warning: {e}; profile {} starts cold (learning from scratch)",
                        p.name
                    ));
                    refusal.get_or_insert(Refusal::Missing);
                }
                Err(r @ Refusal::Mismatch(_)) => {
                    if !matches!(refusal, Some(Refusal::Mismatch(_))) {
                        refusal = Some(r);
                    }
                }
            }
        }
        counters.corrupt.fetch_add(corrupt_files, Relaxed);
        if refusal.is_none() && missing == 0 {
            counters.loaded.fetch_add(shards as u64, Relaxed);
            say(format!(
                "profile {}: warm start from {} ({} shard{}, checkpoint at packet time {})",
                p.name,
                dir.display(),
                shards,
                if shards == 1 { "" } else { "s" },
                crate::evidence::time::rfc3339_ns(newest)
            ));
            profiles.push(Some(got));
            continue;
        }
        counters.cold_start.fetch_add(shards as u64, Relaxed);
        if corrupt_files == 0 {
            let why = match refusal {
                Some(Refusal::Mismatch(m)) => m,
                _ if missing == shards => "no checkpoint".to_string(),
                _ => format!("checkpoints of {missing} of {shards} shards missing"),
            };
            say(format!("profile {}: cold start: {why}", p.name));
        }
        profiles.push(None);
    }
    Loaded { profiles }
}

/// Model lines on stderr, as the sensor's other start-up lines (an unwritable stderr does
/// not stop the run).
pub fn say(line: String) {
    let _ = writeln!(std::io::stderr().lock(), "streamml-sensor: models: {line}");
}

/// One profile-shard checkpoint for the saver: copies of the detectors, encoded there.
struct Job {
    path: PathBuf,
    profile: Arc<Profile>,
    hash: u64,
    shard: usize,
    shards: usize,
    clock_ns: u64,
    window: Option<Detector>,
    flow: Option<Detector>,
}

/// What a scorer needs to checkpoint its profiles: the queue to the saver, the interval,
/// each profile's configuration hash and where its files go.
#[derive(Clone)]
pub struct ModelSink {
    tx: SyncSender<Job>,
    pub interval_ns: u64,
    hashes: Arc<Vec<u64>>,
    profiles: Arc<Vec<Arc<Profile>>>,
    dir: PathBuf,
    counters: Arc<ModelCounters>,
}

impl ModelSink {
    /// Hands copies of profile `pi`'s detectors on `shard` to the saver (the copy is a few
    /// memcpys; encoding and writing happen on the saver's thread). `last` (the end of
    /// the run) waits for room; a periodic one is skipped and counted when the queue is
    /// full.
    #[allow(clippy::too_many_arguments)]
    pub fn submit(
        &self,
        pi: usize,
        shard: usize,
        shards: usize,
        clock_ns: u64,
        window: Option<&Detector>,
        flow: Option<&Detector>,
        last: bool,
    ) {
        let profile = self.profiles[pi].clone();
        let job = Job {
            path: checkpoint_path(&self.dir, &profile.name, shard),
            hash: self.hashes[pi],
            profile,
            shard,
            shards,
            clock_ns,
            window: window.cloned(),
            flow: flow.cloned(),
        };
        if last {
            if self.tx.send(job).is_err() {
                self.counters.save_errors.fetch_add(1, Relaxed);
            }
        } else {
            match self.tx.try_send(job) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.counters.save_skipped.fetch_add(1, Relaxed);
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.counters.save_errors.fetch_add(1, Relaxed);
                }
            }
        }
    }
}

/// The saver thread: writes what the scorers hand it, in `models/`.
pub struct Saver {
    handle: JoinHandle<()>,
    pub counters: Arc<ModelCounters>,
}

/// Writes `bytes` to `path` whole: an unnamed file, fsynced, linked into place.
pub fn write_checkpoint(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OutputFile::create(path, &[]).map_err(std::io::Error::other)?;
    f.w.write_all(bytes)?;
    f.w.flush()?;
    f.w.get_ref().sync_data()?;
    f.commit().map_err(std::io::Error::other)
}

impl Saver {
    /// Starts the saver for `state`'s `models/`; the sink goes into every scorer's setup.
    /// `say` prints one line per failed write (the run goes on).
    pub fn spawn(
        state: &StateDir,
        cfg: &Config,
        shards: usize,
        counters: Arc<ModelCounters>,
        say: fn(String),
    ) -> std::io::Result<(ModelSink, Saver)> {
        let n = (cfg.profiles.len() * shards).max(1);
        let (tx, rx) = sync_channel::<Job>(n);
        let c = counters.clone();
        let handle = std::thread::Builder::new()
            .name("model-saver".into())
            .spawn(move || Self::run(rx, &c, say))?;
        let sink = ModelSink {
            tx,
            interval_ns: cfg.checkpoint_interval_ns,
            hashes: Arc::new(
                (0..cfg.profiles.len())
                    .map(|pi| profile_hash(cfg, pi, shards))
                    .collect(),
            ),
            profiles: Arc::new(cfg.profiles.iter().cloned().map(Arc::new).collect()),
            dir: state.models_dir(),
            counters: counters.clone(),
        };
        Ok((sink, Saver { handle, counters }))
    }

    fn run(rx: Receiver<Job>, c: &ModelCounters, say: fn(String)) {
        for job in rx {
            let bytes = encode(
                &job.profile,
                job.hash,
                job.shard,
                job.shards,
                job.clock_ns,
                job.window.as_ref(),
                job.flow.as_ref(),
            );
            drop(job.window);
            drop(job.flow);
            match write_checkpoint(&job.path, &bytes) {
                Ok(()) => {
                    c.saved.fetch_add(1, Relaxed);
                }
                Err(e) => {
                    c.save_errors.fetch_add(1, Relaxed);
                    say(format!(
                        "warning: checkpoint {}: {e} (detection goes on; the models are saved again at the next checkpoint)",
                        job.path.display()
                    ));
                }
            }
        }
    }

    /// Waits until every sink is dropped (the scorers have finished) and every file is
    /// written.
    pub fn join(self) -> Arc<ModelCounters> {
        let _ = self.handle.join();
        self.counters
    }
}
