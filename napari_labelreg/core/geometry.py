"""Grids, initial correspondence and the one displacement convention.

Conventions, used everywhere in the package
------------------------------------------
* Arrays are indexed ``(i, j, k)`` exactly as nibabel returns them; a grid is a
  shape plus a 4x4 ``affine`` mapping voxel indices to world millimetres.
* A dense displacement field (DDF) lives on the **fixed** grid and points from
  fixed to moving: the warped moving image at fixed voxel ``p`` is the moving
  volume sampled at world point ``x(p) + u(p)``.
* Exported and stored DDFs have shape ``(I, J, K, 3)`` and hold ``u`` in
  millimetres along the fixed image's world axes (the NIfTI/RAS frame of the
  fixed affine).  Inside the network the same field is carried in fixed-voxel
  units, ``d = R_f^-1 u`` with ``R_f`` the linear part of the fixed affine.
* The *initial correspondence* between the two volumes is a 4x4 matrix
  ``fixed_to_moving`` taking fixed voxel indices to moving voxel indices; the
  three conventions (``world``, ``centred``, ``fov``) only differ in it.

Only this module knows torch's ``grid_sample`` order (x = last array axis,
normalised to [-1, 1] with ``align_corners=True``): see :func:`to_grid_sample`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Convention = Literal["world", "centred", "fov"]
CONVENTIONS: tuple[str, ...] = ("world", "centred", "fov")


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` (3 ints) and ``affine`` (4x4, voxel -> mm)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        affine = np.asarray(self.affine, dtype=np.float64)
        if len(shape) != 3 or min(shape) < 2:
            raise ValueError(f"a grid needs 3 axes of at least 2 voxels, got shape {shape}")
        if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
            raise ValueError(f"a grid affine must be a finite 4x4 matrix, got {affine.shape}")
        if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
            raise ValueError("a grid affine must be invertible")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "affine", affine)

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size in mm along each array axis, shape (3,)."""
        return np.linalg.norm(self.affine[:3, :3], axis=0)

    @property
    def centre(self) -> np.ndarray:
        """Voxel coordinates of the volume centre, shape (3,)."""
        return (np.asarray(self.shape, dtype=np.float64) - 1.0) / 2.0

    @classmethod
    def from_spacing(cls, shape, spacing=(1.0, 1.0, 1.0)) -> "Grid":
        """Axis-aligned grid with its corner voxel at the origin."""
        return cls(tuple(shape), np.diag([*np.asarray(spacing, dtype=np.float64), 1.0]))


def _scale_about(src: Grid, dst: Grid, scale: np.ndarray) -> np.ndarray:
    """Matrix taking src voxels to dst voxels, centres aligned, per-axis scale."""
    mat = np.eye(4)
    mat[:3, :3] = np.diag(scale)
    mat[:3, 3] = dst.centre - scale * src.centre
    return mat


def fixed_to_moving(fixed: Grid, moving: Grid, convention: Convention) -> np.ndarray:
    """Initial correspondence as a 4x4 map from fixed to moving voxel indices.

    Parameters
    ----------
    fixed, moving : Grid
        The two grids.
    convention : {'world', 'centred', 'fov'}
        ``world``: both affines as given.  ``centred``: voxel sizes from the
        headers, array axes taken as parallel, volume centres aligned, origins
        and rotations ignored.  ``fov``: headers ignored, the moving volume
        stretched onto the fixed field of view (voxel edges aligned).
    """
    if convention == "world":
        return np.linalg.inv(moving.affine) @ fixed.affine
    if convention == "centred":
        return _scale_about(fixed, moving, fixed.spacing / moving.spacing)
    if convention == "fov":
        ratio = np.asarray(moving.shape, float) / np.asarray(fixed.shape, float)
        return _scale_about(fixed, moving, ratio)
    raise ValueError(f"unknown convention {convention!r}; choose one of {CONVENTIONS}")


def voxel_coordinates(shape: tuple[int, int, int]) -> np.ndarray:
    """Voxel indices of every voxel, shape ``(*shape, 3)``, float64."""
    axes = [np.arange(s, dtype=np.float64) for s in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def to_grid_sample(points, shape):
    """Voxel indices ``(..., 3)`` in (i, j, k) order -> ``grid_sample`` coordinates.

    ``grid_sample`` (``align_corners=True``) wants the last array axis first and
    each axis normalised so that voxel 0 is -1 and voxel ``n - 1`` is +1.  This
    is the only place in the package that knows it; :func:`from_grid_sample`
    is its exact inverse.  Works on numpy arrays and torch tensors alike
    (differentiably), without importing torch.
    """
    out = points * 0.0
    for a, n in enumerate(shape):
        out[..., 2 - a] = 2.0 * points[..., a] / float(n - 1) - 1.0
    return out


def from_grid_sample(grid, shape):
    """Inverse of :func:`to_grid_sample`."""
    out = grid * 0.0
    for a, n in enumerate(shape):
        out[..., a] = (grid[..., 2 - a] + 1.0) * float(n - 1) / 2.0
    return out


def ddf_voxels_to_mm(ddf_vox: np.ndarray, fixed: Grid) -> np.ndarray:
    """Fixed-voxel displacements ``(..., 3)`` -> millimetres in fixed world axes."""
    return ddf_vox @ fixed.affine[:3, :3].T


def ddf_mm_to_voxels(ddf_mm: np.ndarray, fixed: Grid) -> np.ndarray:
    """Millimetre displacements in fixed world axes -> fixed-voxel units."""
    return ddf_mm @ np.linalg.inv(fixed.affine[:3, :3]).T


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 matrix to points ``(..., 3)``."""
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def moving_coordinates(
    fixed: Grid, moving: Grid, convention: Convention | np.ndarray, ddf_mm: np.ndarray | None = None
) -> np.ndarray:
    """Moving voxel coordinates to sample at each fixed voxel, ``(*fixed.shape, 3)``.

    ``convention`` is a convention name or a ready ``fixed_to_moving`` matrix;
    ``ddf_mm`` (``(*fixed.shape, 3)``, mm, fixed world axes) adds a deformation.
    """
    matrix = convention if isinstance(convention, np.ndarray) else fixed_to_moving(fixed, moving, convention)
    points = voxel_coordinates(fixed.shape)
    if ddf_mm is not None:
        if ddf_mm.shape != (*fixed.shape, 3):
            raise ValueError(f"DDF shape {ddf_mm.shape} does not match the fixed grid {fixed.shape} + (3,)")
        points = points + ddf_mm_to_voxels(ddf_mm, fixed)
    return apply_affine(matrix, points)


def sample(volume: np.ndarray, coordinates: np.ndarray, *, order: int = 1) -> np.ndarray:
    """Sample ``volume`` at voxel ``coordinates`` ``(..., 3)``, zero-padded outside
    (as ``grid_sample`` with ``padding_mode="zeros"``).

    ``order=1`` is trilinear (images and soft labels), ``order=0`` nearest.
    """
    from scipy.ndimage import map_coordinates

    moved = np.moveaxis(coordinates, -1, 0)
    return map_coordinates(np.asarray(volume, np.float32), moved, order=order, mode="grid-constant", cval=0.0)


def resample_field(field: np.ndarray, fixed_to_net: np.ndarray, shape) -> np.ndarray:
    """Trilinearly resample a vector field ``(*net, 3)`` onto a ``shape`` grid; edges clamped."""
    from scipy.ndimage import map_coordinates

    coords = np.moveaxis(apply_affine(fixed_to_net, voxel_coordinates(tuple(shape))), -1, 0)
    return np.stack(
        [map_coordinates(field[..., c], coords, order=1, mode="nearest") for c in range(3)], axis=-1
    )


def warp(
    volume: np.ndarray,
    fixed: Grid,
    moving: Grid,
    convention: Convention | np.ndarray,
    ddf_mm: np.ndarray | None = None,
) -> np.ndarray:
    """Resample a moving volume (image or mask) onto the fixed grid, trilinearly.

    Masks come back soft, in [0, 1]; threshold at 0.5 for a binary mask.
    """
    if volume.shape != moving.shape:
        raise ValueError(f"volume shape {volume.shape} differs from the moving grid {moving.shape}")
    return sample(volume, moving_coordinates(fixed, moving, convention, ddf_mm))


def regrid(grid: Grid, shape) -> tuple[Grid, np.ndarray]:
    """The same field of view sampled with ``shape`` voxels (voxel edges aligned).

    Returns the new grid and the 4x4 matrix taking its voxel indices to
    ``grid``'s voxel indices.
    """
    ratio = np.asarray(grid.shape, float) / np.asarray(shape, float)
    matrix = np.eye(4)
    matrix[:3, :3] = np.diag(ratio)
    matrix[:3, 3] = 0.5 * ratio - 0.5
    return Grid(tuple(int(s) for s in shape), grid.affine @ matrix), matrix


def shape_for_spacing(grid: Grid, spacing_mm: float | None) -> tuple[int, int, int]:
    """Voxel counts covering ``grid``'s field of view at about ``spacing_mm``."""
    if spacing_mm is None:
        return grid.shape
    extent = np.asarray(grid.shape) * grid.spacing
    return tuple(max(2, int(round(e / spacing_mm))) for e in extent)


def centroid_shift(moving_mm, fixed_mm, moving: Grid, fixed: Grid, matrix: np.ndarray) -> np.ndarray:
    """Fixed-space translation (mm) from a fixed point to where ``matrix`` puts a moving point.

    As a constant DDF (fixed -> moving, mm), it brings ``moving_mm`` onto
    ``fixed_mm``: with glands' centroids, the gland-centroid alignment.
    """
    moving_vox = apply_affine(np.linalg.inv(moving.affine), np.asarray(moving_mm, float))
    return apply_affine(fixed.affine @ np.linalg.inv(matrix), moving_vox) - np.asarray(fixed_mm, float)


def translation(fixed: Grid, shift_mm) -> np.ndarray:
    """The 4x4 fixed-voxel translation of a constant DDF ``shift_mm`` (mm along the fixed axes)."""
    t = np.eye(4)
    t[:3, 3] = np.linalg.solve(fixed.affine[:3, :3], np.asarray(shift_mm, float))
    return t


def display_affines(fixed: Grid, moving: Grid, convention: Convention) -> tuple[np.ndarray, np.ndarray, bool]:
    """Voxel -> display-world affines that put corresponding points of the two volumes at one place.

    The fixed volume is shown on its voxel size (corner at the origin, axes as
    stored); the moving volume is placed through the initial correspondence,
    so one display position shows corresponding anatomy in both.  Returns
    ``(fixed_affine, moving_affine, exact)``; ``exact`` is False where the
    correspondence rotates or shears the axes, which a viewer slicing along
    array axes cannot show: the moving affine then keeps only its per-axis
    scale and the centre correspondence.
    """
    fixed_affine = np.diag([*fixed.spacing, 1.0])
    moving_affine = fixed_affine @ np.linalg.inv(fixed_to_moving(fixed, moving, convention))
    linear = moving_affine[:3, :3]
    exact = bool(np.allclose(linear, np.diag(np.diag(linear)), atol=1e-6 * np.abs(linear).max()))
    if not exact:
        scale = np.linalg.norm(linear, axis=0)
        centre_display = apply_affine(moving_affine, moving.centre[None])[0]
        moving_affine = np.diag([*scale, 1.0])
        moving_affine[:3, 3] = centre_display - scale * moving.centre
    return fixed_affine, moving_affine, exact
