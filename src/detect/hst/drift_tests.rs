use super::*;
use crate::detect::scale::{MinMaxScaler, RobustConfig, RobustScaler, Scaler};

/// Six window-style counters with ±20 % noise; samples 1000..1005 are a flood (packets
/// ×10, bytes ×6). Scores for tree seeds 1..=3 with the given scaler.
fn flood_scores(scaler: impl Fn() -> Scaler) -> Vec<Vec<f64>> {
    let d = 6;
    let mut st = 99u64;
    let mut unit = move || {
        st = st
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (st >> 11) as f64 / (1u64 << 53) as f64
    };
    let base = [2000.0, 1.2e6, 600.0, 40.0, 35.0, 130.0];
    let rows: Vec<Vec<f64>> = (0..1600)
        .map(|k| {
            let mut x: Vec<f64> = base.iter().map(|b| b * (0.8 + 0.4 * unit())).collect();
            if (1000..1005).contains(&k) {
                x[0] *= 10.0;
                x[1] *= 6.0;
            }
            x
        })
        .collect();
    let names: Vec<String> = (0..d).map(|j| format!("f{j}")).collect();
    (1..=3)
        .map(|seed| {
            let hst = HalfSpaceTrees::new(
                HstParams::river_defaults(seed),
                &names,
                Vec::<(String, (f64, f64))>::new(),
            )
            .unwrap();
            let mut p = ScaledHst::new(scaler(), hst).unwrap();
            rows.iter()
                .map(|x| p.score_and_learn(x).unwrap().score)
                .collect()
        })
        .collect()
}

fn quantile(a: &[f64], q: f64) -> f64 {
    let mut v = a.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q) as usize]
}

/// hst.md §8/§13: after one extreme, River's MinMax rescales everything and normal
/// samples change score for windows; the robust scaler keeps normal scores where they
/// were and still puts the flood above the normal 99th percentile.
#[test]
fn robust_scaler_does_not_drift_after_an_extreme() {
    let robust = flood_scores(|| {
        let mut c = RobustConfig::new(6, 250);
        c.log1p = vec![true; 6];
        Scaler::Robust(RobustScaler::new(c).unwrap())
    });
    for (seed, s) in robust.iter().enumerate() {
        let before = quantile(&s[750..1000], 0.5);
        let p99 = quantile(&s[750..1000], 0.99);
        for (lo, hi) in [(1005, 1105), (1250, 1350), (1500, 1600)] {
            let after = quantile(&s[lo..hi], 0.5);
            assert!(
                (after - before).abs() < 0.03,
                "seed {seed}: normal median {before:.3} -> {after:.3} in {lo}..{hi}"
            );
        }
        for (k, &v) in s[1000..1005].iter().enumerate() {
            assert!(
                v > p99 + 0.1,
                "seed {seed}: flood sample {k} scored {v:.3}, normal p99 {p99:.3}"
            );
        }
    }
    // The failure mode being fixed: with MinMax the normal median moves after the flood.
    let minmax = flood_scores(|| Scaler::MinMax(MinMaxScaler::new(6)));
    for (seed, s) in minmax.iter().enumerate() {
        let before = quantile(&s[750..1000], 0.5);
        let after = quantile(&s[1250..1350], 0.5);
        assert!(
            (after - before).abs() > 0.03,
            "seed {seed}: minmax {before:.3} -> {after:.3}"
        );
    }
}
