"""Gland prior: the training population's mean deformation about the gland.

Aligning the gland centroids leaves a residual that is partly the same in
every subject: on ../shared/data/mrus_prostate the landmarks' offsets from the
gland centroid are about a quarter smaller along one axis in TRUS than in MR,
while the gland outline is not, which no affine captures without costing gland
overlap.  The prior learns that common part once, image-independently: one
smooth displacement field (world millimetres) over a cube centred on the fixed
gland's centroid, trained by the registration network's own loss (multiscale
Dice over all label pairs, plus its regulariser) on the training pairs from
their true gland centroids.  The registration network then learns only what
differs between subjects: its DDF is added to the prior's, in training (where
the prior is sampled through the moving side's augmentation) and at
registration time, where the fixed gland's centroid comes from the locator.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..core.geometry import Grid, apply_affine, to_grid_sample, voxel_coordinates

HALF_WIDTH_MM = 60.0  # the field covers the gland centroid +/- this, and is constant beyond
CONTROL_POINTS = 21  # per axis: a 6 mm lattice, interpolated trilinearly


class GlandPrior(nn.Module):
    """A displacement field (mm) over fixed-world offsets (mm) from the fixed gland centroid.

    Zero-initialised (the identity).  ``forward(offsets)`` maps ``(..., 3)``
    offsets to ``(..., 3)`` displacements along the fixed world axes.
    """

    def __init__(self, half_width_mm: float = HALF_WIDTH_MM, points: int = CONTROL_POINTS) -> None:
        super().__init__()
        if half_width_mm <= 0 or points < 2:
            raise ValueError(f"a gland prior needs a positive half-width and >= 2 points, got {half_width_mm}, "
                             f"{points}")
        self.half_width_mm, self.points = float(half_width_mm), int(points)
        self.field = nn.Parameter(torch.zeros(1, 3, points, points, points))

    def forward(self, offsets_mm: torch.Tensor) -> torch.Tensor:
        lattice = (offsets_mm.reshape(1, -1, 1, 1, 3).float() / self.half_width_mm + 1.0) * (self.points - 1) / 2.0
        grid = to_grid_sample(lattice, (self.points,) * 3)
        u = F.grid_sample(self.field, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return u.reshape(3, -1).T.reshape(*offsets_mm.shape)

    def on_grid(self, frame: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """The prior in a :func:`grid_frame`: ``(1, 3, *shape)``, grid voxels (differentiable)."""
        offsets, to_voxels = frame
        return (self(offsets) @ to_voxels).permute(3, 0, 1, 2)[None]

    @torch.no_grad()
    def grid_ddf(self, grid: Grid, centroid_mm: np.ndarray) -> torch.Tensor:
        """The prior on ``grid`` about a fixed gland centroid (world mm): ``(1, 3, *grid.shape)``, grid voxels."""
        return self.on_grid(grid_frame(grid, centroid_mm, self.field.device))


def grid_frame(grid: Grid, centroid_mm: np.ndarray, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(offsets (*shape, 3) of the grid's voxels from a centroid, world mm; mm -> grid-voxel matrix)``."""
    offsets = apply_affine(grid.affine, voxel_coordinates(grid.shape)) - centroid_mm
    to_voxels = np.linalg.inv(grid.affine[:3, :3]).T
    return (torch.as_tensor(offsets, dtype=torch.float32, device=device),
            torch.as_tensor(to_voxels, dtype=torch.float32, device=device))
