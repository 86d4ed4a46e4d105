//! Flow-table update and symmetric hash, ns per packet, on a deterministic synthetic mix:
//! 1M packets over 100k bidirectional flows (skewed: a few heavy flows, a long tail),
//! 2/3 TCP with varying flags, 1/3 UDP, sizes 60..1514, 1 µs apart.
//!
//!     cargo bench --bench flow
//!
//! `update/100k_flows` keeps every flow in the table (no eviction); `update/100k_flows_splt10`
//! adds SPLT recording; `update/churn_evict` runs 1M packets of 250k mostly short flows
//! through a 16k-flow table (capacity evictions on most new flows); `hash/*` is the
//! symmetric shard hash and the table's own index hash.

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

/// `n` packets over `flows` flows; flow ids skewed towards small ones (min of two draws).
fn mix(n: usize, flows: u64, seed: u64) -> Vec<(u64, PacketMeta)> {
    let mut rng = Rng(seed);
    let mut ts = 1_700_000_000_000_000_000u64;
    (0..n)
        .map(|_| {
            let r = rng.next();
            let f = (r % flows).min((r >> 32) % flows);
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

fn run_table(c: &mut Criterion, name: &str, pkts: &[(u64, PacketMeta)], cfg: FlowConfig) {
    let mut g = c.benchmark_group("update");
    g.throughput(Throughput::Elements(pkts.len() as u64));
    g.sample_size(10);
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut t = FlowTable::new(cfg).expect("valid config");
                let mut emitted = 0u64;
                let mut emit = |r: FlowRecord<'_>| {
                    emitted += r.flow.packets();
                };
                let start = Instant::now();
                for (ts, m) in pkts {
                    t.update(*ts, black_box(m), &mut emit);
                }
                total += start.elapsed();
                black_box(emitted);
            }
            total
        })
    });
    g.finish();
}

fn bench_update(c: &mut Criterion) {
    let pkts = mix(1_000_000, 100_000, 0x5EED);
    let cfg = FlowConfig {
        capacity: 1 << 18,
        ..FlowConfig::default()
    };
    run_table(c, "100k_flows", &pkts, cfg);
    run_table(
        c,
        "100k_flows_splt10",
        &pkts,
        FlowConfig { splt: 10, ..cfg },
    );
    // Mostly short flows through a small table: the create / evict path.
    let churn = mix(1_000_000, 250_000, 0xC0FFEE);
    run_table(
        c,
        "churn_evict",
        &churn,
        FlowConfig {
            capacity: 1 << 14,
            ..FlowConfig::default()
        },
    );
}

fn bench_hash(c: &mut Criterion) {
    let pkts = mix(100_000, 100_000, 0xABCD);
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
    let pkts = mix(1_000_000, 100_000, 0x5EED);
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
