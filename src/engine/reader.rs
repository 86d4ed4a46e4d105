//! The reader stage, one loop for every source (capture file, generator, AF_XDP queue):
//! decode the frame in place, append it to the reader's evidence ring (when there is
//! one), mark it with the profiles whose packet filter it matches, route it over the
//! SPSC rings to the scorer shard of its symmetric flow hash, and carry the clock forward
//! to every shard (packet time; wall-clock time while a live source is idle), so flows
//! expire, windows close and evidence falls due when traffic stops.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::capture::{CaptureError, Frame, Next, PacketSource};
use crate::evidence::ring::EvidenceRing;
use crate::filter::ProfileFilters;
use crate::shard::{self, KeyMode, Router};
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

/// What one reader thread owns besides its source.
pub struct ReaderStage {
    router: Router,
    counters: Arc<ReaderCounters>,
    decode: DecodeOptions,
    /// This reader's evidence ring: every frame, before it is routed.
    ring: Option<EvidenceRing>,
    /// The profiles' packet filters (None: every packet matches every profile).
    filters: Option<ProfileFilters>,
    next_tick: u64,
    /// Packet-clock span of what was read.
    pub first_ts_ns: Option<u64>,
    pub last_ts_ns: Option<u64>,
}

impl ReaderStage {
    /// A stage counting into `counters` (which other threads may read while it runs).
    /// Profile filters are not `Send`: a reader thread builds its stage itself.
    pub fn new(
        router: Router,
        decode: DecodeOptions,
        ring: Option<EvidenceRing>,
        filters: Option<ProfileFilters>,
        counters: Arc<ReaderCounters>,
    ) -> ReaderStage {
        ReaderStage {
            router,
            counters,
            decode,
            ring,
            filters,
            next_tick: 0,
            first_ts_ns: None,
            last_ts_ns: None,
        }
    }

    pub fn counters(&self) -> &Arc<ReaderCounters> {
        &self.counters
    }

    pub fn router_counters(&self) -> Arc<shard::RouterCounters> {
        self.router.counters.clone()
    }

    /// One frame through the stage. Returns true when it also sent a clock tick.
    #[inline(always)]
    pub fn frame(&mut self, f: &Frame<'_>) -> bool {
        let rc = &*self.counters;
        match wire::decode(f.data, f.orig_len, f.link, &self.decode) {
            Ok(m) => {
                rc.decoded.inc();
                // The 5-tuple hash marks the ring record (flow evidence finds its
                // packets by it); under the 5-tuple key it is the shard hash too.
                let h = shard::symmetric_hash(&m, KeyMode::FiveTuple);
                if let Some(ring) = &mut self.ring {
                    ring.append(f.ts_ns, f.orig_len, f.link, h, f.data);
                }
                let mask = match &mut self.filters {
                    Some(fl) => fl.mask(f.data, f.link),
                    None => u16::MAX,
                };
                self.router.route_five_tuple_hashed(f.ts_ns, &m, mask, h);
            }
            Err(e) => {
                rc.count_err(e);
                if let Some(ring) = &mut self.ring {
                    ring.append(f.ts_ns, f.orig_len, f.link, 0, f.data);
                }
            }
        }
        // Counted once it is in the ring (and routed): `reader.frames` tells how many
        // frames `evidence recover` finds after a crash.
        rc.frames.inc();
        rc.bytes.add(u64::from(f.orig_len));
        self.first_ts_ns.get_or_insert(f.ts_ns);
        self.last_ts_ns = Some(self.last_ts_ns.map_or(f.ts_ns, |l| l.max(f.ts_ns)));
        if f.ts_ns >= self.next_tick {
            self.router.tick(f.ts_ns);
            self.next_tick = f.ts_ns.saturating_add(TICK_NS);
            return true;
        }
        false
    }

    /// The source has been idle: carries the clock to `now_ns` (wall-clock time).
    pub fn idle(&mut self, now_ns: u64) {
        self.router.tick(now_ns);
        self.next_tick = now_ns.saturating_add(TICK_NS);
    }

    /// Ends the stage: the router goes (closing this reader's rings, so the shards drain
    /// and finish); the evidence ring is handed back.
    pub fn finish(self) -> Option<EvidenceRing> {
        self.ring
    }
}

/// Reads `source` to its end through `stage`. With `idle_tick` (live sources), a source
/// that stays quiet that long makes the stage send the shards a wall-clock tick (`now`).
/// A source error ends the loop; the frames before it were processed.
pub fn run_reader<S: PacketSource + ?Sized>(
    source: &mut S,
    stage: &mut ReaderStage,
    idle_tick: Option<(Duration, fn() -> u64)>,
) -> Result<(), CaptureError> {
    let Some((tick_every, now)) = idle_tick else {
        // A source that never idles (a file, the generator): the plain loop.
        while let Some(f) = source.next_frame()? {
            stage.frame(&f);
        }
        return Ok(());
    };
    let mut deadline = Some(Instant::now() + tick_every);
    loop {
        match source.next_or_idle(deadline)? {
            Next::Frame(f) => {
                if stage.frame(&f) {
                    deadline = Some(Instant::now() + tick_every);
                }
            }
            Next::Idle => {
                stage.idle(now());
                deadline = Some(Instant::now() + tick_every);
            }
            Next::End => return Ok(()),
        }
    }
}
