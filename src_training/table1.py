"""Reproduce the form of the paper's Table 1: cross-validate each variant, compare each to Baseline.

Runs ``napari-labelreg crossval`` once per row of :data:`variants.TABLE1`, all
on the same ``splits.json`` (patient-level folds), then prints and writes
``table1.csv``: median and 10/25/75/90th percentiles of landmark TRE and gland
DSC per row, with the paired Wilcoxon p-value and bootstrap CI of the
difference to Baseline.

    python src_training/table1.py --data ../shared/data/mrus_prostate --out study --iterations 2000
    python src_training/table1.py --db labels.db --out study --variants Baseline Composite-Net --fold 3

``--fold`` runs one fold of each row (one cluster job per fold); a last call
without it, or with ``--summarise``, collects what has finished.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from variants import PAPER, TABLE1  # noqa: E402

from napari_labelreg.cli import main as cli  # noqa: E402
from napari_labelreg.evaluation.statistics import METRICS, paired_wilcoxon, summary_table  # noqa: E402


def run_row(name: str, args, study: Path) -> None:
    source = ["--data", args.data] if args.data else ["--db", args.db]
    budget = ["--iterations", str(args.iterations)] if args.iterations else ["--minutes", str(args.minutes)]
    folds = [x for k in (args.fold or []) for x in ("--fold", str(k))]
    out = study / name
    out.mkdir(parents=True, exist_ok=True)
    if (study / "splits.json").exists():  # every row on the same folds
        shutil.copyfile(study / "splits.json", out / "splits.json")
    argv = ["crossval", *source, "--out", str(out), "--name", name, "--folds", str(args.folds),
            "--geometry", args.geometry, "--preset", args.preset, *TABLE1[name], *budget, *folds, *args.extra]
    print("napari-labelreg " + " ".join(argv), flush=True)
    if cli(argv) != 0:
        raise SystemExit(f"{name}: crossval failed")
    if not (study / "splits.json").exists():
        shutil.copyfile(out / "splits.json", study / "splits.json")


def summarise(study: Path, names: list[str]) -> pd.DataFrame:
    results = {n: pd.read_csv(study / n / "results.csv") for n in names if (study / n / "results.csv").exists()}
    if not results:
        raise SystemExit(f"{study}: no finished rows yet")
    table = summary_table(results)
    for name, frame in results.items():
        table.loc[name, ("paper", "tre_mm")], table.loc[name, ("paper", "dice")] = PAPER[name]
        if name != "Baseline" and "Baseline" in results:
            for metric in METRICS:
                t = paired_wilcoxon(frame, results["Baseline"], metric)
                table.loc[name, ("vs Baseline", f"{metric} p")] = t["p_value"]
                table.loc[name, ("vs Baseline", f"{metric} diff")] = t["median_difference"]
                table.loc[name, ("vs Baseline", f"{metric} CI")] = f"[{t['ci_low']:.3f}, {t['ci_high']:.3f}]"
    table.to_csv(study / "table1.csv")
    return table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data")
    source.add_argument("--db")
    p.add_argument("--out", required=True, help="study folder: one sub-folder per row, splits.json, table1.csv")
    p.add_argument("--variants", nargs="+", default=list(TABLE1), choices=list(TABLE1))
    p.add_argument("--preset", default="cpu", choices=("cpu", "paper"))
    p.add_argument("--folds", type=int, default=12)
    p.add_argument("--fold", type=int, action="append", help="only this fold of each row (repeatable)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--iterations", type=int)
    budget.add_argument("--minutes", type=float)
    p.add_argument("--geometry", default="centred", choices=("world", "centred", "fov"))
    p.add_argument("--summarise", action="store_true", help="only collect finished rows")
    p.add_argument("extra", nargs=argparse.REMAINDER, help="after --: more crossval options for every row")
    args = p.parse_args()
    args.extra = [a for a in args.extra if a != "--"]
    study = Path(args.out)
    if not args.summarise and not (args.iterations or args.minutes):
        p.error("give a budget: --iterations N or --minutes M (or --summarise)")
    if not args.summarise:
        for name in args.variants:
            run_row(name, args, study)
    table = summarise(study, args.variants)
    with pd.option_context("display.width", 200, "display.max_columns", 40):
        print(table.round(3).to_string())
    print(json.dumps({"table": str(study / "table1.csv")}))


if __name__ == "__main__":
    main()
