"""Two-stage minibatch sampling and random affine augmentation.

Both are stateless given ``(seed, rank, step)``: every draw comes from a
``torch.Generator`` seeded from those three numbers, so a resumed or
distributed run draws exactly what an uninterrupted one would.  Parameters
are drawn first, then applied deterministically.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..config import AugmentConfig
from ..core.geometry import Grid


def step_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The generator for one step of one rank."""
    g = torch.Generator()
    g.manual_seed((seed * 1_000_003 + rank * 10_007 + step) % (2**63 - 1))
    return g


def draw_quartets(label_counts: list[int], batch_size: int, g: torch.Generator) -> list[tuple[int, int]]:
    """Paper's two-stage sampling: K pairs uniformly, then one label pair each, uniformly.

    Returns ``batch_size`` (pair index, label index) tuples.  Drawing pairs
    first keeps the minibatch size fixed and the gradient unbiased however
    many labels each pair has (paper Eq. 3).
    """
    pairs = torch.randint(len(label_counts), (batch_size,), generator=g).tolist()
    return [(p, int(torch.randint(label_counts[p], (1,), generator=g))) for p in pairs]


@dataclass(frozen=True)
class AffineParams:
    """One random affine: rotations (rad), scales, shears and translation (mm)."""

    rotation: tuple[float, float, float]
    scale: tuple[float, float, float]
    shear: tuple[float, float, float]
    translation: tuple[float, float, float]


def draw_affine(cfg: AugmentConfig, g: torch.Generator) -> AffineParams:
    """Uniform draws within the configured ranges; identity when disabled."""
    u = (torch.rand(12, generator=g, dtype=torch.float64) * 2 - 1).tolist()
    if not cfg.enabled:
        u = [0.0] * 12
    rot = tuple(math.radians(cfg.rotation_deg) * v for v in u[0:3])
    return AffineParams(rot, tuple(1 + cfg.scale * v for v in u[3:6]), tuple(cfg.shear * v for v in u[6:9]),
                        tuple(cfg.translation_mm * v for v in u[9:12]))


def affine_matrix(params: AffineParams, grid: Grid) -> np.ndarray:
    """4x4 voxel-to-voxel matrix of ``params`` acting about the grid centre, in mm."""
    a, b, c = params.rotation
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    shear = np.eye(3)
    shear[0, 1], shear[0, 2], shear[1, 2] = params.shear
    linear_mm = rx @ ry @ rz @ shear @ np.diag(params.scale)
    h = grid.spacing
    linear = np.diag(1 / h) @ linear_mm @ np.diag(h)
    matrix = np.eye(4)
    matrix[:3, :3] = linear
    matrix[:3, 3] = grid.centre - linear @ grid.centre + np.asarray(params.translation) / h
    return matrix

