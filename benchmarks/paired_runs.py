"""Paired comparison of two settings over several seeds, from `accuracy.py` runs' `heldout.csv`.

    python benchmarks/paired_runs.py --a runs/x05_s0 runs/x05_s1 runs/x05_s2 --b runs/x0_s0 runs/x0_s1 runs/x0_s2

The i-th run of ``--a`` and of ``--b`` share a seed (and held-out pairs).  Prints each seed's medians and
its paired test, then the pooled ones: every (seed, pair) as one paired observation, and each pair's
mean over the seeds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from napari_labelreg.evaluation.statistics import paired_wilcoxon

METRICS = (("tre_mm", -1), ("dice", 1))  # sign: +1 when larger is better


def compare(a: pd.DataFrame, b: pd.DataFrame, label: str) -> None:
    print(f"{label}: a {a.tre_mm.median():.2f} / {a.tre_mm.mean():.2f} mm, DSC {a.dice.median():.3f}; "
          f"b {b.tre_mm.median():.2f} / {b.tre_mm.mean():.2f} mm, DSC {b.dice.median():.3f}")
    for metric, sign in METRICS:
        t = paired_wilcoxon(a, b, metric)
        joined = a.merge(b, on="pair", suffixes=("_a", "_b"))
        better = int((sign * (joined[f"{metric}_a"] - joined[f"{metric}_b"]) > 0).sum())
        print(f"  {metric}: a better on {better} of {t['pairs']}, median a - b {t['median_difference']:+.3f} "
              f"[{t['ci_low']:+.3f}, {t['ci_high']:+.3f}], Wilcoxon p = {t['p_value']:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", nargs="+", required=True, help="run folders of setting a, one per seed")
    p.add_argument("--b", nargs="+", required=True, help="run folders of setting b, the same seeds in order")
    args = p.parse_args()
    if len(args.a) != len(args.b):
        raise SystemExit("give as many --b runs as --a runs, seed for seed")
    frames = []
    for i, (run_a, run_b) in enumerate(zip(args.a, args.b)):
        a, b = (pd.read_csv(Path(r) / "heldout.csv") for r in (run_a, run_b))
        compare(a, b, f"{Path(run_a).name} against {Path(run_b).name}")
        frames.append((a.assign(pair=f"{i}:" + a.pair), b.assign(pair=f"{i}:" + b.pair)))
    pooled_a, pooled_b = (pd.concat(side, ignore_index=True) for side in zip(*frames))
    compare(pooled_a, pooled_b, "pooled (seed, pair)")
    mean = lambda f: f.assign(pair=f.pair.str.split(":").str[1]).groupby("pair", as_index=False).mean(  # noqa: E731
        numeric_only=True)
    compare(mean(pooled_a), mean(pooled_b), "each pair's mean over the seeds")


if __name__ == "__main__":
    main()
