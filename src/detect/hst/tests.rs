use super::*;
use crate::detect::scale::{MinMaxScaler, RobustConfig, RobustScaler, Scaler};

/// splitmix64: a tiny deterministic generator for test streams.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// River's algorithm written plainly (the shape of `hst_golden.py verify`): per-node
/// `l` and `r`, the stop test on `r < 0.1·w`, the pivot copying every node.
struct Naive {
    h: u32,
    w: u32,
    feat: Vec<Vec<u32>>,
    thr: Vec<Vec<f64>>,
    l: Vec<Vec<u32>>,
    r: Vec<Vec<u32>>,
    counter: u32,
    first: bool,
    max_score: u64,
}

impl Naive {
    fn of(m: &HalfSpaceTrees) -> Naive {
        let p = m.params();
        let t = p.n_trees as usize;
        let nb = m.n_branches();
        Naive {
            h: p.height,
            w: p.window_size,
            feat: (0..t)
                .map(|t| (0..nb).map(|i| m.split(t, i).unwrap().0).collect())
                .collect(),
            thr: (0..t)
                .map(|t| (0..nb).map(|i| m.split(t, i).unwrap().1).collect())
                .collect(),
            l: vec![vec![0; m.n_nodes()]; t],
            r: vec![vec![0; m.n_nodes()]; t],
            counter: 0,
            first: true,
            max_score: p.max_score(),
        }
    }
    fn child(&self, t: usize, i: usize, x: &[Option<f64>]) -> usize {
        match x[self.feat[t][i] as usize] {
            Some(v) => {
                if v < self.thr[t][i] {
                    2 * i + 1
                } else {
                    2 * i + 2
                }
            }
            None => {
                if self.l[t][2 * i + 1] < self.l[t][2 * i + 2] {
                    2 * i + 2
                } else {
                    2 * i + 1
                }
            }
        }
    }
    fn score(&self, x: &[Option<f64>]) -> Score {
        if self.first {
            return Score::WARMUP;
        }
        let size_limit = 0.1 * self.w as f64;
        let mut total = 0.0f64; // River accumulates in a float
        for t in 0..self.feat.len() {
            let (mut i, mut pow) = (0usize, 1u64);
            let mut s = 0u64;
            let mut stopped = false;
            for _ in 0..self.h {
                let r = self.r[t][i];
                s += r as u64 * pow;
                if (r as f64) < size_limit {
                    stopped = true;
                    break;
                }
                i = self.child(t, i, x);
                pow *= 2;
            }
            if !stopped {
                s += self.r[t][i] as u64 * pow;
            }
            total += s as f64;
        }
        Score {
            raw: Some(total as u64),
            score: 1.0 - total / self.max_score as f64,
        }
    }
    fn learn(&mut self, x: &[Option<f64>]) {
        for t in 0..self.feat.len() {
            let mut i = 0;
            for _ in 0..self.h {
                self.l[t][i] += 1;
                i = self.child(t, i, x);
            }
            self.l[t][i] += 1;
        }
        self.counter += 1;
        if self.counter == self.w {
            for t in 0..self.feat.len() {
                self.r[t] = std::mem::replace(&mut self.l[t], vec![0; self.r[t].len()]);
            }
            self.counter = 0;
            self.first = false;
        }
    }
}

fn names(d: usize) -> Vec<String> {
    (0..d).map(|j| format!("f{j}")).collect()
}

fn model(t: u32, h: u32, w: u32, d: usize, seed: u64) -> HalfSpaceTrees {
    let p = HstParams {
        n_trees: t,
        height: h,
        window_size: w,
        seed,
    };
    HalfSpaceTrees::new(p, &names(d), Vec::<(String, (f64, f64))>::new()).unwrap()
}

/// A stream over [0,1]^d: a tight cluster, a wide one, outliers outside [0,1], exact
/// threshold ties, NaN, and (if `missing`) absent features.
fn sample(rng: &mut Rng, m: &HalfSpaceTrees, missing: bool) -> Vec<Option<f64>> {
    let d = m.n_features();
    let kind = rng.below(20);
    let mut x: Vec<Option<f64>> = (0..d)
        .map(|j| {
            Some(match kind {
                0..=11 => 0.3 + 0.1 * rng.unit() + 0.02 * j as f64,
                12..=16 => rng.unit(),
                _ => -0.5 + 2.0 * rng.unit(),
            })
        })
        .collect();
    if rng.below(8) == 0 {
        // a value exactly on a split
        let t = rng.below(m.params().n_trees as u64) as usize;
        let i = rng.below(m.n_branches() as u64) as usize;
        let (f, thr) = m.split(t, i).unwrap();
        x[f as usize] = Some(thr);
    }
    if rng.below(30) == 0 {
        x[rng.below(d as u64) as usize] = Some(f64::NAN);
    }
    if missing && rng.below(6) == 0 {
        for _ in 0..1 + rng.below(2) {
            x[rng.below(d as u64) as usize] = None;
        }
    }
    x
}

fn check_invariants(m: &HalfSpaceTrees) {
    let p = m.params();
    for t in 0..p.n_trees as usize {
        for i in 0..m.n_branches() {
            assert_eq!(
                m.l_mass(t, i),
                m.l_mass(t, 2 * i + 1) + m.l_mass(t, 2 * i + 2)
            );
            assert_eq!(
                m.r_mass(t, i),
                m.r_mass(t, 2 * i + 1) + m.r_mass(t, 2 * i + 2)
            );
        }
        assert_eq!(m.l_mass(t, 0), m.counter());
        assert_eq!(m.r_mass(t, 0), if m.is_warm() { p.window_size } else { 0 });
    }
}

fn same_state(a: &HalfSpaceTrees, n: &Naive) {
    assert_eq!(a.counter(), n.counter);
    assert_eq!(a.is_warm(), !n.first);
    for t in 0..n.l.len() {
        for i in 0..a.n_nodes() {
            assert_eq!(
                (a.l_mass(t, i), a.r_mass(t, i)),
                (n.l[t][i], n.r[t][i]),
                "tree {t} node {i}"
            );
        }
    }
}

/// Every entry point, both counting modes, against the naive model, on streams with
/// missing features, NaN, ties and outliers; invariants and the score range checked.
#[test]
fn matches_naive_model_on_random_streams() {
    for (case, &(t, h, w, d)) in [
        (3, 4, 10, 5),
        (5, 6, 37, 3),
        (2, 9, 8, 2),
        (4, 3, 1, 6),
        (7, 5, 100, 4),
    ]
    .iter()
    .enumerate()
    {
        for counting in [Counting::LeafOnly, Counting::PathCounters] {
            for missing in [false, true] {
                let mut rng = Rng(case as u64 * 1000 + missing as u64);
                let mut m = model(t, h, w, d, 17 + case as u64);
                m.set_counting(counting);
                let mut n = Naive::of(&m);
                let top = 1.0 - 1.0 / ((1u64 << (h + 1)) - 1) as f64;
                for k in 0..(w as usize * 7 + 3) {
                    let x = sample(&mut rng, &m, missing);
                    let want = n.score(&x);
                    let complete: Option<Vec<f64>> = x.iter().copied().collect();
                    let got = match (&complete, k % 3) {
                        (Some(c), 0) => m.score_and_learn(c).unwrap(),
                        (Some(c), 1) => {
                            let s = m.score_one(c).unwrap();
                            assert_eq!(m.score_one(c).unwrap(), s, "score_one has no side effect");
                            m.learn_one(c).unwrap();
                            s
                        }
                        _ => {
                            let s = m.score_one_partial(&x).unwrap();
                            m.learn_one_partial(&x).unwrap();
                            s
                        }
                    };
                    n.learn(&x);
                    assert_eq!(got, want, "case {case} {counting:?} sample {k}");
                    assert!(got.score >= 0.0 && got.score <= top);
                    if k < w as usize {
                        assert_eq!(got, Score::WARMUP, "warm-up covers the first w samples");
                    }
                    if k % 17 == 0 {
                        check_invariants(&m);
                    }
                }
                same_state(&m, &n);
                check_invariants(&m);
            }
        }
    }
}

/// Batches (any size, across pivots) equal per-sample calls.
#[test]
fn batch_equals_per_sample() {
    for counting in [Counting::LeafOnly, Counting::PathCounters] {
        let mut rng = Rng(5);
        let mut a = model(10, 8, 50, 6, 3);
        a.set_counting(counting);
        let mut b = a.clone();
        let d = 6;
        let mut k = 0;
        while k < 700 {
            let n = 1 + rng.below(120) as usize;
            let rows: Vec<f64> = (0..n)
                .flat_map(|_| sample(&mut rng, &a, false))
                .map(|v| v.unwrap())
                .collect();
            let mut out = vec![Score::WARMUP; n];
            a.score_and_learn_batch(&rows, &mut out).unwrap();
            for (j, row) in rows.chunks(d).enumerate() {
                assert_eq!(b.score_and_learn(row).unwrap(), out[j]);
            }
            k += n;
        }
    }
}

#[test]
fn pivot_happens_exactly_at_the_wth_learn() {
    let mut m = model(2, 3, 5, 2, 1);
    for k in 0..5 {
        assert!(!m.is_warm());
        assert_eq!(m.counter(), k);
        m.learn_one(&[0.5, 0.5]).unwrap();
    }
    assert!(m.is_warm());
    assert_eq!(m.counter(), 0);
    assert_eq!((m.r_mass(0, 0), m.l_mass(0, 0)), (5, 0));
    // All mass lies on the point's path in both trees: raw = 2·5·(1+2+4+8) = max_score.
    let s = m.score_one(&[0.5, 0.5]).unwrap();
    assert_eq!(
        s,
        Score {
            raw: Some(150),
            score: 0.0
        }
    );
}

#[test]
fn value_on_threshold_and_nan_go_right() {
    let m = model(1, 1, 1, 1, 9);
    let (f, thr) = m.split(0, 0).unwrap();
    assert_eq!(f, 0);
    for (v, leaf) in [
        (thr, 2),
        (f64::NAN, 2),
        (thr - 1e-12, 1),
        (f64::INFINITY, 2),
    ] {
        let mut m = m.clone();
        m.learn_one(&[v]).unwrap();
        assert_eq!(m.r_mass(0, leaf), 1, "value {v} goes to node {leaf}");
    }
}

#[test]
fn missing_feature_follows_larger_l_ties_left() {
    let mut m = model(1, 1, 100, 1, 9);
    let (_, thr) = m.split(0, 0).unwrap();
    m.learn_one_partial(&[None]).unwrap(); // tie 0/0: left
    assert_eq!(m.l_mass(0, 1), 1);
    m.learn_one(&[thr]).unwrap(); // right: now 1/1
    m.learn_one_partial(&[None]).unwrap(); // tie: left
    assert_eq!((m.l_mass(0, 1), m.l_mass(0, 2)), (2, 1));
    m.learn_one(&[thr]).unwrap();
    m.learn_one(&[thr]).unwrap(); // 2/3
    m.learn_one_partial(&[None]).unwrap(); // right is larger
    assert_eq!((m.l_mass(0, 1), m.l_mass(0, 2)), (2, 4));
}

#[test]
fn limits_validation_and_extra_keys() {
    let p = HstParams::river_defaults(1);
    let bad = [
        (0.0, 0.0),
        (1.0, 0.0),
        (f64::NAN, 1.0),
        (0.0, f64::INFINITY),
    ];
    for (lo, hi) in bad {
        let e = HalfSpaceTrees::new(p, &["a", "b"], [("a", (lo, hi))]).unwrap_err();
        assert!(e.to_string().contains("\"a\""), "{e}");
    }
    // An entry for a feature the model does not have is ignored, as in River.
    let with = HalfSpaceTrees::new(p, &["a", "b"], [("zz", (0.0, 50.0))]).unwrap();
    let without = HalfSpaceTrees::new(p, &["a", "b"], Vec::<(&str, (f64, f64))>::new()).unwrap();
    for i in 0..with.n_branches() {
        assert_eq!(with.split(3, i), without.split(3, i));
    }
    assert_eq!(
        HalfSpaceTrees::new(p, &["a", "a"], Vec::<(&str, (f64, f64))>::new()).unwrap_err(),
        HstError::DuplicateFeature("a".into())
    );
    assert_eq!(
        HalfSpaceTrees::new(p, &[] as &[&str], Vec::<(&str, (f64, f64))>::new()).unwrap_err(),
        HstError::NoFeatures
    );
}

#[test]
fn params_validation_names_the_key() {
    let ok = HstParams::river_defaults(1);
    for (p, key) in [
        (HstParams { height: 0, ..ok }, "height"),
        (HstParams { n_trees: 0, ..ok }, "n_trees"),
        (
            HstParams {
                window_size: 0,
                ..ok
            },
            "window_size",
        ),
        (HstParams { height: 21, ..ok }, "height"),
        (
            HstParams {
                window_size: 1 << 30,
                height: 8,
                ..ok
            },
            "window_size",
        ),
    ] {
        let e = p.validate().unwrap_err().to_string();
        assert!(e.starts_with(key), "{e}");
    }
}

#[test]
fn wrong_length_is_an_error() {
    let mut m = model(2, 3, 5, 3, 1);
    let e = HstError::Dim {
        expected: 3,
        got: 2,
    };
    assert_eq!(m.score_one(&[0.1, 0.2]).unwrap_err(), e);
    assert_eq!(m.score_and_learn(&[0.1, 0.2]).unwrap_err(), e);
    assert_eq!(m.learn_one_partial(&[None, None]).unwrap_err(), e);
    let mut out = [Score::WARMUP; 2];
    assert!(m.score_and_learn_batch(&[0.0; 5], &mut out).is_err());
}

#[test]
fn deterministic_by_seed() {
    let mut rng = Rng(1);
    let rows: Vec<Vec<f64>> = (0..1200)
        .map(|_| {
            (0..5)
                .map(|j| 0.2 + 0.3 * rng.unit() + 0.05 * j as f64)
                .collect()
        })
        .collect();
    let run = |seed| {
        let mut m = model(10, 8, 250, 5, seed);
        rows.iter()
            .map(|x| m.score_and_learn(x).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
    let (a, b) = (model(10, 8, 250, 5, 7), model(10, 8, 250, 5, 8));
    assert!((0..a.n_branches()).any(|i| a.split(0, i) != b.split(0, i)));
}

/// Points far from the learned mass score above typical ones.
#[test]
fn far_points_score_above_typical_ones() {
    let mut rng = Rng(11);
    let d = 4;
    let mut m = model(10, 8, 250, d, 42);
    let typical = |rng: &mut Rng| (0..d).map(|_| 0.4 + 0.1 * rng.unit()).collect::<Vec<_>>();
    for _ in 0..750 {
        m.learn_one(&typical(&mut rng)).unwrap();
    }
    let mut typ: Vec<f64> = (0..500)
        .map(|_| m.score_one(&typical(&mut rng)).unwrap().score)
        .collect();
    typ.sort_by(f64::total_cmp);
    let p99 = typ[495];
    for far in [
        [0.02, 0.45, 0.45, 0.45],
        [0.97, 0.97, 0.03, 0.5],
        [0.9; 4],
        [0.05; 4],
    ] {
        let s = m.score_one(&far).unwrap().score;
        assert!(s > p99, "far point {far:?} scored {s}, typical p99 {p99}");
    }
}

fn pipeline(scaler: Scaler, seed: u64, d: usize) -> ScaledHst {
    let m = model(10, 8, 100, d, seed);
    ScaledHst::new(scaler, m).unwrap()
}

fn raw_rows(n: usize, d: usize, seed: u64) -> Vec<f64> {
    let mut rng = Rng(seed);
    (0..n * d)
        .map(|i| {
            let base = 10f64.powi((i % d) as i32);
            let spike = if rng.below(97) == 0 { 50.0 } else { 1.0 };
            base * (1.0 + rng.unit()) * spike
        })
        .collect()
}

#[test]
fn last_scaled_is_the_score_time_vector() {
    let d = 4;
    let rows = raw_rows(300, d, 8);
    let mut p = pipeline(Scaler::MinMax(MinMaxScaler::new(d)), 3, d);
    let mut want = vec![0.0; d];
    for x in rows.chunks(d) {
        p.scaler().transform(x, &mut want);
        p.score_and_learn(x).unwrap();
        assert_eq!(
            p.last_scaled()
                .iter()
                .map(|v| v.to_bits())
                .collect::<Vec<_>>(),
            want.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}

/// Checkpoint at k (inside a window, at a boundary, in warm-up), restore, continue:
/// bit-identical to the uninterrupted run, for every scaler.
#[test]
fn checkpoint_round_trip_is_bit_exact() {
    let d = 5;
    let rows = raw_rows(900, d, 3);
    let scalers = || {
        let mut rc = RobustConfig::new(d, 100);
        rc.log1p = vec![true, false, true, true, false];
        [
            Scaler::Identity,
            Scaler::MinMax(MinMaxScaler::new(d)),
            Scaler::Robust(RobustScaler::new(rc).unwrap()),
        ]
    };
    for (si, scaler) in scalers().into_iter().enumerate() {
        let mut full = pipeline(scaler.clone(), 5, d);
        let want: Vec<Score> = rows
            .chunks(d)
            .map(|x| full.score_and_learn(x).unwrap())
            .collect();
        for cut in [0usize, 37, 100, 300, 451, 899] {
            let mut a = pipeline(scaler.clone(), 5, d);
            for x in rows[..cut * d].chunks(d) {
                a.score_and_learn(x).unwrap();
            }
            let bytes = a.to_bytes();
            let mut b = ScaledHst::from_bytes(&bytes).unwrap();
            assert_eq!(b.to_bytes(), bytes, "re-encoding is stable");
            for (k, x) in rows[cut * d..].chunks(d).enumerate() {
                let s = b.score_and_learn(x).unwrap();
                assert_eq!(
                    s.raw,
                    want[cut + k].raw,
                    "scaler {si} cut {cut} sample {}",
                    cut + k
                );
                assert_eq!(s.score.to_bits(), want[cut + k].score.to_bits());
            }
            assert_eq!(b.to_bytes(), full.to_bytes());
        }
    }
}

#[test]
fn checkpoint_through_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.ckpt");
    let d = 3;
    let mut a = pipeline(Scaler::MinMax(MinMaxScaler::new(d)), 1, d);
    let rows = raw_rows(260, d, 1);
    for x in rows.chunks(d) {
        a.score_and_learn(x).unwrap();
    }
    a.save(&path).unwrap();
    let b = ScaledHst::load(&path).unwrap();
    assert_eq!(a.to_bytes(), b.to_bytes());
    let e = ScaledHst::load(&dir.path().join("nope.ckpt"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.ckpt"), "{e}");
    std::fs::write(&path, b"# not a checkpoint\n").unwrap();
    let e = ScaledHst::load(&path).unwrap_err().to_string();
    assert!(e.contains("model.ckpt") && e.contains("bad magic"), "{e}");
    assert!(!e.contains('\n'));
}

/// Every truncation and many corruptions are clean errors, never panics. A corrupted
/// byte with a fixed-up checksum still fails validation or yields a consistent model.
#[test]
fn bad_checkpoints_are_errors_not_panics() {
    let d = 3;
    let mut rc = RobustConfig::new(d, 20);
    rc.log1p = vec![true; d];
    // A small model: the decoder paths are the same, and 3000 decodes stay quick.
    let mut a = ScaledHst::new(
        Scaler::Robust(RobustScaler::new(rc).unwrap()),
        model(3, 5, 20, d, 2),
    )
    .unwrap();
    for x in raw_rows(130, d, 2).chunks(d) {
        a.score_and_learn(x).unwrap();
    }
    let good = a.to_bytes();
    for n in 0..good.len() {
        let e = ScaledHst::from_bytes(&good[..n]).unwrap_err().to_string();
        assert!(!e.contains('\n') && !e.is_empty());
    }
    let mut rng = Rng(4);
    for _ in 0..3000 {
        let mut v = good.clone();
        let at = rng.below(v.len() as u64) as usize;
        v[at] ^= 1 << rng.below(8);
        assert!(
            ScaledHst::from_bytes(&v).is_err(),
            "a flipped bit at {at} is caught by the CRC"
        );
        // Recompute the CRC so decoding goes past the checksum into the field checks.
        let body = v.len() - 4;
        let crc = crate::detect::checkpoint::crc32(&v[..body]);
        v[body..].copy_from_slice(&crc.to_le_bytes());
        if let Ok(mut m) = ScaledHst::from_bytes(&v) {
            // Accepted only if the model is self-consistent and usable.
            check_invariants(m.hst());
            m.score_and_learn(&[1.0, 2.0, 3.0]).unwrap();
        }
    }
}
