//! The host behaviour profile (mode `host`): online per-entity statistics in the manner of
//! Kitsune (Mirsky et al., NDSS'18) — damped incremental statistics at several decay
//! rates — per source host, per host pair and per socket, plus fan-out, failed-connection
//! ratios and service/destination rarity. One feature vector per *host event* (a
//! connection start: the first packet of a new flow, from its initiator), scored by the
//! profile's Half-Space Trees at a bounded rate.
//!
//! Everything is preallocated when the scorer starts: the tables are fixed-size arrays with
//! an intrusive segmented LRU ([`Slru`]), the sketches fixed arrays. Per packet: one table
//! lookup (the source host) and its damped statistics; per new flow: the pair and socket
//! lookups and the sketches; per first reply of a flow: one lookup of its initiator. No
//! allocation, lock or system call on any of these paths.
//!
//! Sharding: flows are sharded by a symmetric hash, so one host's flows land on every
//! shard and each shard's host state sees about 1/S of a host's connections (fan-out,
//! rates); per-pair and per-socket state is complete per shard with `key = "ip-pair"`.

/// Decay rates (per second) of the damped statistics: a weight halves after 1/λ s
/// (Kitsune's 2^(−λ·Δt)).
pub const LAMBDAS: [f64; 4] = [5.0, 1.0, 0.1, 0.01];

/// Fan-out epoch: distinct destinations and ports are counted over the current and the
/// previous epoch of this many seconds (a sliding 60–120 s view).
pub const FANOUT_EPOCH_NS: u64 = 60_000_000_000;
/// The rarity sketches' counters are halved every this many seconds of packet time.
pub const RARITY_HALF_LIFE_NS: u64 = 300_000_000_000;

/// Damped incremental statistics of one quantity (Kitsune's `incStat`): weight, linear
/// sum and squared sum, each decayed by 2^(−λ·Δt) before a new value is added.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Damped {
    pub w: f64,
    pub ls: f64,
    pub ss: f64,
}

impl Damped {
    /// Decays by `f` (= 2^(−λ·Δt)) and adds `x`.
    #[inline]
    pub fn add(&mut self, f: f64, x: f64) {
        self.w = self.w * f + 1.0;
        self.ls = self.ls * f + x;
        self.ss = self.ss * f + x * x;
    }
    /// Decays by `f` without adding.
    #[inline]
    pub fn decay(&mut self, f: f64) {
        self.w *= f;
        self.ls *= f;
        self.ss *= f;
    }
    #[inline]
    pub fn mean(&self) -> f64 {
        if self.w > 0.0 {
            self.ls / self.w
        } else {
            0.0
        }
    }
    #[inline]
    pub fn std(&self) -> f64 {
        if self.w > 0.0 {
            let m = self.ls / self.w;
            (self.ss / self.w - m * m).abs().sqrt()
        } else {
            0.0
        }
    }
}

/// 2^(−λ·Δt) for every rate this module uses (λ = 5, 1, 0.1, 0.01 per second), from one
/// `exp2`: the 0.01 factor raised to the powers 10, 100 and 500 by multiplication
/// (a few ulps from separate `exp2` calls; underflows to 0 as they do). For the updates
/// that need several rates at one gap (a packet's size statistics, a connection's rates);
/// a single rate takes [`decay_factor`].
#[derive(Clone, Copy, Debug)]
pub struct Decays {
    /// λ = 5, 1, 0.1, 0.01, in [`LAMBDAS`]' order.
    pub f: [f64; 4],
}

impl Decays {
    #[inline]
    pub fn new(dt_ns: u64) -> Decays {
        if dt_ns == 0 {
            return Decays { f: [1.0; 4] };
        }
        #[inline(always)]
        fn pow10(x: f64) -> f64 {
            let x2 = x * x;
            let x5 = x2 * x2 * x;
            x5 * x5
        }
        let f001 = (-0.01 * dt_ns as f64 * 1e-9).exp2();
        let f01 = pow10(f001);
        let f1 = pow10(f01);
        let f2 = f1 * f1;
        Decays {
            f: [f2 * f2 * f1, f1, f01, f001],
        }
    }
    /// The factor of λ = 1.
    #[inline]
    pub fn l1(&self) -> f64 {
        self.f[1]
    }
    /// The factor of λ = 0.1.
    #[inline]
    pub fn l01(&self) -> f64 {
        self.f[2]
    }
    /// The factor of λ = 0.01.
    #[inline]
    pub fn l001(&self) -> f64 {
        self.f[3]
    }
}

/// 2^(−λ·Δt) for a gap of `dt_ns`.
#[inline]
pub fn decay_factor(lambda: f64, dt_ns: u64) -> f64 {
    if dt_ns == 0 {
        1.0
    } else {
        (-lambda * dt_ns as f64 * 1e-9).exp2()
    }
}

/// Distinct values over a sliding two-epoch view: linear counting on a 128-bit bitmap per
/// epoch (the current one and the previous one are OR-ed), 32 bytes. Unbiased to a few
/// per cent on average up to ~120 distinct values (one standard error ~7 % at 60),
/// saturating at ~620 (every bit set).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DecayedDistinct {
    cur: u128,
    prev: u128,
    epoch: u64,
}

impl DecayedDistinct {
    #[inline]
    fn roll(&mut self, t_ns: u64) {
        let e = t_ns / FANOUT_EPOCH_NS;
        if e != self.epoch {
            self.prev = if e == self.epoch + 1 { self.cur } else { 0 };
            self.cur = 0;
            self.epoch = e;
        }
    }
    /// Adds a value (by its 64-bit hash) at `t_ns`.
    #[inline]
    pub fn insert(&mut self, hash: u64, t_ns: u64) {
        self.roll(t_ns);
        self.cur |= 1u128 << (hash >> 57);
    }
    /// Estimated distinct values in the current and previous epoch at `t_ns`.
    #[inline]
    pub fn estimate(&mut self, t_ns: u64) -> f64 {
        self.roll(t_ns);
        let ones = (self.cur | self.prev).count_ones();
        let zeros = f64::from(128 - ones).max(0.5);
        128.0 * (128.0 / zeros).ln()
    }
}

/// A count-min sketch (4 rows × 1 024 counters) whose counters and total are halved every
/// [`RARITY_HALF_LIFE_NS`]: how often this network used a key lately.
#[derive(Clone)]
pub struct DecayedCountMin {
    rows: Box<[[u32; 1024]; 4]>,
    total: u64,
    next_halving_ns: u64,
}

impl Default for DecayedCountMin {
    fn default() -> Self {
        DecayedCountMin {
            rows: Box::new([[0; 1024]; 4]),
            total: 0,
            next_halving_ns: 0,
        }
    }
}

impl DecayedCountMin {
    #[inline]
    fn idx(hash: u64, row: usize) -> usize {
        let h2 = (hash >> 32) | 1;
        ((hash.wrapping_add(h2.wrapping_mul(row as u64 + 1))) >> 22 & 1023) as usize
    }
    /// Halves everything when due (call at clock ticks, not per packet).
    pub fn tick(&mut self, now_ns: u64) {
        if self.next_halving_ns == 0 {
            self.next_halving_ns = now_ns.saturating_add(RARITY_HALF_LIFE_NS);
            return;
        }
        while now_ns >= self.next_halving_ns {
            for r in self.rows.iter_mut() {
                for c in r.iter_mut() {
                    *c >>= 1;
                }
            }
            self.total >>= 1;
            self.next_halving_ns = self.next_halving_ns.saturating_add(RARITY_HALF_LIFE_NS);
        }
    }
    #[inline]
    pub fn add(&mut self, hash: u64) {
        for r in 0..4 {
            let c = &mut self.rows[r][Self::idx(hash, r)];
            *c = c.saturating_add(1);
        }
        self.total += 1;
    }
    #[inline]
    pub fn count(&self, hash: u64) -> u32 {
        (0..4)
            .map(|r| self.rows[r][Self::idx(hash, r)])
            .min()
            .unwrap_or(0)
    }
    /// log2((total + 1) / (count + 1)): 0 for a key that is all of the traffic, ~17 for
    /// one never seen among 100 000.
    #[inline]
    pub fn rarity(&self, hash: u64) -> f64 {
        ((self.total as f64 + 1.0) / (f64::from(self.count(hash)) + 1.0)).log2()
    }
}

const NIL: u32 = u32::MAX;

/// A fixed-capacity hash table with a segmented LRU: new keys enter the *probation*
/// segment; [`Slru::promote`] moves an entry to the *protected* segment (at most 4/5 of
/// the capacity, its least recent entries falling back to probation). A full table evicts
/// the least recent probation entry (the least recent protected one if probation is
/// empty). So a burst of one-packet spoofed sources churns probation and leaves the hosts
/// that were answered in place. All arrays are allocated by [`Slru::new`]; every
/// operation is O(1) (a bucket chain of ~1 entry) and allocates nothing.
pub struct Slru<V> {
    keys: Vec<u64>,
    vals: Vec<V>,
    chain: Vec<u32>,
    prev: Vec<u32>,
    next: Vec<u32>,
    /// 1 probation, 2 protected.
    seg: Vec<u8>,
    buckets: Vec<u32>,
    bucket_mask: u64,
    head: [u32; 3],
    tail: [u32; 3],
    len: [u32; 3],
    used: u32,
    cap: u32,
    protected_cap: u32,
    /// Keys inserted, and entries evicted to make room (inserted − evicted = live).
    pub inserted: u64,
    pub evicted: u64,
}

impl<V: Default + Clone> Slru<V> {
    pub fn new(cap: usize) -> Slru<V> {
        let cap = cap.clamp(2, 1 << 30);
        let nb = (cap * 2).next_power_of_two();
        Slru {
            keys: vec![0; cap],
            vals: vec![V::default(); cap],
            chain: vec![NIL; cap],
            prev: vec![NIL; cap],
            next: vec![NIL; cap],
            seg: vec![0; cap],
            buckets: vec![NIL; nb],
            bucket_mask: nb as u64 - 1,
            head: [NIL; 3],
            tail: [NIL; 3],
            len: [0; 3],
            used: 0,
            cap: cap as u32,
            protected_cap: (cap as u32 * 4 / 5).max(1),
            inserted: 0,
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        (self.len[1] + self.len[2]) as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    fn bucket(&self, key: u64) -> usize {
        ((key ^ (key >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 17 & self.bucket_mask) as usize
    }

    #[inline]
    fn unlink(&mut self, i: u32) {
        let s = self.seg[i as usize] as usize;
        let (p, n) = (self.prev[i as usize], self.next[i as usize]);
        if p == NIL {
            self.head[s] = n;
        } else {
            self.next[p as usize] = n;
        }
        if n == NIL {
            self.tail[s] = p;
        } else {
            self.prev[n as usize] = p;
        }
        self.len[s] -= 1;
    }

    #[inline]
    fn push_front(&mut self, i: u32, s: u8) {
        let su = s as usize;
        self.seg[i as usize] = s;
        self.prev[i as usize] = NIL;
        self.next[i as usize] = self.head[su];
        if self.head[su] != NIL {
            self.prev[self.head[su] as usize] = i;
        } else {
            self.tail[su] = i;
        }
        self.head[su] = i;
        self.len[su] += 1;
    }

    /// The slot of `key`, without changing its recency.
    #[inline]
    pub fn find(&self, key: u64) -> Option<u32> {
        let mut i = self.buckets[self.bucket(key)];
        while i != NIL {
            if self.keys[i as usize] == key {
                return Some(i);
            }
            i = self.chain[i as usize];
        }
        None
    }

    /// The slot of `key`, made most recent in its segment; inserted (value reset to its
    /// default, evicting if full) when absent. The bool: newly inserted.
    #[inline]
    pub fn get_or_insert(&mut self, key: u64) -> (u32, bool) {
        if let Some(i) = self.find(key) {
            let s = self.seg[i as usize];
            if self.head[s as usize] != i {
                self.unlink(i);
                self.push_front(i, s);
            }
            return (i, false);
        }
        let i = if self.used < self.cap {
            self.used += 1;
            self.used - 1
        } else {
            let victim = if self.tail[1] != NIL {
                self.tail[1]
            } else {
                self.tail[2]
            };
            self.unlink(victim);
            // Out of its bucket chain.
            let b = self.bucket(self.keys[victim as usize]);
            let after = self.chain[victim as usize];
            if self.buckets[b] == victim {
                self.buckets[b] = after;
            } else {
                let mut p = self.buckets[b];
                while self.chain[p as usize] != victim {
                    p = self.chain[p as usize];
                }
                self.chain[p as usize] = after;
            }
            self.evicted += 1;
            self.vals[victim as usize] = V::default();
            victim
        };
        self.keys[i as usize] = key;
        let b = self.bucket(key);
        self.chain[i as usize] = self.buckets[b];
        self.buckets[b] = i;
        self.push_front(i, 1);
        self.inserted += 1;
        (i, true)
    }

    /// Moves slot `i` to the protected segment (most recent there).
    #[inline]
    pub fn promote(&mut self, i: u32) {
        if self.seg[i as usize] == 2 {
            return;
        }
        self.unlink(i);
        self.push_front(i, 2);
        if self.len[2] > self.protected_cap {
            let t = self.tail[2];
            self.unlink(t);
            self.push_front(t, 1);
        }
    }

    #[inline]
    pub fn val(&mut self, i: u32) -> &mut V {
        &mut self.vals[i as usize]
    }

    /// Whether slot `i` is in the protected segment.
    pub fn is_protected(&self, i: u32) -> bool {
        self.seg[i as usize] == 2
    }
}

/// Per source host.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostEntry {
    pub ip: [u8; 16],
    pub ip_version: u8,
    last_pkt_ns: u64,
    /// Packet sizes sent, at each of [`LAMBDAS`].
    size: [Damped; 4],
    last_conn_ns: u64,
    /// Connection starts at λ = 1, 0.1, 0.01 (the weight only).
    conns: [f64; 3],
    last_out_ns: u64,
    /// At λ = 0.1: attempts (connections started), answered (a first reply came back),
    /// RST answers, ICMP unreachable received.
    outcome: [f64; 4],
    dsts: DecayedDistinct,
    ports: DecayedDistinct,
}

/// Per (source, destination) host pair: connection starts and their inter-arrival times.
#[derive(Clone, Copy, Debug, Default)]
pub struct PairEntry {
    last_conn_ns: u64,
    /// Connections (saturating at 255).
    n: u8,
    conns: f64,
    iat: Damped,
    /// Reported as a beacon (once per pair while it stays in the table).
    beacon: bool,
}

/// Per socket (source, destination, protocol, destination port): connection starts.
#[derive(Clone, Copy, Debug, Default)]
pub struct SockEntry {
    last_conn_ns: u64,
    conns: [f64; 2],
}

// The rates of the connection and socket statistics are taken from [`Decays`] (the test
// `decays_match_exp2_at_every_rate` checks each against its own `exp2`).
#[cfg_attr(not(test), allow(dead_code))]
const CONN_LAMBDAS: [f64; 3] = [1.0, 0.1, 0.01];
const OUTCOME_LAMBDA: f64 = 0.1;
const PAIR_LAMBDA: f64 = 0.01;
#[cfg_attr(not(test), allow(dead_code))]
const SOCK_LAMBDAS: [f64; 2] = [1.0, 0.1];
/// A pair's inter-arrival CV needs this many connections; before, it is 1 (Poisson-like).
const PAIR_CV_MIN_CONNS: u8 = 4;

/// Beaconing (checked at every connection start, outside the trees: a periodic pair is
/// two extreme dimensions of eleven, which the trees do not isolate; docs/detection.md):
/// a pair with at least this many connections,
pub const BEACON_MIN_CONNS: u8 = 6;
/// spaced at least this far apart on average (not a chatty client),
pub const BEACON_MIN_PERIOD_S: f64 = 10.0;
/// as regularly as this (coefficient of variation of the damped intervals, λ = 0.01;
/// a timer with ±5 % jitter is ~0.03, Poisson arrivals ~1),
pub const BEACON_MAX_CV: f64 = 0.1;
/// to a destination this network rarely talks to (rarity in bits: log2 of host events
/// per event to it; ~14 for one host in 20 000 events).
pub const BEACON_MIN_RARITY: f64 = 10.0;

/// A pair found beaconing (see [`BEACON_MIN_CONNS`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Beacon {
    pub period_s: f64,
    pub cv: f64,
    pub connections: u32,
    pub dst_rarity: f64,
}

/// Counters of the host tables (totals since start).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostTableCounts {
    pub inserted: u64,
    pub evicted: u64,
    pub live: u64,
}

/// The host state of one profile on one shard: three tables, two rarity sketches and
/// the token bucket of host samples.
pub struct HostState {
    hosts: Slru<HostEntry>,
    pairs: Slru<PairEntry>,
    socks: Slru<SockEntry>,
    services: DecayedCountMin,
    dsts: DecayedCountMin,
    /// Token bucket (samples): level, capacity, refill per ns, last refill.
    tokens: f64,
    rate_per_ns: f64,
    burst: f64,
    last_refill_ns: u64,
}

/// A host event waiting to be scored: the source host's slot.
#[derive(Clone, Copy, Debug)]
pub struct HostEvent {
    pub host: u32,
}

fn hash_ip(ip: &[u8; 16], v: u8) -> u64 {
    let x = u128::from_be_bytes(*ip);
    mix64(mix64(x as u64 ^ u64::from(v) << 56) ^ (x >> 64) as u64)
}

#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The connection a host event is about.
#[derive(Clone, Copy, Debug)]
pub struct Conn<'a> {
    pub src_ip: &'a [u8; 16],
    pub dst_ip: &'a [u8; 16],
    pub ip_version: u8,
    pub protocol: u8,
    pub dst_port: u16,
}

impl HostState {
    /// Tables of `hosts` hosts and 2 × `hosts` pairs and sockets; `rate` host samples
    /// per second (burst: one second's worth).
    pub fn new(hosts: usize, rate: f64) -> HostState {
        HostState {
            hosts: Slru::new(hosts),
            pairs: Slru::new(hosts * 2),
            socks: Slru::new(hosts * 2),
            services: DecayedCountMin::default(),
            dsts: DecayedCountMin::default(),
            tokens: rate,
            rate_per_ns: rate * 1e-9,
            burst: rate,
            last_refill_ns: 0,
        }
    }

    /// Bytes [`HostState::new`] allocates for `hosts` hosts (the memory check at start).
    pub fn memory_bytes(hosts: usize) -> u64 {
        // Per slot: key, chain, LRU links, segment, plus two bucket heads.
        let slot = 8 + 4 + 4 + 4 + 1 + 8;
        let h = hosts as u64;
        let per = |v: usize| v as u64 + slot;
        h * per(std::mem::size_of::<HostEntry>())
            + 2 * h * per(std::mem::size_of::<PairEntry>())
            + 2 * h * per(std::mem::size_of::<SockEntry>())
            + 2 * 4 * 1024 * 4
    }

    /// Table counters: hosts, pairs, sockets.
    pub fn counts(&self) -> [HostTableCounts; 3] {
        let c = |inserted, evicted, live: usize| HostTableCounts {
            inserted,
            evicted,
            live: live as u64,
        };
        [
            c(self.hosts.inserted, self.hosts.evicted, self.hosts.len()),
            c(self.pairs.inserted, self.pairs.evicted, self.pairs.len()),
            c(self.socks.inserted, self.socks.evicted, self.socks.len()),
        ]
    }

    /// Clock tick: the rarity sketches' halving.
    pub fn tick(&mut self, now_ns: u64) {
        self.services.tick(now_ns);
        self.dsts.tick(now_ns);
    }

    /// One packet sent by `src` of `size` bytes at `t`: the host's damped size statistics.
    /// Returns the host's slot.
    #[inline]
    pub fn packet(&mut self, src: &[u8; 16], v: u8, size: u32, t: u64) -> u32 {
        let (i, new) = self.hosts.get_or_insert(hash_ip(src, v));
        let h = self.hosts.val(i);
        if new {
            h.ip = *src;
            h.ip_version = v;
            h.last_pkt_ns = t;
        }
        let dt = t.saturating_sub(h.last_pkt_ns);
        h.last_pkt_ns = h.last_pkt_ns.max(t);
        let x = f64::from(size);
        if dt == 0 {
            for s in &mut h.size {
                s.add(1.0, x);
            }
        } else {
            let d = Decays::new(dt);
            for (s, &f) in h.size.iter_mut().zip(&d.f) {
                s.add(f, x);
            }
        }
        i
    }

    /// The first reply of a connection `initiator` started: it was answered (`rst`: by a
    /// reset). Promotes the initiator to the protected segment.
    pub fn answered(&mut self, initiator: &[u8; 16], v: u8, rst: bool, t: u64) {
        let Some(i) = self.hosts.find(hash_ip(initiator, v)) else {
            return;
        };
        self.hosts.promote(i);
        let h = self.hosts.val(i);
        Self::decay_outcome(h, t);
        h.outcome[1] += 1.0;
        if rst {
            h.outcome[2] += 1.0;
        }
    }

    /// An ICMP destination unreachable addressed to `host`.
    pub fn unreachable(&mut self, host: &[u8; 16], v: u8, t: u64) {
        let Some(i) = self.hosts.find(hash_ip(host, v)) else {
            return;
        };
        let h = self.hosts.val(i);
        Self::decay_outcome(h, t);
        h.outcome[3] += 1.0;
    }

    fn decay_outcome(h: &mut HostEntry, t: u64) {
        let dt = t.saturating_sub(h.last_out_ns);
        if dt > 0 {
            let f = decay_factor(OUTCOME_LAMBDA, dt);
            for o in &mut h.outcome {
                *o *= f;
            }
            h.last_out_ns = t;
        }
    }

    /// Takes a token for one host sample at `t` (false: over the rate, skip it).
    #[inline]
    pub fn take_token(&mut self, t: u64) -> bool {
        if t > self.last_refill_ns {
            if self.last_refill_ns == 0 {
                self.tokens = self.burst;
            } else {
                let add = (t - self.last_refill_ns) as f64 * self.rate_per_ns;
                self.tokens = (self.tokens + add).min(self.burst);
            }
            self.last_refill_ns = t;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// A connection start by the host in slot `hi` (from [`HostState::packet`]) at `t`:
    /// updates the host's connection state, the pair, the socket and, when `sample`, the
    /// rarity sketches; fills `out` with every feature of [`HOST_FEATURES`]
    /// (crate::detect::features::HOST_FEATURES) when `sample`.
    /// Returns the pair's beaconing, the first time it is seen (once per pair).
    pub fn connection(
        &mut self,
        hi: u32,
        c: &Conn<'_>,
        t: u64,
        sample: bool,
        out: &mut [f64],
    ) -> Option<Beacon> {
        let dst_h = hash_ip(c.dst_ip, c.ip_version);
        let svc_h = mix64(u64::from(c.protocol) << 16 | u64::from(c.dst_port) | 0xabcd << 32);
        let src_h = hash_ip(c.src_ip, c.ip_version);
        // Pair.
        let (pi, _) = self.pairs.get_or_insert(src_h ^ dst_h.rotate_left(17));
        let p = self.pairs.val(pi);
        let pf = decay_factor(PAIR_LAMBDA, t.saturating_sub(p.last_conn_ns));
        if p.n > 0 {
            let iat_s = t.saturating_sub(p.last_conn_ns) as f64 * 1e-9;
            p.iat.add(pf, iat_s);
            p.conns = p.conns * pf + 1.0;
        } else {
            p.conns = 1.0;
        }
        p.n = p.n.saturating_add(1);
        p.last_conn_ns = t;
        let mut beacon = None;
        if !p.beacon && p.n >= BEACON_MIN_CONNS {
            let (mean, cv) = (p.iat.mean(), p.iat.std() / p.iat.mean().max(1e-9));
            if mean >= BEACON_MIN_PERIOD_S && cv <= BEACON_MAX_CV {
                let rarity = self.dsts.rarity(dst_h);
                if rarity >= BEACON_MIN_RARITY {
                    p.beacon = true;
                    beacon = Some(Beacon {
                        period_s: mean,
                        cv,
                        connections: u32::from(p.n),
                        dst_rarity: rarity,
                    });
                }
            }
        }
        let p = self.pairs.val(pi);
        let pair = *p;
        // Socket.
        let (si, _) = self
            .socks
            .get_or_insert(src_h ^ dst_h.rotate_left(17) ^ svc_h.rotate_left(41));
        let s = self.socks.val(si);
        let d = Decays::new(t.saturating_sub(s.last_conn_ns));
        for (c, f) in s.conns.iter_mut().zip([d.l1(), d.l01()]) {
            *c = *c * f + 1.0; // SOCK_LAMBDAS
        }
        s.last_conn_ns = t;
        let sock = *s;
        // Host: connection rates, outcome (before this attempt), fan-out.
        let h = self.hosts.val(hi);
        let d = Decays::new(t.saturating_sub(h.last_conn_ns));
        for (c, f) in h.conns.iter_mut().zip([d.l1(), d.l01(), d.l001()]) {
            *c = *c * f + 1.0; // CONN_LAMBDAS
        }
        h.last_conn_ns = t;
        Self::decay_outcome(h, t);
        let (att, ans, rst, unr) = (h.outcome[0], h.outcome[1], h.outcome[2], h.outcome[3]);
        h.outcome[0] += 1.0;
        h.dsts.insert(dst_h, t);
        h.ports.insert(svc_h, t);
        if !sample {
            return beacon;
        }
        // Size statistics decayed to now.
        let dtp = t.saturating_sub(h.last_pkt_ns);
        let mut size = h.size;
        let d = Decays::new(dtp);
        for (s, &f) in size.iter_mut().zip(&d.f) {
            s.decay(f);
        }
        let ratio = |a: f64| if att > 0.5 { (a / att).min(1.0) } else { 0.0 };
        let half_open = if att > 0.5 {
            ((att - ans) / att).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let vals = [
            size[0].w,
            size[1].w,
            size[2].w,
            size[3].w,
            size[0].mean(),
            size[0].std(),
            size[1].mean(),
            size[1].std(),
            size[2].mean(),
            size[2].std(),
            size[3].mean(),
            size[3].std(),
            h.conns[0],
            h.conns[1],
            h.conns[2],
            h.dsts.estimate(t),
            h.ports.estimate(t),
            half_open,
            ratio(rst),
            ratio(unr),
            pair.conns,
            if pair.n > 1 { pair.iat.mean() } else { 0.0 },
            if pair.n >= PAIR_CV_MIN_CONNS && pair.iat.mean() > 0.0 {
                pair.iat.std() / pair.iat.mean()
            } else {
                1.0
            },
            sock.conns[0],
            sock.conns[1],
            0.0,
            0.0,
        ];
        // Rarity: this event counted.
        self.services.add(svc_h);
        self.dsts.add(dst_h);
        let mut vals = vals;
        vals[25] = self.services.rarity(svc_h);
        vals[26] = self.dsts.rarity(dst_h);
        out[..vals.len()].copy_from_slice(&vals);
        beacon
    }

    /// Whether the host in slot `i` was ever answered (one of its connections got a reply):
    /// its address is not spoofed, so it may be named in an alert.
    pub fn answered_ever(&self, i: u32) -> bool {
        self.hosts.is_protected(i) || self.hosts.vals[i as usize].outcome[1] > 0.0
    }

    /// The address of the host in slot `i`.
    pub fn host_ip(&mut self, i: u32) -> ([u8; 16], u8) {
        let h = self.hosts.val(i);
        (h.ip, h.ip_version)
    }
}

/// Number of features [`HostState::connection`] fills.
pub const N_HOST_VALUES: usize = 27;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decays_match_exp2_at_every_rate() {
        let close =
            |a: f64, b: f64| (a - b).abs() <= 1e-12 * b.max(1e-300) || (a < 1e-290 && b < 1e-290);
        for dt in [
            1u64,
            999,
            1_000_000,
            37_000_000,
            1_000_000_000,
            7_300_000_000,
            100_000_000_000,
            10_000_000_000_000,
            u64::MAX / 2,
        ] {
            let d = Decays::new(dt);
            for (k, &l) in LAMBDAS.iter().enumerate() {
                assert!(
                    close(d.f[k], decay_factor(l, dt)),
                    "λ {l} dt {dt}: {} vs {}",
                    d.f[k],
                    decay_factor(l, dt)
                );
            }
            // The connection statistics' rates are the ones Decays' accessors give.
            let conn = [d.l1(), d.l01(), d.l001()];
            for (&l, &f) in CONN_LAMBDAS.iter().zip(&conn) {
                assert!(close(f, decay_factor(l, dt)));
            }
            for (&l, &f) in SOCK_LAMBDAS.iter().zip(&conn) {
                assert!(close(f, decay_factor(l, dt)));
            }
        }
        assert_eq!(Decays::new(0).f, [1.0; 4]);
    }

    #[test]
    fn damped_stats_match_a_direct_computation() {
        // Values at irregular times; the damped mean/std equal the weighted ones computed
        // from scratch with weights 2^(−λ·age).
        let lambda = 0.5;
        let pts: Vec<(u64, f64)> = (0..50)
            .map(|k| {
                (
                    k * 317_000_000 + (k * k) * 1_000_000,
                    (k % 7) as f64 * 3.0 + 1.0,
                )
            })
            .collect();
        let mut d = Damped::default();
        let mut last = 0;
        for &(t, x) in &pts {
            d.add(decay_factor(lambda, t - last), x);
            last = t;
        }
        let (mut w, mut ls, mut ss) = (0.0, 0.0, 0.0);
        for &(t, x) in &pts {
            let a = (-lambda * (last - t) as f64 * 1e-9).exp2();
            w += a;
            ls += a * x;
            ss += a * x * x;
        }
        let mean = ls / w;
        let std = (ss / w - mean * mean).sqrt();
        assert!((d.w - w).abs() < 1e-9 * w, "{} {w}", d.w);
        assert!((d.mean() - mean).abs() < 1e-9, "{} {mean}", d.mean());
        assert!((d.std() - std).abs() < 1e-6, "{} {std}", d.std());
        // Half-life: after 1/λ s the weight halves.
        let w0 = d.w;
        d.decay(decay_factor(lambda, 2_000_000_000));
        assert!((d.w - w0 / 2.0).abs() < 1e-12);
        // Empty: zeros, not NaN.
        assert_eq!(
            (Damped::default().mean(), Damped::default().std()),
            (0.0, 0.0)
        );
    }

    #[test]
    fn distinct_counts_on_average_within_ten_per_cent_and_forget_old_epochs() {
        // Linear counting on 128 bits: unbiased to a few per cent on average, one
        // standard error ~7 % at 60 distinct values.
        for n in [1u64, 5, 20, 60, 120] {
            let mut sum = 0.0;
            for trial in 0..50u64 {
                let mut d = DecayedDistinct::default();
                for k in 0..n {
                    // Each value three times: duplicates do not count.
                    for _ in 0..3 {
                        d.insert(mix64(k + 1000 * n + 1_000_000 * trial), 1_000);
                    }
                }
                let e = d.estimate(1_000);
                assert!(
                    (e - n as f64).abs() <= (0.35 * n as f64).max(1.0),
                    "{n} distinct estimated {e}"
                );
                sum += e;
            }
            let mean = sum / 50.0;
            assert!(
                (mean - n as f64).abs() <= (0.1 * n as f64).max(0.2),
                "{n} distinct: mean estimate {mean}"
            );
        }
        let mut d = DecayedDistinct::default();
        for k in 0..50 {
            d.insert(mix64(k), 0);
        }
        // Still counted in the next epoch, gone two epochs later.
        assert!(d.estimate(FANOUT_EPOCH_NS + 1) > 40.0);
        assert_eq!(d.estimate(3 * FANOUT_EPOCH_NS), 0.0);
    }

    #[test]
    fn count_min_counts_never_under_and_halves() {
        let mut c = DecayedCountMin::default();
        c.tick(1);
        for k in 0..5000u64 {
            c.add(mix64(k % 500));
        }
        for k in 0..500u64 {
            assert!(c.count(mix64(k)) >= 10);
        }
        // One heavy key: its rarity is low, an unseen key's high.
        for _ in 0..5000 {
            c.add(mix64(77_777));
        }
        let (heavy, unseen) = (c.rarity(mix64(77_777)), c.rarity(mix64(99_999_999)));
        assert!(heavy < 1.1, "{heavy}");
        assert!(unseen > 9.0, "{unseen}");
        c.tick(1 + RARITY_HALF_LIFE_NS);
        assert_eq!(c.total, 5000);
        assert!(c.count(mix64(77_777)) >= 2500 && c.count(mix64(77_777)) <= 2600);
    }

    #[test]
    fn slru_evicts_probation_first_and_keeps_promoted_hosts() {
        let mut t: Slru<u64> = Slru::new(100);
        // 50 hosts that were answered.
        for k in 0..50u64 {
            let (i, new) = t.get_or_insert(k);
            assert!(new);
            *t.val(i) = k;
            t.promote(i);
        }
        // A flood of 10 000 one-packet sources.
        for k in 1000..11_000u64 {
            t.get_or_insert(k);
        }
        assert_eq!(t.len(), 100);
        assert_eq!(t.inserted - t.evicted, 100);
        for k in 0..50u64 {
            let i = t.find(k).expect("protected host kept");
            assert_eq!(*t.val(i), k);
        }
        // Protected is bounded: promoting everything keeps at most 4/5 there.
        for k in 20_000..20_100u64 {
            let (i, _) = t.get_or_insert(k);
            t.promote(i);
        }
        assert_eq!(t.len(), 100);
        assert!(t.len[2] <= 80);
        // Eviction resets the value.
        let (i, new) = t.get_or_insert(5_000_000);
        assert!(new);
        assert_eq!(*t.val(i), 0);
    }

    #[test]
    fn a_scanner_has_fan_out_and_half_open_connections() {
        let mut st = HostState::new(1000, 1e9);
        let mut out = [0.0; N_HOST_VALUES];
        let src = [10u8, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let mut t = 1_000_000_000u64;
        // A normal client: 20 connections to 3 servers, all answered.
        for k in 0..20u64 {
            let mut dst = [0u8; 16];
            dst[..4].copy_from_slice(&[10, 1, 0, (k % 3) as u8]);
            let hi = st.packet(&src, 4, 66, t);
            let c = Conn {
                src_ip: &src,
                dst_ip: &dst,
                ip_version: 4,
                protocol: 6,
                dst_port: 443,
            };
            st.connection(hi, &c, t, true, &mut out);
            st.answered(&src, 4, false, t + 1_000_000);
            t += 3_000_000_000;
        }
        assert!(out[15] < 5.0, "distinct dsts {}", out[15]);
        assert!(out[17] < 0.1, "half-open {}", out[17]);
        // Then a scan: 60 unanswered SYNs to distinct hosts and ports in 20 s.
        for k in 0..60u64 {
            let mut dst = [0u8; 16];
            dst[..4].copy_from_slice(&[10, 9, (k / 200) as u8, k as u8]);
            let hi = st.packet(&src, 4, 66, t);
            let c = Conn {
                src_ip: &src,
                dst_ip: &dst,
                ip_version: 4,
                protocol: 6,
                dst_port: 1000 + k as u16,
            };
            st.connection(hi, &c, t, true, &mut out);
            t += 333_000_000;
        }
        assert!(out[15] > 45.0, "distinct dsts {}", out[15]);
        assert!(out[16] > 45.0, "distinct ports {}", out[16]);
        assert!(out[17] > 0.6, "half-open {}", out[17]);
        assert!(out[25] > 5.0, "service rarity {}", out[25]);
    }

    /// Background for the beacon tests: 20 000 connections of 50 clients to 20 popular
    /// servers (the rarity sketch's total), then `pairs` of (interval generator, dst).
    fn beacon_run(interval: impl Fn(u64) -> u64, dst_last: u8, n: u64) -> Vec<Beacon> {
        let mut st = HostState::new(4096, 1e9);
        let mut out = [0.0; N_HOST_VALUES];
        let mut t = 1_000_000_000u64;
        let ip = |a: u8, b: u8| {
            let mut x = [0u8; 16];
            x[..4].copy_from_slice(&[10, a, 0, b]);
            x
        };
        for k in 0..20_000u64 {
            let (src, dst) = (ip(0, (k % 50) as u8), ip(1, (k % 20) as u8));
            let hi = st.packet(&src, 4, 66, t);
            let c = Conn {
                src_ip: &src,
                dst_ip: &dst,
                ip_version: 4,
                protocol: 6,
                dst_port: 443,
            };
            st.connection(hi, &c, t, true, &mut out);
            t += 10_000_000;
        }
        let (src, dst) = (ip(0, 200), ip(9, dst_last));
        let mut found = Vec::new();
        for k in 0..n {
            let hi = st.packet(&src, 4, 66, t);
            let c = Conn {
                src_ip: &src,
                dst_ip: &dst,
                ip_version: 4,
                protocol: 6,
                dst_port: 443,
            };
            found.extend(st.connection(hi, &c, t, true, &mut out));
            t += interval(k);
        }
        found
    }

    #[test]
    fn a_periodic_pair_to_a_rare_host_is_a_beacon_once() {
        // Every 30 s ± 5 %, 20 times: reported once, at the sixth connection or soon after.
        let jitter = |k: u64| 30_000_000_000 + (k * 7919 % 11) * 300_000_000 - 1_500_000_000;
        let b = beacon_run(jitter, 7, 20);
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(b[0].connections >= u32::from(BEACON_MIN_CONNS) && b[0].connections <= 8);
        assert!(
            (b[0].period_s - 30.0).abs() < 2.0 && b[0].cv < 0.05,
            "{b:?}"
        );
        assert!(b[0].dst_rarity > BEACON_MIN_RARITY, "{b:?}");
    }

    #[test]
    fn irregular_or_chatty_pairs_are_not_beacons() {
        // Intervals 5..55 s in a scrambled order (CV ~0.5): not regular.
        let irregular = |k: u64| (5 + (k * 37 % 11) * 5) * 1_000_000_000;
        assert!(beacon_run(irregular, 8, 30).is_empty());
        // Every 2 s exactly: regular, but a chatty client, not a timer.
        assert!(beacon_run(|_| 2_000_000_000, 9, 30).is_empty());
        // Too few connections: 5 at 30 s.
        assert!(beacon_run(|_| 30_000_000_000, 10, 5).is_empty());
    }

    #[test]
    fn token_bucket_bounds_the_rate() {
        let mut st = HostState::new(10, 100.0);
        let mut taken = 0;
        // 10 000 events in 10 s: one burst of 100, then 100 per second.
        for k in 0..10_000u64 {
            taken += st.take_token(1_000_000_000 + k * 1_000_000) as u32;
        }
        assert!((1090..=1110).contains(&taken), "{taken}");
    }
}
