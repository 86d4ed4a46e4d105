#!/usr/bin/env python3
"""River 0.26.1 HalfSpaceTrees speed, for the side-by-side comparison with benches/hst.rs.

Same parameters and input distributions as the Rust bench: n_trees 10, height 8,
window 250, d = 10 and 8; HST alone on Beta(2, 5) inputs in [0, 1], and
Pipeline(MinMaxScaler, HST) on lognormal(0, 0.5) x 10^U(0,6) raw inputs. The timed loop is
`score_one(x); learn_one(x)` per sample on dicts built before the clock starts (River's
pivots included), exactly as hst-golden/river_hst_baseline.py does. The clock is this
thread's CPU time (time.thread_time), the same clock the Rust bench uses, because the
development machine is shared; wall time is printed too.

  /opt/streamml-venv/bin/python scripts/river_hst_bench.py [--samples 100000] [--repeat 3]
      [--criterion target/criterion]   # also print the Rust/River ratios from criterion

With --criterion it reads the Rust bench's estimates (mean CPU ns per 10 000-sample
iteration) and prints samples/s and the ratio to River for each row.
"""
import argparse
import gc
import json
import os
import platform
import time


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_inputs(n, d, raw, seed):
    import numpy as np
    rng = np.random.default_rng(seed)
    if raw:
        scale = 10.0 ** rng.uniform(0, 6, d)
        data = rng.lognormal(0.0, 0.5, (n, d)) * scale
    else:
        data = rng.beta(2.0, 5.0, (n, d))
    names = ["f%02d" % j for j in range(d)]
    return [dict(zip(names, map(float, row))) for row in data]


def run_once(xs, with_scaler, seed):
    from river import anomaly, compose, preprocessing
    hst = anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=seed)
    model = compose.Pipeline(preprocessing.MinMaxScaler(), hst) if with_scaler else hst
    score_one, learn_one = model.score_one, model.learn_one
    for x in xs[:1000]:  # past the first window, like the Rust bench's warm-up
        score_one(x)
        learn_one(x)
    gc.collect()
    gc.disable()
    try:
        c0, w0 = time.thread_time(), time.perf_counter()
        acc = 0.0
        for x in xs:
            acc += score_one(x)
            learn_one(x)
        cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
    finally:
        gc.enable()
    return cpu, wall, acc


# Rust bench rows (criterion group/function) to set against each River row.
RUST_ROWS = {
    False: ["score_and_learn", "score_and_learn_batch/250", "score_one_then_learn_one"],
    True: ["minmax_score_and_learn", "robust_log1p_score_and_learn"],
}


def rust_rate(crit_dir, d, bench):
    path = os.path.join(crit_dir, "hst_T10_h8_w250_d%d" % d, bench, "new", "estimates.json")
    try:
        with open(path) as f:
            est = json.load(f)
    except OSError:
        return None
    ns_per_iter = est["mean"]["point_estimate"]
    return 10_000 / (ns_per_iter * 1e-9)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3, help="best of N runs per row")
    ap.add_argument("--dims", default="10,8")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--criterion", help="criterion output dir of `cargo bench --bench hst`")
    a = ap.parse_args()

    import river
    print("River HalfSpaceTrees(n_trees=10, height=8, window_size=250): score_one + learn_one")
    print("python %s, river %s, cpu: %s, load average %s"
          % (platform.python_version(), river.__version__, cpu_model(),
             " ".join("%.2f" % v for v in os.getloadavg())))
    print("samples per run: %d, best of %d, clock: thread CPU time" % (a.samples, a.repeat))
    print()
    hdr = "| model | d | River samples/s (CPU) | River samples/s (wall) |"
    sep = "|---|---|---|---|"
    if a.criterion:
        hdr += " Rust row | Rust samples/s (CPU) | Rust / River |"
        sep += "---|---|---|"
    print(hdr)
    print(sep)
    for d in (int(v) for v in a.dims.split(",")):
        for with_scaler in (False, True):
            xs = make_inputs(a.samples, d, raw=with_scaler, seed=a.seed + d)
            best_cpu, best_wall = None, None
            for _ in range(a.repeat):
                cpu, wall, _acc = run_once(xs, with_scaler, a.seed)
                best_cpu = cpu if best_cpu is None else min(best_cpu, cpu)
                best_wall = wall if best_wall is None else min(best_wall, wall)
            name = ("MinMaxScaler -> HST, raw x" if with_scaler else "HST, x in [0,1] (Beta(2,5))")
            river_rate = a.samples / best_cpu
            row = "| %s | %d | %.0f | %.0f |" % (name, d, river_rate, a.samples / best_wall)
            if not a.criterion:
                print(row, flush=True)
                continue
            for bench in RUST_ROWS[with_scaler]:
                rate = rust_rate(a.criterion, d, bench)
                if rate is None:
                    print(row + " %s | (not measured) | |" % bench, flush=True)
                else:
                    print(row + " %s | %.0f | **%.0f×** |" % (bench, rate, rate / river_rate),
                          flush=True)


if __name__ == "__main__":
    main()
