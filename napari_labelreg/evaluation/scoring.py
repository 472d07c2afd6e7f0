"""The paper's evaluation protocol: landmark TRE, gland Dice, DDF diagnostics."""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import pandas as pd

from ..core import metrics
from ..pipeline.registrator import Registration
from ..core.io import Pair


def score(registration: Registration, pair: Pair) -> dict[str, float]:
    """Metrics of one registered pair.

    ``tre_mm``: RMS over the landmark pairs (all but the gland) of the centroid
    distance between the warped moving label (thresholded at 0.5) and the fixed
    label; ``tre_all_mm`` includes the gland; ``dice``: binary Dice of the gland
    (see :attr:`Pair.gland_index`).  Also the
    DDF's folding count (Jacobian determinant <= 0) and largest displacement.
    """
    warped = registration.warp_labels(pair.moving_labels) >= 0.5
    errors = metrics.centroid_errors(warped, pair.fixed_labels, pair.fixed.grid)
    g = pair.gland_index
    det = metrics.jacobian_determinant(registration.ddf_mm, pair.fixed.grid)
    return {
        "pair": pair.name,
        "labels": pair.num_labels,
        "tre_mm": metrics.rms(np.delete(errors, g)),
        "tre_all_mm": metrics.rms(errors),
        "dice": metrics.dice(warped[g], pair.fixed_labels[g]) if pair.num_labels else float("nan"),
        "folding_voxels": int((det <= 0).sum()),
        "max_displacement_mm": float(metrics.displacement_magnitude(registration.ddf_mm).max()),
    }


def evaluate(register: Callable[[Pair], Registration], pairs: Iterable[Pair], progress=None) -> pd.DataFrame:
    """Score ``register`` on every pair; one row per pair."""
    rows = []
    for pair in pairs:
        rows.append(score(register(pair), pair))
        if progress is not None:
            progress(pair.name)
    return pd.DataFrame(rows)


def summary(results: pd.DataFrame, columns=("tre_mm", "tre_all_mm", "dice")) -> pd.DataFrame:
    """Median and 10/25/75/90th percentiles per metric (the paper's Table 1 form)."""
    return pd.DataFrame({c: metrics.percentiles(results[c]) for c in columns}).T


def validator(pairs: list[Pair]):
    """A training validator: median landmark TRE and gland Dice of a run's stages (a Registrator) on ``pairs``."""

    def validate(registrator) -> dict[str, float]:
        frame = evaluate(registrator.register_pair, pairs)
        return {"val_tre_mm": float(frame.tre_mm.median()), "val_dice": float(frame.dice.median())}

    return validate


def evaluate_run(run_dir, pairs: list[Pair], glands: str = "none") -> pd.DataFrame:
    """Per-pair scores of the model in ``run_dir`` on ``pairs``, fitted to the ``glands`` of
    :meth:`~napari_labelreg.pipeline.registrator.Registrator.register_pair`."""
    from ..pipeline.registrator import Registrator

    registrator = Registrator.from_run(run_dir)
    return evaluate(lambda pair: registrator.register_pair(pair, glands=glands), pairs)
