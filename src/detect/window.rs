//! Window mode (streamml style): per shard, per profile, per time window, the traffic's
//! shape as one feature vector ([`super::features::WINDOW_FEATURES`]). Windows are aligned
//! to multiples of the window length in packet time; a window closes when a packet or a
//! clock tick at or after its end arrives. Windows without packets are not scored.
//!
//! Fixed memory after construction: distinct counts are exact up to a table's capacity
//! and a HyperLogLog estimate beyond it; entropies are exact up to the capacity, and
//! beyond it assume the overflow is spread evenly (documented approximation).

use crate::wire::{tcp_flags, PacketMeta};

use super::features::WINDOW_FEATURES;

pub const N_WINDOW: usize = WINDOW_FEATURES.len();

#[inline(always)]
fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Hash of an IP address (16-byte layout of [`PacketMeta`]).
#[inline(always)]
pub fn ip_hash(ip: &[u8; 16]) -> u64 {
    let v = u128::from_be_bytes(*ip);
    mix64((v as u64) ^ mix64((v >> 64) as u64 ^ 0x9E37_79B9_7F4A_7C15))
}

/// HyperLogLog with 2^10 registers (≈3% standard error).
#[derive(Clone)]
struct Hll {
    reg: Box<[u8; 1024]>,
}

impl Hll {
    fn new() -> Self {
        Hll {
            reg: Box::new([0u8; 1024]),
        }
    }
    #[inline]
    fn add(&mut self, h: u64) {
        let idx = (h >> 54) as usize;
        let rank = ((h << 10) | (1 << 9)).leading_zeros() as u8 + 1;
        if rank > self.reg[idx] {
            self.reg[idx] = rank;
        }
    }
    fn estimate(&self) -> f64 {
        let m = 1024.0f64;
        let mut sum = 0.0;
        let mut zeros = 0;
        for &r in self.reg.iter() {
            sum += 1.0 / (1u64 << r) as f64;
            zeros += (r == 0) as u32;
        }
        let alpha = 0.7213 / (1.0 + 1.079 / m);
        let e = alpha * m * m / sum;
        if e <= 2.5 * m && zeros > 0 {
            m * (m / f64::from(zeros)).ln()
        } else {
            e
        }
    }
    fn clear(&mut self) {
        self.reg.fill(0);
    }
}

/// Counts per key (u64 hashes), exact up to `cap` distinct keys, with a touched list so
/// that clearing costs O(distinct) instead of O(capacity).
struct CountTable {
    keys: Vec<u64>,
    counts: Vec<u32>,
    /// Sum of weights (bytes) per key, for tables that track them.
    weights: Vec<u64>,
    touched: Vec<u32>,
    mask: usize,
    limit: usize,
    overflow: u64,
    hll: Hll,
}

impl CountTable {
    fn new(cap_pow2: usize) -> Self {
        let n = cap_pow2.next_power_of_two().max(16);
        CountTable {
            keys: vec![0; n],
            counts: vec![0; n],
            weights: vec![0; n],
            touched: Vec::with_capacity(n),
            mask: n - 1,
            limit: n * 3 / 4,
            overflow: 0,
            hll: Hll::new(),
        }
    }

    #[inline]
    fn add(&mut self, key: u64) {
        self.add_weighted(key, 0);
    }

    #[inline]
    fn add_weighted(&mut self, key: u64, w: u64) {
        self.hll.add(key);
        // 0 marks an empty slot.
        let key = if key == 0 { 0x9E37_79B9_7F4A_7C15 } else { key };
        let mut i = (key as usize) & self.mask;
        loop {
            let k = self.keys[i];
            if k == key {
                self.counts[i] += 1;
                self.weights[i] += w;
                return;
            }
            if k == 0 {
                if self.touched.len() >= self.limit {
                    self.overflow += 1;
                    return;
                }
                self.keys[i] = key;
                self.counts[i] = 1;
                self.weights[i] = w;
                self.touched.push(i as u32);
                return;
            }
            i = (i + 1) & self.mask;
        }
    }

    fn distinct(&self) -> f64 {
        if self.overflow == 0 {
            self.touched.len() as f64
        } else {
            self.hll.estimate().max(self.touched.len() as f64)
        }
    }

    /// Shannon entropy in bits of the counted distribution. Past capacity, the overflow
    /// mass is taken as spread evenly over the keys the HyperLogLog says were not stored.
    fn entropy(&self, total: u64) -> f64 {
        if total == 0 {
            return 0.0;
        }
        let n = total as f64;
        let mut h = 0.0;
        for &i in &self.touched {
            let p = f64::from(self.counts[i as usize]) / n;
            h -= p * p.log2();
        }
        if self.overflow > 0 {
            let p = self.overflow as f64 / n;
            let k = (self.hll.estimate() - self.touched.len() as f64).max(1.0);
            h -= p * (p / k).log2();
        }
        h
    }

    fn max_count(&self) -> u64 {
        self.touched
            .iter()
            .map(|&i| u64::from(self.counts[i as usize]))
            .max()
            .unwrap_or(0)
            .max(self.overflow.min(1))
    }

    /// Largest weight of a stored key.
    fn max_weight(&self) -> u64 {
        self.touched
            .iter()
            .map(|&i| self.weights[i as usize])
            .max()
            .unwrap_or(0)
    }

    fn clear(&mut self) {
        for &i in &self.touched {
            self.keys[i as usize] = 0;
            self.counts[i as usize] = 0;
            self.weights[i as usize] = 0;
        }
        self.touched.clear();
        self.overflow = 0;
        self.hll.clear();
    }
}

/// A closed window's features.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowVector {
    pub start_ns: u64,
    pub end_ns: u64,
    pub values: [f64; N_WINDOW],
}

/// The window accumulator of one profile in one shard.
pub struct WindowAcc {
    window_ns: u64,
    start_ns: Option<u64>,
    packets: u64,
    bytes: u64,
    sum_sq: f64,
    syn: u64,
    synack: u64,
    rst: u64,
    fin: u64,
    icmp: u64,
    udp: u64,
    new_flows: u64,
    closed_flows: u64,
    closed_dur_ns: u128,
    src_ips: CountTable,
    dst_ips: CountTable,
    dst_ports: CountTable,
    flows: CountTable,
    /// Windows closed so far.
    pub closed: u64,
}

impl WindowAcc {
    /// `table_cap`: exact distinct-count capacity per table (e.g. 1 << 16).
    pub fn new(window_ns: u64, table_cap: usize) -> Self {
        WindowAcc {
            window_ns: window_ns.max(1),
            start_ns: None,
            packets: 0,
            bytes: 0,
            sum_sq: 0.0,
            syn: 0,
            synack: 0,
            rst: 0,
            fin: 0,
            icmp: 0,
            udp: 0,
            new_flows: 0,
            closed_flows: 0,
            closed_dur_ns: 0,
            src_ips: CountTable::new(table_cap),
            dst_ips: CountTable::new(table_cap),
            dst_ports: CountTable::new(table_cap.min(1 << 17)),
            flows: CountTable::new(table_cap),
            closed: 0,
        }
    }

    /// Start of the window holding `ts`.
    #[inline]
    fn align(&self, ts: u64) -> u64 {
        ts - ts % self.window_ns
    }

    /// Closes the current window if `now_ns` is past its end.
    #[inline]
    pub fn advance(&mut self, now_ns: u64, emit: &mut impl FnMut(&WindowVector)) {
        if let Some(s) = self.start_ns {
            if now_ns >= s.saturating_add(self.window_ns) {
                self.close(emit);
            }
        }
    }

    /// Counts one packet (`size`: bytes in the configured accounting). Closes the
    /// current window first if the packet is past its end.
    #[inline]
    pub fn packet(
        &mut self,
        ts_ns: u64,
        flow_hash: u64,
        m: &PacketMeta,
        size: u32,
        emit: &mut impl FnMut(&WindowVector),
    ) {
        self.advance(ts_ns, emit);
        if self.start_ns.is_none() {
            self.start_ns = Some(self.align(ts_ns));
        }
        self.packets += 1;
        self.bytes += u64::from(size);
        self.sum_sq += f64::from(size) * f64::from(size);
        match m.protocol {
            6 => {
                let f = m.tcp_flags;
                let syn = f & tcp_flags::SYN != 0;
                let ack = f & tcp_flags::ACK != 0;
                self.syn += (syn && !ack) as u64;
                self.synack += (syn && ack) as u64;
                self.rst += (f & tcp_flags::RST != 0) as u64;
                self.fin += (f & tcp_flags::FIN != 0) as u64;
            }
            17 => self.udp += 1,
            1 | 58 => self.icmp += 1,
            _ => {}
        }
        self.src_ips.add(ip_hash(&m.src_ip));
        self.dst_ips.add(ip_hash(&m.dst_ip));
        self.dst_ports
            .add(mix64(u64::from(m.dst_port) | u64::from(m.protocol) << 16));
        self.flows.add_weighted(mix64(flow_hash), u64::from(size));
    }

    /// A new flow started (in this profile) in the current window.
    pub fn new_flow(&mut self) {
        self.new_flows += 1;
    }

    /// A flow of this profile ended (exported) in the current window.
    pub fn flow_closed(&mut self, duration_ns: u64) {
        self.closed_flows += 1;
        self.closed_dur_ns += u128::from(duration_ns);
    }

    /// End of input: the current window is incomplete (its features would be skewed by
    /// the cut), so it is discarded, not scored. Returns true if one was discarded.
    pub fn flush(&mut self) -> bool {
        if self.start_ns.is_some() && self.packets > 0 {
            self.start_ns = None;
            self.packets = 0;
            self.close(&mut |_| {});
            true
        } else {
            false
        }
    }

    fn close(&mut self, emit: &mut impl FnMut(&WindowVector)) {
        let start = self.start_ns.take().unwrap_or(0);
        if self.packets > 0 {
            let n = self.packets as f64;
            let mean = self.bytes as f64 / n;
            let var = (self.sum_sq / n - mean * mean).max(0.0);
            let share = |c: u64| c as f64 / n;
            let v = [
                n,
                self.bytes as f64,
                mean,
                var.sqrt(),
                self.src_ips.distinct(),
                self.dst_ips.distinct(),
                self.dst_ports.distinct(),
                self.flows.distinct(),
                self.dst_ports.entropy(self.packets),
                self.src_ips.entropy(self.packets),
                share(self.syn),
                share(self.synack),
                share(self.rst),
                share(self.fin),
                share(self.icmp),
                share(self.udp),
                self.new_flows as f64,
                if self.closed_flows > 0 {
                    (self.closed_dur_ns as f64 / self.closed_flows as f64) / 1e9
                } else {
                    0.0
                },
                share(self.src_ips.max_count()),
                share(self.dst_ports.max_count()),
                self.flows.max_weight() as f64,
            ];
            emit(&WindowVector {
                start_ns: start,
                end_ns: start + self.window_ns,
                values: v,
            });
            self.closed += 1;
        }
        self.packets = 0;
        self.bytes = 0;
        self.sum_sq = 0.0;
        self.syn = 0;
        self.synack = 0;
        self.rst = 0;
        self.fin = 0;
        self.icmp = 0;
        self.udp = 0;
        self.new_flows = 0;
        self.closed_flows = 0;
        self.closed_dur_ns = 0;
        self.src_ips.clear();
        self.dst_ips.clear();
        self.dst_ports.clear();
        self.flows.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkt(src: u8, dport: u16, proto: u8, flags: u8) -> PacketMeta {
        let mut m = PacketMeta::default();
        m.src_ip[..4].copy_from_slice(&[198, 18, 0, src]);
        m.dst_ip[..4].copy_from_slice(&[198, 19, 0, 1]);
        m.dst_port = dport;
        m.protocol = proto;
        m.tcp_flags = flags;
        m.ip_version = 4;
        m
    }

    fn feat(v: &WindowVector, name: &str) -> f64 {
        v.values[WINDOW_FEATURES.iter().position(|n| *n == name).unwrap()]
    }

    #[test]
    fn window_features_and_alignment() {
        let mut w = WindowAcc::new(1_000_000_000, 1024);
        let mut out = vec![];
        let base = 10_000_000_000u64;
        // Window 1: 4 SYNs from 2 sources to 4 ports, 1 UDP.
        for (i, (s, p)) in [(1, 80), (1, 81), (2, 82), (2, 83)].iter().enumerate() {
            w.packet(
                base + i as u64 * 1000,
                i as u64,
                &pkt(*s, *p, 6, tcp_flags::SYN),
                60,
                &mut |v| out.push(*v),
            );
        }
        w.packet(base + 5000, 9, &pkt(3, 53, 17, 0), 100, &mut |v| {
            out.push(*v)
        });
        w.new_flow();
        w.flow_closed(2_000_000_000);
        assert!(out.is_empty());
        // A packet 2.5 s later closes window 1; window 2 is skipped (empty).
        w.packet(
            base + 2_500_000_000,
            1,
            &pkt(1, 80, 6, tcp_flags::ACK),
            60,
            &mut |v| out.push(*v),
        );
        assert_eq!(out.len(), 1);
        let v = &out[0];
        assert_eq!(v.start_ns, base);
        assert_eq!(feat(v, "packets"), 5.0);
        assert_eq!(feat(v, "bytes"), 340.0);
        assert_eq!(feat(v, "distinct_src_ips"), 3.0);
        assert_eq!(feat(v, "distinct_dst_ports"), 5.0);
        assert_eq!(feat(v, "distinct_flows"), 5.0);
        assert!((feat(v, "syn_share") - 0.8).abs() < 1e-12);
        assert!((feat(v, "udp_share") - 0.2).abs() < 1e-12);
        assert_eq!(feat(v, "new_flows"), 1.0);
        assert_eq!(feat(v, "mean_closed_flow_duration_s"), 2.0);
        assert!((feat(v, "top_src_share") - 0.4).abs() < 1e-12);
        // entropy of 5 distinct ports with one packet each = log2(5)
        assert!((feat(v, "entropy_dst_ports") - 5f64.log2()).abs() < 1e-12);
        // Tick past the end closes window 3.
        w.advance(base + 3_000_000_000, &mut |v| out.push(*v));
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].start_ns, base + 2_000_000_000);
        assert_eq!(feat(&out[1], "packets"), 1.0);
    }

    #[test]
    fn distinct_counts_degrade_gracefully_past_capacity() {
        let mut w = WindowAcc::new(1_000_000_000, 256);
        let mut out = vec![];
        for i in 0..20_000u32 {
            let mut m = pkt(0, (i % 60000) as u16, 6, tcp_flags::SYN);
            m.src_ip[..4].copy_from_slice(&i.to_be_bytes());
            w.packet(1_000, u64::from(i), &m, 60, &mut |v| out.push(*v));
        }
        w.advance(2_000_000_000, &mut |v| out.push(*v));
        let d = feat(&out[0], "distinct_src_ips");
        assert!((d - 20_000.0).abs() / 20_000.0 < 0.1, "{d}");
        assert!(feat(&out[0], "entropy_src_ips") > 7.0);
    }
}
