//! Half-Space Trees score+learn throughput, to set against River 0.26.1 measured in the same
//! session by `scripts/river_hst_bench.py` (same n_trees 10, height 8, window 250, same d,
//! same input distributions). Throughput is per sample; every iteration continues the same
//! model, so the pivots (every 250 samples) are included, as in River's timed loop.
//!
//! ```text
//! cargo bench --bench hst
//! /opt/streamml-venv/bin/python scripts/river_hst_bench.py --criterion target/criterion
//! ```
//!
//! The clock is this thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: the
//! development machine is shared, and time spent descheduled would otherwise swamp the
//! measurement. The River script measures with `time.thread_time()`, the same clock.
//!
//! Inputs: `unit` = Beta(2, 5) per feature (in [0, 1], concentrated, as River's baseline
//! feeds HST alone); `raw` = lognormal(0, 0.5) × 10^U(0,6) per column (window-style counters
//! of very different magnitudes, River's baseline for MinMaxScaler → HST).

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use streamml_sensor::detect::hst::{HalfSpaceTrees, HstParams, ScaledHst, Score};
use streamml_sensor::detect::scale::{MinMaxScaler, RobustConfig, RobustScaler, Scaler};

/// Samples per criterion iteration (40 windows of 250).
const N: usize = 10_000;

/// Criterion measurement: CPU time of the calling thread.
struct ThreadCpuTime {
    /// Only for its duration formatter.
    wall: WallTime,
}

fn thread_cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_THREAD_CPUTIME_ID exists
    // on every Linux this runs on.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
    }
}

/// splitmix64.
struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-300), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// Beta(2, 5): the 2nd smallest of 6 uniforms.
fn beta25(rng: &mut Rng) -> f64 {
    let mut u = [0.0; 6];
    u.iter_mut().for_each(|v| *v = rng.unit());
    u.sort_by(f64::total_cmp);
    u[1]
}

fn unit_rows(n: usize, d: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng(seed);
    (0..n * d).map(|_| beta25(&mut rng)).collect()
}

fn raw_rows(n: usize, d: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng(seed);
    let scale: Vec<f64> = (0..d).map(|_| 10f64.powf(6.0 * rng.unit())).collect();
    (0..n * d)
        .map(|i| (0.5 * rng.normal()).exp() * scale[i % d])
        .collect()
}

fn model(d: usize) -> HalfSpaceTrees {
    let names: Vec<String> = (0..d).map(|j| format!("f{j:02}")).collect();
    HalfSpaceTrees::new(
        HstParams::river_defaults(12),
        &names,
        Vec::<(String, (f64, f64))>::new(),
    )
    .expect("defaults are valid")
}

/// A model past its first window, so every iteration scores for real.
fn warmed(d: usize, rows: &[f64]) -> HalfSpaceTrees {
    let mut m = model(d);
    for x in rows.chunks(d).take(1000) {
        m.learn_one(x).unwrap();
    }
    m
}

fn bench_hst(c: &mut Criterion<ThreadCpuTime>) {
    for d in [10usize, 8] {
        let mut g = c.benchmark_group(format!("hst_T10_h8_w250_d{d}"));
        g.throughput(Throughput::Elements(N as u64));
        g.sample_size(30);
        let rows = unit_rows(N, d, 7 + d as u64);

        let mut m = warmed(d, &rows);
        g.bench_function("score_one_then_learn_one", |b| {
            b.iter(|| {
                let mut acc = 0u64;
                for x in rows.chunks_exact(d) {
                    acc += m.score_one(x).unwrap().raw.unwrap_or(0);
                    m.learn_one(x).unwrap();
                }
                black_box(acc)
            })
        });

        let mut m = warmed(d, &rows);
        g.bench_function("score_and_learn", |b| {
            b.iter(|| {
                let mut acc = 0u64;
                for x in rows.chunks_exact(d) {
                    acc += m.score_and_learn(x).unwrap().raw.unwrap_or(0);
                }
                black_box(acc)
            })
        });

        let mut m = warmed(d, &rows);
        let mut out = vec![Score::WARMUP; 250];
        g.bench_with_input(
            BenchmarkId::new("score_and_learn_batch", 250),
            &250,
            |b, &n| {
                b.iter(|| {
                    let mut acc = 0u64;
                    for xs in rows.chunks_exact(n * d) {
                        m.score_and_learn_batch(xs, &mut out).unwrap();
                        acc += out.iter().map(|s| s.raw.unwrap_or(0)).sum::<u64>();
                    }
                    black_box(acc)
                })
            },
        );

        // Pipelines on raw-scale inputs.
        let raw = raw_rows(N, d, 99 + d as u64);
        let minmax = || Scaler::MinMax(MinMaxScaler::new(d));
        let robust = || {
            let mut c = RobustConfig::new(d, 250);
            c.log1p = vec![true; d];
            Scaler::Robust(RobustScaler::new(c).unwrap())
        };
        for (name, scaler) in [("minmax", minmax()), ("robust_log1p", robust())] {
            let mut p = ScaledHst::new(scaler, model(d)).unwrap();
            for x in raw.chunks(d).take(1000) {
                p.score_and_learn(x).unwrap();
            }
            g.bench_function(format!("{name}_score_and_learn"), |b| {
                b.iter(|| {
                    let mut acc = 0u64;
                    for x in raw.chunks_exact(d) {
                        acc += p.score_and_learn(x).unwrap().raw.unwrap_or(0);
                    }
                    black_box(acc)
                })
            });
        }
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpuTime { wall: WallTime });
    targets = bench_hst
}
criterion_main!(benches);
