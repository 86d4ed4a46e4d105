//! Sharding: the symmetric flow hash, the bounded rings from readers to scorer shards, and
//! the scorer's drain loop. This is the only hot-path code that crosses threads.
//!
//! Architecture invariant: a reader never blocks on a scorer in live capture. A full ring
//! drops the packet and counts it (`shard.ring_full`). File replay instead waits for room
//! ([`FullPolicy::Wait`]): a file can always be read later, so dropping would lose packets
//! for nothing and make replays non-deterministic.

use std::sync::Arc;

use crossbeam_utils::Backoff;

use crate::stats::Counter;
use crate::wire::PacketMeta;

/// What a reader hands to a scorer: one decoded packet.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct PacketRecord {
    /// Capture time, ns since the epoch.
    pub ts_ns: u64,
    /// Symmetric flow hash in the configured key mode (see [`symmetric_hash`]), low bits.
    pub hash: u32,
    /// Bitmask of the profiles whose packet filter this packet matched.
    pub profiles: u16,
    /// How far (whole ms of the flow clock) this packet's timestamp lies behind the reader's
    /// clock (the newest timestamp it has routed). Non-zero only for out-of-order packets:
    /// the shard first moves its flow clock to `ts + lag`, so every shard count sees the
    /// same clock. Beyond `u16::MAX` ms the router sends the shard a tick with the clock
    /// before the packet, and the lag is 0.
    pub lag_ms: u16,
    pub meta: PacketMeta,
}

const _: () = assert!(std::mem::size_of::<PacketRecord>() == 96);

/// A ring message: a packet, or a clock tick so that a shard that receives no packets
/// still expires idle flows and closes windows.
#[derive(Clone, Copy, Debug)]
pub enum Msg {
    Packet(PacketRecord),
    /// The reader's packet clock has reached this time (ns).
    Tick(u64),
}

/// Which fields the shard hash covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyMode {
    /// IP pair, port pair, protocol, VLAN, tunnel: spreads load evenly.
    #[default]
    FiveTuple,
    /// IP pair only: keeps all of a scanner's flows to one target in one shard.
    IpPair,
}

#[inline(always)]
fn mix(mut h: u64, v: u64) -> u64 {
    // One round of a multiply-xorshift mixer (as in FxHash/wyhash folding): fast, and
    // good enough to spread flows over a handful of shards.
    h = (h ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    h ^ (h >> 29)
}

/// Symmetric flow hash: A→B and B→A give the same value.
#[inline]
pub fn symmetric_hash(m: &PacketMeta, mode: KeyMode) -> u64 {
    let a = (u128::from_be_bytes(m.src_ip), m.src_port);
    let b = (u128::from_be_bytes(m.dst_ip), m.dst_port);
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut h = 0x243F_6A88_85A3_08D3u64;
    match mode {
        KeyMode::FiveTuple => {
            h = mix(h, lo.0 as u64);
            h = mix(h, (lo.0 >> 64) as u64);
            h = mix(h, hi.0 as u64);
            h = mix(h, (hi.0 >> 64) as u64);
            h = mix(
                h,
                u64::from(lo.1)
                    | u64::from(hi.1) << 16
                    | u64::from(m.protocol) << 32
                    | u64::from(m.tunnel_id) << 40
                    | u64::from(m.vlan_id) << 48,
            );
        }
        KeyMode::IpPair => {
            let (x, y) = if lo.0 <= hi.0 {
                (lo.0, hi.0)
            } else {
                (hi.0, lo.0)
            };
            h = mix(h, x as u64);
            h = mix(h, (x >> 64) as u64);
            h = mix(h, y as u64);
            h = mix(h, (y >> 64) as u64);
        }
    }
    // Final avalanche so that `h % shards` uses all bits.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^ (h >> 33)
}

/// The shard a hash belongs to.
#[inline(always)]
pub fn shard_of(hash: u64, shards: usize) -> usize {
    // Multiply-shift range reduction: no division on the hot path.
    ((u128::from(hash) * shards as u128) >> 64) as usize
}

/// Reader end of one reader→shard ring (single producer, owned by the reader).
pub struct Producer {
    p: rtrb::Producer<Msg>,
}

/// Scorer end of one reader→shard ring (single consumer, owned by the scorer).
pub struct Consumer {
    c: rtrb::Consumer<Msg>,
}

/// How long a replay reader sleeps on a full ring once its spin backoff is spent.
const WAIT_SLEEP_US: u64 = 50;

/// A bounded single-producer single-consumer ring of `capacity` messages (rtrb: cached
/// head/tail indices, one release store per push, chunked reads on the consumer side).
pub fn ring(capacity: usize) -> (Producer, Consumer) {
    let (p, c) = rtrb::RingBuffer::new(capacity.max(1));
    (Producer { p }, Consumer { c })
}

impl Producer {
    /// Pushes without waiting; gives the message back when the ring is full.
    #[inline]
    pub fn try_push(&mut self, m: Msg) -> Result<(), Msg> {
        self.p.push(m).map_err(|rtrb::PushError::Full(m)| m)
    }

    /// Pushes, waiting (spin, then yield) for room. Only for file replay.
    pub fn push_wait(&mut self, mut m: Msg) {
        let backoff = Backoff::new();
        let p = &mut self.p;
        loop {
            match p.push(m) {
                Ok(()) => return,
                Err(rtrb::PushError::Full(back)) => {
                    m = back;
                    if p.is_abandoned() {
                        return; // the scorer is gone (it panicked): nothing to wait for
                    }
                    if backoff.is_completed() {
                        // The scorer is behind by a whole ring (65 536 packets by
                        // default, tens of milliseconds of its work): sleep instead of
                        // spinning on sched_yield, which burnt a core in system time
                        // (replay with the host profile: 0.5-1.0 s of sys per 1 M
                        // packets) and made the scorer wake a spinning reader on every
                        // freed slot.
                        std::thread::sleep(std::time::Duration::from_micros(WAIT_SLEEP_US));
                    } else {
                        backoff.snooze();
                    }
                }
            }
        }
    }

    /// Messages waiting in the ring.
    pub fn len(&self) -> usize {
        self.p.buffer().capacity() - self.p.slots()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a reader does when a shard's ring is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FullPolicy {
    /// Drop the packet and count it (live capture: never stall the NIC queue).
    Drop,
    /// Wait for room (file replay: lossless and deterministic).
    Wait,
}

/// Counters of one router (one reader thread).
#[derive(Debug, Default)]
pub struct RouterCounters {
    pub routed: Counter,
    pub ring_full: Counter,
}

impl RouterCounters {
    pub fn named(&self) -> [(&'static str, u64); 2] {
        [
            ("shard.routed", self.routed.get()),
            ("shard.ring_full", self.ring_full.get()),
        ]
    }
}

/// A reader's side of sharding: one producer per shard.
pub struct Router {
    producers: Vec<Producer>,
    /// Newest timestamp routed (ns).
    clock_ns: u64,
    policy: FullPolicy,
    mode: KeyMode,
    pub counters: Arc<RouterCounters>,
}

impl Router {
    pub fn new(producers: Vec<Producer>, policy: FullPolicy, mode: KeyMode) -> Self {
        assert!(!producers.is_empty(), "a router needs at least one shard");
        Router {
            producers,
            policy,
            mode,
            clock_ns: 0,
            counters: Arc::new(RouterCounters::default()),
        }
    }

    pub fn shards(&self) -> usize {
        self.producers.len()
    }

    /// Hashes and routes one packet, marked with the profiles it matched. Returns false
    /// if it was dropped (ring full).
    #[inline]
    pub fn route(&mut self, ts_ns: u64, meta: &PacketMeta, profiles: u16) -> bool {
        let hash = symmetric_hash(meta, self.mode);
        self.route_hashed(ts_ns, meta, profiles, hash)
    }

    /// [`Router::route`] with the 5-tuple hash already computed (the reader needs it for
    /// the evidence ring): under the 5-tuple key it is the shard hash too, so the packet is
    /// hashed once.
    #[inline(always)]
    pub fn route_five_tuple_hashed(
        &mut self,
        ts_ns: u64,
        meta: &PacketMeta,
        profiles: u16,
        five_tuple_hash: u64,
    ) -> bool {
        let hash = match self.mode {
            KeyMode::FiveTuple => five_tuple_hash,
            mode => symmetric_hash(meta, mode),
        };
        self.route_hashed(ts_ns, meta, profiles, hash)
    }

    #[inline(always)]
    fn route_hashed(&mut self, ts_ns: u64, meta: &PacketMeta, profiles: u16, hash: u64) -> bool {
        let s = shard_of(hash, self.producers.len());
        let clock = self.clock_ns;
        let lag_ms = if ts_ns >= clock {
            self.clock_ns = ts_ns;
            0
        } else {
            // In whole milliseconds of the flow clock (which counts ms): ts + lag lands in
            // the clock's millisecond exactly, never past it (rounding the ns difference
            // up could move a shard's clock 1 ms beyond the reader's, and with it the
            // times of the flows the shard meters: `--shards` then changed the output).
            let lag = clock / 1_000_000 - ts_ns / 1_000_000;
            if lag > u64::from(u16::MAX) {
                // Further back than the field holds (a capture whose clock jumped by
                // more than a minute): the shard gets the clock itself first.
                let tick = Msg::Tick(clock);
                match self.policy {
                    FullPolicy::Wait => self.producers[s].push_wait(tick),
                    FullPolicy::Drop => {
                        if self.producers[s].try_push(tick).is_err() {
                            self.counters.ring_full.inc();
                            return false;
                        }
                    }
                }
                0
            } else {
                lag as u16
            }
        };
        let m = Msg::Packet(PacketRecord {
            ts_ns,
            hash: hash as u32,
            profiles,
            lag_ms,
            meta: *meta,
        });
        match self.policy {
            FullPolicy::Wait => self.producers[s].push_wait(m),
            FullPolicy::Drop => {
                if self.producers[s].try_push(m).is_err() {
                    self.counters.ring_full.inc();
                    return false;
                }
            }
        }
        self.counters.routed.inc();
        true
    }

    /// Sends a clock tick to every shard (dropped silently if a ring is full: the next
    /// tick or packet carries the clock forward anyway).
    pub fn tick(&mut self, now_ns: u64) {
        for p in &mut self.producers {
            match self.policy {
                FullPolicy::Wait => p.push_wait(Msg::Tick(now_ns)),
                FullPolicy::Drop => {
                    let _ = p.try_push(Msg::Tick(now_ns));
                }
            }
        }
    }
}

/// A scorer shard's handler for the messages of its rings.
pub trait ShardWorker {
    fn on_packet(&mut self, rec: &PacketRecord);
    fn on_tick(&mut self, now_ns: u64);
    /// A run of consecutive messages from one ring (in order). The default handles them
    /// one by one; a worker may override it to process packets in batches.
    fn on_msgs(&mut self, msgs: &[Msg]) {
        for m in msgs {
            match m {
                Msg::Packet(r) => self.on_packet(r),
                Msg::Tick(t) => self.on_tick(*t),
            }
        }
    }
    /// Called once after every ring is closed and drained.
    fn finish(&mut self);
}

/// Most messages handed to a worker at once.
const DRAIN_CHUNK: usize = 256;

/// 50 µs sleeps of an idle shard before it sleeps 1 ms at a time (~10 ms of no traffic:
/// longer than the readers' naps, so a busy link never gets there).
const IDLE_SHORT_SLEEPS: u32 = 100;

/// Drains `consumers` (one per reader) into `worker` until every producer is dropped and
/// every ring is empty, then calls `finish`. Idle waiting spins briefly, then yields, then
/// sleeps 50 µs, and after ~10 ms without traffic 1 ms, so an idle shard costs little CPU.
pub fn run_shard<W: ShardWorker + ?Sized>(consumers: &mut [Consumer], worker: &mut W) {
    let backoff = Backoff::new();
    let mut idle_rounds = 0u32;
    loop {
        let mut got = false;
        for c in consumers.iter_mut() {
            let c = &mut c.c;
            let n = c.slots().min(DRAIN_CHUNK);
            if n == 0 {
                continue;
            }
            if let Ok(chunk) = c.read_chunk(n) {
                let (a, b) = chunk.as_slices();
                worker.on_msgs(a);
                if !b.is_empty() {
                    worker.on_msgs(b);
                }
                chunk.commit_all();
                got = true;
            }
        }
        if got {
            backoff.reset();
            idle_rounds = 0;
            continue;
        }
        // Empty: finished if every producer is gone and nothing arrived since.
        if consumers
            .iter()
            .all(|c| c.c.is_abandoned() && c.c.is_empty())
        {
            break;
        }
        if !backoff.is_completed() {
            backoff.snooze();
        } else if idle_rounds < 64 {
            idle_rounds += 1;
            std::thread::yield_now();
        } else if idle_rounds < 64 + IDLE_SHORT_SLEEPS {
            idle_rounds += 1;
            std::thread::sleep(std::time::Duration::from_micros(50));
        } else {
            // Idle for a while (no traffic): 1 ms sleeps, ~1 000 wakeups/s instead of
            // ~15 000; the rings hold far more than 1 ms of traffic.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    worker.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(a: [u8; 4], ap: u16, b: [u8; 4], bp: u16, proto: u8) -> PacketMeta {
        let mut m = PacketMeta::default();
        m.src_ip[..4].copy_from_slice(&a);
        m.dst_ip[..4].copy_from_slice(&b);
        m.src_port = ap;
        m.dst_port = bp;
        m.protocol = proto;
        m.ip_version = 4;
        m
    }

    #[test]
    fn hash_is_symmetric_and_spreads() {
        let mut hist = [0usize; 4];
        for i in 0..4000u32 {
            let a = [198, 18, (i >> 8) as u8, i as u8];
            let b = [198, 19, 0, 1];
            let f = meta(a, 1000 + i as u16, b, 80, 6);
            let r = meta(b, 80, a, 1000 + i as u16, 6);
            for mode in [KeyMode::FiveTuple, KeyMode::IpPair] {
                assert_eq!(symmetric_hash(&f, mode), symmetric_hash(&r, mode));
            }
            hist[shard_of(symmetric_hash(&f, KeyMode::FiveTuple), 4)] += 1;
        }
        for h in hist {
            assert!((800..1200).contains(&h), "{hist:?}");
        }
    }

    #[test]
    fn ip_pair_ignores_ports() {
        let a = meta([198, 18, 0, 1], 1, [198, 18, 0, 2], 22, 6);
        let b = meta([198, 18, 0, 2], 443, [198, 18, 0, 1], 9, 17);
        assert_eq!(
            symmetric_hash(&a, KeyMode::IpPair),
            symmetric_hash(&b, KeyMode::IpPair)
        );
        assert_ne!(
            symmetric_hash(&a, KeyMode::FiveTuple),
            symmetric_hash(&b, KeyMode::FiveTuple)
        );
    }

    struct Collect(Vec<u64>, u64, bool);
    impl ShardWorker for Collect {
        fn on_packet(&mut self, r: &PacketRecord) {
            self.0.push(r.ts_ns)
        }
        fn on_tick(&mut self, t: u64) {
            self.1 = t
        }
        fn finish(&mut self) {
            self.2 = true
        }
    }

    #[test]
    fn full_ring_drops_and_counts_never_blocks() {
        let (p, c) = ring(8);
        let mut router = Router::new(vec![p], FullPolicy::Drop, KeyMode::FiveTuple);
        let m = meta([198, 18, 0, 1], 1, [198, 18, 0, 2], 2, 17);
        let mut ok = 0;
        for t in 0..20 {
            ok += router.route(t, &m, 1) as u64;
        }
        assert_eq!(ok, 8);
        assert_eq!(router.counters.routed.get(), 8);
        assert_eq!(router.counters.ring_full.get(), 12);
        drop(router);
        let mut w = Collect(vec![], 0, false);
        run_shard(&mut [c], &mut w);
        assert_eq!(w.0, (0..8).collect::<Vec<_>>());
        assert!(w.2);
    }

    #[test]
    fn spsc_order_and_count_across_threads_with_wait() {
        let (p, c) = ring(16);
        let n = 200_000u64;
        let t = std::thread::spawn(move || {
            let mut router = Router::new(vec![p], FullPolicy::Wait, KeyMode::FiveTuple);
            let m = meta([198, 18, 0, 1], 1, [198, 18, 0, 2], 2, 17);
            for i in 0..n {
                assert!(router.route(i, &m, 1));
                if i % 1000 == 0 {
                    router.tick(i);
                }
            }
        });
        let mut w = Collect(Vec::with_capacity(n as usize), 0, false);
        run_shard(&mut [c], &mut w);
        t.join().unwrap();
        assert_eq!(w.0.len() as u64, n);
        assert!(w.0.windows(2).all(|x| x[0] + 1 == x[1]));
        assert_eq!(w.1, 199_000);
    }
}
