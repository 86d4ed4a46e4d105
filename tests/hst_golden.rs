//! Parity with River 0.26.1 on the golden vectors in `tests/data/hst-golden/`
//! (format and required assertions: that folder's README.md; semantics: hst.md).
//!
//! For each case: load River's exported trees, replay the stream score-then-learn through
//! every entry point (the reference `score_one`/`learn_one`, the fused `score_and_learn`,
//! the batched variant with irregular batch sizes, both counting modes, the MinMax pipeline),
//! and require every raw score equal, every score bit-identical, and the final masses,
//! counter and scaler state equal. Then rebuild the trees from the seed and require every
//! split bit-identical to River's, and replay once more with the rebuilt trees.
//!
//! The files are required: a missing file fails the test, it is not skipped.

use serde_json::Value;
use std::path::PathBuf;
use streamml_sensor::detect::hst::{Counting, HalfSpaceTrees, HstParams, ScaledHst, Score};
use streamml_sensor::detect::mt19937::Mt19937;
use streamml_sensor::detect::scale::{MinMaxScaler, Scaler};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/hst-golden")
}

struct Case {
    name: String,
    doc: Value,
    params: HstParams,
    names: Vec<String>,
    limits: Vec<(String, (f64, f64))>,
    splits: Vec<Vec<Option<(u32, f64)>>>,
    minmax: bool,
    xs: Vec<Vec<Option<f64>>>,
    scores: Vec<f64>,
    raws: Vec<Option<u64>>,
}

fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("expected an unsigned integer, got {v}"))
}
fn f(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("expected a number, got {v}"))
}

fn load(file: &str) -> Case {
    let path = golden_dir().join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("golden file {} is required: {e}", path.display());
    });
    let doc: Value = serde_json::from_str(&text).expect("golden file is valid JSON");
    assert_eq!(doc["format"], "hst-golden/1");

    // 1. The float parser must be correctly rounding (serde_json's float_roundtrip).
    for pc in doc["parse_check"].as_array().unwrap() {
        let bits = u64::from_str_radix(pc["bits"].as_str().unwrap(), 16).unwrap();
        assert_eq!(
            f(&pc["value"]).to_bits(),
            bits,
            "{file}: float parse is not bit-exact"
        );
    }

    let p = &doc["params"];
    let params = HstParams {
        n_trees: u(&p["n_trees"]) as u32,
        height: u(&p["height"]) as u32,
        window_size: u(&p["window_size"]) as u32,
        seed: u(&p["seed"]),
    };
    assert_eq!(params.max_score(), u(&p["max_score"]));
    assert_eq!(0.1 * params.window_size as f64, f(&p["size_limit"]));
    let names: Vec<String> = doc["feature_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect();
    let limits: Vec<(String, (f64, f64))> = match p["limits"].as_object() {
        None => Vec::new(),
        Some(m) => m
            .iter()
            .map(|(k, v)| (k.clone(), (f(&v[0]), f(&v[1]))))
            .collect(),
    };

    let tr = &doc["trees"];
    let nb = (1usize << params.height) - 1;
    assert_eq!(u(&tr["n_branches"]) as usize, nb);
    assert_eq!(u(&tr["n_nodes"]) as usize, 2 * nb + 1);
    let t = params.n_trees as usize;
    let mut splits = vec![vec![None; nb]; t];
    if tr["pruned"].as_bool().unwrap() {
        for (ti, nodes) in tr["nodes"].as_array().unwrap().iter().enumerate() {
            for n in nodes.as_array().unwrap() {
                splits[ti][u(&n[0]) as usize] = Some((u(&n[1]) as u32, f(&n[2])));
            }
        }
    } else {
        for (ti, split) in splits.iter_mut().enumerate() {
            for (i, s) in split.iter_mut().enumerate() {
                *s = Some((u(&tr["feature"][ti][i]) as u32, f(&tr["threshold"][ti][i])));
            }
        }
    }

    let xs: Vec<Vec<Option<f64>>> = doc["stream"]["x"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|v| v.as_f64()).collect())
        .collect();
    let scores: Vec<f64> = doc["scores"].as_array().unwrap().iter().map(f).collect();
    let raws: Vec<Option<u64>> = doc["raw"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64())
        .collect();
    assert_eq!(xs.len(), scores.len());
    assert_eq!(xs.len(), raws.len());
    let minmax = match doc["pipeline"].as_str().unwrap() {
        "hst" => false,
        "minmax_hst" => true,
        other => panic!("unknown pipeline {other}"),
    };
    Case {
        name: doc["case"].as_str().unwrap().to_owned(),
        doc,
        params,
        names,
        limits,
        splits,
        minmax,
        xs,
        scores,
        raws,
    }
}

impl Case {
    fn imported(&self) -> HalfSpaceTrees {
        HalfSpaceTrees::from_splits(self.params, &self.names, self.limits.clone(), &self.splits)
            .expect("exported trees load")
    }
    fn seeded(&self) -> HalfSpaceTrees {
        HalfSpaceTrees::new(self.params, &self.names, self.limits.clone()).expect("trees build")
    }
    fn complete(&self, k: usize) -> Option<Vec<f64>> {
        self.xs[k].iter().copied().collect()
    }

    /// Sample k's score against River's: raw equal, score bit-identical.
    fn check(&self, k: usize, s: Score, how: &str) {
        assert_eq!(
            s.raw, self.raws[k],
            "{} {how}: raw of sample {k}",
            self.name
        );
        assert_eq!(
            s.score.to_bits(),
            self.scores[k].to_bits(),
            "{} {how}: score of sample {k}: {} vs River {}",
            self.name,
            s.score,
            self.scores[k]
        );
        assert!((0.0..1.0).contains(&s.score));
    }

    /// Final counters and masses equal River's `final_state`.
    fn check_final(&self, m: &HalfSpaceTrees, how: &str) {
        let fs = &self.doc["final_state"];
        assert_eq!(
            m.counter() as u64,
            u(&fs["counter"]),
            "{} {how}: counter",
            self.name
        );
        assert_eq!(
            !m.is_warm(),
            fs["first_window"].as_bool().unwrap(),
            "{} {how}",
            self.name
        );
        for t in 0..self.params.n_trees as usize {
            let want = fs["masses"][t].as_array().unwrap();
            let mut want_it = want.iter().peekable();
            for i in 0..m.n_nodes() {
                let (l, r) = match want_it.peek() {
                    Some(e) if u(&e[0]) as usize == i => {
                        let e = want_it.next().unwrap();
                        (u(&e[1]) as u32, u(&e[2]) as u32)
                    }
                    _ => (0, 0),
                };
                assert_eq!(
                    (m.l_mass(t, i), m.r_mass(t, i)),
                    (l, r),
                    "{} {how}: tree {t} node {i} (l, r)",
                    self.name
                );
            }
            assert!(want_it.next().is_none());
        }
    }
}

/// Reference replay: `score_one` / `learn_one`, the partial-vector API for rows with missing
/// features; checks `raw_per_tree` when the file has it.
fn replay_reference(c: &Case, mut m: HalfSpaceTrees, how: &str) -> HalfSpaceTrees {
    let per_tree_ref = c.doc.get("raw_per_tree").and_then(|v| v.as_array());
    let mut per_tree = vec![0u64; c.params.n_trees as usize];
    for k in 0..c.xs.len() {
        let s = m
            .score_one_partial_per_tree(&c.xs[k], &mut per_tree)
            .unwrap();
        if let Some(complete) = c.complete(k) {
            assert_eq!(
                m.score_one(&complete).unwrap(),
                s,
                "{} {how}: sample {k}",
                c.name
            );
        }
        c.check(k, s, how);
        if let (Some(pt), Some(_)) = (per_tree_ref, s.raw) {
            let want: Vec<u64> = pt[k].as_array().unwrap().iter().map(u).collect();
            assert_eq!(
                per_tree, want,
                "{} {how}: raw_per_tree of sample {k}",
                c.name
            );
        }
        match c.complete(k) {
            Some(x) => m.learn_one(&x).unwrap(),
            None => m.learn_one_partial(&c.xs[k]).unwrap(),
        }
    }
    c.check_final(&m, how);
    m
}

/// Fused score+learn for complete rows, the two partial calls otherwise.
fn replay_fused(c: &Case, mut m: HalfSpaceTrees, how: &str) {
    for k in 0..c.xs.len() {
        let s = match c.complete(k) {
            Some(x) => m.score_and_learn(&x).unwrap(),
            None => {
                let s = m.score_one_partial(&c.xs[k]).unwrap();
                m.learn_one_partial(&c.xs[k]).unwrap();
                s
            }
        };
        c.check(k, s, how);
    }
    c.check_final(&m, how);
}

/// Batches of irregular sizes (crossing pivots) over runs of complete rows.
fn replay_batched(c: &Case, mut m: HalfSpaceTrees, how: &str) {
    let d = c.names.len();
    let sizes = [1usize, 7, 64, 3, 250, 33, 500, 2];
    let mut k = 0;
    let mut z = 0;
    while k < c.xs.len() {
        if c.complete(k).is_none() {
            let s = m.score_one_partial(&c.xs[k]).unwrap();
            m.learn_one_partial(&c.xs[k]).unwrap();
            c.check(k, s, how);
            k += 1;
            continue;
        }
        let mut n = 0;
        while n < sizes[z % sizes.len()] && k + n < c.xs.len() && c.complete(k + n).is_some() {
            n += 1;
        }
        z += 1;
        let rows: Vec<f64> = (k..k + n).flat_map(|j| c.complete(j).unwrap()).collect();
        assert_eq!(rows.len(), n * d);
        let mut out = vec![Score::WARMUP; n];
        m.score_and_learn_batch(&rows, &mut out).unwrap();
        for (j, s) in out.into_iter().enumerate() {
            c.check(k + j, s, how);
        }
        k += n;
    }
    c.check_final(&m, how);
}

/// River's pipeline by hand: score-time vector from the scaler before it learns, then the
/// scaler learns and HST learns the re-transformed vector. Checks `scaler_preview` and the
/// final scaler state.
fn replay_minmax_by_hand(c: &Case, mut m: HalfSpaceTrees) {
    let d = c.names.len();
    let mut sc = MinMaxScaler::new(d);
    let preview = c.doc["scaler_preview"].as_array().unwrap();
    let (mut a, mut b) = (vec![0.0; d], vec![0.0; d]);
    for k in 0..c.xs.len() {
        let x = c
            .complete(k)
            .expect("the MinMax case has no missing features");
        sc.transform(&x, &mut a);
        let s = m.score_one(&a).unwrap();
        c.check(k, s, "minmax by hand");
        sc.learn(&x);
        sc.transform(&x, &mut b);
        if let Some(pv) = preview.get(k) {
            assert_eq!(u(&pv["k"]) as usize, k);
            if k == 0 {
                assert!(pv["score_input"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|v| v.is_null()));
                assert!(
                    a.iter().all(|v| v.is_nan()),
                    "first score-time vector is NaN"
                );
            } else {
                let want: Vec<u64> = pv["score_input"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| f(v).to_bits())
                    .collect();
                assert_eq!(
                    a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want,
                    "score_input {k}"
                );
            }
            let want: Vec<u64> = pv["learn_input"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| f(v).to_bits())
                .collect();
            assert_eq!(
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want,
                "learn_input {k}"
            );
        }
        m.learn_one(&b).unwrap();
    }
    c.check_final(&m, "minmax by hand");
    check_scaler_final(c, &sc);
}

fn check_scaler_final(c: &Case, sc: &MinMaxScaler) {
    let fs = &c.doc["final_state"];
    let bits = |v: &Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| f(x).to_bits())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        sc.min().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        bits(&fs["scaler_min"])
    );
    assert_eq!(
        sc.max().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        bits(&fs["scaler_max"])
    );
}

/// The same through `ScaledHst`, per sample and batched.
fn replay_minmax_pipeline(c: &Case, m: HalfSpaceTrees, batched: bool) {
    let d = c.names.len();
    let mut p = ScaledHst::new(Scaler::MinMax(MinMaxScaler::new(d)), m).unwrap();
    let rows: Vec<f64> = (0..c.xs.len())
        .flat_map(|k| c.complete(k).unwrap())
        .collect();
    if batched {
        let mut k = 0;
        for (z, n) in [5usize, 100, 1, 64, 900, 17].iter().cycle().enumerate() {
            if k >= c.xs.len() {
                break;
            }
            let n = (*n + z % 3).min(c.xs.len() - k);
            let mut out = vec![Score::WARMUP; n];
            p.score_and_learn_batch(&rows[k * d..(k + n) * d], &mut out)
                .unwrap();
            for (j, s) in out.into_iter().enumerate() {
                c.check(k + j, s, "ScaledHst batch");
            }
            k += n;
        }
    } else {
        for k in 0..c.xs.len() {
            let s = p.score_and_learn(&rows[k * d..(k + 1) * d]).unwrap();
            c.check(k, s, "ScaledHst");
        }
    }
    c.check_final(p.hst(), "ScaledHst");
    match p.scaler() {
        Scaler::MinMax(sc) => check_scaler_final(c, sc),
        _ => unreachable!(),
    }
}

fn with_counting(mut m: HalfSpaceTrees, counting: Counting) -> HalfSpaceTrees {
    m.set_counting(counting);
    m
}

fn parity(file: &str) {
    let c = load(file);
    let other = match Counting::auto(&c.params) {
        Counting::LeafOnly => Counting::PathCounters,
        Counting::PathCounters => Counting::LeafOnly,
    };
    if c.minmax {
        replay_minmax_by_hand(&c, c.imported());
        replay_minmax_by_hand(&c, with_counting(c.imported(), other));
        replay_minmax_pipeline(&c, c.imported(), false);
        replay_minmax_pipeline(&c, c.imported(), true);
        replay_minmax_pipeline(&c, c.seeded(), true);
    } else {
        replay_reference(&c, c.imported(), "reference");
        replay_reference(
            &c,
            with_counting(c.imported(), other),
            "reference, other counting",
        );
        replay_fused(&c, c.imported(), "fused");
        replay_fused(
            &c,
            with_counting(c.imported(), other),
            "fused, other counting",
        );
        replay_batched(&c, c.imported(), "batched");
        replay_batched(
            &c,
            with_counting(c.imported(), other),
            "batched, other counting",
        );
        replay_fused(&c, c.seeded(), "fused, trees built from the seed");
    }
}

#[test]
fn parity_small_missing() {
    parity("case_small_missing.json");
}

#[test]
fn parity_default_minmax() {
    parity("case_default_minmax.json");
}

#[test]
fn parity_limits_d12() {
    parity("case_limits_d12.json");
}

#[test]
fn parity_deep_h15_pruned() {
    parity("case_deep_h15.json");
}

/// hst.md §10.3: the trees built from `params.seed` equal River's, split for split, and the
/// MT19937 reproduces `random.Random(seed)` (`rng_check`).
#[test]
fn trees_from_seed_equal_rivers() {
    for file in [
        "case_small_missing.json",
        "case_default_minmax.json",
        "case_limits_d12.json",
        "case_deep_h15.json",
    ] {
        let c = load(file);
        let rc = &c.doc["rng_check"];
        let mut g = Mt19937::from_python_seed(u(&rc["seed"]));
        let got: Vec<u64> = (0..4).map(|_| g.next_u32() as u64).collect();
        let want: Vec<u64> = rc["first_u32"].as_array().unwrap().iter().map(u).collect();
        assert_eq!(got, want, "{file}: first u32 outputs");
        let mut g = Mt19937::from_python_seed(u(&rc["seed"]));
        for b in rc["first_random_bits"].as_array().unwrap() {
            let want = u64::from_str_radix(b.as_str().unwrap(), 16).unwrap();
            assert_eq!(g.random().to_bits(), want, "{file}: random()");
        }

        let built = c.seeded();
        assert!(built.built_from_seed());
        let mut compared = 0;
        for (t, tree) in c.splits.iter().enumerate() {
            for (i, s) in tree.iter().enumerate() {
                if let Some((feat, thr)) = *s {
                    let (bf, bt) = built.split(t, i).expect("built trees are complete");
                    assert_eq!(bf, feat, "{file}: tree {t} branch {i} feature");
                    assert_eq!(
                        bt.to_bits(),
                        thr.to_bits(),
                        "{file}: tree {t} branch {i} threshold"
                    );
                    compared += 1;
                }
            }
        }
        assert!(compared > 0);
        eprintln!("{file}: {compared} splits identical to River's");
    }
}

/// The builder must see River's sorted feature order whatever order the caller uses: a
/// model over shuffled names routes the correspondingly shuffled vector identically.
#[test]
fn caller_feature_order_does_not_change_the_trees() {
    let c = load("case_limits_d12.json");
    let d = c.names.len();
    // reverse order: f9, f8, ..., f11, f10, f1, f0
    let perm: Vec<usize> = (0..d).rev().collect();
    let names: Vec<String> = perm.iter().map(|&j| c.names[j].clone()).collect();
    let mut a = c.seeded();
    let mut b = HalfSpaceTrees::new(c.params, &names, c.limits.clone()).unwrap();
    for k in 0..c.xs.len() {
        let x = c.complete(k).unwrap();
        let y: Vec<f64> = perm.iter().map(|&j| x[j]).collect();
        let sa = a.score_and_learn(&x).unwrap();
        let sb = b.score_and_learn(&y).unwrap();
        assert_eq!(sa, sb);
        c.check(k, sa, "sorted");
    }
}

/// "No allocation after construction": a counting allocator, armed only on this thread,
/// sees no allocation during thousands of score/learn calls across many pivots, for both
/// counting modes, every entry point and every scaler.
mod no_allocation {
    use super::*;
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;
    use streamml_sensor::detect::scale::{RobustConfig, RobustScaler};

    struct CountingAlloc;
    thread_local! {
        static ARMED: Cell<bool> = const { Cell::new(false) };
        static COUNT: Cell<u64> = const { Cell::new(0) };
    }
    // SAFETY: forwards to the system allocator; the bookkeeping touches only const-initialised
    // thread-locals (no allocation, no re-entry).
    unsafe impl GlobalAlloc for CountingAlloc {
        unsafe fn alloc(&self, l: Layout) -> *mut u8 {
            if ARMED.with(|a| a.get()) {
                COUNT.with(|c| c.set(c.get() + 1));
            }
            // SAFETY: same contract as ours.
            unsafe { System.alloc(l) }
        }
        unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
            // SAFETY: same contract as ours.
            unsafe { System.dealloc(p, l) }
        }
        unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
            if ARMED.with(|a| a.get()) {
                COUNT.with(|c| c.set(c.get() + 1));
            }
            // SAFETY: same contract as ours.
            unsafe { System.realloc(p, l, n) }
        }
    }
    #[global_allocator]
    static ALLOC: CountingAlloc = CountingAlloc;

    fn allocations_during(f: impl FnOnce()) -> u64 {
        COUNT.with(|c| c.set(0));
        ARMED.with(|a| a.set(true));
        f();
        ARMED.with(|a| a.set(false));
        COUNT.with(|c| c.get())
    }

    #[test]
    fn hot_path_does_not_allocate() {
        let c = load("case_default_minmax.json");
        let d = c.names.len();
        let rows: Vec<f64> = (0..c.xs.len())
            .flat_map(|k| c.complete(k).unwrap())
            .collect();
        let unit: Vec<f64> = rows.iter().map(|v| (v.abs() + 1.0).ln().fract()).collect();
        for counting in [Counting::LeafOnly, Counting::PathCounters] {
            let mut m = c.seeded();
            m.set_counting(counting);
            let mut out = vec![Score::WARMUP; 100];
            let n = allocations_during(|| {
                for x in unit.chunks(d).take(1500) {
                    m.score_and_learn(x).unwrap();
                    m.score_one(x).unwrap();
                    m.learn_one(x).unwrap();
                }
                for xs in unit.chunks(100 * d).take(10) {
                    m.score_and_learn_batch(xs, &mut out).unwrap();
                }
            });
            assert_eq!(n, 0, "{counting:?}: {n} allocations");
            assert!(m.is_warm());
        }
        let mut rc = RobustConfig::new(d, 250);
        rc.log1p = vec![true; d];
        for scaler in [
            Scaler::MinMax(MinMaxScaler::new(d)),
            Scaler::Robust(RobustScaler::new(rc).unwrap()),
        ] {
            let mut p = ScaledHst::new(scaler, c.seeded()).unwrap();
            let mut out = vec![Score::WARMUP; 64];
            let n = allocations_during(|| {
                for x in rows.chunks(d).take(2000) {
                    p.score_and_learn(x).unwrap();
                }
                for xs in rows.chunks_exact(64 * d).take(30) {
                    p.score_and_learn_batch(xs, &mut out).unwrap();
                }
            });
            assert_eq!(n, 0, "pipeline: {n} allocations");
        }
    }
}
