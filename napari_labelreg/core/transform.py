"""A registration as a map between the two files' own world frames: points both ways, complete and inverse DDFs.

A registration holds a DDF ``u`` on the fixed grid (mm along the fixed world axes) *relative to*
the initial correspondence of its geometry (``world``, ``centred`` or ``fov``).  Written as the
initial correspondence's world-to-world affine ``A`` (fixed world mm -> moving world mm), the
whole transform takes a fixed world point ``x`` to the moving world point

    y = A (x + u(x))

In the ``world`` geometry ``A`` is the identity.  The *complete* DDF ``v(x) = y - x`` is what ITK,
SimpleITK and 3D Slicer apply to the moving file with no knowledge of this tool; the *inverse*
DDF lives on the moving grid and takes each moving world point back to the fixed world.

World points are millimetres in the NIfTI (RAS) frame of the images' affines, ``(N, 3)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates

from .geometry import Grid, apply_affine, voxel_coordinates
from .metrics import displacement_gradient

INSIDE_TOLERANCE_VOXELS = 0.5  # points up to half a voxel beyond the outer voxel centres count as inside
INVERSE_TOLERANCE_MM = 1e-3


class OutsideField(ValueError):
    """Points a transform cannot map: ``rows`` (indices into the points given) and ``reason``."""

    def __init__(self, rows, reason: str) -> None:
        self.rows, self.reason = [int(r) for r in rows], reason
        shown = ", ".join(map(str, self.rows[:5])) + (", ..." if len(self.rows) > 5 else "")
        super().__init__(f"point{'s' * int(len(self.rows) > 1)} {shown} (counting from 0): {reason}")


@dataclass(frozen=True)
class Mapped:
    """Mapped points ``(N, 3)`` (mm) and, for each, the distance (mm) by which the forward map misses its start:
    zero up to rounding for fixed -> moving, the inversion's residual for moving -> fixed (infinite where the
    field folds, so that a moving point has more than one fixed preimage)."""

    points: np.ndarray
    residual_mm: np.ndarray


def initial_world(fixed: Grid, moving: Grid, matrix: np.ndarray) -> np.ndarray:
    """The initial correspondence (fixed voxel -> moving voxel ``matrix``) as fixed world mm -> moving world mm."""
    return moving.affine @ matrix @ np.linalg.inv(fixed.affine)


def sample_field(field_mm: np.ndarray, grid: Grid, points_mm: np.ndarray) -> np.ndarray:
    """Trilinear values ``(N, C)`` of a field ``(*grid.shape, C)`` at world points; constant beyond the edges."""
    vox = np.moveaxis(apply_affine(np.linalg.inv(grid.affine), points_mm), -1, 0)
    return np.stack([map_coordinates(field_mm[..., c], vox, order=1, mode="nearest")
                     for c in range(field_mm.shape[-1])], -1)


def inside(grid: Grid, points_mm: np.ndarray) -> np.ndarray:
    """Which world points lie within the grid (half a voxel beyond its outer voxel centres), ``(N,)`` bool."""
    vox = apply_affine(np.linalg.inv(grid.affine), points_mm)
    tolerance = INSIDE_TOLERANCE_VOXELS
    return np.all((vox >= -tolerance) & (vox <= np.asarray(grid.shape) - 1 + tolerance), -1)


def complete_ddf(ddf_mm: np.ndarray, fixed: Grid, initial: np.ndarray) -> np.ndarray:
    """``v(x) = A (x + u(x)) - x`` on the fixed grid, float32: the DDF from the fixed world to the moving file's."""
    x = apply_affine(fixed.affine, voxel_coordinates(fixed.shape))
    return (apply_affine(initial, x + ddf_mm) - x).astype(np.float32)


def relative_ddf(complete_mm: np.ndarray, fixed: Grid, initial: np.ndarray) -> np.ndarray:
    """The inverse of :func:`complete_ddf`: ``u(x) = A^-1 (x + v(x)) - x``."""
    x = apply_affine(fixed.affine, voxel_coordinates(fixed.shape))
    return (apply_affine(np.linalg.inv(initial), x + complete_mm) - x).astype(np.float32)


def to_moving(ddf_mm: np.ndarray, fixed: Grid, initial: np.ndarray, points_mm) -> Mapped:
    """Fixed world points -> moving world points.  Points outside the fixed grid are refused."""
    points = _points(points_mm)
    outside = ~inside(fixed, points)
    if outside.any():
        raise OutsideField(np.flatnonzero(outside), "outside the fixed image")
    mapped = apply_affine(initial, points + sample_field(ddf_mm, fixed, points))
    return Mapped(mapped, np.zeros(len(points)))


def to_fixed(ddf_mm: np.ndarray, fixed: Grid, initial: np.ndarray, points_mm, *, refuse_outside: bool = True,
             iterations: int = 50) -> Mapped:
    """Moving world points -> the fixed world points the registration takes to them, by inverting the DDF.

    Solves ``x + u(x) = A^-1 y`` by Newton's method with the DDF's Jacobian (finite differences, sampled
    trilinearly).  ``residual_mm`` is ``|A (x + u(x)) - y|``: under :data:`INVERSE_TOLERANCE_MM` where the
    field does not fold.  With ``refuse_outside`` (the default), points whose solution lies outside the fixed
    grid, that do not converge, or whose solution lies where the field folds, are refused; otherwise the field
    is taken as constant beyond the grid's edges and every point is answered.
    """
    points = _points(points_mm)
    target = apply_affine(np.linalg.inv(initial), points)  # in the fixed world: x + u(x) must reach it
    gradient = displacement_gradient(ddf_mm, fixed).reshape(*fixed.shape, 9)  # du_a / dx_b, world mm
    jacobian = lambda at: np.eye(3) + sample_field(gradient, fixed, at).reshape(-1, 3, 3)  # noqa: E731
    x = target - sample_field(ddf_mm, fixed, target)  # the fixed-point step as a start
    for _ in range(iterations):
        miss = x + sample_field(ddf_mm, fixed, x) - target
        if np.all(np.linalg.norm(miss, axis=-1) < INVERSE_TOLERANCE_MM / 10):
            break
        x = x - np.linalg.solve(jacobian(x), miss[..., None])[..., 0]
    residual = np.linalg.norm(apply_affine(initial, x + sample_field(ddf_mm, fixed, x)) - points, axis=-1)
    residual[np.linalg.det(jacobian(x)) <= 0] = np.inf  # folded: a moving point has more than one preimage
    if refuse_outside:
        outside = ~inside(fixed, x)
        if outside.any():
            raise OutsideField(np.flatnonzero(outside), "outside the fixed image once mapped (the registration covers "
                                                        "its field of view only)")
        unsolved = ~(residual < INVERSE_TOLERANCE_MM)
        if unsolved.any():
            raise OutsideField(np.flatnonzero(unsolved), "the registration cannot be inverted there (the field folds)")
    return Mapped(x, residual)


def inverse_ddf(ddf_mm: np.ndarray, fixed: Grid, initial: np.ndarray, moving: Grid) -> tuple[np.ndarray, np.ndarray]:
    """The inverse DDF on the moving grid, moving world -> fixed world (mm, float32), and each voxel's residual.

    Beyond the fixed grid the forward field is taken as constant (its edge values).
    """
    y = apply_affine(moving.affine, voxel_coordinates(moving.shape)).reshape(-1, 3)
    mapped = to_fixed(ddf_mm, fixed, initial, y, refuse_outside=False)
    field = (mapped.points - y).reshape(*moving.shape, 3).astype(np.float32)
    return field, mapped.residual_mm.reshape(moving.shape)


def _points(points_mm) -> np.ndarray:
    points = np.asarray(points_mm, np.float64)
    if points.ndim != 2 or points.shape[1] != 3 or not np.all(np.isfinite(points)):
        raise ValueError(f"points must be a finite (N, 3) array of mm, got shape {points.shape}")
    return points
