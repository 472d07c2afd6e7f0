"""Differentiable trilinear warping in torch, following geometry's convention.

Coordinates are moving voxel indices ``(B, D, H, W, 3)`` in (i, j, k) order;
:func:`napari_labelreg.core.geometry.to_grid_sample` is the only conversion to
``grid_sample`` order.  Volumes are ``(B, C, *shape)``; DDFs ``(B, 3, D, H, W)``
in network-grid voxel units.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core.geometry import to_grid_sample


def base_grid(shape, device=None) -> torch.Tensor:
    """Voxel indices of a grid, ``(*shape, 3)`` float32."""
    axes = [torch.arange(s, dtype=torch.float32, device=device) for s in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def transform_points(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply ``(B, 4, 4)`` matrices to points ``(B, D, H, W, 3)`` or shared ``(D, H, W, 3)``."""
    if points.dim() == 4:
        points = points.expand(matrix.shape[0], *points.shape)
    moved = torch.einsum("bij,bdhwj->bdhwi", matrix[:, :3, :3], points)
    return moved + matrix[:, None, None, None, :3, 3]


def moving_coordinates(matrix: torch.Tensor, shape, ddf: torch.Tensor | None = None) -> torch.Tensor:
    """Moving voxel coordinates for every network voxel: ``matrix @ (p + d(p))``.

    ``matrix`` ``(B, 4, 4)`` maps network voxels to moving voxels; ``ddf``
    ``(B, 3, *shape)`` is in network voxel units (or None for no deformation).
    """
    points = base_grid(shape, matrix.device)
    if ddf is not None:
        points = points + ddf.float().permute(0, 2, 3, 4, 1)
    return transform_points(matrix.float(), points)


def sample(volume: torch.Tensor, coordinates: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Trilinear sampling of ``(B, C, *shape)`` at voxel coordinates; zero outside (``padding="border"``: edges
    extended)."""
    grid = to_grid_sample(coordinates, volume.shape[2:])
    return F.grid_sample(volume.float(), grid, mode="bilinear", padding_mode=padding, align_corners=True)


def warp(volume: torch.Tensor, matrix: torch.Tensor, ddf: torch.Tensor | None, shape) -> torch.Tensor:
    """Resample moving ``volume`` onto a ``shape`` grid through ``matrix`` and ``ddf``."""
    return sample(volume, moving_coordinates(matrix, shape, ddf))
