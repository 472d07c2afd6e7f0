"""Turning image pairs into tensors the training loop can sample from.

Each pair is prepared once: images normalised to zero mean and unit variance,
the fixed image and labels put on the network grid (the fixed field of view at
the configured spacing), the moving image and labels kept on their own grid,
and the 4x4 map from network voxels to moving voxels.  Moving data is only ever
interpolated once, at the warped coordinates (no resize-then-warp).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..core.geometry import Grid, centroid_shift, fixed_to_moving, shape_for_spacing, translation
from ..core.io import DataError, Pair
from ..core.metrics import centroid_mm
from ..nn.grid import network_grid, normalise, to_network_grid


@dataclass
class PreparedPair:
    name: str
    grid: Grid  # network grid (fixed field of view)
    net_to_moving: torch.Tensor  # (4, 4) float64 -> float32 on use
    fixed_image: torch.Tensor  # (1, *grid.shape)
    fixed_labels: torch.Tensor  # (M, *grid.shape), soft in [0, 1]
    moving_image: torch.Tensor  # (1, *moving shape)
    moving_labels: torch.Tensor  # (M, *moving shape), {0, 1}
    gland: int  # index of the gland label pair (see Pair.gland_index)
    fixed_grid: Grid  # the fixed image's own grid
    moving_grid: Grid
    net_to_fixed: np.ndarray  # (4, 4) network voxels -> fixed voxels
    fixed_gland_mm: np.ndarray  # (3,) world centroid of the labelled fixed gland

    @property
    def num_labels(self) -> int:
        return int(self.fixed_labels.shape[0])




def gland_start(pair: Pair, convention: str) -> np.ndarray:
    """Fixed voxel -> moving voxel map of ``convention`` followed by the labelled glands' centroid shift."""
    matrix = fixed_to_moving(pair.fixed.grid, pair.moving.grid, convention)
    g = pair.gland_index
    moving_mm = centroid_mm(pair.moving_labels[g], pair.moving.grid)
    fixed_mm = centroid_mm(pair.fixed_labels[g], pair.fixed.grid)
    shift = centroid_shift(moving_mm, fixed_mm, pair.moving.grid, pair.fixed.grid, matrix)
    return matrix @ translation(pair.fixed.grid, shift)


def prepare_pair(pair: Pair, convention: str, spacing_mm: float | None, shape=None, *,
                 glands: bool = False) -> PreparedPair:
    """Tensors of one pair for training (see module docstring).

    ``glands``: the network starts from the labelled glands' centroids brought
    together (see :mod:`napari_labelreg.training.locator`), not from ``convention`` alone.
    """
    grid, net_to_fixed = network_grid(pair.fixed.grid, spacing_mm, shape)
    start = gland_start(pair, convention) if glands else fixed_to_moving(pair.fixed.grid, pair.moving.grid, convention)
    to_moving = start @ net_to_fixed
    fixed_stack = np.concatenate([normalise(pair.fixed.data)[None], pair.fixed_labels.astype(np.float32)])
    fixed_net = to_network_grid(fixed_stack, net_to_fixed, grid.shape)
    return PreparedPair(
        name=pair.name,
        grid=grid,
        net_to_moving=torch.as_tensor(to_moving),
        fixed_image=fixed_net[:1],
        fixed_labels=fixed_net[1:],
        moving_image=torch.as_tensor(normalise(pair.moving.data))[None],
        moving_labels=torch.as_tensor(pair.moving_labels.astype(np.float32)),
        gland=pair.gland_index,
        fixed_grid=pair.fixed.grid,
        moving_grid=pair.moving.grid,
        net_to_fixed=net_to_fixed,
        fixed_gland_mm=centroid_mm(pair.fixed_labels[pair.gland_index], pair.fixed.grid),
    )


def prepare_pairs(pairs: Sequence[Pair], convention: str, spacing_mm: float | None, *,
                  glands: bool = False) -> list[PreparedPair]:
    """Prepare all pairs on network grids of one common shape (so they batch).

    The shape comes from the first pair's field of view at ``spacing_mm``;
    pairs whose fixed grids differ are sampled to that same voxel count over
    their own field of view.  Pairs without labels are refused: they carry no
    training signal.
    """
    if not pairs:
        raise DataError("no image pairs to train on")
    unlabelled = [p.name for p in pairs if p.num_labels == 0]
    if unlabelled:
        raise DataError(f"pairs without label pairs cannot be trained on: {', '.join(unlabelled[:5])}")
    shape = shape_for_spacing(pairs[0].fixed.grid, spacing_mm)
    return [prepare_pair(p, convention, spacing_mm, shape, glands=glands) for p in pairs]
