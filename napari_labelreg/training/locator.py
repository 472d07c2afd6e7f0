"""Training the gland locator (the networks and how they locate: :mod:`napari_labelreg.nn.locator`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from ..config import TrainConfig
from ..core.geometry import Grid
from ..core.io import Pair
from ..nn.device import autocast, fast_layout, to_device
from ..nn.locator import SIDES, GlandLocator, on_locator_grid
from ..nn.warp import moving_coordinates, sample
from .sampling import affine_matrix, draw_affine, step_generator
from .schedule import Budget, budgeted_steps, cosine
from .steps import adam, buffers_before, descend, figures

LEARNING_RATE = 1e-3  # cosine-decayed over the locator's budget


@dataclass
class _Side:
    images: list[torch.Tensor]  # (1, ...) on each subject's locator grid
    labels: list[torch.Tensor]
    grids: list[Grid]
    box: tuple[int, int, int]  # the largest grid: every subject is drawn into a box of this shape


def _side(pairs: Sequence[Pair], side: str, spacing_mm: float, cut: bool, device: torch.device) -> _Side:
    images, labels, grids = [], [], []
    for pair in pairs:
        volume = pair.moving if side == "moving" else pair.fixed
        gland = (pair.moving_labels if side == "moving" else pair.fixed_labels)[pair.gland_index]
        image, label, grid = on_locator_grid(volume, spacing_mm, gland, cut=cut)
        images.append(image.to(device)), labels.append(label.to(device)), grids.append(grid)
    box = tuple(int(max(g.shape[a] for g in grids)) for a in range(3))
    return _Side(images, labels, grids, box)


def _draw(side: _Side, batch: int, config: TrainConfig, g: torch.Generator):
    """A batch of (image, label) boxes about each subject's centre, randomly affine-transformed."""
    box = Grid.from_spacing(side.box, side.grids[0].spacing)
    xs, ys = [], []
    for i in torch.randint(len(side.images), (batch,), generator=g).tolist():
        grid = side.grids[i]
        to_grid = np.eye(4)
        to_grid[:3, 3] = grid.centre - box.centre  # box voxel -> subject grid voxel, centres together
        matrix = torch.as_tensor(to_grid @ affine_matrix(draw_affine(config.augment, g), box))[None]
        coords = moving_coordinates(to_device(matrix, side.images[i].device), side.box)
        xs.append(sample(side.images[i][None], coords)), ys.append(sample(side.labels[i][None], coords))
    return torch.cat(xs), torch.cat(ys)


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss plus binary cross-entropy, averaged over the batch."""
    prob = torch.sigmoid(logits)
    dims = tuple(range(1, logits.dim()))
    dice = (2 * (prob * target).sum(dims) + 1) / (prob.sum(dims) + target.sum(dims) + 1)
    return (1 - dice).mean() + F.binary_cross_entropy_with_logits(logits, target)


def own_sides(rank: int = 0, world: int = 1) -> tuple[str, ...]:
    """The segmenters this rank trains: both alone, one per rank under DDP (see :func:`train_locator`)."""
    return SIDES if world == 1 else (SIDES[rank % 2],)


def locator_optimizer(locator: GlandLocator, rank: int = 0, world: int = 1) -> torch.optim.Optimizer:
    return adam([p for side in own_sides(rank, world) for p in locator.nets[side].parameters()], LEARNING_RATE)


def train_locator(locator: GlandLocator, pairs: Sequence[Pair], config: TrainConfig, optimizer, budget: Budget, *,
                  start: int = 0, device: torch.device, rank: int = 0, world: int = 1
                  ) -> Iterator[tuple[int, torch.Tensor]]:
    """Train the segmenters from step ``start``, one step each per iteration; yields ``(step, figures)`` of
    their mean loss (:func:`.steps.figures`, unread).

    ``optimizer``: :func:`locator_optimizer`'s (or its restored state).  Each side draws from its own
    generator, a function of the seed and step only.  Under DDP the sides are shared out: rank r trains
    side r % 2 alone (ranks of one side train it alike), about twice the steps per segmenter in the
    same time, and the trained segmenters are then broadcast from ranks 0 and 1, so that every rank ends
    with the same locator as one process would train in as many steps.  Batches are the run's effective
    size, ``batch_size`` × ``world``.
    """
    own = own_sides(rank, world)
    batch = config.batch_size * world  # the run's effective batch, as the registration network's
    sides = {side: _side(pairs, side, locator.spacing_mm, locator.cut, device) for side in own}  # moved there once
    locator.to(device).train()
    for step in budgeted_steps(optimizer, lambda used: cosine(LEARNING_RATE, used), budget, start):
        losses, before = [], buffers_before(*(locator.nets[side] for side in own))
        for side in own:
            x, y = _draw(sides[side], batch, config, step_generator(config.seed, SIDES.index(side), step))
            with autocast(device, config.precision):
                logits = locator(fast_layout(x, config.precision), side)
            losses.append(segmentation_loss(logits.float(), y))
        loss = torch.stack(losses).sum()
        yield step + 1, figures(loss / len(own), descend(optimizer, loss, before))
    if world > 1:
        for src, side in enumerate(SIDES):
            for tensor in locator.nets[side].state_dict().values():
                dist.broadcast(tensor, src)
    locator.eval()
