//! Half-Space Trees score+learn throughput, to set against River 0.26.1 measured in the same
//! session by `scripts/river_hst_bench.py` (same n_trees, height, window, d, same input
//! distributions). Throughput is per sample; every iteration continues the same model, so
//! pivots (every 250 samples) are included, as in River's timed loop.
//!
//!   cargo bench --bench hst
//!   /opt/streamml-venv/bin/python scripts/river_hst_bench.py --criterion target/criterion
//!
//! Inputs: `unit` = Beta(2, 5) per feature (concentrated in [0, 1], as River's baseline
//! uses for HST alone); `raw` = lognormal(0, 0.5) times 10^U(0,6) per column (window-style
//! counters of very different magnitudes, River's baseline for MinMaxScaler → HST).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use streamml_sensor::detect::hst::{HalfSpaceTrees, HstParams, ScaledHst, Score};
use streamml_sensor::detect::scale::{MinMaxScaler, RobustConfig, RobustScaler, Scaler};

/// Samples per criterion iteration (a multiple of the window: 40 pivots).
const N: usize = 10_000;

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

/// Warm the model past the first window so every iteration scores for real.
fn warmed(d: usize, rows: &[f64]) -> HalfSpaceTrees {
    let mut m = model(d);
    for x in rows.chunks(d).take(1000) {
        m.learn_one(x).unwrap();
    }
    m
}

fn bench_hst(c: &mut Criterion) {
    for d in [10usize, 8] {
        let mut g = c.benchmark_group(format!("hst_T10_h8_w250_d{d}"));
        g.throughput(Throughput::Elements(N as u64));
        g.sample_size(30);
        let rows = unit_rows(N, d, 7 + d as u64);

        let mut m = warmed(d, &rows);
        g.bench_function("score_one+learn_one", |b| {
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

        for batch in [16usize, 250] {
            let mut m = warmed(d, &rows);
            let mut out = vec![Score::WARMUP; batch];
            g.bench_with_input(
                BenchmarkId::new("score_and_learn_batch", batch),
                &batch,
                |b, &batch| {
                    b.iter(|| {
                        let mut acc = 0u64;
                        for xs in rows.chunks_exact(batch * d) {
                            m.score_and_learn_batch(xs, &mut out).unwrap();
                            acc += out.iter().map(|s| s.raw.unwrap_or(0)).sum::<u64>();
                        }
                        black_box(acc)
                    })
                },
            );
        }

        // Pipelines on raw-scale inputs.
        let raw = raw_rows(N, d, 99 + d as u64);
        let pipes: [(&str, Box<dyn Fn() -> Scaler>); 2] = [
            (
                "minmax",
                Box::new(move || Scaler::MinMax(MinMaxScaler::new(d))),
            ),
            (
                "robust_log1p",
                Box::new(move || {
                    let mut c = RobustConfig::new(d, 250);
                    c.log1p = vec![true; d];
                    Scaler::Robust(RobustScaler::new(c).unwrap())
                }),
            ),
        ];
        for (name, scaler) in pipes.iter() {
            let mut p = ScaledHst::new(scaler(), model(d)).unwrap();
            for x in raw.chunks(d).take(1000) {
                p.score_and_learn(x).unwrap();
            }
            g.bench_function(format!("{name}+score_and_learn"), |b| {
                b.iter(|| {
                    let mut acc = 0u64;
                    for x in raw.chunks_exact(d) {
                        acc += p.score_and_learn(x).unwrap().raw.unwrap_or(0);
                    }
                    black_box(acc)
                })
            });
            let mut out = vec![Score::WARMUP; 250];
            g.bench_function(format!("{name}+score_and_learn_batch/250"), |b| {
                b.iter(|| {
                    let mut acc = 0u64;
                    for xs in raw.chunks_exact(250 * d) {
                        p.score_and_learn_batch(xs, &mut out).unwrap();
                        acc += out.iter().map(|s| s.raw.unwrap_or(0)).sum::<u64>();
                    }
                    black_box(acc)
                })
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench_hst);
criterion_main!(benches);
