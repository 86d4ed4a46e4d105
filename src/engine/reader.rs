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
use crate::stats::{self, Counter, Snapshot, StageLatency};
use crate::wire::{self, DecodeOptions, WireError};

/// How often the reader sends a clock tick to every shard, in packet time.
pub const TICK_NS: u64 = 1_000_000_000;

/// A packet dated more than this ahead of the reader's clock is held until the next one
/// shows whether time really moved (the next packet is near it: a capture that continues
/// later, e.g. files merged end to end) or the packet is an outlier (the next packet is
/// back near the clock: one bad timestamp). An outlier is counted (`capture.time_jump`)
/// and metered at the clock, as a late packet is, so one packet dated years away does
/// not re-date every flow and window around it.
pub const TIME_JUMP_NS: u64 = 3_600 * 1_000_000_000;

/// Decoder counters of one reader: frames seen, decoded, and dropped per reason.
#[derive(Debug, Default)]
pub struct ReaderCounters {
    pub frames: Counter,
    pub bytes: Counter,
    pub decoded: Counter,
    pub by_reason: [Counter; WireError::ALL.len()],
    /// Packets dated more than [`TIME_JUMP_NS`] ahead of both neighbours (metered at the
    /// clock).
    pub time_jump: Counter,
    /// 1-based number of the first such packet (0: none).
    pub time_jump_first: Counter,
    /// Packets dated more than [`TIME_JUMP_NS`] behind the clock (metered at the clock,
    /// as every late packet).
    pub time_behind: Counter,
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
                ("capture.time_jump", self.time_jump.get()),
                ("capture.time_jump_first_packet", self.time_jump_first.get()),
                ("capture.time_behind", self.time_behind.get()),
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

/// A frame held back by the time-jump check (its bytes are in `ReaderStage::held_buf`).
#[derive(Clone, Copy, Debug)]
struct Held {
    ts_ns: u64,
    orig_len: u32,
    link: crate::capture::LinkType,
    index: u64,
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
    /// A frame dated more than [`TIME_JUMP_NS`] ahead of the clock (or the first frame),
    /// waiting for the next one; its bytes are in `held_buf`.
    held: Option<Held>,
    held_buf: Vec<u8>,
    /// Frames dated after this are held (`last_ts_ns + TIME_JUMP_NS`; 0 before the first).
    hold_after: u64,
    /// Packet-clock span of what was read.
    pub first_ts_ns: Option<u64>,
    pub last_ts_ns: Option<u64>,
    /// Bench mode: frame timestamp → reader, one frame in `StageLatency::EVERY`.
    latency: Option<Arc<StageLatency>>,
    sample_left: u32,
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
            held: None,
            held_buf: Vec::new(),
            hold_after: 0,
            first_ts_ns: None,
            last_ts_ns: None,
            latency: None,
            sample_left: 0,
        }
    }

    /// Samples the latency from a frame's timestamp to this stage (one frame in
    /// [`StageLatency::EVERY`]; one clock read, no system call, per sample).
    pub fn with_latency(mut self, latency: Option<Arc<StageLatency>>) -> ReaderStage {
        self.latency = latency;
        self
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
        if self.held.is_none() && f.ts_ns <= self.hold_after {
            return self.process(f);
        }
        self.frame_around_jump(f)
    }

    /// A frame far ahead of the clock, or the one after it (see [`TIME_JUMP_NS`]).
    #[cold]
    #[inline(never)]
    fn frame_around_jump(&mut self, f: &Frame<'_>) -> bool {
        let mut ticked = false;
        if let Some(h) = self.held.take() {
            // Held packet far from the one after it (which is back near the clock, or
            // before the first packet): an outlier, metered at its neighbours' time.
            let outlier = f.ts_ns.saturating_add(TIME_JUMP_NS) < h.ts_ns;
            let ts_ns = match (outlier, self.last_ts_ns) {
                (false, _) => h.ts_ns,
                (true, Some(clock)) => clock,
                (true, None) => f.ts_ns,
            };
            if outlier {
                let rc = &*self.counters;
                rc.time_jump.inc();
                if rc.time_jump_first.get() == 0 {
                    rc.time_jump_first.add(h.index + 1);
                }
            }
            ticked |= self.process_held(h, ts_ns);
        }
        if f.ts_ns > self.hold_after {
            self.hold(f);
            return ticked;
        }
        ticked | self.process(f)
    }

    fn hold(&mut self, f: &Frame<'_>) {
        self.held_buf.clear();
        self.held_buf.extend_from_slice(f.data);
        self.held = Some(Held {
            ts_ns: f.ts_ns,
            orig_len: f.orig_len,
            link: f.link,
            index: f.index,
        });
    }

    fn process_held(&mut self, h: Held, ts_ns: u64) -> bool {
        let buf = std::mem::take(&mut self.held_buf);
        let ticked = self.process(&Frame {
            ts_ns,
            orig_len: h.orig_len,
            data: &buf,
            link: h.link,
            index: h.index,
        });
        self.held_buf = buf;
        ticked
    }

    /// The input ended (or went idle): a held frame is metered at its own time (nothing
    /// after it says it is an outlier).
    pub fn flush_held(&mut self) -> bool {
        match self.held.take() {
            Some(h) => self.process_held(h, h.ts_ns),
            None => false,
        }
    }

    #[inline(always)]
    fn process(&mut self, f: &Frame<'_>) -> bool {
        if self.latency.is_some() {
            self.sample_latency(f.ts_ns);
        }
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
        let clock = self.last_ts_ns.map_or(f.ts_ns, |l| l.max(f.ts_ns));
        if f.ts_ns.saturating_add(TIME_JUMP_NS) < clock {
            rc.time_behind.inc();
        }
        self.last_ts_ns = Some(clock);
        self.hold_after = clock.saturating_add(TIME_JUMP_NS);
        if f.ts_ns >= self.next_tick {
            self.router.tick(f.ts_ns);
            self.next_tick = f.ts_ns.saturating_add(TICK_NS);
            return true;
        }
        false
    }

    #[inline]
    fn sample_latency(&mut self, ts_ns: u64) {
        if self.sample_left > 0 {
            self.sample_left -= 1;
            return;
        }
        self.sample_left = StageLatency::EVERY - 1;
        if let Some(l) = &self.latency {
            l.ts_to_reader
                .record(crate::capture::afxdp::now_ns().saturating_sub(ts_ns));
        }
    }

    /// The source has been idle: carries the clock to `now_ns` (wall-clock time).
    pub fn idle(&mut self, now_ns: u64) {
        self.flush_held();
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
    let r = read_all(source, stage, idle_tick);
    // Also after an error: the frames before it are results.
    stage.flush_held();
    r
}

fn read_all<S: PacketSource + ?Sized>(
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
