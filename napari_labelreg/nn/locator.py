"""Gland locator: a starting point for registration from predicted gland centroids.

Two small segmentation networks (LocalNet encoders-decoders with one output
channel), one per modality, learn the gland from the training labels.  At
registration time each finds its image's gland; the translation that puts the
two centroids together starts the registration network, which was trained
from the true gland centroids (labels, known at training time) and random
affine jitter around them.  Without test labels this is what the
gland-centroid alignment does with them.

Shifts are world millimetres along the fixed image's axes, added to the
initial correspondence as a DDF would be: ``ddf = shift + network DDF``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.geometry import Grid, apply_affine, centroid_shift
from ..core.io import Volume
from .device import autocast, fast_layout
from .grid import network_grid, normalise, to_network_grid
from .networks import MULTIPLE, LocalNet
from .warp import moving_coordinates, sample

SIDES = ("moving", "fixed")
SPACING_MM = 3.0  # the locator's grid, whatever the registration network's


class GlandLocator(nn.Module):
    """One gland segmenter per modality, on a ``spacing_mm`` grid.

    ``cut``: the grid is cut to multiples of 16 voxels (see :func:`_cut`).  Locators trained before
    that change saw the whole grid, zero-padded, and keep it (``cut=False``).
    """

    def __init__(self, width: int = 16, spacing_mm: float = SPACING_MM, cut: bool = True) -> None:
        super().__init__()
        self.spacing_mm = float(spacing_mm)
        self.cut = bool(cut)
        self.nets = nn.ModuleDict({side: LocalNet(width, in_channels=1, out_channels=1) for side in SIDES})

    def forward(self, image: torch.Tensor, side: str) -> torch.Tensor:
        """Gland logits ``(B, 1, ...)`` of images ``(B, 1, ...)``."""
        return self.nets[side](image)

    @torch.no_grad()
    def locate(self, volume: Volume, side: str, precision: str = "bf16") -> np.ndarray:
        """World centroid (mm) of the gland the network finds in ``volume``.

        The centroid of the voxels at probability >= 0.5; of the probability
        map itself where none is.
        """
        image, to_volume = on_locator_grid(volume, self.spacing_mm, cut=self.cut)
        device = next(self.parameters()).device
        with autocast(device, precision):
            logits = self(fast_layout(image[None].to(device), precision), side)
        prob = torch.sigmoid(logits.float())[0, 0].cpu().numpy()
        mask = prob >= 0.5
        weights = (mask if mask.any() else prob).ravel().astype(float)
        voxels = np.indices(prob.shape).reshape(3, -1).T
        centre = voxels.T @ weights / weights.sum()
        return apply_affine(volume.grid.affine @ to_volume, centre)

    @torch.no_grad()
    def segment(self, volume: Volume, side: str, precision: str = "bf16") -> np.ndarray:
        """The gland the network finds in ``volume``, a bool mask on the volume's own grid.

        The logits on the locator's grid, interpolated trilinearly at the volume's voxels and thresholded at 0
        (probability 0.5): a smoother outline than the locator grid's voxels.  Where the volume reaches past
        the locator's (cut) grid, no gland.
        """
        image, to_volume = on_locator_grid(volume, self.spacing_mm, cut=self.cut)
        device = next(self.parameters()).device
        with autocast(device, precision):
            logits = self(fast_layout(image[None].to(device), precision), side)
        to_locator = torch.as_tensor(np.linalg.inv(to_volume), dtype=torch.float32)[None]
        inside = torch.ones_like(logits, dtype=torch.float32, device="cpu")
        at_voxels = moving_coordinates(to_locator, volume.grid.shape)
        logits, inside = (sample(t.float().cpu(), at_voxels)[0, 0] for t in (logits, inside))
        return ((logits > 0) & (inside > 0.5)).numpy()

    def shift_mm(self, moving: Volume, fixed: Volume, matrix: np.ndarray, precision: str = "bf16") -> np.ndarray:
        """The start's translation: the located glands' centroids brought together."""
        return self.start(moving, fixed, matrix, precision)[0]

    def start(self, moving: Volume, fixed: Volume, matrix: np.ndarray,
              precision: str = "bf16") -> tuple[np.ndarray, np.ndarray]:
        """``(shift_mm, fixed gland centroid mm)``: the start's translation and where the fixed gland is."""
        located = self.locate(moving, "moving", precision), self.locate(fixed, "fixed", precision)
        return centroid_shift(*located, moving.grid, fixed.grid, matrix), located[1]


def on_locator_grid(volume: Volume, spacing_mm: float, label: np.ndarray | None = None, *, cut: bool):
    """(1, ...) normalised image (and label) on the locator grid, and that grid's voxel -> volume voxel map."""
    grid, to_volume = network_grid(volume.grid, spacing_mm)
    if cut:
        grid, to_volume = _cut(grid, to_volume)
    stack = [normalise(volume.data)] + ([label.astype(np.float32)] if label is not None else [])
    on_grid = to_network_grid(np.stack(stack), to_volume, grid.shape)
    return (on_grid, to_volume) if label is None else (on_grid[:1], on_grid[1:], grid)


def _cut(grid: Grid, to_volume: np.ndarray) -> tuple[Grid, np.ndarray]:
    """The grid cut about its centre to multiples of 16 voxels, on the axes where that loses at most a tenth.

    The network pads every axis to a multiple of 16 with zeros.  A 103 mm MR field of view on a 3 mm grid
    is 34 voxels, which it would pad to 48: twice the work of 32, for 3 mm of image at each edge, far from
    the gland.  Training and :meth:`GlandLocator.locate` see the same cut grid.
    """
    shape = np.array(grid.shape)
    excess = shape % MULTIPLE
    shape = np.where(excess <= shape / 10, shape - excess, shape)
    crop = np.eye(4)
    crop[:3, 3] = (np.array(grid.shape) - shape) / 2
    return Grid(tuple(int(n) for n in shape), grid.affine @ crop), to_volume @ crop
