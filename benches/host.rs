//! The host profile's cost per packet on one scorer shard: the scorer (flow table, window
//! accumulators, detectors) fed the first 300 000 packets of the bench capture
//! (`synth --preset bench`, generated in memory, decoded beforehand), with the default
//! configuration's profiles in four combinations:
//!
//! - `flows`: the `flows` profile alone;
//! - `hosts`: the `hosts` profile alone;
//! - `default-without-hosts`: `traffic` + `flows`;
//! - `default`: `traffic` + `flows` + `hosts` (the default configuration with
//!   config/host-profile.toml appended).
//!
//! ```text
//! cargo bench --bench host
//! ```
//!
//! Time per iteration = one pass over the packets with a new scorer (built outside the
//! timing); criterion reports packets per second. `default-without-hosts` / `default` is
//! what the host profile costs a scorer (docs/detection.md, "Host behaviour").

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use streamml_sensor::capture::synth::{SynthConfig, SynthSource};
use streamml_sensor::capture::PacketSource;
use streamml_sensor::config::{Config, RawConfig};
use streamml_sensor::engine::scorer::{Scorer, ScorerSetup};
use streamml_sensor::shard::{self, KeyMode, PacketRecord, ShardWorker};
use streamml_sensor::wire::{self, DecodeOptions};

const PACKETS: u64 = 300_000;

fn config(keep: &[&str]) -> Arc<Config> {
    let text = format!(
        "{}\n{}",
        streamml_sensor::config::DEFAULT_CONFIG,
        include_str!("../config/host-profile.toml")
    );
    let mut raw = RawConfig::parse(&text, "bench").expect("parses");
    raw.profiles.retain(|p| keep.contains(&p.name.as_str()));
    // A table that fits the bench (the default's 1M flows would dominate setup).
    raw.flow.capacity = 1 << 18;
    Arc::new(raw.validate("bench").expect("valid"))
}

fn records(cfg: &Config) -> Vec<PacketRecord> {
    let mut src = SynthSource::new(SynthConfig {
        max_packets: Some(PACKETS),
        ..SynthConfig::bench_capture(1)
    });
    let opts = DecodeOptions {
        decode_tunnels: true,
    };
    let mut out = Vec::new();
    while let Some(f) = src.next_frame().expect("synth") {
        let Ok(m) = wire::decode(f.data, f.orig_len, f.link, &opts) else {
            continue;
        };
        let mut mask = 0u16;
        for (i, p) in cfg.profiles.iter().enumerate() {
            let tcp_udp = m.protocol == 6 || m.protocol == 17;
            if p.filter.is_empty() || (p.filter == "tcp or udp" && tcp_udp) {
                mask |= 1 << i;
            }
        }
        out.push(PacketRecord {
            ts_ns: f.ts_ns,
            hash: shard::symmetric_hash(&m, KeyMode::FiveTuple) as u32,
            profiles: mask,
            lag_ms: 0,
            meta: m,
        });
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("scorer");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .warm_up_time(Duration::from_secs(2));
    for (name, keep) in [
        ("flows", &["flows"][..]),
        ("hosts", &["hosts"][..]),
        ("default-without-hosts", &["traffic", "flows"][..]),
        ("default", &["traffic", "flows", "hosts"][..]),
    ] {
        let cfg = config(keep);
        let recs = records(&cfg);
        g.throughput(Throughput::Elements(recs.len() as u64));
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let setup = ScorerSetup {
                        cfg: cfg.clone(),
                        shards: 1,
                        key_mode: KeyMode::FiveTuple,
                        sender: None,
                        blocking: false,
                        window_filters: vec![None; cfg.profiles.len()],
                        flow_output: None,
                        keep_windows: false,
                        latency: None,
                        models: None,
                        flow_export: None,
                    };
                    let mut s = Scorer::new(0, setup).expect("scorer");
                    let t0 = Instant::now();
                    for r in &recs {
                        s.on_packet(black_box(r));
                    }
                    s.finish();
                    total += t0.elapsed();
                    black_box(s.alerts().len());
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
