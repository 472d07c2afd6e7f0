"""Mapping points through a registration: errors against a known deformation, and the inverse's residual.

    python benchmarks/map_points.py [--phantoms 20] [--targets 200]

Two known deformations, each with MR targets whose true ultrasound position is known:

* phantoms (``core.phantom``, the ``centred`` geometry, their ground-truth DDF): targets are points inside the
  fixed gland, carried onto the MR by the truth; ``to_fixed`` must bring them back;
* an analytic smooth swirl on oblique, anisotropic grids (the field of ``tests/test_transforms.py``, every
  geometry), whose truth is a formula, so the trilinear sampling of the DDF counts in the error too.

Prints the median and maximum error of mapped MR targets (mm), the largest inversion residual, and the
inverse DDF's composition residual (forward after inverse, over the moving grid where the field does not fold).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from napari_labelreg.core import transform  # noqa: E402
from napari_labelreg.core.geometry import CONVENTIONS, apply_affine, fixed_to_moving, voxel_coordinates  # noqa: E402
from napari_labelreg.core.phantom import make_phantom  # noqa: E402
from napari_labelreg.pipeline.registrator import Registration  # noqa: E402


def composition_residual(reg: Registration) -> float:
    field, residual = reg.inverse_ddf()
    y = apply_affine(reg.moving.affine, voxel_coordinates(reg.moving.shape)).reshape(-1, 3)
    x = y + field.reshape(-1, 3)
    keep = transform.inside(reg.fixed, x) & (residual.reshape(-1) < transform.INVERSE_TOLERANCE_MM)
    again = reg.map_points(x[keep]).points
    return float(np.abs(again - y[keep]).max())


def phantoms(count: int, targets: int, rng) -> tuple[np.ndarray, float, float]:
    errors, residuals, composed = [], [], []
    for seed in range(count):
        ph = make_phantom(seed)
        fixed, moving = ph.pair.fixed.grid, ph.pair.moving.grid
        reg = Registration(ph.ddf_mm, fixed, moving, fixed_to_moving(fixed, moving, "centred"), ph.pair.fixed.data)
        gland = np.argwhere(ph.pair.fixed_labels[0])
        vox = gland[rng.integers(len(gland), size=targets)] + rng.uniform(-0.5, 0.5, (targets, 3))
        truth = apply_affine(fixed.affine, vox)
        mr_targets = reg.map_points(truth).points  # the truth carries them onto the MR
        mapped = reg.map_points(mr_targets, to="fixed")
        errors.append(np.linalg.norm(mapped.points - truth, axis=-1))
        residuals.append(mapped.residual_mm.max())
        composed.append(composition_residual(reg))
    return np.concatenate(errors), max(residuals), max(composed)


def swirl(targets: int) -> dict[str, tuple[np.ndarray, float, float]]:
    from test_transforms import bump, inside_points, registration

    out = {}
    for geometry in CONVENTIONS:
        reg = registration(geometry)
        x = inside_points(targets, seed=7)
        mr_targets = apply_affine(reg.initial, x + bump(x))  # the analytic truth, not the sampled field
        mapped = reg.map_points(mr_targets, to="fixed")
        out[geometry] = (np.linalg.norm(mapped.points - x, axis=-1), mapped.residual_mm.max(),
                         composition_residual(reg))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantoms", type=int, default=20)
    parser.add_argument("--targets", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print("MR targets mapped onto the ultrasound (to_fixed) against the known truth, mm")
    print(f"{'deformation':34s} {'targets':>7s} {'median':>9s} {'max':>9s} {'inv. resid.':>11s} {'fwd∘inv':>9s}")
    errors, residual, composed = phantoms(args.phantoms, args.targets, rng)
    print(f"{f'phantoms 0..{args.phantoms - 1} (centred, truth DDF)':34s} {len(errors):7d} {np.median(errors):9.2g} "
          f"{errors.max():9.2g} {residual:11.2g} {composed:9.2g}")
    for geometry, (errors, residual, composed) in swirl(args.targets).items():
        print(f"{f'analytic swirl, oblique ({geometry})':34s} {len(errors):7d} {np.median(errors):9.2g} "
              f"{errors.max():9.2g} {residual:11.2g} {composed:9.2g}")


if __name__ == "__main__":
    main()
