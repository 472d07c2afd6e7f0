"""Does cleaning a segmented gland help?  The run's segmenters as they are against their largest connected
component with its holes filled, paired over images, on the pairs the run trained on (the held-out pairs are
kept for the rows of gland_rows.py).

    python benchmarks/segment_cleanup.py runs/cpu30_s3
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.stats import wilcoxon

from gland_rows import DATA, hd95  # noqa: E402  (benchmarks/ is the script's folder)
from napari_labelreg.core.metrics import dice
from napari_labelreg.core.pairs import folder_pairs
from napari_labelreg.pipeline.registrator import Registrator


def cleaned(mask: np.ndarray) -> np.ndarray:
    """The largest connected component, holes filled."""
    labels, count = ndimage.label(mask)
    if count > 1:
        sizes = ndimage.sum_labels(mask, labels, range(1, count + 1))
        mask = labels == 1 + int(np.argmax(sizes))
    return ndimage.binary_fill_holes(mask)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--data", default=str(DATA))
    args = p.parse_args()
    run = Path(args.run)
    names = json.loads((run / "training_set.json").read_text())
    locator = Registrator.from_run(run).locator
    rows = []
    for pair in folder_pairs(args.data, names):
        g = pair.gland_index
        for side, volume, truth in (("MR", pair.moving, pair.moving_labels[g]), ("TRUS", pair.fixed, pair.fixed_labels[g])):
            raw = locator.segment(volume, "moving" if side == "MR" else "fixed")
            for how, mask in (("raw", raw), ("cleaned", cleaned(raw))):
                rows.append({"pair": pair.name, "side": side, "how": how, "dice": dice(mask, truth),
                             "hd95_mm": hd95(mask, truth, volume.grid.spacing),
                             "components": int(ndimage.label(mask)[1])})
    frame = pd.DataFrame(rows)
    for side, f in frame.groupby("side"):
        raw, clean = (f[f.how == how].reset_index(drop=True) for how in ("raw", "cleaned"))
        for metric, sign in (("dice", 1), ("hd95_mm", -1)):
            diff = clean[metric] - raw[metric]
            changed = diff[diff != 0]
            p_value = wilcoxon(changed).pvalue if len(changed) > 1 else float("nan")
            print(f"{side:4s} {metric:8s}: raw {raw[metric].median():.3f}, cleaned {clean[metric].median():.3f}; "
                  f"better on {int((sign * diff > 0).sum())}, worse on {int((sign * diff < 0).sum())} of {len(diff)} "
                  f"images, Wilcoxon p = {p_value:.3g}")
        print(f"{side:4s} images in more than one piece: {int((raw.components > 1).sum())} of {len(raw)}")


if __name__ == "__main__":
    main()
