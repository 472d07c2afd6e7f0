"""The gland fit's speed against SimpleITK's B-spline FFD of the same two gland masks, in one run.

Both start from the gland-centroid alignment (the test labels) and are given each pair's true glands; no network.
Ours on the ``cpu`` preset's 3 mm registration grid and on the TRUS grid (1.5 mm); SimpleITK's FFD (mean squares
of the masks, control points every 16 mm as ours, L-BFGS-B, 100 iterations at each of 2 levels), as the issue's
speed peer.  Seconds per pair, landmark TRE and gland Dice, each paired against the start.

    python benchmarks/fit_speed.py [--pairs 10]       # alone on the machine: it is timed
"""

from __future__ import annotations

import argparse
import os
import time

import pandas as pd
import torch

from gland_fit import DATA, fitted  # noqa: E402  (benchmarks/ is the script's folder)
from napari_labelreg.core.io import list_folder_pairs
from napari_labelreg.core.pairs import folder_pairs
from napari_labelreg.evaluation.baselines import centroid, ffd
from napari_labelreg.evaluation.scoring import score
from napari_labelreg.evaluation.statistics import paired_wilcoxon
from napari_labelreg.nn.fit import FitConfig


def sitk_glands(pair):
    g = pair.gland_index
    glands = (pair.moving_labels[g].astype("float32"), pair.fixed_labels[g].astype("float32"))
    return ffd(pair, "ssd", "centred", grid_mm=FitConfig.control_mm, volumes=glands)


def main() -> None:
    import SimpleITK as sitk

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=10)
    args = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; SimpleITK {sitk.Version.VersionString()}, "
          f"{sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()} threads; {os.cpu_count()} cores")
    methods = {
        "centroid start": lambda pair: centroid(pair, "centred"),
        "fit, 3 mm grid (cpu preset)": lambda pair: fitted(pair, FitConfig(), 3.0)[0],
        "fit, TRUS grid (1.5 mm)": lambda pair: fitted(pair, FitConfig(), None)[0],
        "SimpleITK FFD of the masks": sitk_glands,
    }
    rows = {name: [] for name in methods}
    for pair in folder_pairs(DATA, list_folder_pairs(DATA)[: args.pairs]):
        for name, method in methods.items():
            t = time.perf_counter()
            registration = method(pair)
            rows[name].append({**score(registration, pair), "seconds": time.perf_counter() - t})
        print(f"{pair.name}: " + ", ".join(f"{name} {r[-1]['seconds']:.2f} s" for name, r in rows.items()), flush=True)
    frames = {name: pd.DataFrame(r) for name, r in rows.items()}
    start = frames["centroid start"]
    peer = frames["SimpleITK FFD of the masks"].seconds.median()
    print(f"{'method':30s} {'s/pair':>7s} {'vs SimpleITK':>12s} {'TRE':>6s} {'DSC':>6s}  TRE vs the start")
    for name, f in frames.items():
        t = paired_wilcoxon(f, start, "tre_mm") if name != "centroid start" else None
        versus = "" if t is None else (f"better on {int((f.tre_mm < start.tre_mm).sum())}/{len(f)}, "
                                       f"{t['median_difference']:+.2f} mm, p {t['p_value']:.2g}")
        print(f"{name:30s} {f.seconds.median():7.2f} {f.seconds.median() / peer:11.2f}x {f.tre_mm.median():6.2f} "
              f"{f.dice.median():6.3f}  {versus}")


if __name__ == "__main__":
    main()
