"""Synthetic MR/TRUS prostate phantoms with a known deformation (numpy only).

A gland-like ellipsoid with small landmarks inside is drawn on a moving (MR)
grid; the fixed (TRUS) volume is the same anatomy seen through a smooth random
deformation whose DDF is returned, so registration accuracy can be checked
densely.  Intensities differ between the two modalities (MR: smooth tissue
contrast; TRUS: a different mapping with multiplicative speckle), and labels
are exact: the fixed masks are the analytic shapes pulled back through the
ground-truth deformation, not interpolated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from .geometry import Grid, apply_affine, ddf_mm_to_voxels, fixed_to_moving, voxel_coordinates
from .io import Pair, Volume

LANDMARKS = ("apex", "base", "calcification", "cyst", "zonal boundary")


@dataclass(frozen=True)
class Phantom:
    """A phantom pair and its ground truth ``ddf_mm`` (fixed grid, fixed -> moving)."""

    pair: Pair
    ddf_mm: np.ndarray
    convention: str = "centred"


def _shapes(rng: np.random.Generator, extent_mm: float, n_landmarks: int):
    radii = extent_mm * rng.uniform(0.22, 0.3, 3)
    gland = (np.zeros(3), radii)
    marks = []
    for _ in range(n_landmarks):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        centre = direction * radii * rng.uniform(0.2, 0.6)
        marks.append((centre, np.full(3, extent_mm * rng.uniform(0.08, 0.11))))
    return [gland, *marks]


def _inside(points_mm: np.ndarray, shape) -> np.ndarray:
    centre, radii = shape
    return (((points_mm - centre) / radii) ** 2).sum(-1) <= 1.0


def smooth_field(rng: np.random.Generator, shape, spacing, amplitude_mm: float, smoothness_mm: float) -> np.ndarray:
    """A random smooth DDF ``(*shape, 3)`` in mm: smoothed noise scaled to ``amplitude_mm`` peak."""
    field = np.stack([gaussian_filter(rng.normal(size=shape), smoothness_mm / spacing) for _ in range(3)], -1)
    peak = np.abs(field).max()
    return field * (amplitude_mm / peak if peak > 0 else 0.0)


def make_phantom(
    seed: int = 0,
    *,
    fixed_shape=(24, 28, 20),
    moving_shape=(30, 30, 26),
    spacing: float = 2.0,
    n_landmarks: int = 3,
    amplitude_mm: float = 4.0,
    translation_mm: float = 3.0,
) -> Phantom:
    """One phantom pair on ``centred`` grids with ``1 + n_landmarks`` label pairs.

    Label 0 is the gland.  The ground-truth DDF is a random translation (up to
    ``translation_mm``) plus a smooth field (peak ``amplitude_mm``).
    """
    rng = np.random.default_rng(seed)
    fixed = Grid.from_spacing(fixed_shape, (spacing,) * 3)
    moving = Grid.from_spacing(moving_shape, (spacing,) * 3)
    extent = min(fixed_shape) * spacing
    shapes = _shapes(rng, extent, n_landmarks)

    ddf = smooth_field(rng, fixed.shape, spacing, amplitude_mm, smoothness_mm=4 * spacing)
    ddf += rng.uniform(-translation_mm, translation_mm, 3)

    # anatomy coordinates (mm about the moving centre) of every voxel on each side
    m_centre = apply_affine(moving.affine, moving.centre)
    m_points = apply_affine(moving.affine, voxel_coordinates(moving.shape)) - m_centre
    f_to_m = fixed_to_moving(fixed, moving, "centred")
    f_vox = voxel_coordinates(fixed.shape) + ddf_mm_to_voxels(ddf, fixed)
    f_points = apply_affine(moving.affine @ f_to_m, f_vox) - m_centre

    m_masks = np.stack([_inside(m_points, s) for s in shapes])
    f_masks = np.stack([_inside(f_points, s) for s in shapes])
    texture = gaussian_filter(rng.normal(size=64), 2)  # tissue signal along a radial profile

    def tissue(points, masks):
        radial = np.linalg.norm(points / shapes[0][1], axis=-1)
        signal = np.interp(radial, np.linspace(0, 2, 64), texture)
        return signal, masks[0].astype(np.float32), masks[1:].any(0).astype(np.float32)

    sig, gland, marks = tissue(m_points, m_masks)
    mr = 100 + 60 * gland + 40 * marks + 10 * sig + rng.normal(0, 2, moving.shape)
    sig, gland, marks = tissue(f_points, f_masks)
    speckle = gaussian_filter(rng.rayleigh(1.0, fixed.shape), 0.8)  # spatially correlated, like real speckle
    speckle /= speckle.mean()
    us = (90 - 45 * gland + 80 * marks + 15 * sig) * speckle + 10 * (f_points[..., 2] / extent)
    names = ("gland", *LANDMARKS[:n_landmarks]) if n_landmarks <= len(LANDMARKS) else None
    pair = Pair(
        f"phantom{seed:03d}",
        Volume(np.clip(mr, 0, 255).astype(np.float32), moving),
        Volume(np.clip(us, 0, 255).astype(np.float32), fixed),
        m_masks,
        f_masks,
        names or (),
    )
    return Phantom(pair, ddf.astype(np.float32))
