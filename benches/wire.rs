//! Parsing cost per packet: `wire::decode` against etherparse's `SlicedPacket`, side by
//! side on the same realistic mix of frames from the shared captures (basic/ and large/;
//! echo-connections capped at 5000 frames so that one TCP host pair does not dominate).
//!
//! Before the benchmarks run, the binary checks with a counting global allocator that
//! `decode` allocates nothing over the whole mix (and prints etherparse's count), so
//! `cargo test --benches` fails if an allocation ever creeps into the hot path.
//!
//! Run: `cargo bench --bench wire`. ns/packet = 1e9 / (elements per second).

use criterion::{black_box, Criterion, Throughput};
use etherparse::{LinkSlice, NetSlice, SlicedPacket, TransportSlice, VlanSlice};
use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use streamml_sensor::capture::pcap::PcapFileSource;
use streamml_sensor::capture::{LinkType, PacketSource};
use streamml_sensor::wire::{decode, DecodeOptions, PacketMeta};

/// Counts every allocation and reallocation; delegates to the system allocator.
struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees carry over; the counter is a plain atomic.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through `alloc`/`realloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `ptr` came from `System`; the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// The frames of the mix (all Ethernet), owned.
fn load_mix() -> Vec<(Vec<u8>, u32)> {
    let root = match std::env::var_os("STREAMML_PCAPS") {
        Some(p) => p.into(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pcaps"),
    };
    let mut files = Vec::new();
    for dir in ["basic", "large"] {
        let d = root.join(dir);
        let rd = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for e in rd {
            files.push(e.unwrap().path());
        }
    }
    files.sort();
    let mut frames = Vec::new();
    for f in files {
        let cap = if f.ends_with("echo-connections.pcap") {
            5000
        } else {
            usize::MAX
        };
        let mut src = PcapFileSource::open(&f).unwrap_or_else(|e| panic!("{e}"));
        let mut n = 0;
        while let Ok(Some(fr)) = src.next_frame() {
            assert_eq!(fr.link, LinkType::Ethernet, "{}", f.display());
            frames.push((fr.data.to_vec(), fr.orig_len));
            n += 1;
            if n == cap {
                break;
            }
        }
    }
    frames
}

/// The fields the flow table needs, read through etherparse (innermost VLAN, IPs,
/// protocol, ports, TCP flags, ICMP type), so both sides do comparable work.
#[derive(Default)]
struct Lite {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlan: u16,
    src_ip: [u8; 16],
    dst_ip: [u8; 16],
    protocol: u8,
    src_port: u16,
    dst_port: u16,
    tcp_flags: u8,
    icmp_type: u8,
}

fn etherparse_meta(frame: &[u8]) -> Option<Lite> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let mut m = Lite::default();
    if let Some(LinkSlice::Ethernet2(e)) = &p.link {
        m.src_mac = e.source();
        m.dst_mac = e.destination();
    }
    m.vlan = match &p.vlan {
        Some(VlanSlice::SingleVlan(v)) => v.vlan_identifier().value(),
        Some(VlanSlice::DoubleVlan(v)) => v.inner().vlan_identifier().value(),
        None => 0,
    };
    match p.net.as_ref()? {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            m.src_ip[..4].copy_from_slice(&h.source());
            m.dst_ip[..4].copy_from_slice(&h.destination());
            m.protocol = ip.payload_ip_number().0;
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            m.src_ip = h.source();
            m.dst_ip = h.destination();
            m.protocol = ip.payload().ip_number.0;
        }
        NetSlice::Arp(_) => return None,
    }
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            m.src_port = t.source_port();
            m.dst_port = t.destination_port();
            m.tcp_flags = t.slice()[13];
        }
        Some(TransportSlice::Udp(u)) => {
            m.src_port = u.source_port();
            m.dst_port = u.destination_port();
        }
        Some(TransportSlice::Icmpv4(i)) => m.icmp_type = i.type_u8(),
        Some(TransportSlice::Icmpv6(i)) => m.icmp_type = i.type_u8(),
        None => {}
    }
    Some(m)
}

/// The frames back to back in one buffer, as a replayed pcap file (mmap) or an AF_XDP
/// UMEM holds them: (start, end, orig_len) per frame.
struct Packed {
    bytes: Vec<u8>,
    index: Vec<(usize, usize, u32)>,
}

impl Packed {
    fn new(frames: &[(Vec<u8>, u32)]) -> Packed {
        let mut bytes = Vec::new();
        let mut index = Vec::new();
        for (f, len) in frames {
            let start = bytes.len();
            bytes.extend_from_slice(f);
            index.push((start, bytes.len(), *len));
        }
        Packed { bytes, index }
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], u32)> + '_ {
        self.index
            .iter()
            .map(|&(s, e, l)| (self.bytes.get(s..e).unwrap_or(&[]), l))
    }
}

fn decode_all(frames: &Packed, opts: &DecodeOptions) -> u64 {
    let mut acc = 0u64;
    for (f, len) in frames.iter() {
        if let Ok(m) = decode(black_box(f), len, LinkType::Ethernet, opts) {
            let m: PacketMeta = black_box(m);
            acc = acc.wrapping_add(u64::from(m.src_port) ^ u64::from(m.ip_size));
        }
    }
    acc
}

fn etherparse_all(frames: &Packed) -> u64 {
    let mut acc = 0u64;
    for (f, _) in frames.iter() {
        if let Some(m) = etherparse_meta(black_box(f)) {
            let m = black_box(m);
            acc = acc.wrapping_add(u64::from(m.src_port) ^ u64::from(m.protocol));
        }
    }
    acc
}

/// Decoding the whole mix must not allocate. Panics (fails `cargo test --benches`)
/// otherwise.
fn check_no_allocation(frames: &Packed) {
    let opts = DecodeOptions::default();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let acc = decode_all(frames, &opts);
    let ours = ALLOCATIONS.load(Ordering::Relaxed) - before;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let acc2 = etherparse_all(frames);
    let theirs = ALLOCATIONS.load(Ordering::Relaxed) - before;
    black_box((acc, acc2));
    println!(
        "allocations over {} frames: wire::decode {ours}, etherparse {theirs}",
        frames.index.len()
    );
    assert_eq!(ours, 0, "wire::decode allocated");
}

fn bench_parsers(c: &mut Criterion, name: &str, frames: &Packed) {
    let opts = DecodeOptions::default();
    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Elements(frames.index.len() as u64));
    g.bench_function("decode", |b| b.iter(|| decode_all(frames, &opts)));
    g.bench_function("etherparse_sliced", |b| b.iter(|| etherparse_all(frames)));
    g.finish();
}

fn main() {
    let frames = load_mix();
    let decoded = frames
        .iter()
        .filter(|(f, l)| decode(f, *l, LinkType::Ethernet, &DecodeOptions::default()).is_ok())
        .count();
    let all = Packed::new(&frames);
    println!(
        "mix: {} frames, {} bytes, {decoded} decoded to a flow packet",
        frames.len(),
        all.bytes.len()
    );
    check_no_allocation(&all);
    // Every 32nd frame of the mix: the same kinds of packets in ~350 KB, so the headers
    // stay in cache and the numbers show parsing work rather than memory latency.
    let hot_frames: Vec<(Vec<u8>, u32)> = frames.iter().step_by(32).cloned().collect();
    let hot = Packed::new(&hot_frames);
    // `WIRE_LOOP=decode|etherparse N`: just run that parser N times over the hot set, for
    // `perf stat -e cycles:u,instructions:u` (CPU time counts, unlike wall time, are not
    // inflated when other jobs share the cores).
    if let Ok(which) = std::env::var("WIRE_LOOP") {
        let n: usize = std::env::var("WIRE_LOOP_N").map_or(10_000, |v| v.parse().unwrap());
        let opts = DecodeOptions::default();
        let mut acc = 0u64;
        for _ in 0..n {
            acc = acc.wrapping_add(match which.as_str() {
                "decode" => decode_all(&hot, &opts),
                _ => etherparse_all(&hot),
            });
        }
        println!("{which}: {} packets (acc {acc})", n * hot.index.len());
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    bench_parsers(&mut c, "wire_mix_hot", &hot);
    bench_parsers(&mut c, "wire_mix_all", &all);
    c.final_summary();
}
