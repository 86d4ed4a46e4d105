#!/usr/bin/env python3
"""River's usual pipeline on the sensor's window feature stream: the reference figure.

Reads the CSV written by `streamml-sensor eval-windows --features-csv FILE` (columns: seed,
window_start_ns, label, kind, the sensor's score, then one column per window feature, raw
values) and, for every
seed in it, runs River 0.26.1's `Pipeline(MinMaxScaler(), HalfSpaceTrees(seed=seed))` with
River's defaults (10 trees, height 8, window_size 250), score_one then learn_one per window
(prequential, as hst.md §7), and computes the ROC-AUC over the windows after the HST
warm-up (index >= 250), exactly as the sensor's evaluation does.

    /opt/streamml-venv/bin/python scripts/river_window_auc.py FEATURES.csv [--out FILE.json]
"""
import argparse
import csv
import json
import sys


def auc(scores, labels):
    """ROC-AUC by the rank-sum (Mann-Whitney U), ties get the average rank."""
    pairs = sorted(zip(scores, labels), key=lambda p: p[0])
    n = len(pairs)
    ranks = [0.0] * n
    i = 0
    while i < n:
        j = i
        while j + 1 < n and pairs[j + 1][0] == pairs[i][0]:
            j += 1
        r = (i + j) / 2.0 + 1.0
        for k in range(i, j + 1):
            ranks[k] = r
        i = j + 1
    pos = sum(1 for _, l in pairs if l)
    neg = n - pos
    if pos == 0 or neg == 0:
        return float("nan")
    rsum = sum(r for r, (_, l) in zip(ranks, pairs) if l)
    return (rsum - pos * (pos + 1) / 2.0) / (pos * neg)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("features_csv")
    ap.add_argument("--out")
    ap.add_argument("--warmup", type=int, default=250)
    a = ap.parse_args()
    from river import anomaly, compose, preprocessing
    import river

    rows = {}
    with open(a.features_csv) as f:
        r = csv.DictReader(f)
        feats = [c for c in r.fieldnames if c not in ("seed", "window_start_ns", "label", "kind", "score")]
        for row in r:
            rows.setdefault(int(row["seed"]), []).append(row)
    result = {"river": river.__version__, "pipeline": "MinMaxScaler -> HalfSpaceTrees(n_trees=10, height=8, window_size=250)",
              "features": feats, "warmup": a.warmup, "seeds": {}}
    for seed, rs in sorted(rows.items()):
        model = compose.Pipeline(preprocessing.MinMaxScaler(), anomaly.HalfSpaceTrees(seed=seed))
        scores, labels, kinds = [], [], []
        for i, row in enumerate(rs):
            x = {k: float(row[k]) for k in feats}
            s = model.score_one(x)
            model.learn_one(x)
            if i >= a.warmup:
                scores.append(s)
                labels.append(row["label"] == "1")
                kinds.append(row["kind"])
        per_kind = {}
        for k in sorted(set(kinds) - {"benign"}):
            sel = [(s, l) for s, l, kk in zip(scores, labels, kinds) if kk in (k, "benign")]
            per_kind[k] = auc([s for s, _ in sel], [l for _, l in sel])
        result["seeds"][str(seed)] = {"auc": auc(scores, labels), "windows": len(scores),
                                      "anomalous": sum(labels), "per_kind": per_kind}
    aucs = [v["auc"] for v in result["seeds"].values()]
    result["mean_auc"] = sum(aucs) / len(aucs)
    out = json.dumps(result, indent=1, sort_keys=True)
    if a.out:
        with open(a.out, "w") as f:
            f.write(out + "\n")
    print(out)


if __name__ == "__main__":
    sys.exit(main())
