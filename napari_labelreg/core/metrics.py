"""Registration metrics and DDF diagnostics (numpy only).

All distances are millimetres in the grid's world frame; DDFs are
``(I, J, K, 3)`` in mm along the fixed image's world axes (see geometry).
"""

from __future__ import annotations

import numpy as np

from .geometry import Grid, apply_affine


def centroid_mm(mask: np.ndarray, grid: Grid) -> np.ndarray:
    """World centroid (mm) of a binary mask; NaN for an empty mask."""
    idx = np.argwhere(mask)
    if idx.size == 0:
        return np.full(3, np.nan)
    return apply_affine(grid.affine, idx.mean(axis=0))


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Binary Dice of two masks; 1.0 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


def centroid_errors(warped: np.ndarray, fixed: np.ndarray, grid: Grid) -> np.ndarray:
    """Centroid distance (mm) per label pair; inputs ``(M, I, J, K)`` binary.

    A warped label that vanished (nothing above 0.5) gives NaN.
    """
    return np.array([np.linalg.norm(centroid_mm(w, grid) - centroid_mm(f, grid)) for w, f in zip(warped, fixed)])


def rms(values: np.ndarray) -> float:
    """Root mean square of the finite entries; NaN if there are none."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return float(np.sqrt(np.mean(values**2))) if values.size else float("nan")


def displacement_gradient(ddf_mm: np.ndarray, grid: Grid) -> np.ndarray:
    """Spatial gradient of a DDF in world axes, ``(I, J, K, 3, 3)``: [..., c, d] = du_c/dx_d."""
    per_voxel_axis = np.stack(np.gradient(ddf_mm, axis=(0, 1, 2)), axis=-1)  # du_c / dp_a
    return per_voxel_axis @ np.linalg.inv(grid.affine[:3, :3])


def jacobian_determinant(ddf_mm: np.ndarray, grid: Grid) -> np.ndarray:
    """det(I + grad u) at every voxel; values <= 0 mark folding."""
    return np.linalg.det(np.eye(3) + displacement_gradient(ddf_mm, grid))


def displacement_magnitude(ddf_mm: np.ndarray) -> np.ndarray:
    """Length of the displacement at every voxel (mm)."""
    return np.linalg.norm(ddf_mm, axis=-1)


def gradient_norm(ddf_mm: np.ndarray, grid: Grid) -> np.ndarray:
    """Frobenius (L2) norm of the displacement gradient at every voxel."""
    return np.linalg.norm(displacement_gradient(ddf_mm, grid), axis=(-2, -1))


def percentiles(values) -> dict[str, float]:
    """Median and 10/25/75/90th percentiles of the finite values."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {k: float("nan") for k in ("p10", "p25", "median", "p75", "p90")}
    p = np.percentile(values, [10, 25, 50, 75, 90])
    return dict(zip(("p10", "p25", "median", "p75", "p90"), map(float, p)))
