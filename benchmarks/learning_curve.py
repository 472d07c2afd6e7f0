"""Accuracy against training budget: the gland rows of accuracy.py runs trained for different minutes.

    python benchmarks/accuracy.py --minutes 15 --seed 4 --out runs/cpu15_s4      # one per budget (alone)
    python benchmarks/gland_rows.py runs/cpu15_s4                                 # its rows, kept in the run
    python benchmarks/learning_curve.py runs/cpu15_s4 runs/cpu30_s4 runs/cpu60_s4 --figure benchmarks/learning_curve.png

Reads only what those wrote (``config.json``, ``log.csv``, ``machine.json``, ``heldout_<row>.csv``,
``heldout_segmenters.csv``): no registration runs here.  Prints a markdown table, one line per run: the budget,
the steps it bought on its machine, held-out landmark TRE median (mm) and gland DSC median of each row, each
row's pairs better than the gland-centroid reference, and the segmenters' Dice.  ``--figure``: median TRE
against minutes, one line per row, the reference dashed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

ROWS = {"none": "(d) no fit", "predicted": "(c) both predicted", "moving-given": "(b) MR given",
        "given": "(a) both given"}


def steps(run: Path) -> str:
    log = pd.read_csv(run / "log.csv")
    return ", ".join(str(int(log.step[log.stage == stage].max())) for stage in log.stage.unique())


def point(run: Path) -> dict:
    config = json.loads((run / "config.json").read_text())
    machine = run / "machine.json"
    reference = pd.read_csv(run / "heldout_centroid.csv")
    out = {"run": run.name, "minutes": config["minutes"], "seed": config["seed"], "steps": steps(run),
           "cpu": json.loads(machine.read_text())["torch_capability"] if machine.is_file() else "?",
           "reference": reference.tre_mm.median()}
    for row in ROWS:
        f = pd.read_csv(run / f"heldout_{row}.csv").merge(reference, on="pair", suffixes=("", "_ref"))
        out[row] = f.tre_mm.median()
        out[f"{row}_dice"] = f.dice.median()
        out[f"{row}_better"] = int((f.tre_mm < f.tre_mm_ref).sum())
        out["pairs"] = len(f)
    segmented = run / "heldout_segmenters.csv"
    seg = pd.read_csv(segmented).groupby("side").dice.median() if segmented.is_file() else {"MR": None, "TRUS": None}
    out["seg"] = " / ".join("?" if seg[side] is None else f"{seg[side]:.2f}" for side in ("MR", "TRUS"))
    return out


def table(points: pd.DataFrame) -> str:
    head = ["minutes", "seed", "CPU", "steps (locate, prior, refine)", *ROWS.values(), "segmenters' Dice MR / TRUS"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, p in points.iterrows():
        cells = [f"{p[row]:.2f}, {p[f'{row}_dice']:.3f} ({p[f'{row}_better']}/{p.pairs})" for row in ROWS]
        lines.append(f"| {p.minutes:g} | {p.seed} | {p.cpu} | {p.steps} | " + " | ".join(cells) + f" | {p.seg} |")
    return "\n".join(lines)


def figure(points: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    mean = points.groupby("minutes").mean(numeric_only=True)
    for row, name in ROWS.items():
        ax.plot(mean.index, mean[row], "o-", label=name)
    ax.axhline(points.reference.median(), color="k", ls="--", label="gland centroids (reference)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(mean.index, [f"{m:g}" for m in mean.index])
    ax.set_xlabel("training minutes (cpu preset, 2 cores)")
    ax.set_ylabel("held-out landmark TRE, median (mm),\nmean over seeds")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    print(f"figure: {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="accuracy.py run folders after gland_rows.py, any budgets and seeds")
    p.add_argument("--figure", type=Path, help="write median TRE against minutes to this image")
    args = p.parse_args()
    points = pd.DataFrame([point(Path(run)) for run in args.runs]).sort_values(["minutes", "seed"])
    print("held-out landmark TRE median (mm), gland DSC median (pairs better than the reference)")
    print(table(points))
    print(f"reference (gland centroids, test labels): {points.reference.median():.2f} mm")
    if args.figure:
        figure(points, args.figure)


if __name__ == "__main__":
    main()
