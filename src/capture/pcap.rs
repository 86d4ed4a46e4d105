//! Replay source: classic pcap (µs and ns, both byte orders) and pcapng (any number of
//! sections and interfaces, per-interface `if_tsresol`/`if_tsoffset`), read through
//! pcap-file's slice parsers over a read-only memory map of the file.
//!
//! The reader is lenient where tshark is (a record longer than the snaplen, a
//! microsecond field ≥ 10^6) and counts each leniency; it stops with
//! [`CaptureError::Corrupt`] naming the byte offset where the file stops making sense.
//! Frames returned before such an error are valid.
#![allow(unsafe_code)] // the capture file is memory-mapped; every block has a SAFETY comment

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use pcap_file::pcap::{PcapParser, RawPcapPacket};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{Endianness, PcapError, TsResolution};

use super::{CaptureError, Frame, LinkType, PacketSource};

const PCAP_MAGIC_US: u32 = 0xa1b2_c3d4;
const PCAP_MAGIC_NS: u32 = 0xa1b2_3c4d;
const PCAPNG_SHB: u32 = 0x0a0d_0d0a;

/// Counters for things the reader tolerated. Named like every other counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderCounters {
    /// Records whose captured length exceeds the file's snaplen (accepted, as tshark does).
    pub caplen_gt_snaplen: u64,
    /// Records whose captured length exceeds the original length (orig_len raised to it).
    pub caplen_gt_origlen: u64,
    /// Microsecond/nanosecond fields out of range (normalised into the seconds).
    pub ts_frac_invalid: u64,
    /// pcapng blocks that are not packets (skipped): statistics, name resolution, custom.
    pub pcapng_other_blocks: u64,
    /// Timestamps after 2554-07-21 (u64 nanoseconds overflow): clamped to the maximum.
    pub ts_out_of_range: u64,
}

impl ReaderCounters {
    pub fn named(&self) -> [(&'static str, u64); 5] {
        [
            ("capture.file.ts_out_of_range", self.ts_out_of_range),
            ("capture.file.caplen_gt_snaplen", self.caplen_gt_snaplen),
            ("capture.file.caplen_gt_origlen", self.caplen_gt_origlen),
            ("capture.file.ts_frac_invalid", self.ts_frac_invalid),
            ("capture.file.pcapng_other_blocks", self.pcapng_other_blocks),
        ]
    }
}

#[derive(Clone, Copy, Debug)]
struct Iface {
    link: Option<LinkType>,
    raw_linktype: u32,
    /// Timestamp units per second.
    units_per_sec: u64,
    offset_s: i64,
}

enum Kind {
    Pcap {
        parser: PcapParser,
        link: LinkType,
        nanos: bool,
        snaplen: u32,
    },
    PcapNg {
        parser: Box<PcapNgParser>,
        ifaces: Vec<Iface>,
    },
}

/// A pcap or pcapng file, memory-mapped.
pub struct PcapFileSource {
    path: PathBuf,
    map: Option<Mmap>,
    pos: usize,
    kind: Kind,
    index: u64,
    done: bool,
    /// File offset below which the mapping's pages have been handed back to the kernel.
    released: usize,
    /// What the reader tolerated so far.
    pub counters: ReaderCounters,
}

/// Pages behind the reader are released in steps of this size, so that the resident set
/// does not grow with the capture's length (mapped file pages count as resident).
const RELEASE_STEP: usize = 16 << 20;

fn err_corrupt(path: &Path, offset: usize, reason: impl Into<String>) -> CaptureError {
    CaptureError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason: reason.into(),
    }
}

/// A human name for a LINKTYPE_ value, for error messages (the supported ones, and a few
/// others a capture may well have).
pub fn linktype_name(v: u32) -> &'static str {
    match v {
        0 => "NULL",
        1 => "ETHERNET",
        9 => "PPP",
        50 => "PPP_HDLC",
        101 => "RAW",
        104 => "C_HDLC",
        105 => "IEEE802_11",
        108 => "LOOP",
        113 => "LINUX_SLL",
        119 => "IEEE802_11_PRISM",
        127 => "IEEE802_11_RADIOTAP",
        147..=162 => "USER",
        163 => "IEEE802_11_AVS",
        187 => "BLUETOOTH_HCI_H4",
        189 => "USB_LINUX",
        192 => "PPI",
        220 => "USB_LINUX_MMAPPED",
        228 => "IPV4",
        229 => "IPV6",
        239 => "NFLOG",
        274 => "ETHERNET_MPACKET",
        276 => "LINUX_SLL2",
        _ => "unknown",
    }
}

impl PcapFileSource {
    /// Opens `path`. Fails with a one-line error for a missing file, a directory, a file
    /// that is neither pcap nor pcapng, or an unsupported link type.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CaptureError> {
        let path = path.as_ref().to_path_buf();
        let io = |source: std::io::Error| CaptureError::Io {
            path: path.clone(),
            source,
        };
        let meta = std::fs::metadata(&path).map_err(io)?;
        if meta.is_dir() {
            return Err(CaptureError::Other(format!(
                "{}: is a directory, expected a pcap or pcapng file",
                path.display()
            )));
        }
        let file = File::open(&path).map_err(io)?;
        let map = if meta.len() == 0 {
            None
        } else {
            // SAFETY: the map is read-only and private to this source. A capture file that
            // another process truncates while we read it would fault (SIGBUS); replay
            // inputs are finished captures, and the README says not to replay a file
            // that is still being written.
            Some(unsafe { Mmap::map(&file) }.map_err(io)?)
        };
        if let Some(m) = &map {
            // Readahead hint only; failure changes nothing.
            let _ = m.advise(memmap2::Advice::Sequential);
        }
        let bytes: &[u8] = map.as_deref().unwrap_or(&[]);
        if bytes.len() < 4 {
            return Err(CaptureError::Other(format!(
                "{}: too short to be a capture file ({} bytes)",
                path.display(),
                bytes.len()
            )));
        }
        let magic_le = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let magic_be = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let (kind, pos) = if [PCAP_MAGIC_US, PCAP_MAGIC_NS].contains(&magic_le)
            || [PCAP_MAGIC_US, PCAP_MAGIC_NS].contains(&magic_be)
        {
            let (rem, parser) = PcapParser::new(bytes).map_err(|e| {
                err_corrupt(&path, 0, format!("bad pcap file header: {}", pcap_err(&e)))
            })?;
            let hdr = parser.header();
            let raw_lt = u32::from(hdr.datalink);
            let lt16 = raw_lt & 0xffff;
            let link = LinkType::from_linktype(lt16).ok_or(CaptureError::LinkType {
                path: path.clone(),
                linktype: lt16,
                name: linktype_name(lt16),
            })?;
            let nanos = hdr.ts_resolution == TsResolution::NanoSecond;
            let snaplen = hdr.snaplen;
            (
                Kind::Pcap {
                    parser,
                    link,
                    nanos,
                    snaplen,
                },
                bytes.len() - rem.len(),
            )
        } else if magic_le == PCAPNG_SHB {
            let (rem, parser) = PcapNgParser::new(bytes).map_err(|e| {
                err_corrupt(
                    &path,
                    0,
                    format!("bad pcapng section header: {}", pcap_err(&e)),
                )
            })?;
            (
                Kind::PcapNg {
                    parser: Box::new(parser),
                    ifaces: Vec::new(),
                },
                bytes.len() - rem.len(),
            )
        } else {
            return Err(CaptureError::NotACapture {
                path,
                magic: magic_be,
            });
        };
        Ok(PcapFileSource {
            path,
            map,
            pos,
            kind,
            index: 0,
            done: false,
            released: 0,
            counters: ReaderCounters::default(),
        })
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Byte offset of the next record.
    pub fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// Link type of a classic pcap file, or of the first interface of a pcapng file once
    /// it has been seen.
    pub fn link_type(&self) -> Option<LinkType> {
        match &self.kind {
            Kind::Pcap { link, .. } => Some(*link),
            Kind::PcapNg { ifaces, .. } => ifaces.first().and_then(|i| i.link),
        }
    }

    /// The file's total size in bytes.
    pub fn len(&self) -> u64 {
        self.map.as_ref().map_or(0, |m| m.len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn pcap_err(e: &PcapError) -> String {
    match e {
        PcapError::IncompleteBuffer => "file ends in the middle of a record".to_string(),
        other => other.to_string(),
    }
}

fn iface_from_idb(idb: &InterfaceDescriptionBlock<'_>) -> Iface {
    let raw: u32 = u32::from(idb.linktype);
    let lt16 = raw & 0xffff;
    let mut units_per_sec = 1_000_000u64;
    let mut offset_s = 0i64;
    for opt in &idb.options {
        match opt {
            InterfaceDescriptionOption::IfTsResol(r) => {
                let r = *r;
                units_per_sec = if r & 0x80 != 0 {
                    1u64.checked_shl(u32::from(r & 0x7f)).unwrap_or(0)
                } else {
                    10u64.checked_pow(u32::from(r)).unwrap_or(0)
                };
            }
            InterfaceDescriptionOption::IfTsOffset(o) => offset_s = *o as i64,
            _ => {}
        }
    }
    Iface {
        link: LinkType::from_linktype(lt16),
        raw_linktype: lt16,
        units_per_sec,
        offset_s,
    }
}

/// Converts a pcapng timestamp (in the interface's units) to ns since the epoch.
fn ng_ts_ns(ts_units: u64, iface: &Iface) -> Option<u64> {
    if iface.units_per_sec == 0 {
        return Some(0);
    }
    let secs = ts_units / iface.units_per_sec;
    let frac = ts_units % iface.units_per_sec;
    let frac_ns = (u128::from(frac) * 1_000_000_000u128 / u128::from(iface.units_per_sec)) as u64;
    let secs = (secs as i64).checked_add(iface.offset_s)?;
    if secs < 0 {
        return Some(0);
    }
    (secs as u64)
        .checked_mul(1_000_000_000)?
        .checked_add(frac_ns)
}

impl PcapFileSource {
    /// Drops the pages before the current record from the mapping (the previous frame,
    /// which the caller no longer holds, is among them).
    #[inline]
    fn release_behind(&mut self) {
        if self.pos < self.released + 2 * RELEASE_STEP {
            return;
        }
        let upto = (self.pos - RELEASE_STEP) & !4095;
        if let Some(m) = &self.map {
            if upto > self.released {
                // SAFETY: MADV_DONTNEED on a private read-only file mapping only drops
                // our copies of the pages; touching them again would re-read the file.
                // No frame borrowed from this range is alive: `next_frame` takes `&mut
                // self`, so the previous frame's borrow has ended, and everything below
                // `pos - RELEASE_STEP` is older than it.
                let _ = unsafe {
                    m.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        self.released,
                        upto - self.released,
                    )
                };
                self.released = upto;
            }
        }
    }
}

impl PacketSource for PcapFileSource {
    fn next_frame(&mut self) -> Result<Option<Frame<'_>>, CaptureError> {
        if self.done {
            return Ok(None);
        }
        self.release_behind();
        let bytes: &[u8] = self.map.as_deref().unwrap_or(&[]);
        loop {
            let rest = &bytes[self.pos..];
            if rest.is_empty() {
                self.done = true;
                return Ok(None);
            }
            match &mut self.kind {
                Kind::Pcap {
                    parser,
                    link,
                    nanos,
                    snaplen,
                } => {
                    let (rem, raw): (&[u8], RawPcapPacket<'_>) = match parser.next_raw_packet(rest)
                    {
                        Ok(x) => x,
                        Err(e) => {
                            self.done = true;
                            return Err(err_corrupt(&self.path, self.pos, record_err(rest, &e)));
                        }
                    };
                    let data: &[u8] = match raw.data {
                        std::borrow::Cow::Borrowed(d) => d,
                        std::borrow::Cow::Owned(_) => unreachable_owned(),
                    };
                    if raw.incl_len > *snaplen {
                        self.counters.caplen_gt_snaplen += 1;
                    }
                    let mut orig_len = raw.orig_len;
                    if raw.incl_len > orig_len {
                        self.counters.caplen_gt_origlen += 1;
                        orig_len = raw.incl_len;
                    }
                    let frac_per_sec: u64 = if *nanos { 1_000_000_000 } else { 1_000_000 };
                    let frac = u64::from(raw.ts_frac);
                    if frac >= frac_per_sec {
                        self.counters.ts_frac_invalid += 1;
                    }
                    let frac_ns = if *nanos { frac } else { frac * 1000 };
                    let ts_ns = u64::from(raw.ts_sec) * 1_000_000_000 + frac_ns;
                    self.pos = bytes.len() - rem.len();
                    let index = self.index;
                    self.index += 1;
                    return Ok(Some(Frame {
                        ts_ns,
                        orig_len,
                        data,
                        link: *link,
                        index,
                    }));
                }
                Kind::PcapNg { parser, ifaces } => {
                    let (rem, block) = match parser.next_block(rest) {
                        Ok(x) => x,
                        Err(e) => {
                            self.done = true;
                            return Err(err_corrupt(
                                &self.path,
                                self.pos,
                                format!("bad pcapng block: {}", pcap_err(&e)),
                            ));
                        }
                    };
                    let block_off = self.pos;
                    self.pos = bytes.len() - rem.len();
                    let (iface_id, ts_units, orig_len, data) = match block {
                        Block::SectionHeader(_) => {
                            ifaces.clear();
                            continue;
                        }
                        Block::InterfaceDescription(idb) => {
                            ifaces.push(iface_from_idb(&idb));
                            continue;
                        }
                        Block::EnhancedPacket(EnhancedPacketBlock {
                            interface_id,
                            timestamp,
                            original_len,
                            data,
                            ..
                        }) => {
                            // pcap-file stores the raw 64-bit timestamp as nanoseconds;
                            // it is in the interface's units.
                            let units = timestamp.as_nanos() as u64;
                            let d: &[u8] = match data {
                                std::borrow::Cow::Borrowed(d) => d,
                                std::borrow::Cow::Owned(_) => unreachable_owned(),
                            };
                            (interface_id, units, original_len, d)
                        }
                        Block::SimplePacket(sp) => {
                            let d: &[u8] = match sp.data {
                                std::borrow::Cow::Borrowed(d) => d,
                                std::borrow::Cow::Owned(_) => unreachable_owned(),
                            };
                            (0, 0, sp.original_len, d)
                        }
                        Block::Packet(pb) => {
                            let d: &[u8] = match pb.data {
                                std::borrow::Cow::Borrowed(d) => d,
                                std::borrow::Cow::Owned(_) => unreachable_owned(),
                            };
                            (u32::from(pb.interface_id), pb.timestamp, pb.original_len, d)
                        }
                        _ => {
                            self.counters.pcapng_other_blocks += 1;
                            continue;
                        }
                    };
                    let Some(iface) = ifaces.get(iface_id as usize).copied() else {
                        self.done = true;
                        return Err(err_corrupt(
                            &self.path,
                            block_off,
                            format!(
                                "packet refers to interface {iface_id}, which was never described"
                            ),
                        ));
                    };
                    let Some(link) = iface.link else {
                        self.done = true;
                        return Err(CaptureError::LinkType {
                            path: self.path.clone(),
                            linktype: iface.raw_linktype,
                            name: linktype_name(iface.raw_linktype),
                        });
                    };
                    let ts_ns = match ng_ts_ns(ts_units, &iface) {
                        Some(t) => t,
                        None => {
                            self.counters.ts_out_of_range += 1;
                            u64::MAX
                        }
                    };
                    let mut orig_len = orig_len;
                    if data.len() as u64 > u64::from(orig_len) {
                        self.counters.caplen_gt_origlen += 1;
                        orig_len = data.len() as u32;
                    }
                    let index = self.index;
                    self.index += 1;
                    return Ok(Some(Frame {
                        ts_ns,
                        orig_len,
                        data,
                        link,
                        index,
                    }));
                }
            }
        }
    }
}

#[cold]
fn unreachable_owned() -> ! {
    // pcap-file's slice parsers always borrow; an owned buffer would be a change in the
    // crate's behaviour that the tests would catch.
    panic!("pcap-file returned an owned buffer from a slice parser")
}

fn record_err(rest: &[u8], e: &PcapError) -> String {
    match e {
        PcapError::IncompleteBuffer if rest.len() >= 16 => {
            let incl = u32::from_le_bytes([rest[8], rest[9], rest[10], rest[11]]);
            let incl_be = u32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
            format!(
                "record claims {} captured bytes but the file ends {} bytes later (cut short in the middle of a packet)",
                incl.min(incl_be),
                rest.len() - 16
            )
        }
        PcapError::IncompleteBuffer => format!(
            "file ends inside a record header ({} of 16 bytes)",
            rest.len()
        ),
        other => other.to_string(),
    }
}

/// Byte order of a classic pcap file, for tools that rewrite captures.
pub fn endianness_name(e: Endianness) -> &'static str {
    match e {
        Endianness::Big => "big-endian",
        Endianness::Little => "little-endian",
    }
}

#[cfg(test)]
mod tests {

    /// The exported columns are milliseconds: taking them from the ns timestamp (floor)
    /// gives what libpcap and nfstream give, which scale the fraction to µs first (integer
    /// division, `sf-pcapng.c`) and then take ms (integer division), for decimal and
    /// binary `if_tsresol` alike and with an `if_tsoffset`.
    #[test]
    fn ms_from_ns_equal_libpcap_us_then_ms() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for units in [
            1_000_000u64,
            1_000_000_000,
            1 << 20,
            1 << 30,
            1 << 10,
            10,
            1_000,
        ] {
            for offset_s in [0i64, 3600] {
                let iface = Iface {
                    link: Some(LinkType::Ethernet),
                    raw_linktype: 1,
                    units_per_sec: units,
                    offset_s,
                };
                for _ in 0..20_000 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let t = x % (units * 2_000_000_000);
                    let ns = ng_ts_ns(t, &iface).unwrap();
                    let (sec, frac) = (t / units + offset_s as u64, t % units);
                    let us = u128::from(frac) * 1_000_000 / u128::from(units);
                    let libpcap_ms = sec * 1000 + (us / 1000) as u64;
                    assert_eq!(ns / 1_000_000, libpcap_ms, "units {units} t {t}");
                }
            }
        }
    }

    use super::*;
    use std::io::Write;

    fn shared(p: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/pcaps")
            .join(p)
    }

    fn count(p: &str) -> (u64, Option<String>) {
        let mut s = PcapFileSource::open(shared(p)).unwrap();
        let mut n = 0;
        loop {
            match s.next_frame() {
                Ok(Some(_)) => n += 1,
                Ok(None) => return (n, None),
                Err(e) => return (n, Some(e.to_string())),
            }
        }
    }

    #[test]
    fn reads_pcap_and_pcapng_variants() {
        assert_eq!(count("basic/http-get.pcap"), (14, None));
        assert_eq!(count("formats/pptp.pcap"), (23, None)); // big-endian
        assert_eq!(count("formats/tcp-handshake-nano.pcap"), (3, None)); // ns
        assert_eq!(count("large/tor.pcap"), (3859, None)); // pcapng named .pcap
        assert_eq!(count("formats/dhcp_big_endian.pcapng"), (4, None));
        assert_eq!(count("formats/pcapng-multi-interface.pcapng"), (6, None));
        assert_eq!(count("formats/modify-request.pcapng"), (17, None));
        assert_eq!(count("formats/empty.pcap"), (0, None));
    }

    #[test]
    fn ns_and_us_timestamps_agree_with_tshark() {
        // tcp-handshake-nano.pcap first packet: tshark -t e shows 1406137577.254545000
        let mut s = PcapFileSource::open(shared("formats/tcp-handshake-nano.pcap")).unwrap();
        let f = s.next_frame().unwrap().unwrap();
        assert_eq!(f.link, LinkType::LinuxSll);
        assert!(f.ts_ns > 1_000_000_000 * 1_000_000_000);
        // 2038: ts_sec = 2^31 must not go negative.
        let mut s = PcapFileSource::open(shared("formats/time_2038_overflow.pcap")).unwrap();
        let f = s.next_frame().unwrap().unwrap();
        assert_eq!(f.ts_ns / 1_000_000_000, 1u64 << 31);
    }

    #[test]
    fn pcapng_multi_interface_resolutions() {
        let mut s = PcapFileSource::open(shared("formats/pcapng-multi-interface.pcapng")).unwrap();
        let mut ts = vec![];
        while let Some(f) = s.next_frame().unwrap() {
            ts.push(f.ts_ns);
        }
        // Both interfaces captured the same minutes: all timestamps are plausible dates.
        for t in ts {
            let secs = t / 1_000_000_000;
            assert!((1_500_000_000..2_000_000_000).contains(&secs), "{secs}");
        }
    }

    /// A classic pcap file header (little-endian, µs) with `linktype`, then `records`.
    fn pcap_bytes(linktype: u32, records: &[&[u8]]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, linktype] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for (i, r) in records.iter().enumerate() {
            for v in [1_700_000_000 + i as u32, 0, r.len() as u32, r.len() as u32] {
                b.extend_from_slice(&v.to_le_bytes());
            }
            b.extend_from_slice(r);
        }
        b
    }

    #[test]
    fn unsupported_linktype_is_named() {
        let dir = tempfile::tempdir().unwrap();
        for (lt, name) in [(147u32, "USER"), (192, "PPI"), (274, "ETHERNET_MPACKET")] {
            let p = dir.path().join(format!("lt{lt}.pcap"));
            std::fs::write(&p, pcap_bytes(lt, &[&[0x45; 40]])).unwrap();
            let e = PcapFileSource::open(&p).err().unwrap().to_string();
            assert!(
                e.contains(&format!("lt{lt}.pcap"))
                    && e.contains(&format!("unsupported link type {lt} ({name})")),
                "{e}"
            );
        }
    }

    #[test]
    fn reads_every_supported_linktype() {
        // The captures of each link type.
        for (rel, link, n) in [
            ("linktypes/nflog-http.pcap", LinkType::Nflog, 13),
            ("linktypes/radiotap.pcap", LinkType::Ieee80211Radiotap, 3),
            ("linktypes/linux_dlt_sll2.pcap", LinkType::LinuxSll2, 6),
            ("linktypes/socks.pcap", LinkType::Null, 18),
        ] {
            let mut s = PcapFileSource::open(shared(rel)).unwrap();
            assert_eq!(s.link_type(), Some(link), "{rel}");
            let mut k = 0;
            while let Some(f) = s.next_frame().unwrap() {
                assert_eq!(f.link, link);
                k += 1;
            }
            assert_eq!(k, n, "{rel}");
        }
        // Every supported LINKTYPE_ value opens, and its frames carry that link type
        // (LINKTYPE_PPP_HDLC stays 50, DLT_RAW's 12 and 14 read as RAW).
        let dir = tempfile::tempdir().unwrap();
        for l in LinkType::ALL {
            let p = dir.path().join("x.pcap");
            std::fs::write(&p, pcap_bytes(l.to_linktype(), &[&[0xff, 0x03, 0, 0x21]])).unwrap();
            let mut s = PcapFileSource::open(&p).unwrap();
            assert_eq!(s.next_frame().unwrap().unwrap().link, l);
        }
        for lt in [12, 14] {
            let p = dir.path().join("raw.pcap");
            std::fs::write(&p, pcap_bytes(lt, &[&[0x45; 20]])).unwrap();
            let mut s = PcapFileSource::open(&p).unwrap();
            assert_eq!(s.next_frame().unwrap().unwrap().link, LinkType::Raw);
        }
    }

    #[test]
    fn cut_short_file_names_offset() {
        let (n, e) = count("../pcaps/malformed/fuzz-2021-10-13.pcap");
        assert_eq!(n, 0);
        let e = e.unwrap();
        assert!(e.contains("offset 24") && e.contains("cut short"), "{e}");
    }

    #[test]
    fn not_a_capture_and_directory() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.pcap");
        std::fs::File::create(&p)
            .unwrap()
            .write_all(b"hello world, this is not a capture")
            .unwrap();
        let e = PcapFileSource::open(&p).err().unwrap().to_string();
        assert!(e.contains("not a pcap or pcapng"), "{e}");
        let e = PcapFileSource::open(dir.path()).err().unwrap().to_string();
        assert!(e.contains("is a directory"), "{e}");
        let e = PcapFileSource::open(dir.path().join("missing.pcap"))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("missing.pcap") && e.contains("No such file"),
            "{e}"
        );
    }

    #[test]
    fn truncated_after_some_records_keeps_earlier_frames() {
        let full = std::fs::read(shared("basic/http-get.pcap")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cut.pcap");
        std::fs::write(&p, &full[..full.len() - 10]).unwrap();
        let mut s = PcapFileSource::open(&p).unwrap();
        let mut n = 0;
        let err = loop {
            match s.next_frame() {
                Ok(Some(_)) => n += 1,
                Ok(None) => break None,
                Err(e) => break Some(e),
            }
        };
        assert_eq!(n, 13);
        let e = err.unwrap().to_string();
        assert!(e.contains("cut.pcap") && e.contains("offset"), "{e}");
        // After an error the source is finished.
        assert!(s.next_frame().unwrap().is_none());
    }
}
