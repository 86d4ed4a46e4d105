//! Per-flow state and the arithmetic of nfstream's statistical features, operation for
//! operation as in nfstream 6.x `engine/lib_engine.c` (`flow_init_*`, `flow_update_*`) and
//! the finalisation in `nfstream/flow.py` (`NFlow.sync`), so that the values are not just
//! close but bit-identical:
//!
//! - sizes: min/max, and a running mean and sum of squared deviations (Welford):
//!   `mean += (x - mean_old) / n; m2 += (x - mean_old) * (x - mean)`; exported stddev is
//!   the sample stddev `sqrt(m2 / (n - 1))` when n > 1, else 0.
//! - packet inter-arrival times (ms, integer) the same over the n - 1 gaps; exported
//!   stddev `sqrt(m2 / (n - 2))` when n > 2, else 0.
//! - the first packet is src→dst and initialises the src→dst side; the first dst→src packet
//!   initialises that side.
//!
//! Everything bidirectional that is a plain sum (packets, bytes, TCP flag counters) is kept
//! per direction only and summed on export, which keeps a flow slot small.

use super::key::{Direction, FlowKey};

/// Running min, max, mean and sum of squared deviations of one series.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RunningStat<T> {
    pub min: T,
    pub max: T,
    pub mean: f64,
    /// Sum of squared deviations from the mean (nfstream keeps it in its `*_stddev_*`
    /// field until export).
    pub m2: f64,
}

macro_rules! running_stat_impl {
    ($t:ty) => {
        impl RunningStat<$t> {
            /// First value of the series (nfstream's `flow_init_*`).
            #[inline(always)]
            pub fn init(&mut self, x: $t) {
                self.min = x;
                self.max = x;
                self.mean = x as f64;
                self.m2 = 0.0;
            }

            /// Adds value number `n` (n >= 2) of the series (nfstream's `flow_update_*`).
            #[inline(always)]
            pub fn update(&mut self, x: $t, n: u64) {
                if x > self.max {
                    self.max = x;
                }
                if x < self.min {
                    self.min = x;
                }
                let xf = x as f64;
                let old = self.mean;
                self.mean += (xf - old) / n as f64;
                self.m2 += (xf - old) * (xf - self.mean);
            }

            /// Sample standard deviation of `n` values, as nfstream exports it
            /// (`sqrt(m2 / (n - 1))` if n > 1, else 0).
            #[inline]
            pub fn stddev(&self, n: u64) -> f64 {
                if n > 1 {
                    (self.m2 / (n - 1) as f64).sqrt()
                } else {
                    0.0
                }
            }
        }
    };
}
running_stat_impl!(u32);
running_stat_impl!(u64);

/// Indices of the TCP flag counters, in nfstream's column order.
pub mod flag {
    pub const SYN: usize = 0;
    pub const CWR: usize = 1;
    pub const ECE: usize = 2;
    pub const URG: usize = 3;
    pub const ACK: usize = 4;
    pub const PSH: usize = 5;
    pub const RST: usize = 6;
    pub const FIN: usize = 7;
    /// Column name stems, in column order.
    pub const NAMES: [&str; 8] = ["syn", "cwr", "ece", "urg", "ack", "psh", "rst", "fin"];
    /// Bit of each counter in the TCP flags byte.
    pub const BITS: [u8; 8] = [0x02, 0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x01];
}

/// One direction of a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct DirState {
    /// 0 while the direction has no packet (as nfstream exports it).
    pub first_seen_ms: u64,
    pub last_seen_ms: u64,
    pub packets: u64,
    pub bytes: u64,
    pub ps: RunningStat<u32>,
    pub piat_ms: RunningStat<u64>,
    /// Packets with each TCP flag set, indexed by [`flag`] (u32: a direction would need
    /// 4 G packets inside one active timeout to wrap).
    pub flags: [u32; 8],
}

impl DirState {
    #[inline(always)]
    fn count_flags(&mut self, tcp_flags: u8) {
        if tcp_flags != 0 {
            for (c, bit) in self.flags.iter_mut().zip(flag::BITS) {
                *c = c.wrapping_add(u32::from(tcp_flags & bit != 0));
            }
        }
    }

    /// First packet of this direction.
    #[inline(always)]
    fn first(&mut self, t_ms: u64, size: u32, tcp_flags: u8) {
        self.first_seen_ms = t_ms;
        self.last_seen_ms = t_ms;
        self.packets = 1;
        self.bytes = u64::from(size);
        self.ps.init(size);
        self.count_flags(tcp_flags);
    }

    /// A later packet of this direction (`flow_update_src2dst` / `flow_update_dst2src`).
    #[inline(always)]
    fn next(&mut self, t_ms: u64, size: u32, tcp_flags: u8) {
        self.packets += 1;
        let piat = t_ms - self.last_seen_ms;
        self.last_seen_ms = t_ms;
        self.bytes += u64::from(size);
        self.ps.update(size, self.packets);
        self.count_flags(tcp_flags);
        if self.packets == 2 {
            self.piat_ms.init(piat);
        } else {
            self.piat_ms.update(piat, self.packets - 1);
        }
    }

    /// Duration as nfstream exports it: last - first (0 with fewer than two packets).
    pub fn duration_ms(&self) -> u64 {
        self.last_seen_ms - self.first_seen_ms
    }

    /// Sample stddev of the packet sizes.
    pub fn stddev_ps(&self) -> f64 {
        self.ps.stddev(self.packets)
    }

    /// Sample stddev of the inter-arrival times (n - 1 gaps).
    pub fn stddev_piat_ms(&self) -> f64 {
        self.piat_ms.stddev(self.packets.saturating_sub(1))
    }
}

/// Everything a flow table keeps about one flow (fixed size, no heap; 368 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FlowState {
    /// Oriented like the first packet: src is the first packet's sender.
    pub key: FlowKey,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Set by the table's caller when the flow is created ([`super::FlowTable::update_tagged`]):
    /// the sensor stores the bitmask of profiles whose filter the first packet matched.
    pub user_tag: u16,
    /// Free for the table's caller; zero when the flow is created. The sensor sets bit
    /// `i` when profile `i` alerted on the flow while it was active.
    pub user_flags: u16,
    /// Time of the last packet in either direction (the first is `s2d.first_seen_ms`).
    pub last_seen_ms: u64,
    pub bi_ps: RunningStat<u32>,
    pub bi_piat_ms: RunningStat<u64>,
    pub s2d: DirState,
    pub d2s: DirState,
}

const _: () = assert!(std::mem::size_of::<FlowState>() == 368);

impl FlowState {
    /// A flow created by packet `key`/`macs` of `size` bytes at `t_ms`.
    #[inline]
    pub fn start(
        &mut self,
        key: FlowKey,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        t_ms: u64,
        size: u32,
        tcp_flags: u8,
    ) {
        *self = FlowState {
            key,
            src_mac,
            dst_mac,
            last_seen_ms: t_ms,
            ..FlowState::default()
        };
        self.bi_ps.init(size);
        self.s2d.first(t_ms, size, tcp_flags);
    }

    /// Adds a packet; returns the bidirectional inter-arrival time (for SPLT).
    #[inline]
    pub fn add(&mut self, dir: Direction, t_ms: u64, size: u32, tcp_flags: u8) -> u64 {
        let n = self.s2d.packets + self.d2s.packets + 1;
        let piat = t_ms - self.last_seen_ms;
        self.last_seen_ms = t_ms;
        self.bi_ps.update(size, n);
        if n == 2 {
            self.bi_piat_ms.init(piat);
        } else {
            self.bi_piat_ms.update(piat, n - 1);
        }
        match dir {
            Direction::Src2Dst => self.s2d.next(t_ms, size, tcp_flags),
            Direction::Dst2Src => {
                if self.d2s.packets == 0 {
                    self.d2s.first(t_ms, size, tcp_flags)
                } else {
                    self.d2s.next(t_ms, size, tcp_flags)
                }
            }
        }
        piat
    }

    pub fn first_seen_ms(&self) -> u64 {
        self.s2d.first_seen_ms
    }

    pub fn packets(&self) -> u64 {
        self.s2d.packets + self.d2s.packets
    }

    pub fn bytes(&self) -> u64 {
        self.s2d.bytes + self.d2s.bytes
    }

    pub fn duration_ms(&self) -> u64 {
        self.last_seen_ms - self.s2d.first_seen_ms
    }

    pub fn stddev_ps(&self) -> f64 {
        self.bi_ps.stddev(self.packets())
    }

    pub fn stddev_piat_ms(&self) -> f64 {
        self.bi_piat_ms.stddev(self.packets().saturating_sub(1))
    }

    /// Bidirectional count of TCP flag `i` ([`flag`]).
    pub fn flags(&self, i: usize) -> u64 {
        u64::from(self.s2d.flags[i]) + u64::from(self.d2s.flags[i])
    }
}

/// One entry of the sequence of packet lengths and times (SPLT) of a flow's first packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpltEntry {
    /// Inter-arrival time from the previous packet of the flow (0 for the first).
    pub piat_ms: u64,
    /// Packet size (per the accounting mode).
    pub ps: u32,
    /// 0: src→dst, 1: dst→src.
    pub direction: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two-pass reference values.
    fn mean_sd(xs: &[f64]) -> (f64, f64) {
        let n = xs.len() as f64;
        let m = xs.iter().sum::<f64>() / n;
        let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
        (m, v.sqrt())
    }

    #[test]
    fn welford_matches_two_pass() {
        let xs = [60u32, 1514, 60, 590, 1514, 1514, 66, 54];
        let mut s = RunningStat::<u32>::default();
        s.init(xs[0]);
        for (i, &x) in xs.iter().enumerate().skip(1) {
            s.update(x, i as u64 + 1);
        }
        let f: Vec<f64> = xs.iter().map(|&x| x as f64).collect();
        let (m, sd) = mean_sd(&f);
        assert!((s.mean - m).abs() < 1e-9 * m);
        assert!((s.stddev(xs.len() as u64) - sd).abs() < 1e-9 * sd);
        assert_eq!((s.min, s.max), (54, 1514));
        assert_eq!(s.stddev(1), 0.0);
    }

    #[test]
    fn flow_state_directions_and_piat() {
        // The 5-pings flow from basic/5-pings.pcap: request at t, reply 26 ms later, ...
        let times = [0u64, 26, 1001, 1024, 2002, 2034, 3002, 3033, 4003, 4032];
        let mut f = FlowState::default();
        f.start(FlowKey::default(), [0; 6], [0; 6], times[0], 98, 0);
        for (i, &t) in times.iter().enumerate().skip(1) {
            let d = if i % 2 == 1 {
                Direction::Dst2Src
            } else {
                Direction::Src2Dst
            };
            f.add(d, t, 98, 0);
        }
        assert_eq!(f.packets(), 10);
        assert_eq!(f.bytes(), 980);
        assert_eq!(f.duration_ms(), 4032);
        assert_eq!(f.s2d.duration_ms(), 4003);
        assert_eq!((f.d2s.first_seen_ms, f.d2s.duration_ms()), (26, 4006));
        assert_eq!((f.bi_piat_ms.min, f.bi_piat_ms.max), (23, 978));
        assert_eq!(f.stddev_ps(), 0.0);
        // Same values nfstream 6.6 writes for this flow (tests/golden/nfstream/basic/
        // 5-pings.pcap.csv): bit-identical, not just close.
        assert_eq!(f.bi_piat_ms.mean, 448.00000000000006);
        assert_eq!(f.stddev_piat_ms(), 497.8363184822899);
    }

    #[test]
    fn tcp_flags_are_counted_per_direction() {
        let mut f = FlowState::default();
        f.start(FlowKey::default(), [0; 6], [0; 6], 0, 60, 0x02);
        f.add(Direction::Dst2Src, 1, 60, 0x12);
        f.add(Direction::Src2Dst, 2, 60, 0x10);
        f.add(Direction::Src2Dst, 3, 60, 0x19);
        assert_eq!(f.s2d.flags[flag::SYN], 1);
        assert_eq!(f.d2s.flags[flag::SYN], 1);
        assert_eq!(f.flags(flag::ACK), 3);
        assert_eq!(f.flags(flag::FIN), 1);
        assert_eq!(f.flags(flag::PSH), 1);
        assert_eq!(f.flags(flag::RST), 0);
    }
}
