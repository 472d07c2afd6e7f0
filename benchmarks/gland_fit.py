"""The gland fit alone, from the gland-centroid start, against that start, on the public pairs' true glands.

Row (e) of the gland-fit evaluation: the fit with no network.  Landmark TRE (RMS over labels 1..) and gland
Dice per pair, the seconds each fit took, and a paired Wilcoxon test of the TRE.

    python benchmarks/gland_fit.py [--pairs 20] [--first 0] [--control-mm 16] [--bending 5] [--steps 100]
                                   [--spacing-mm 3]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

from napari_labelreg.config import InferenceConfig
from napari_labelreg.core.geometry import translation, warp
from napari_labelreg.core.pairs import folder_pairs
from napari_labelreg.core.io import list_folder_pairs
from napari_labelreg.evaluation.baselines import centroid, centroid_shift_mm
from napari_labelreg.evaluation.scoring import score
from napari_labelreg.evaluation.statistics import paired_wilcoxon
from napari_labelreg.nn.fit import FitConfig
from napari_labelreg.pipeline.registrator import Registration
from napari_labelreg.pipeline.stages import Estimate, Fit

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mrus_prostate"


def fitted(pair, config: FitConfig, spacing_mm: float | None = None) -> tuple[Registration, float]:
    start = Estimate.start(pair.moving, pair.fixed, "centred", spacing_mm)
    matrix = start.matrix  # the initial correspondence the registration's DDF is relative to
    shift = centroid_shift_mm(pair, matrix)
    g = pair.gland_index
    start = replace(start, matrix=matrix @ translation(pair.fixed.grid, shift), shift_mm=shift,
                    glands=(pair.moving_labels[g].astype(bool), pair.fixed_labels[g].astype(bool)))
    t = time.perf_counter()
    estimate = Fit(config).apply(pair.moving, pair.fixed, start, InferenceConfig())
    seconds = time.perf_counter() - t
    ddf = estimate.ddf_mm(pair.fixed.grid)
    return Registration(ddf, pair.fixed.grid, pair.moving.grid, matrix,
                        warp(pair.moving.data, pair.fixed.grid, pair.moving.grid, matrix, ddf)), seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=20)
    p.add_argument("--first", type=int, default=0)
    p.add_argument("--control-mm", type=float, default=FitConfig.control_mm)
    p.add_argument("--bending", type=float, default=FitConfig.bending)
    p.add_argument("--steps", type=int, default=FitConfig.steps)
    p.add_argument("--spacing-mm", type=float, default=None,
                   help="the registration grid's voxel size (the cpu preset's: 3); default the TRUS grid's")
    args = p.parse_args()
    config = FitConfig(control_mm=args.control_mm, bending=args.bending, steps=args.steps)
    names = list_folder_pairs(DATA)[args.first: args.first + args.pairs]
    rows_a, rows_b = [], []
    for pair in folder_pairs(DATA, names):
        registration, seconds = fitted(pair, config, args.spacing_mm)
        rows_a.append({**score(registration, pair), "seconds": seconds})
        rows_b.append(score(centroid(pair), pair))
        print(f"{pair.name}: centroid {rows_b[-1]['tre_mm']:.2f} mm / {rows_b[-1]['dice']:.3f}, fit "
              f"{rows_a[-1]['tre_mm']:.2f} mm / {rows_a[-1]['dice']:.3f} ({seconds:.1f} s)", flush=True)
    a, b = pd.DataFrame(rows_a), pd.DataFrame(rows_b)
    t = paired_wilcoxon(a, b, "tre_mm")
    better = int((a.tre_mm < b.tre_mm).sum())
    print(f"median TRE: fit {a.tre_mm.median():.2f} mm, centroid {b.tre_mm.median():.2f} mm; fit better on "
          f"{better} of {len(a)}, median difference {t['median_difference']:+.2f} mm, Wilcoxon p = {t['p_value']:.3g}")
    print(f"median gland Dice: fit {a.dice.median():.3f}, centroid {b.dice.median():.3f}; "
          f"fit {a.seconds.median():.1f} s per pair (median)")


if __name__ == "__main__":
    main()
