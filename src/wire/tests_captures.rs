//! Tests of [`decode`] on the real captures in `../shared/pcaps` (relative to the package
//! root; `STREAMML_PCAPS` overrides): no panic on any frame, reasons counted, agreement
//! with nfstream's own packet decoder and with tshark, and a seeded mutation run.

use super::*;
use crate::capture::pcap::PcapFileSource;
use crate::capture::{LinkType, PacketSource};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

pub(crate) fn pcaps_dir() -> PathBuf {
    match std::env::var_os("STREAMML_PCAPS") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pcaps"),
    }
}

/// Every capture file under the pcaps folder, as paths relative to it, sorted.
pub(crate) fn all_captures() -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        let entries = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e} (set STREAMML_PCAPS)", dir.display()));
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, root, out);
            } else if matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("pcap" | "pcapng" | "cap")
            ) {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    let root = pcaps_dir();
    let mut out = Vec::new();
    walk(&root, &root, &mut out);
    out.sort();
    assert!(
        out.len() >= 70,
        "expected the shared captures in {}",
        root.display()
    );
    out
}

/// One captured frame, owned.
pub(crate) struct OwnedFrame {
    pub data: Vec<u8>,
    pub orig_len: u32,
    pub link: LinkType,
}

/// All frames of a capture up to the first read error (returned as text).
pub(crate) fn read_frames(rel: &str) -> (Vec<OwnedFrame>, Option<String>) {
    let path = pcaps_dir().join(rel);
    let mut src = match PcapFileSource::open(&path) {
        Ok(s) => s,
        Err(e) => return (Vec::new(), Some(e.to_string())),
    };
    let mut frames = Vec::new();
    loop {
        match src.next_frame() {
            Ok(Some(f)) => frames.push(OwnedFrame {
                data: f.data.to_vec(),
                orig_len: f.orig_len,
                link: f.link,
            }),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e.to_string())),
        }
    }
}

fn decode_frame(f: &OwnedFrame) -> Result<PacketMeta, WireError> {
    decode(&f.data, f.orig_len, f.link, &DecodeOptions::default())
}

fn ip_text(ip: &[u8; 16], version: u8) -> String {
    if version == 4 {
        std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string()
    } else {
        std::net::Ipv6Addr::from(*ip).to_string()
    }
}

fn mac_text(m: &[u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Decompresses a committed `.zst` fixture.
pub(crate) fn read_zst(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/wire/testdata")
        .join(name);
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut s = String::new();
    zstd::stream::read::Decoder::new(file)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    s
}

/// Splits a fixture made of `# <capture>` sections into per-capture line lists.
pub(crate) fn sections(text: &str) -> BTreeMap<String, Vec<&str>> {
    let mut out: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    let mut cur = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("# ") {
            cur = Some(name.to_string());
            out.entry(name.to_string()).or_default();
        } else if let Some(c) = &cur {
            out.get_mut(c).unwrap().push(line);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Every frame of every capture: no panic, every outcome counted.

#[test]
fn every_capture_decodes_and_reasons_are_counted() {
    let mut total: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut per_file: BTreeMap<String, BTreeMap<&'static str, u64>> = BTreeMap::new();
    let mut frames_seen = 0u64;
    for rel in all_captures() {
        let (frames, _err) = read_frames(&rel);
        let counts = per_file.entry(rel.clone()).or_default();
        for f in &frames {
            frames_seen += 1;
            let key = match decode_frame(f) {
                Ok(m) => {
                    check_invariants(&m, &f.data);
                    "ok"
                }
                Err(e) => e.name(),
            };
            *counts.entry(key).or_default() += 1;
            *total.entry(key).or_default() += 1;
        }
    }
    assert_eq!(total.values().sum::<u64>(), frames_seen);
    for (k, v) in &total {
        eprintln!("{k:32} {v:8}");
    }
    for (file, counts) in &per_file {
        eprintln!("{file}: {counts:?}");
    }
    let get = |file: &str, key: &str| per_file[file].get(key).copied().unwrap_or(0);
    // Known contents of particular captures (see ../shared/pcaps/README.md).
    assert_eq!(
        get("malformed/ip-bogus-header-len.pcap", "decoder.ipv4.bad_len"),
        1
    );
    assert_eq!(
        get(
            "malformed/ipv6_invalid_length.pcap",
            "decoder.ipv6.trunc_pkt"
        ),
        1
    );
    assert_eq!(
        get(
            "malformed/LINKTYPE_IPV4_invalid.pcap",
            "decoder.ip.bad_version"
        ),
        1
    );
    assert_eq!(get("malformed/ipv4_invalid_total_length.pcap", "ok"), 1);
    assert_eq!(get("truncated/trunc-hdr.pcap", "decoder.link.trunc_pkt"), 1);
    // 48 of 74 bytes captured: the IPv6 header itself is cut.
    assert_eq!(get("truncated/ip6-trunc.pcap", "decoder.ipv6.trunc_pkt"), 1);
    assert_eq!(get("vlan/802.1ad_QinQ.pcap", "decoder.not_ip"), 2);
    assert_eq!(
        get("fragments/fragmented-1.pcap", "decoder.ipv4.frag_later"),
        1
    );
    assert_eq!(
        get(
            "fragments/ipv6-fragmented-dns.pcap",
            "decoder.ipv6.frag_later"
        ),
        3
    );
    assert!(
        get(
            "fragments/ip_fragmented_garbage.pcap",
            "decoder.ipv4.frag_later"
        ) > 1000
    );
    assert_eq!(get("tunnels/gtp-u.pcap", "ok"), 102);
    assert_eq!(get("linktypes/linux_dlt_sll2.pcap", "ok"), 4);
    assert_eq!(get("linktypes/socks.pcap", "ok"), 18);
    assert_eq!(get("basic/wikipedia.pcap", "decoder.not_ip"), 10);
    // Every reason that real traffic can produce shows up somewhere.
    for key in [
        "ok",
        "decoder.not_ip",
        "decoder.link.trunc_pkt",
        "decoder.ipv4.frag_later",
        "decoder.ipv6.frag_later",
        "decoder.ipv4.bad_len",
        "decoder.ipv6.trunc_pkt",
        "decoder.ip.bad_version",
    ] {
        assert!(total.get(key).copied().unwrap_or(0) > 0, "{key} never seen");
    }
}

/// What must hold for every successfully decoded frame, whatever its bytes.
pub(crate) fn check_invariants(m: &PacketMeta, frame: &[u8]) {
    let (l3, l4) = (usize::from(m.l3_off), usize::from(m.l4_off));
    assert!(l3 < l4, "l3_off {l3} >= l4_off {l4}");
    assert!(
        l4 <= frame.len(),
        "l4_off {l4} > frame length {}",
        frame.len()
    );
    assert!(m.ip_version == 4 || m.ip_version == 6);
    let hdr_min = if m.ip_version == 4 { 20 } else { 40 };
    assert!(l4 - l3 >= hdr_min);
    assert!(frame.get(l3).map(|b| b >> 4) == Some(m.ip_version));
    assert!(m.payload_size <= m.transport_size);
    assert!(
        u64::from(m.transport_size) + (l4 - l3) as u64 <= u64::from(m.ip_size),
        "transport {} + headers {} > ip_size {}",
        m.transport_size,
        l4 - l3,
        m.ip_size
    );
    if m.ip_version == 4 {
        assert_eq!(m.src_ip[4..], [0; 12]);
        assert_eq!(m.dst_ip[4..], [0; 12]);
    }
    let truncated = (l3 as u64 + u64::from(m.ip_size)) > frame.len() as u64;
    if m.flags & meta_flags::TUNNELLED == 0 {
        assert_eq!(m.flags & meta_flags::TRUNCATED != 0, truncated);
    } else if truncated {
        assert_ne!(m.flags & meta_flags::TRUNCATED, 0);
    }
    let short = m.flags & meta_flags::L4_SHORT != 0;
    match m.protocol {
        6 | 17 if short => {
            assert_eq!((m.src_port, m.dst_port, m.tcp_flags), (0, 0, 0));
            assert_eq!((m.transport_size, m.payload_size), (0, 0));
        }
        1 | 58 if short => {
            assert_eq!((m.icmp_type, m.icmp_code, m.payload_size), (0, 0, 0));
            assert!(m.transport_size < 4);
        }
        6 => {
            assert!(l4 + 20 <= frame.len());
            assert!(m.transport_size >= 20);
        }
        17 => {
            assert!(l4 + 8 <= frame.len());
            assert!(m.transport_size >= 8);
            assert_eq!(m.tcp_flags, 0);
        }
        1 | 58 => {
            assert!(l4 + 4 <= frame.len());
            assert_eq!((m.src_port, m.dst_port, m.tcp_flags), (0, 0, 0));
        }
        _ => {
            assert_eq!((m.src_port, m.dst_port, m.tcp_flags), (0, 0, 0));
            assert_eq!((m.transport_size, m.payload_size), (0, 0));
            assert_eq!((m.icmp_type, m.icmp_code), (0, 0));
        }
    }
    if m.tunnel_id != tunnel::NONE {
        assert_ne!(m.flags & meta_flags::TUNNELLED, 0);
    }
}

// ---------------------------------------------------------------------------------------
// Agreement with nfstream 6.6's packet decoder, frame by frame.

/// One frame as nfstream's `capture_next` saw it (testdata/nfstream_packets.py).
#[derive(Debug, PartialEq, Eq, Clone)]
struct NfPacket {
    ip_version: u8,
    protocol: u8,
    src_ip: String,
    dst_ip: String,
    src_port: u16,
    dst_port: u16,
    vlan_id: u16,
    tunnel_id: u8,
    raw_size: u16,
    ip_size: u16,
    transport_size: u16,
    payload_size: u16,
    tcp_flags: u8,
    src_mac: String,
    dst_mac: String,
}

impl NfPacket {
    fn parse(cols: &[&str]) -> NfPacket {
        let n = |i: usize| cols[i].parse::<u32>().unwrap();
        NfPacket {
            ip_version: n(2) as u8,
            protocol: n(3) as u8,
            src_ip: cols[4].to_string(),
            dst_ip: cols[5].to_string(),
            src_port: n(6) as u16,
            dst_port: n(7) as u16,
            vlan_id: n(8) as u16,
            tunnel_id: n(9) as u8,
            raw_size: n(10) as u16,
            ip_size: n(11) as u16,
            transport_size: n(12) as u16,
            payload_size: n(13) as u16,
            tcp_flags: n(14) as u8,
            src_mac: cols[15].to_string(),
            dst_mac: cols[16].to_string(),
        }
    }

    /// Ours, in nfstream's types (its sizes are u16).
    fn from_meta(m: &PacketMeta) -> NfPacket {
        NfPacket {
            ip_version: m.ip_version,
            protocol: m.protocol,
            src_ip: ip_text(&m.src_ip, m.ip_version),
            dst_ip: ip_text(&m.dst_ip, m.ip_version),
            src_port: m.src_port,
            dst_port: m.dst_port,
            vlan_id: m.vlan_id,
            tunnel_id: m.tunnel_id,
            raw_size: m.wire_len as u16,
            ip_size: m.ip_size as u16,
            transport_size: m.transport_size as u16,
            payload_size: m.payload_size as u16,
            tcp_flags: m.tcp_flags,
            src_mac: mac_text(&m.src_mac),
            dst_mac: mac_text(&m.dst_mac),
        }
    }
}

/// Why we and nfstream see a frame differently: each one is deliberate and written up in
/// docs/wire-vs-nfstream.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Deliberate {
    /// nfstream has no LINUX_SLL2 support and ignores every frame.
    Sll2,
    /// IPv6 jumbogram: nfstream reports protocol 0 (Hop-by-Hop) and no transport.
    Jumbogram,
    /// LINKTYPE_IPV4/IPV6 carrying the other version: nfstream believes the nibble.
    LinkVersionMismatch,
    /// A non-IP EtherType whose payload happens to start with nibble 4 or 6: nfstream
    /// decodes it as IP anyway.
    NonIpEthertype,
    /// IPv4 IHL < 5: nfstream takes the IP header for the transport header.
    Ipv4BadHlen,
}

fn classify(
    f: &OwnedFrame,
    nf: Option<&NfPacket>,
    ours: &Result<PacketMeta, WireError>,
) -> Option<Deliberate> {
    match (nf, ours) {
        (None, Ok(_)) if f.link == LinkType::LinuxSll2 => Some(Deliberate::Sll2),
        (Some(n), Ok(m)) => {
            let l3 = usize::from(m.l3_off);
            let plen = f.data.get(l3 + 4..l3 + 6);
            (m.ip_version == 6 && plen == Some(&[0, 0]) && n.protocol == 0)
                .then_some(Deliberate::Jumbogram)
        }
        (Some(n), Err(WireError::IpBadVersion))
            if (f.link == LinkType::Ipv4 && n.ip_version == 6)
                || (f.link == LinkType::Ipv6 && n.ip_version == 4) =>
        {
            Some(Deliberate::LinkVersionMismatch)
        }
        (Some(_), Err(WireError::NotIp)) if f.link == LinkType::Ethernet => {
            let ty = u16::from_be_bytes([f.data[12], f.data[13]]);
            let handled = [
                0x0800, 0x86dd, 0x8100, 0x88a8, 0x9100, 0x8847, 0x8848, 0x8864,
            ];
            (!handled.contains(&ty)).then_some(Deliberate::NonIpEthertype)
        }
        (Some(_), Err(WireError::Ipv4BadHlen)) => Some(Deliberate::Ipv4BadHlen),
        _ => None,
    }
}

/// Frame by frame against what nfstream 6.6's own C decoder (`capture_next`, i.e.
/// `packet_process`) made of every capture, recorded by testdata/nfstream_packets.py:
/// which frames it ignores, and for the others every field that defines a flow or feeds
/// its counters. Differences must be one of the deliberate ones, in the expected number.
#[test]
fn agrees_with_nfstream_packet_decoder() {
    let text = read_zst("nfstream-6.6-packets.tsv.zst");
    let oracle = sections(&text);
    let mut unexplained: Vec<String> = Vec::new();
    let mut deliberate: BTreeMap<Deliberate, u32> = BTreeMap::new();
    let mut unreadable: Vec<&str> = Vec::new();
    let (mut compared, mut agreed_ok, mut agreed_ignored) = (0u64, 0u64, 0u64);
    for (rel, lines) in &oracle {
        let (frames, err) = read_frames(rel);
        if frames.is_empty() && err.is_some() {
            // Link types our reader rejects at open (NFLOG, radiotap) or a corrupt file.
            unreadable.push(rel);
            continue;
        }
        for line in lines {
            let cols: Vec<&str> = line.split('\t').collect();
            let idx: usize = cols[0].parse().unwrap();
            if cols[1] == "E" {
                continue;
            }
            let f = frames
                .get(idx)
                .unwrap_or_else(|| panic!("{rel} #{idx}: nfstream read a frame we did not"));
            compared += 1;
            let ours = decode_frame(f);
            let nf = (cols[1] == "P").then(|| NfPacket::parse(&cols));
            let same = match (&nf, &ours) {
                (None, Err(_)) => {
                    agreed_ignored += 1;
                    true
                }
                (Some(n), Ok(m)) if *n == NfPacket::from_meta(m) => {
                    agreed_ok += 1;
                    true
                }
                _ => false,
            };
            if same {
                continue;
            }
            match classify(f, nf.as_ref(), &ours) {
                Some(d) => {
                    assert!(
                        rel.starts_with("malformed/")
                            || matches!(d, Deliberate::Sll2 | Deliberate::Jumbogram),
                        "{rel} #{idx}: {d:?} outside malformed/"
                    );
                    *deliberate.entry(d).or_default() += 1;
                }
                None => unexplained.push(format!(
                    "{rel} #{idx}:\n  nfstream {nf:?}\n  ours     {:?}",
                    ours.map(|m| NfPacket::from_meta(&m))
                )),
            }
        }
    }
    for d in &unexplained {
        eprintln!("{d}");
    }
    eprintln!(
        "compared {compared} frames: {agreed_ok} decoded alike, {agreed_ignored} ignored by both, \
         deliberate differences {deliberate:?}, unexplained {}",
        unexplained.len()
    );
    assert!(unexplained.is_empty());
    assert_eq!(
        unreadable,
        [
            "linktypes/nflog-http.pcap",
            "linktypes/radiotap.pcap",
            "malformed/fuzz-2021-10-13.pcap"
        ]
    );
    let expected = BTreeMap::from([
        (Deliberate::Sll2, 4),
        (Deliberate::Jumbogram, 1),
        (Deliberate::LinkVersionMismatch, 1),
        (Deliberate::NonIpEthertype, 20),
        (Deliberate::Ipv4BadHlen, 1),
    ]);
    assert_eq!(deliberate, expected);
    assert!(agreed_ok > 15_000, "only {agreed_ok} frames decoded alike");
}

// ---------------------------------------------------------------------------------------
// Seeded mutation run.

/// xorshift64*: small, seeded, good enough to pick bytes.
pub(crate) struct XorShift(u64);

impl XorShift {
    pub(crate) fn new(seed: u64) -> Self {
        XorShift(seed | 1)
    }
    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}
