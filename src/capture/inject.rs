//! Mixing a recorded capture (e.g. a public capture of a real attack) into a generated
//! background: `streamml-sensor synth --inject FILE@START_S`.
//!
//! The recorded frames are read whole (they are small: a test capture), retimed so that the
//! first one falls `START_S` seconds after the background's start (their relative timing
//! is kept), and merged with the background in time order (on a tie the background frame
//! comes first). By default their IPv4 addresses are remapped into the background's
//! address plan (inside 198.18.0.0/15, in blocks the generator never uses):
//!
//! - private addresses (10/8, 172.16/12, 192.168/16, 100.64/10, 169.254/16) become hosts
//!   of 198.18.96.0/20, beside the generator's clients (198.18.1.x–198.18.79.x);
//! - any other unicast address becomes a host of 198.19.96.0/20, beside its servers;
//! - 0/8, 127/8, multicast, reserved and broadcast addresses stay as they are.
//!
//! Hosts are numbered in order of first appearance (x.x.x.1 to x.x.x.254, never .0 or
//! .255); one address keeps one new address for the whole file. Only the IPv4 header's
//! source and destination change: the IPv4 header checksum and the TCP and UDP checksums
//! (whose pseudo-header holds the addresses) are updated incrementally (RFC 1624), so a
//! valid checksum stays valid even when the frame was cut by a snaplen; a UDP checksum of
//! 0 (none) stays 0. Addresses inside payloads (ARP, DHCP fields, ICMP errors' quoted
//! headers) and IPv6 packets are left unchanged. With `keep`, frames are only retimed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::pcap::PcapFileSource;
use super::{CaptureError, Frame, LinkType, PacketSource};

/// `FILE@START_S` of `--inject`.
#[derive(Clone, Debug, PartialEq)]
pub struct Injection {
    pub path: PathBuf,
    /// Seconds after the start of the background.
    pub start_s: f64,
}

impl std::str::FromStr for Injection {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (path, start) = s
            .rsplit_once('@')
            .ok_or_else(|| format!("'{s}': expected FILE@START_S"))?;
        if path.is_empty() {
            return Err(format!("'{s}': expected FILE@START_S (no file)"));
        }
        let start_s: f64 = start
            .trim()
            .parse()
            .map_err(|_| format!("'{s}': start '{start}' is not a number of seconds"))?;
        if !start_s.is_finite() || !(0.0..=1e9).contains(&start_s) {
            return Err(format!(
                "'{s}': start '{start}' must be between 0 and 1e9 seconds"
            ));
        }
        Ok(Injection {
            path: PathBuf::from(path),
            start_s,
        })
    }
}

/// What happens to the injected frames' IPv4 addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressMode {
    /// Into the background's address plan (see the module documentation).
    Remap,
    /// Unchanged.
    Keep,
}

/// The labels of one injected capture (written to `synth --labels` under `injected`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct InjectedLabel {
    pub file: String,
    pub start_s: f64,
    /// From its first to its last frame.
    pub duration_s: f64,
    pub packets: u64,
    /// Capture times of its first and last frame after retiming (ns since the epoch).
    pub first_ns: u64,
    pub last_ns: u64,
    /// Every IPv4 address its frames carry (after remapping), sorted.
    pub hosts: Vec<Ipv4Addr>,
    /// Original address -> new address (empty with `keep`).
    pub address_map: BTreeMap<Ipv4Addr, Ipv4Addr>,
    /// Frames whose IPv4 header was rewritten.
    pub rewritten: u64,
}

/// One frame of an injected capture.
struct Rec {
    ts_ns: u64,
    orig_len: u32,
    data: Vec<u8>,
}

/// New addresses for [`AddressMode::Remap`], shared by every injection of one capture so
/// that two injected files never share a host.
#[derive(Default)]
pub struct Remapper {
    inside: u32,
    outside: u32,
}

/// Hosts per block: 16 /24s of 254 hosts.
const BLOCK_HOSTS: u32 = 16 * 254;

impl Remapper {
    fn keeps(a: Ipv4Addr) -> bool {
        let o = a.octets();
        o[0] == 0 || o[0] == 127 || o[0] >= 224
    }

    fn inside(a: Ipv4Addr) -> bool {
        let o = a.octets();
        a.is_private() || a.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64)
    }

    fn next(&mut self, inside: bool) -> Result<Ipv4Addr, String> {
        let (n, base) = if inside {
            (&mut self.inside, [198, 18, 96, 0])
        } else {
            (&mut self.outside, [198, 19, 96, 0])
        };
        if *n >= BLOCK_HOSTS {
            return Err(format!(
                "more than {BLOCK_HOSTS} distinct {} addresses to remap (use --inject-addresses keep)",
                if inside { "private" } else { "public" }
            ));
        }
        let v = u32::from_be_bytes(base) + (*n / 254) * 256 + 1 + *n % 254;
        *n += 1;
        Ok(Ipv4Addr::from(v))
    }
}

/// One's-complement incremental checksum update (RFC 1624, eqn. 3) for a 16-bit field
/// that changed from `old` to `new` (both as big-endian words).
fn csum_update(sum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut s: u32 = u32::from(!sum);
    for (o, n) in old.chunks_exact(2).zip(new.chunks_exact(2)) {
        s += u32::from(!u16::from_be_bytes([o[0], o[1]]));
        s += u32::from(u16::from_be_bytes([n[0], n[1]]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// Offset of the IPv4 header in an Ethernet frame (through up to two VLAN tags), if the
/// frame carries IPv4 with a whole header.
fn ipv4_offset(d: &[u8]) -> Option<usize> {
    let mut off = 12;
    for _ in 0..3 {
        let et = u16::from_be_bytes([*d.get(off)?, *d.get(off + 1)?]);
        match et {
            0x0800 => {
                let ip = off + 2;
                let b = *d.get(ip)?;
                let ihl = usize::from(b & 0x0f) * 4;
                return (b >> 4 == 4 && ihl >= 20 && d.len() >= ip + ihl).then_some(ip);
            }
            0x8100 | 0x88a8 | 0x9100 => off += 4,
            _ => return None,
        }
    }
    None
}

/// Rewrites the addresses of one frame (see the module documentation); the map grows with
/// new addresses. Returns whether the frame changed.
fn remap_frame(
    d: &mut [u8],
    map: &mut BTreeMap<Ipv4Addr, Ipv4Addr>,
    remapper: &mut Remapper,
) -> Result<bool, String> {
    let Some(ip) = ipv4_offset(d) else {
        return Ok(false);
    };
    let ihl = usize::from(d[ip] & 0x0f) * 4;
    let old: [u8; 8] = d[ip + 12..ip + 20].try_into().unwrap();
    let mut new = old;
    for k in 0..2 {
        let a = Ipv4Addr::new(old[4 * k], old[4 * k + 1], old[4 * k + 2], old[4 * k + 3]);
        if Remapper::keeps(a) {
            continue;
        }
        let b = match map.get(&a) {
            Some(b) => *b,
            None => {
                let b = remapper.next(Remapper::inside(a))?;
                map.insert(a, b);
                b
            }
        };
        new[4 * k..4 * k + 4].copy_from_slice(&b.octets());
    }
    if new == old {
        return Ok(false);
    }
    d[ip + 12..ip + 20].copy_from_slice(&new);
    let c = u16::from_be_bytes([d[ip + 10], d[ip + 11]]);
    d[ip + 10..ip + 12].copy_from_slice(&csum_update(c, &old, &new).to_be_bytes());
    // TCP and UDP checksums cover the addresses (pseudo-header); only the first fragment
    // carries the transport header.
    let frag_off = u16::from_be_bytes([d[ip + 6], d[ip + 7]]) & 0x1fff;
    let l4 = ip + ihl;
    let at = match d[ip + 9] {
        6 if frag_off == 0 => Some(l4 + 16),
        17 if frag_off == 0 => Some(l4 + 6),
        _ => None,
    };
    if let Some(at) = at {
        if d.len() >= at + 2 {
            let c = u16::from_be_bytes([d[at], d[at + 1]]);
            let udp = d[ip + 9] == 17;
            if !(udp && c == 0) {
                let mut n = csum_update(c, &old, &new);
                if udp && n == 0 {
                    n = 0xffff;
                }
                d[at..at + 2].copy_from_slice(&n.to_be_bytes());
            }
        }
    }
    Ok(true)
}

/// A capture file read and retimed for injection.
pub struct Loaded {
    recs: Vec<Rec>,
    pub label: InjectedLabel,
}

/// Reads `inj.path` (pcap or pcapng, Ethernet frames only), retimes it to start at
/// `background_start_ns + start_s` and remaps its addresses per `mode`.
pub fn load(
    inj: &Injection,
    background_start_ns: u64,
    mode: AddressMode,
    remapper: &mut Remapper,
) -> anyhow::Result<Loaded> {
    let p = inj.path.display();
    let mut src = PcapFileSource::open(&inj.path).map_err(|e| anyhow::anyhow!("--inject {e}"))?;
    let mut recs = Vec::new();
    loop {
        let f = match src.next_frame() {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => anyhow::bail!("--inject {e}"),
        };
        if f.link != LinkType::Ethernet {
            anyhow::bail!(
                "--inject {p}: frame {} has link type {:?}; only Ethernet captures can be injected",
                f.index,
                f.link
            );
        }
        recs.push(Rec {
            ts_ns: f.ts_ns,
            orig_len: f.orig_len,
            data: f.data.to_vec(),
        });
    }
    if recs.is_empty() {
        anyhow::bail!("--inject {p}: the capture has no packets");
    }
    // Recorded order kept for equal times; a capture out of time order is sorted.
    recs.sort_by_key(|r| r.ts_ns);
    let first = recs[0].ts_ns;
    let last = recs[recs.len() - 1].ts_ns;
    let start = background_start_ns.saturating_add((inj.start_s * 1e9).round() as u64);
    let mut map = BTreeMap::new();
    let mut hosts = std::collections::BTreeSet::new();
    let mut rewritten = 0;
    for r in &mut recs {
        r.ts_ns = start + (r.ts_ns - first);
        if mode == AddressMode::Remap
            && remap_frame(&mut r.data, &mut map, remapper)
                .map_err(|e| anyhow::anyhow!("--inject {p}: {e}"))?
        {
            rewritten += 1;
        }
        if let Some(ip) = ipv4_offset(&r.data) {
            for k in [12, 16] {
                let a: [u8; 4] = r.data[ip + k..ip + k + 4].try_into().unwrap();
                hosts.insert(Ipv4Addr::from(a));
            }
        }
    }
    let label = InjectedLabel {
        file: inj.path.display().to_string(),
        start_s: inj.start_s,
        duration_s: (last - first) as f64 / 1e9,
        packets: recs.len() as u64,
        first_ns: start,
        last_ns: start + (last - first),
        hosts: hosts.into_iter().collect(),
        address_map: map,
        rewritten,
    };
    Ok(Loaded { recs, label })
}

/// A background source with injected frames merged in time order.
pub struct MixSource<S> {
    bg: S,
    bg_done: bool,
    /// The background's next frame, copied: (ts, orig_len, link) and `pending_data`.
    pending: Option<(u64, u32, LinkType)>,
    pending_data: Vec<u8>,
    inj: Vec<Rec>,
    pos: usize,
    out: Vec<u8>,
    emitted: u64,
    max_packets: Option<u64>,
}

impl<S: PacketSource> MixSource<S> {
    pub fn new(bg: S, loaded: Vec<Loaded>, max_packets: Option<u64>) -> Self {
        let mut inj: Vec<Rec> = loaded.into_iter().flat_map(|l| l.recs).collect();
        inj.sort_by_key(|r| r.ts_ns);
        MixSource {
            bg,
            bg_done: false,
            pending: None,
            pending_data: Vec::new(),
            inj,
            pos: 0,
            out: Vec::new(),
            emitted: 0,
            max_packets,
        }
    }

    pub fn background(&self) -> &S {
        &self.bg
    }
}

impl<S: PacketSource> PacketSource for MixSource<S> {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.max_packets.is_some_and(|m| self.emitted >= m) {
            return Ok(None);
        }
        if self.pending.is_none() && !self.bg_done {
            match self.bg.next_frame()? {
                Some(f) => {
                    self.pending_data.clear();
                    self.pending_data.extend_from_slice(f.data);
                    self.pending = Some((f.ts_ns, f.orig_len, f.link));
                }
                None => self.bg_done = true,
            }
        }
        let inj_ts = self.inj.get(self.pos).map(|r| r.ts_ns);
        let (ts_ns, orig_len, link) = match (self.pending, inj_ts) {
            (Some(bg), Some(t)) if t < bg.0 => self.take_injected(),
            (None, Some(_)) => self.take_injected(),
            (Some(bg), _) => {
                self.pending = None;
                std::mem::swap(&mut self.out, &mut self.pending_data);
                bg
            }
            (None, None) => return Ok(None),
        };
        let index = self.emitted;
        self.emitted += 1;
        Ok(Some(Frame {
            ts_ns,
            orig_len,
            data: &self.out,
            link,
            index,
        }))
    }
}

impl<S> MixSource<S> {
    fn take_injected(&mut self) -> (u64, u32, LinkType) {
        let r = &self.inj[self.pos];
        self.pos += 1;
        self.out.clear();
        self.out.extend_from_slice(&r.data);
        (r.ts_ns, r.orig_len, LinkType::Ethernet)
    }
}

/// Whether `path` names a readable regular file (for a one-line error before anything
/// is generated).
pub fn check_input(path: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        Ok(_) => anyhow::bail!("--inject {}: not a regular file", path.display()),
        Err(e) => anyhow::bail!("--inject {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::synth::checksum;

    /// An Ethernet/IPv4/TCP frame with valid checksums.
    fn tcp_frame(src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut d = vec![0u8; 14 + 20 + 20 + 6];
        d[12] = 0x08;
        let ip = 14;
        d[ip] = 0x45;
        d[ip + 2..ip + 4].copy_from_slice(&(46u16).to_be_bytes());
        d[ip + 8] = 64;
        d[ip + 9] = 6;
        d[ip + 12..ip + 16].copy_from_slice(&src);
        d[ip + 16..ip + 20].copy_from_slice(&dst);
        let c = checksum(&d[ip..ip + 20], 0);
        d[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
        let l4 = ip + 20;
        d[l4..l4 + 2].copy_from_slice(&1234u16.to_be_bytes());
        d[l4 + 2..l4 + 4].copy_from_slice(&21u16.to_be_bytes());
        d[l4 + 12] = 0x50;
        d[l4 + 13] = 0x18;
        d[l4 + 20..].copy_from_slice(b"USER a");
        let c = tcp_sum(&d);
        d[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        d
    }

    /// The TCP checksum the frame should carry (computed from scratch).
    fn tcp_sum(d: &[u8]) -> u16 {
        let ip = 14;
        let l4 = ip + 20;
        let mut seg = d[l4..].to_vec();
        seg[16] = 0;
        seg[17] = 0;
        let mut ph = Vec::new();
        ph.extend_from_slice(&d[ip + 12..ip + 20]);
        ph.extend_from_slice(&[0, 6]);
        ph.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        ph.extend_from_slice(&seg);
        checksum(&ph, 0)
    }

    #[test]
    fn remap_keeps_checksums_valid_and_addresses_stable() {
        let mut map = BTreeMap::new();
        let mut rm = Remapper::default();
        let mut a = tcp_frame([192, 168, 56, 1], [64, 13, 134, 52]);
        assert!(remap_frame(&mut a, &mut map, &mut rm).unwrap());
        assert_eq!(&a[26..30], &[198, 18, 96, 1]);
        assert_eq!(&a[30..34], &[198, 19, 96, 1]);
        assert_eq!(checksum(&a[14..34], 0), 0, "IPv4 header checksum");
        assert_eq!(
            u16::from_be_bytes([a[50], a[51]]),
            tcp_sum(&a),
            "TCP checksum"
        );
        // The reply: the same two hosts, swapped.
        let mut b = tcp_frame([64, 13, 134, 52], [192, 168, 56, 1]);
        remap_frame(&mut b, &mut map, &mut rm).unwrap();
        assert_eq!(&b[26..30], &[198, 19, 96, 1]);
        assert_eq!(&b[30..34], &[198, 18, 96, 1]);
        // Broadcast stays; a third host gets the next address.
        let mut c = tcp_frame([10, 0, 0, 4], [255, 255, 255, 255]);
        remap_frame(&mut c, &mut map, &mut rm).unwrap();
        assert_eq!(&c[26..34], &[198, 18, 96, 2, 255, 255, 255, 255]);
        assert_eq!(checksum(&c[14..34], 0), 0);
    }

    #[test]
    fn remapper_skips_network_and_broadcast_octets_and_is_bounded() {
        let mut rm = Remapper::default();
        let v: Vec<Ipv4Addr> = (0..255).map(|_| rm.next(true).unwrap()).collect();
        assert_eq!(v[253], Ipv4Addr::new(198, 18, 96, 254));
        assert_eq!(v[254], Ipv4Addr::new(198, 18, 97, 1));
        for _ in 255..BLOCK_HOSTS {
            let a = rm.next(true).unwrap();
            assert!(a.octets()[3] != 0 && a.octets()[3] != 255);
            assert!(a.octets()[2] < 112);
        }
        assert!(rm.next(true).is_err());
    }

    #[test]
    fn injection_parses() {
        let i: Injection = "a/b.pcap@900.5".parse().unwrap();
        assert_eq!(i.path, PathBuf::from("a/b.pcap"));
        assert_eq!(i.start_s, 900.5);
        assert!("a.pcap".parse::<Injection>().is_err());
        assert!("a.pcap@x".parse::<Injection>().is_err());
        assert!("a.pcap@-1".parse::<Injection>().is_err());
        assert!("@5".parse::<Injection>().is_err());
    }
}
