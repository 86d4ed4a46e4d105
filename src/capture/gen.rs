//! The bench mode's packet generator, in process (`bench --synthetic`) and the frames of
//! `streamml-pktgen` (`bench --generate`): Ethernet/IPv4/UDP or TCP SYN frames from and
//! to 198.18.0.0/15 only, `flows` distinct source ports (10000..), one frame size or a
//! simple IMIX (7:4:1 of 64, 576 and 1500 bytes), as fast as the reader takes them or at
//! a fixed rate, for a duration or a count, with an optional injected SYN-flood episode
//! (spoofed sources from 198.18.128.0/17 to one target).
//!
//! Cheap enough not to be what is measured: the 42-byte headers of every flow and size
//! are built once; a frame is one header copied in front of a constant payload. The
//! frame timestamp is the wall clock (vDSO, no system call), read once per
//! [`GenSource::BATCH`] frames, as a live reader stamps a batch.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::{CaptureError, Frame, LinkType, PacketSource};

/// Frame sizes (without FCS).
#[derive(Clone, Debug, PartialEq)]
pub enum FrameSizes {
    Fixed(usize),
    /// 7 × 64, 4 × 576, 1 × 1500 bytes in every 12 frames (simple IMIX).
    Imix,
}

impl FrameSizes {
    /// The size of the `i`-th frame.
    #[inline]
    pub fn nth(&self, i: u64) -> usize {
        match self {
            FrameSizes::Fixed(n) => *n,
            FrameSizes::Imix => IMIX[(i % 12) as usize],
        }
    }

    /// Mean frame size in bytes.
    pub fn mean(&self) -> f64 {
        match self {
            FrameSizes::Fixed(n) => *n as f64,
            FrameSizes::Imix => IMIX.iter().sum::<usize>() as f64 / 12.0,
        }
    }

    fn classes(&self) -> Vec<usize> {
        match self {
            FrameSizes::Fixed(n) => vec![*n],
            FrameSizes::Imix => vec![64, 576, 1500],
        }
    }

    fn class_of(&self, i: u64) -> usize {
        match self {
            FrameSizes::Fixed(_) => 0,
            FrameSizes::Imix => match IMIX[(i % 12) as usize] {
                64 => 0,
                576 => 1,
                _ => 2,
            },
        }
    }
}

/// The IMIX pattern, interleaved.
const IMIX: [usize; 12] = [64, 64, 576, 64, 64, 576, 64, 1500, 64, 576, 64, 576];

/// The smallest and largest frame the generator builds.
pub const MIN_FRAME: usize = 60;
pub const MAX_FRAME: usize = 1514;

/// Whether `a` is in 198.18.0.0/15 (RFC 2544's benchmarking range).
pub fn in_test_range(a: Ipv4Addr) -> bool {
    let o = a.octets();
    o[0] == 198 && (o[1] & 0xfe) == 18
}

fn csum_fold(mut s: u32) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn csum_add(mut s: u32, b: &[u8]) -> u32 {
    let mut i = 0;
    while i + 1 < b.len() {
        s += u16::from_be_bytes([b[i], b[i + 1]]) as u32;
        i += 2;
    }
    if i < b.len() {
        s += (b[i] as u32) << 8;
    }
    s
}

/// One frame's addresses and ports.
#[derive(Clone, Copy, Debug)]
pub struct FrameSpec {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
    /// A TCP SYN (no payload; the rest of the frame is padding) instead of UDP.
    pub tcp_syn: bool,
    /// IP id and TCP sequence / UDP payload number.
    pub seq: u32,
}

/// Writes one frame of `buf.len()` bytes (at least 60, 64 for a SYN): Ethernet, IPv4,
/// UDP with a payload pattern, or a TCP SYN; checksums filled. The frames of
/// `streamml-pktgen`.
pub fn build_frame(buf: &mut [u8], f: &FrameSpec) {
    let size = buf.len();
    buf.fill(0);
    buf[0..6].copy_from_slice(&f.dst_mac);
    buf[6..12].copy_from_slice(&f.src_mac);
    buf[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let tcp = f.tcp_syn;
    let l4_len = if tcp { 20 } else { size - 34 };
    let ip_len = (20 + l4_len) as u16;
    let ip = &mut buf[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[4..6].copy_from_slice(&(f.seq as u16).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = if tcp { 6 } else { 17 };
    ip[12..16].copy_from_slice(&f.src.octets());
    ip[16..20].copy_from_slice(&f.dst.octets());
    let c = csum_fold(csum_add(0, ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut pseudo = 0u32;
    pseudo = csum_add(pseudo, &f.src.octets());
    pseudo = csum_add(pseudo, &f.dst.octets());
    pseudo += if tcp { 6 } else { 17 };
    pseudo += l4_len as u32;
    let l4 = &mut buf[34..34 + l4_len];
    l4[0..2].copy_from_slice(&f.sport.to_be_bytes());
    l4[2..4].copy_from_slice(&f.dport.to_be_bytes());
    if tcp {
        l4[4..8].copy_from_slice(&f.seq.to_be_bytes());
        l4[12] = 5 << 4; // data offset 5 words
        l4[13] = 0x02; // SYN
        l4[14..16].copy_from_slice(&64240u16.to_be_bytes());
        let c = csum_fold(csum_add(pseudo, l4));
        l4[16..18].copy_from_slice(&c.to_be_bytes());
    } else {
        l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        if l4_len >= 12 {
            l4[8..12].copy_from_slice(&f.seq.to_be_bytes());
        }
        let c = csum_fold(csum_add(pseudo, l4));
        l4[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
    }
}

/// An injected anomaly: a SYN flood from spoofed sources (198.18.128.0/17, random ports)
/// to `target` port 80, as `share` of the frames between `start_s` and `start_s +
/// duration_s` after the generator's start.
#[derive(Clone, Debug, PartialEq)]
pub struct GenEpisode {
    pub start_s: f64,
    pub duration_s: f64,
    /// Fraction of the frames in the episode that are flood SYNs, (0, 1].
    pub share: f64,
    pub target: Ipv4Addr,
}

/// What the in-process generator sends.
#[derive(Clone, Debug)]
pub struct GenConfig {
    pub sizes: FrameSizes,
    /// Distinct flows (UDP source ports 10000..10000+flows), 1..=50000.
    pub flows: u32,
    /// Frames per second in total (None: as fast as the reader takes them).
    pub rate_pps: Option<f64>,
    /// Stop after this long.
    pub duration: Duration,
    /// Stop after this many frames.
    pub count: Option<u64>,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub dport: u16,
    pub episode: Option<GenEpisode>,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            sizes: FrameSizes::Fixed(64),
            flows: 1024,
            rate_pps: None,
            duration: Duration::from_secs(10),
            count: None,
            src: Ipv4Addr::new(198, 18, 0, 1),
            dst: Ipv4Addr::new(198, 19, 0, 1),
            dport: 5000,
            episode: None,
        }
    }
}

impl GenConfig {
    /// Checks the bounds; the error names the option.
    pub fn validate(&self) -> Result<(), String> {
        if let FrameSizes::Fixed(n) = self.sizes {
            if !(MIN_FRAME..=MAX_FRAME).contains(&n) {
                return Err(format!("--size {n}: must be in {MIN_FRAME}..={MAX_FRAME}"));
            }
        }
        if self.flows == 0 || self.flows > 50_000 {
            return Err(format!("--flows {}: must be in 1..=50000", self.flows));
        }
        if let Some(r) = self.rate_pps {
            if !(r.is_finite() && r > 0.0) {
                return Err(format!("--rate {r}: must be > 0 (or max)"));
            }
        }
        let mut ips = vec![self.src, self.dst];
        if let Some(e) = &self.episode {
            ips.push(e.target);
            if !(e.share > 0.0 && e.share <= 1.0) {
                return Err(format!("--episode-share {}: must be in (0, 1]", e.share));
            }
        }
        for ip in ips {
            if !in_test_range(ip) {
                return Err(format!(
                    "{ip}: only addresses in 198.18.0.0/15 may be generated"
                ));
            }
        }
        Ok(())
    }
}

/// Frames handed out between two clock reads.
const BATCH: u64 = 64;

/// The generator as a [`PacketSource`].
pub struct GenSource {
    cfg: GenConfig,
    /// The 42-byte header of flow f in size class c at `(c * flows + f) * HDR`.
    headers: Vec<u8>,
    /// One frame: header copied in, constant payload after it, per size class.
    frames: Vec<Vec<u8>>,
    syn: [u8; 64],
    rng: u64,
    flow: u32,
    sent: u64,
    t0: Instant,
    ts_ns: u64,
    elapsed_ns: u64,
    stop: Option<fn() -> bool>,
    stopped: bool,
    /// Frames sent, readable while it runs.
    pub generated: std::sync::Arc<crate::stats::Counter>,
    /// Flood frames sent.
    pub episode_frames: std::sync::Arc<crate::stats::Counter>,
}

const HDR: usize = 42;

impl GenSource {
    /// Frames between two clock reads (and rate, duration and stop checks).
    pub const BATCH: u64 = BATCH;

    /// A generator; `stop` is asked once per batch whether to end early (e.g. a signal).
    pub fn new(cfg: GenConfig, stop: Option<fn() -> bool>) -> Result<GenSource, String> {
        cfg.validate()?;
        let classes = cfg.sizes.classes();
        let mut headers = vec![0u8; classes.len() * cfg.flows as usize * HDR];
        let mut frames = Vec::with_capacity(classes.len());
        for (c, &size) in classes.iter().enumerate() {
            let mut buf = vec![0u8; size];
            for f in 0..cfg.flows {
                build_frame(
                    &mut buf,
                    &FrameSpec {
                        dst_mac: [0x02, 0x53, 0x4d, 0, 0, 1],
                        src_mac: [0x02, 0x53, 0x4d, 0, 0, 2],
                        src: cfg.src,
                        dst: cfg.dst,
                        sport: 10000u16.wrapping_add(f as u16),
                        dport: cfg.dport,
                        tcp_syn: false,
                        seq: 0,
                    },
                );
                let at = (c * cfg.flows as usize + f as usize) * HDR;
                headers[at..at + HDR].copy_from_slice(&buf[..HDR]);
            }
            frames.push(buf);
        }
        Ok(GenSource {
            cfg,
            headers,
            frames,
            syn: [0u8; 64],
            rng: 0x9E37_79B9_7F4A_7C15,
            flow: 0,
            sent: 0,
            t0: Instant::now(),
            ts_ns: crate::capture::afxdp::now_ns(),
            elapsed_ns: 0,
            stop,
            stopped: false,
            generated: Default::default(),
            episode_frames: Default::default(),
        })
    }

    /// Frames sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Whether `stop` ended the run early.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    #[inline]
    fn next_rand(&mut self) -> u64 {
        // SplitMix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Once per batch: the clock, the end conditions and the rate. False: the end.
    #[cold]
    fn batch_boundary(&mut self) -> bool {
        if self.stop.is_some_and(|f| f()) {
            self.stopped = true;
            return false;
        }
        self.ts_ns = crate::capture::afxdp::now_ns();
        let mut elapsed = self.t0.elapsed();
        if elapsed >= self.cfg.duration {
            return false;
        }
        if let Some(rate) = self.cfg.rate_pps {
            // Paced: wait (sleeping, then spinning the last 100 µs) until this batch is due.
            let due = Duration::from_secs_f64(self.sent as f64 / rate);
            while elapsed < due {
                let left = due - elapsed;
                if left > Duration::from_micros(200) {
                    std::thread::sleep(left - Duration::from_micros(100));
                } else {
                    std::hint::spin_loop();
                }
                elapsed = self.t0.elapsed();
                if elapsed >= self.cfg.duration {
                    return false;
                }
            }
            self.ts_ns = crate::capture::afxdp::now_ns();
        }
        self.elapsed_ns = elapsed.as_nanos() as u64;
        true
    }

    fn in_episode(&self) -> bool {
        match &self.cfg.episode {
            Some(e) => {
                let t = self.elapsed_ns as f64 / 1e9;
                t >= e.start_s && t < e.start_s + e.duration_s
            }
            None => false,
        }
    }
}

impl PacketSource for GenSource {
    #[inline]
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.stopped || self.cfg.count.is_some_and(|c| self.sent >= c) {
            return Ok(None);
        }
        if self.sent.is_multiple_of(BATCH) && !self.batch_boundary() {
            self.cfg.count = Some(self.sent);
            return Ok(None);
        }
        let i = self.sent;
        self.sent += 1;
        self.generated.inc();
        let ts_ns = self.ts_ns;
        if self.cfg.episode.is_some() && self.in_episode() {
            let share = self.cfg.episode.as_ref().map_or(0.0, |e| e.share);
            let r = self.next_rand();
            if ((r >> 11) as f64 / (1u64 << 53) as f64) < share {
                let target = self.cfg.episode.as_ref().expect("episode").target;
                let src = Ipv4Addr::new(198, 18, 128 | (r >> 8) as u8 & 0x7f, (r as u8).max(1));
                let mut syn = [0u8; 64];
                build_frame(
                    &mut syn,
                    &FrameSpec {
                        dst_mac: [0x02, 0x53, 0x4d, 0, 0, 1],
                        src_mac: [0x02, 0x53, 0x4d, 0, 0, 3],
                        src,
                        dst: target,
                        sport: 1024 + (r >> 20) as u16 % 60000,
                        dport: 80,
                        tcp_syn: true,
                        seq: i as u32,
                    },
                );
                self.syn = syn;
                self.episode_frames.inc();
                return Ok(Some(Frame {
                    ts_ns,
                    orig_len: 64,
                    data: &self.syn,
                    link: LinkType::Ethernet,
                    index: i,
                }));
            }
        }
        let c = self.cfg.sizes.class_of(i);
        let f = self.flow;
        self.flow += 1;
        if self.flow == self.cfg.flows {
            self.flow = 0;
        }
        let at = (c * self.cfg.flows as usize + f as usize) * HDR;
        let frame = &mut self.frames[c];
        frame[..HDR].copy_from_slice(&self.headers[at..at + HDR]);
        Ok(Some(Frame {
            ts_ns,
            orig_len: frame.len() as u32,
            data: &frame[..],
            link: LinkType::Ethernet,
            index: i,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, DecodeOptions};

    #[test]
    fn frames_decode_with_flows_sizes_and_checksums() {
        let cfg = GenConfig {
            sizes: FrameSizes::Imix,
            flows: 7,
            count: Some(1200),
            episode: Some(GenEpisode {
                start_s: 0.0,
                duration_s: 60.0,
                share: 0.25,
                target: Ipv4Addr::new(198, 19, 0, 9),
            }),
            ..GenConfig::default()
        };
        let mut g = GenSource::new(cfg, None).unwrap();
        let (mut n, mut syn, mut bytes) = (0u64, 0u64, 0u64);
        let mut ports = std::collections::BTreeSet::new();
        while let Some(f) = g.next_frame().unwrap() {
            let m = wire::decode(f.data, f.orig_len, f.link, &DecodeOptions::default())
                .expect("decodes");
            assert_eq!(csum_fold(csum_add(0, &f.data[14..34])), 0, "IPv4 checksum");
            if m.protocol == 6 {
                syn += 1;
                assert_eq!(m.tcp_flags, 0x02);
                assert_eq!(m.dst_ip[..4], [198, 19, 0, 9]);
                assert_eq!(m.src_ip[..2], [198, 18]);
                assert!(m.src_ip[2] >= 128);
            } else {
                assert_eq!(m.protocol, 17);
                ports.insert(m.src_port);
                bytes += u64::from(f.orig_len);
            }
            n += 1;
        }
        assert_eq!(n, 1200);
        assert_eq!(g.generated.get(), 1200);
        assert_eq!(g.episode_frames.get(), syn);
        assert!((200..400).contains(&syn), "{syn} SYNs of 1200 at 25 %");
        assert_eq!(ports.len(), 7);
        // IMIX sizes among the UDP frames: the mean lies between 64 and 1500.
        let mean = bytes as f64 / (n - syn) as f64;
        assert!(mean > 300.0 && mean < 420.0, "{mean}");
    }

    #[test]
    fn paced_and_bounded_by_time() {
        let cfg = GenConfig {
            rate_pps: Some(20_000.0),
            duration: Duration::from_millis(200),
            ..GenConfig::default()
        };
        let mut g = GenSource::new(cfg, None).unwrap();
        let t = Instant::now();
        let mut n = 0u64;
        while g.next_frame().unwrap().is_some() {
            n += 1;
        }
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(190), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        // 20 000/s for 0.2 s, batch granularity.
        assert!(n <= 4000 + BATCH, "{n}");
    }

    #[test]
    fn refuses_addresses_outside_the_benchmark_range() {
        let cfg = GenConfig {
            dst: Ipv4Addr::new(10, 0, 0, 1),
            ..GenConfig::default()
        };
        assert!(GenSource::new(cfg, None).is_err());
        let cfg = GenConfig {
            sizes: FrameSizes::Fixed(59),
            ..GenConfig::default()
        };
        assert!(GenSource::new(cfg, None).is_err());
    }
}
