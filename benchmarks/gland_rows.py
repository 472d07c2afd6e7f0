"""The gland fit's rows (a)-(e) and the gland segmenters' Dice and HD95, on accuracy.py runs' held-out pairs.

    python benchmarks/accuracy.py --minutes 30 --seed 3 --out runs/cpu30_s3      # once per seed
    python benchmarks/gland_rows.py runs/cpu30_s3 runs/cpu30_s4 runs/cpu30_s5

Each run's held-out pairs (every 4th from ``--test-offset``, as accuracy.py held them out) are registered

- (a) ``given``: fitted to both gland labels;  (b) ``moving-given``: the MR gland label, the TRUS gland segmented;
- (c) ``predicted``: both glands segmented;   (d) ``none``: no fit, the preset as it is;
- (e) ``fit-alone``: the fit from the gland-centroid start (the test labels), no network, on the run's grid;
- ``centroid``: the gland-centroid alignment (the test labels), the reference every row is paired against.

Each row's per-pair scores (and seconds per registration) go to ``RUN/heldout_<row>.csv``, read back on a later
call unless ``--again``; then every run's and the pooled (seed, pair) paired Wilcoxon tests against the
reference, (a) against (e) and (c) against (d).  Last, each segmenter's Dice and 95th-percentile Hausdorff
distance (mm; MONAI's, as an independent peer) against the gland labels, per modality, on the images' own grids
(kept in ``RUN/heldout_segmenters.csv`` alike).  ``learning_curve.py`` tabulates these files over budgets.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from gland_fit import fitted  # noqa: E402  (benchmarks/ is the script's folder)
from napari_labelreg.core.io import list_folder_pairs
from napari_labelreg.core.metrics import dice
from napari_labelreg.core.pairs import folder_pairs
from napari_labelreg.evaluation.baselines import centroid
from napari_labelreg.evaluation.scoring import score
from napari_labelreg.evaluation.statistics import paired_wilcoxon
from napari_labelreg.nn.fit import FitConfig
from napari_labelreg.pipeline.registrator import Registrator

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mrus_prostate"
ROWS = {"given": "(a) glands given", "moving-given": "(b) MR given, TRUS predicted",
        "predicted": "(c) both predicted", "none": "(d) no fit (the preset)",
        "fit-alone": "(e) fit alone from the centroid start", "centroid": "gland centroids (reference)"}


def timed(register, pair) -> dict:
    t = time.perf_counter()
    registration = register(pair)
    return {**score(registration, pair), "seconds": time.perf_counter() - t}


def run_rows(run: Path, pairs, again: bool = False) -> dict[str, pd.DataFrame]:
    reg = Registrator.from_run(run)
    spacing = reg.config.spacing_mm
    register = {mode: (lambda p, m=mode: reg.register_pair(p, glands=m))
                for mode in ("given", "moving-given", "predicted", "none")}
    register["fit-alone"] = lambda p: fitted(p, FitConfig(), spacing)[0]
    register["centroid"] = lambda p: centroid(p, "centred")
    frames = {}
    for row, fn in register.items():
        path = run / f"heldout_{row}.csv"
        if path.is_file() and not again:  # scored before: the same run and pairs give the same scores
            frames[row] = pd.read_csv(path)
        else:
            frames[row] = pd.DataFrame([timed(fn, pair) for pair in pairs])
            frames[row].to_csv(path, index=False)
        f = frames[row]
        print(f"  {ROWS[row]:40s} TRE {f.tre_mm.median():5.2f} / {f.tre_mm.mean():5.2f} mm, DSC {f.dice.median():.3f}, "
              f"folding {int(f.folding_voxels.sum())}, {f.seconds.median():.1f} s per pair", flush=True)
    return frames


def paired(a: pd.DataFrame, b: pd.DataFrame, what: str) -> None:
    t = paired_wilcoxon(a, b, "tre_mm")
    joined = a.merge(b, on="pair", suffixes=("_a", "_b"))
    better = int((joined.tre_mm_a < joined.tre_mm_b).sum())
    print(f"  {what}: TRE better on {better} of {t['pairs']}, median difference {t['median_difference']:+.2f} mm "
          f"[{t['ci_low']:+.2f}, {t['ci_high']:+.2f}], Wilcoxon p = {t['p_value']:.3g}")


def comparisons(frames: dict[str, pd.DataFrame]) -> None:
    for row in ("given", "moving-given", "predicted", "none", "fit-alone"):
        paired(frames[row], frames["centroid"], f"{ROWS[row]} - reference")
    paired(frames["given"], frames["fit-alone"], "(a) - (e)")
    paired(frames["predicted"], frames["none"], "(c) - (d)")


def hd95(a: np.ndarray, b: np.ndarray, spacing) -> float:
    from monai.metrics import compute_hausdorff_distance

    as_batch = lambda m: np.asarray(m, np.float32)[None, None]  # noqa: E731
    return float(compute_hausdorff_distance(as_batch(a), as_batch(b), percentile=95, spacing=list(spacing))[0, 0])


def segmenters(run: Path, pairs, again: bool = False) -> pd.DataFrame:
    path = run / "heldout_segmenters.csv"
    if path.is_file() and not again:
        return pd.read_csv(path)
    locator = Registrator.from_run(run).locator
    rows = []
    for pair in pairs:
        g = pair.gland_index
        for side, volume, truth in (("MR", pair.moving, pair.moving_labels[g]), ("TRUS", pair.fixed, pair.fixed_labels[g])):
            mask = locator.segment(volume, "moving" if side == "MR" else "fixed")
            rows.append({"pair": pair.name, "side": side, "dice": dice(mask, truth),
                         "hd95_mm": hd95(mask, truth, volume.grid.spacing)})
    frame = pd.DataFrame(rows)
    frame.to_csv(path, index=False)
    return frame


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="accuracy.py run folders, one per seed, on the same held-out pairs")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--test-offset", type=int, default=0)
    p.add_argument("--again", action="store_true", help="score every row again (default: a run's heldout_ROW.csv "
                   "files written before are read back)")
    args = p.parse_args()
    names = list_folder_pairs(args.data)[args.test_offset::4]
    pairs = folder_pairs(args.data, names)
    pooled: dict[str, list[pd.DataFrame]] = {row: [] for row in ROWS}
    segmented = []
    for i, run in enumerate(map(Path, args.runs)):
        print(f"{run}: {len(pairs)} held-out pairs", flush=True)
        frames = run_rows(run, pairs, args.again)
        comparisons(frames)
        for row, frame in frames.items():
            pooled[row].append(frame.assign(pair=f"{i}:" + frame.pair))
        segmented.append(segmenters(run, pairs, args.again).assign(run=run.name))
    if len(args.runs) > 1:
        print(f"pooled over {len(args.runs)} runs ((seed, pair) as one paired observation):")
        frames = {row: pd.concat(parts, ignore_index=True) for row, parts in pooled.items()}
        for row, f in frames.items():
            print(f"  {ROWS[row]:40s} TRE {f.tre_mm.median():5.2f} / {f.tre_mm.mean():5.2f} mm, DSC {f.dice.median():.3f}")
        comparisons(frames)
    seg = pd.concat(segmented, ignore_index=True)
    print("gland segmenters on the held-out images (median [10th, 90th percentile]):")
    for side, f in seg.groupby("side"):
        print(f"  {side:4s}: Dice {f.dice.median():.3f} [{f.dice.quantile(0.1):.3f}, {f.dice.quantile(0.9):.3f}], "
              f"HD95 {f.hd95_mm.median():.1f} mm [{f.hd95_mm.quantile(0.1):.1f}, {f.hd95_mm.quantile(0.9):.1f}] "
              f"({len(f)} images)")


if __name__ == "__main__":
    main()
