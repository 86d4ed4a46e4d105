//! Flow-table update, symmetric hash and CSV export, per packet (per flow for export),
//! on deterministic synthetic traffic: 1M packets over 100k bidirectional flows, 2/3 TCP
//! with varying flags, 1/3 UDP, sizes 60..1514, 1 µs apart.
//!
//!     cargo bench --bench flow
//!
//! Two access patterns: `random` picks each packet's flow from all 100k (skewed towards a
//! few heavy ones): nearly every packet misses the caches, the worst case. `sliding` picks
//! it from ~2k flows alive at that moment, the window sliding over all 100k during the
//! run: the locality of real traffic. Each runs packet by packet (`update`) and in bursts
//! of 256 with prefetching (`update_batch`), in steady state (every flow already in the
//! table). `churn_evict` sends 1M packets of 250k mostly short flows through a 16k-flow
//! table: the create / evict path.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use streamml_sensor::flow::key::table_hash;
use streamml_sensor::flow::{symmetric_hash, FlowConfig, FlowRecord, FlowTable, KeyMode};
use streamml_sensor::wire::PacketMeta;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[derive(Clone, Copy)]
enum Pattern {
    /// Any of the flows, skewed towards small ids (min of two draws).
    Random,
    /// One of `window` flows around a point sliding over all flows.
    Sliding { window: u64 },
}

/// `n` packets over `flows` flows.
fn mix(n: usize, flows: u64, pattern: Pattern, seed: u64) -> Vec<(u64, PacketMeta)> {
    let mut rng = Rng(seed);
    let mut ts = 1_700_000_000_000_000_000u64;
    (0..n)
        .map(|i| {
            let r = rng.next();
            let f = match pattern {
                Pattern::Random => (r % flows).min((r >> 32) % flows),
                Pattern::Sliding { window } => {
                    let base = (i as u64 * (flows - window)) / n as u64;
                    base + (r % window).min((r >> 32) % window)
                }
            };
            let mut m = PacketMeta::default();
            let client = 0xC612_0000u32 | (f as u32 & 0xffff); // 198.18.x.y
            let server = 0xC613_0000u32 | (f as u32 >> 16 & 0xff);
            m.src_ip[..4].copy_from_slice(&client.to_be_bytes());
            m.dst_ip[..4].copy_from_slice(&server.to_be_bytes());
            m.src_port = 1024 + (f % 50_000) as u16;
            m.dst_port = [443, 80, 53, 22][(f % 4) as usize];
            m.ip_version = 4;
            m.protocol = if f % 3 == 0 { 17 } else { 6 };
            m.tcp_flags = if m.protocol == 6 {
                [0x10, 0x18, 0x02, 0x12, 0x11][(r >> 20) as usize % 5]
            } else {
                0
            };
            m.wire_len = 60 + ((r >> 40) % 1455) as u32;
            m.ip_size = m.wire_len - 14;
            if (r >> 63) == 1 {
                std::mem::swap(&mut m.src_ip, &mut m.dst_ip);
                std::mem::swap(&mut m.src_port, &mut m.dst_port);
            }
            ts += 1_000;
            (ts, m)
        })
        .collect()
}

/// Steady state: the table already holds every flow; each iteration replays `pkts`
/// shifted forward in time.
fn steady(c: &mut Criterion, name: &str, pkts: &[(u64, PacketMeta)], batch: bool) {
    // The CLI's default capacity (1M flows a shard).
    let cfg = FlowConfig {
        capacity: 1 << 20,
        active_timeout_ms: u64::MAX / 4,
        ..FlowConfig::default()
    };
    let mut t = FlowTable::new(cfg).expect("valid config");
    let mut emitted = 0u64;
    let mut emit = |r: FlowRecord<'_>| emitted += r.flow.packets();
    for (ts, m) in pkts {
        t.update(*ts, m, &mut emit);
    }
    let span = pkts.last().map_or(0, |p| p.0) - pkts.first().map_or(0, |p| p.0) + 1_000;
    let mut shift = 0u64;
    let mut shifted: Vec<(u64, PacketMeta)> = pkts.to_vec();
    let mut g = c.benchmark_group("update");
    g.throughput(Throughput::Elements(pkts.len() as u64));
    g.sample_size(10);
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                shift += span;
                for (s, p) in shifted.iter_mut().zip(pkts) {
                    s.0 = p.0 + shift;
                }
                let start = Instant::now();
                if batch {
                    for burst in shifted.chunks(256) {
                        t.update_batch(burst, |(ts, m)| (*ts, m), &mut emit);
                    }
                } else {
                    for (ts, m) in &shifted {
                        t.update(*ts, black_box(m), &mut emit);
                    }
                }
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
    black_box(emitted);
    assert_eq!(
        t.len(),
        t.counters().created.get() as usize,
        "no flow may expire"
    );
}

fn bench_update(c: &mut Criterion) {
    let random = mix(1_000_000, 100_000, Pattern::Random, 0x5EED);
    steady(c, "random_100k_flows", &random, false);
    steady(c, "random_100k_flows_batch", &random, true);
    drop(random);
    let sliding = mix(
        1_000_000,
        100_000,
        Pattern::Sliding { window: 2_000 },
        0x5EED,
    );
    steady(c, "sliding_100k_flows", &sliding, false);
    steady(c, "sliding_100k_flows_batch", &sliding, true);
    drop(sliding);
    // Mostly short flows through a small table: the create / evict path.
    let churn = mix(1_000_000, 250_000, Pattern::Random, 0xC0FFEE);
    let cfg = FlowConfig {
        capacity: 1 << 14,
        ..FlowConfig::default()
    };
    let mut g = c.benchmark_group("update");
    g.throughput(Throughput::Elements(churn.len() as u64));
    g.sample_size(10);
    g.bench_function("churn_evict", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut t = FlowTable::new(cfg).expect("valid config");
                let mut n = 0u64;
                let mut emit = |_: FlowRecord<'_>| n += 1;
                let start = Instant::now();
                for (ts, m) in &churn {
                    t.update(*ts, black_box(m), &mut emit);
                }
                total += start.elapsed();
                black_box(n);
            }
            total
        })
    });
    g.finish();
}

fn bench_hash(c: &mut Criterion) {
    let pkts = mix(100_000, 100_000, Pattern::Random, 0xABCD);
    let mut g = c.benchmark_group("hash");
    g.throughput(Throughput::Elements(pkts.len() as u64));
    g.bench_function("symmetric_5tuple", |b| {
        b.iter(|| {
            let mut x = 0u64;
            for (_, m) in &pkts {
                x ^= symmetric_hash(black_box(m), KeyMode::FiveTuple);
            }
            x
        })
    });
    g.bench_function("symmetric_ip_pair", |b| {
        b.iter(|| {
            let mut x = 0u64;
            for (_, m) in &pkts {
                x ^= symmetric_hash(black_box(m), KeyMode::IpPair);
            }
            x
        })
    });
    g.bench_function("table_index", |b| {
        b.iter(|| {
            let mut x = 0u64;
            for (_, m) in &pkts {
                x ^= table_hash(black_box(m));
            }
            x
        })
    });
    g.finish();
}

fn bench_export(c: &mut Criterion) {
    // Format 100k finished flows as CSV rows (the per-flow cost of `flows` output).
    let pkts = mix(1_000_000, 100_000, Pattern::Random, 0x5EED);
    let mut t = FlowTable::new(FlowConfig {
        capacity: 1 << 18,
        ..FlowConfig::default()
    })
    .expect("valid config");
    let mut sink = |_: FlowRecord<'_>| {};
    for (ts, m) in &pkts {
        t.update(*ts, m, &mut sink);
    }
    let mut flows = Vec::new();
    t.flush(&mut |r: FlowRecord<'_>| flows.push((*r.flow, r.expiration)));
    let mut g = c.benchmark_group("export");
    g.throughput(Throughput::Elements(flows.len() as u64));
    g.sample_size(10);
    let mut out = Vec::with_capacity(64 << 20);
    g.bench_function("csv_row", |b| {
        b.iter(|| {
            out.clear();
            for (i, (f, why)) in flows.iter().enumerate() {
                let r = FlowRecord {
                    flow: f,
                    splt: &[],
                    splt_len: 0,
                    expiration: *why,
                };
                r.write_csv(&mut out, i as u64);
            }
            out.len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_update, bench_hash, bench_export);
criterion_main!(benches);
