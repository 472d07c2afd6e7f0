"""The embedded default job: train on phantoms, register an unseen one, report.

Needs no data of the user's: the phantoms come from :mod:`.phantom`.  The
held-out pair's ground-truth deformation is known, so the report gives the
dense DDF error as well as the landmark TRE and gland Dice.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..config import AugmentConfig, ModelConfig, TrainConfig

DEMO_CONFIG = TrainConfig(
    model=ModelConfig(width=8),
    geometry="centred",
    learning_rate=3e-4,
    augment=AugmentConfig(rotation_deg=3.0, scale=0.03, shear=0.0, translation_mm=2.0),
    iterations=400,
    checkpoint_every=100,
)
# phantoms with a clear misalignment: up to 6 mm of translation plus a 3 mm smooth field
PHANTOM = dict(translation_mm=6.0, amplitude_mm=3.0)


def dense_error(predicted_mm: np.ndarray, truth_mm: np.ndarray, mask: np.ndarray) -> float:
    """Mean length (mm) of the DDF difference inside ``mask``."""
    return float(np.linalg.norm(predicted_mm - truth_mm, axis=-1)[mask].mean())


def run_demo(out: Path, *, iterations: int = 400, device: str | None = None, train_pairs: int = 48) -> dict:
    from tqdm import tqdm

    from ..core import io
    from ..evaluation.scoring import score
    from ..pipeline.registrator import Registrator, identity_registration
    from .results import export_registration
    from ..pipeline.checkpoint import CHECKPOINT
    from ..core.phantom import make_phantom
    from ..pipeline.train import train

    config = replace(DEMO_CONFIG, iterations=iterations)
    pairs = [make_phantom(seed, **PHANTOM).pair for seed in range(train_pairs)]
    print(f"demo: training a width-{config.model.width} network on {train_pairs} phantom pairs for "
          f"{iterations} iterations -> {out}")
    if (out / "run" / CHECKPOINT).exists():
        raise ValueError(f"{out}: holds a demo run already; remove it or pass --out elsewhere")
    with tqdm(total=iterations, unit="step") as bar:
        for report in train(pairs, config, out / "run", device=device):
            bar.update(1)
            bar.set_postfix(loss=f"{report.loss:.3f}", refresh=False)

    test = make_phantom(1000, **PHANTOM)
    result = Registrator.from_run(out / "run", device=device).register_pair(test.pair)
    before = score(identity_registration(test.pair.moving, test.pair.fixed, "centred"), test.pair)
    after = score(result, test.pair)
    gland = test.pair.fixed_labels[0]
    report = {
        "tre_before_mm": before["tre_all_mm"],
        "tre_after_mm": after["tre_all_mm"],
        "dice_before": before["dice"],
        "dice_after": after["dice"],
        "ddf_error_before_mm": dense_error(np.zeros_like(test.ddf_mm), test.ddf_mm, gland),
        "ddf_error_after_mm": dense_error(result.ddf_mm, test.ddf_mm, gland),
        "folding_voxels": after["folding_voxels"],
    }
    io.save_volume(out / "moving.nii.gz", test.pair.moving.data, test.pair.moving.grid)
    io.save_volume(out / "fixed.nii.gz", test.pair.fixed.data, test.pair.fixed.grid)
    written = export_registration(result, out, test.pair.moving_labels, sources={
        "moving": out / "moving.nii.gz", "fixed": out / "fixed.nii.gz", "model": out / "run"})
    print("unseen phantom pair, all labels:      before    after")
    print(f"  landmark TRE (mm)                 {report['tre_before_mm']:7.2f}  {report['tre_after_mm']:7.2f}")
    print(f"  gland Dice                        {report['dice_before']:7.3f}  {report['dice_after']:7.3f}")
    print(f"  DDF error in the gland (mm)       {report['ddf_error_before_mm']:7.2f}  "
          f"{report['ddf_error_after_mm']:7.2f}")
    print(f"  folding voxels                          -  {report['folding_voxels']:7d}")
    print(f"wrote moving.nii.gz, fixed.nii.gz, {', '.join(p.name for p in written)} and run/ to {out}\n"
          f"see them in napari: napari --plugin napari-labelreg {out}")
    return report
