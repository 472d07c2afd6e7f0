"""The grid a network works on: images normalised and resampled onto it."""

from __future__ import annotations

import numpy as np
import torch

from ..core.geometry import Grid, regrid, shape_for_spacing
from .warp import warp


def normalise(data: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance (a constant image becomes zeros)."""
    data = np.asarray(data, np.float32)
    std = float(data.std())
    return (data - data.mean()) / (std if std > 0 else 1.0)


def network_grid(fixed: Grid, spacing_mm: float | None, shape=None) -> tuple[Grid, np.ndarray]:
    """The grid the network works on and its map to fixed voxels."""
    return regrid(fixed, shape or shape_for_spacing(fixed, spacing_mm))


def to_network_grid(volume: np.ndarray, matrix: np.ndarray, shape) -> torch.Tensor:
    """``(C, *shape)`` trilinear samples of a ``(C, ...)`` volume through ``matrix`` (grid voxel -> volume voxel)."""
    mat = torch.as_tensor(matrix, dtype=torch.float32)[None]
    return warp(torch.as_tensor(volume, dtype=torch.float32)[None], mat, None, shape)[0]
