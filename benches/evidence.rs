//! Evidence ring benchmarks: append cost per packet (64 B and 1500 B frames) next to a
//! plain memcpy of the same bytes into a preallocated buffer (the floor), copy-out of the
//! records around an alert, and writing them as a .pcap.zst.
//!
//! `cargo bench --bench evidence`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use streamml_sensor::capture::LinkType;
use streamml_sensor::evidence::file::{FileConfig, PcapZstWriter};
use streamml_sensor::evidence::ring::{End, RecordBuf, RingConfig, Start};
use streamml_sensor::evidence::EvidenceRing;

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn ring_in(dir: &std::path::Path) -> EvidenceRing {
    // 64 MiB: larger than the caches, and wrapped many times during a run, so the cost
    // includes reclaiming (reading the header of) the record being overwritten.
    EvidenceRing::create(
        &dir.join("bench.ring"),
        &RingConfig {
            size_bytes: 64 << 20,
            snaplen: 2048,
            shard: 0,
        },
    )
    .unwrap()
}

fn append(c: &mut Criterion) {
    // The same ring on a disk-backed file system (page-cache writeback write-protects
    // pages, so the next store to each takes a minor fault) and on tmpfs (/dev/shm).
    let disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let shm = tempfile::tempdir_in("/dev/shm").ok();
    let mut g = c.benchmark_group("ring_append");
    g.measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    for len in [64usize, 1500] {
        let f = frame(len, 7);
        for (name, dir) in [("ring_disk", Some(&disk)), ("ring_tmpfs", shm.as_ref())] {
            let Some(dir) = dir else { continue };
            let mut ring = ring_in(dir.path());
            let mut ts = 1_700_000_000_000_000_000u64;
            g.bench_with_input(BenchmarkId::new(name, len), &f, |b, f| {
                b.iter(|| {
                    ts += 1000;
                    black_box(ring.append(ts, f.len() as u32, LinkType::Ethernet, ts, black_box(f)))
                })
            });
        }
        // The floor: copy the same bytes into a 64 MiB preallocated buffer, sequentially,
        // with the ring's 8-byte alignment and 40-byte header gaps.
        let mut buf = vec![0u8; 64 << 20];
        let mut off = 0usize;
        g.bench_with_input(BenchmarkId::new("memcpy", len), &f, |b, f| {
            b.iter(|| {
                if off + f.len() > buf.len() {
                    off = 0;
                }
                buf[off..off + f.len()].copy_from_slice(black_box(f));
                off += (f.len() + 40 + 7) & !7;
                black_box(off)
            })
        });
    }
    g.finish();
}

fn copy_out(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut ring = EvidenceRing::create(
        &dir.path().join("copy.ring"),
        &RingConfig {
            size_bytes: 64 << 20,
            snaplen: 2048,
            shard: 0,
        },
    )
    .unwrap();
    // ~100k packets of mixed sizes over 100 s of packet time.
    let sizes = [64usize, 1500, 590, 64, 1500, 128];
    let frames: Vec<Vec<u8>> = sizes.iter().map(|&l| frame(l, l as u8)).collect();
    let t0 = 1_700_000_000_000_000_000u64;
    let n = 100_000u64;
    for i in 0..n {
        let f = &frames[i as usize % frames.len()];
        ring.append(
            t0 + i * 1_000_000,
            f.len() as u32,
            LinkType::Ethernet,
            i % 97,
            f,
        );
    }
    let rd = ring.reader();
    let mut out = RecordBuf::new();
    let mut g = c.benchmark_group("ring_copy_out");
    g.measurement_time(Duration::from_secs(3));
    // An alert near the end: 1000 packets (1 s) of window, found through the index.
    let from = t0 + (n - 1000) * 1_000_000;
    g.throughput(Throughput::Elements(1000));
    g.bench_function("window_1000_of_100k", |b| {
        b.iter(|| {
            let st = rd.copy_range(Start::TsNs(from), End::HEAD, |_| true, &mut out);
            assert_eq!(st.copied, 1000);
        })
    });
    // One flow out of 97 in the same span: every record is still read and validated.
    g.bench_function("flow_filter_1000_of_100k", |b| {
        b.iter(|| {
            black_box(rd.copy_range(
                Start::TsNs(from),
                End::HEAD,
                |v| v.flow_hash() == 5,
                &mut out,
            ));
        })
    });
    g.finish();

    let mut g = c.benchmark_group("evidence_file");
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(20);
    rd.copy_range(Start::TsNs(from), End::HEAD, |_| true, &mut out);
    g.throughput(Throughput::Elements(out.len() as u64));
    let cfg = FileConfig {
        fsync: false,
        ..FileConfig::default()
    };
    let mut k = 0u64;
    g.bench_function("pcap_zst_1000_records", |b| {
        b.iter(|| {
            k += 1;
            let dest = dir.path().join(format!("e{k}.pcap.zst"));
            let mut w = PcapZstWriter::create(&dest, 1, 65_535, cfg).unwrap();
            for v in out.iter() {
                w.write_record(&v).unwrap();
            }
            let fin = w.finish().unwrap();
            std::fs::remove_file(fin.path).unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, append, copy_out);
criterion_main!(benches);
