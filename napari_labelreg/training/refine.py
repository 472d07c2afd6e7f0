"""The registration network's training step: minibatches of augmented quartets and the paper's loss.

(The network itself: :mod:`napari_labelreg.nn.networks`; the stage that trains and applies it:
:class:`napari_labelreg.pipeline.stages.Refine`.)
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from ..config import TrainConfig
from ..nn.device import autocast, fast_layout, to_device
from ..nn.losses import BendingEnergy, GradientL2, MultiScaleCrossEntropy, MultiScaleDice, MultiScaleFilter, folding
from ..nn.warp import moving_coordinates, sample
from .data import PreparedPair
from .sampling import affine_matrix, draw_affine, draw_quartets, step_generator
from .steps import adam, buffers_before, descend, figures


def build_losses(config: TrainConfig, grid) -> tuple[nn.Module, nn.Module]:
    filter_ = MultiScaleFilter(grid.shape, grid.spacing, config.loss.scales_mm)
    similarity = (MultiScaleDice if config.loss.similarity == "msdice" else MultiScaleCrossEntropy)(filter_)
    regulariser = BendingEnergy() if config.loss.regulariser == "bending" else GradientL2()
    return similarity, regulariser


class Batcher:
    """Draws and assembles the minibatch of one step (see sampling) on the training device.

    The pairs' volumes and labels are moved there once; each step draws its augmentations (4x4 matrices) on
    the CPU, sends them without waiting for the device, and resamples on the device, so a GPU builds its own
    batches while the host queues the next.
    """

    def __init__(self, prepared: list[PreparedPair], config: TrainConfig, device: torch.device, rank: int = 0):
        on = lambda x: x.to(device)  # noqa: E731 - a no-op on the CPU
        self.prepared = [replace(pp, fixed_image=on(pp.fixed_image), fixed_labels=on(pp.fixed_labels),
                                 moving_image=on(pp.moving_image), moving_labels=on(pp.moving_labels))
                         for pp in prepared]
        self.config, self.device, self.rank = config, device, rank
        self.shape = prepared[0].grid.shape
        self._prefiltered: dict[tuple[str, int, int], torch.Tensor] = {}
        self._priors: list[torch.Tensor] | None = None

    @property
    def priors(self) -> list[torch.Tensor] | None:
        """Per pair, the gland prior's DDF on its network grid (1, 3, *shape), network voxels; None: no prior."""
        return self._priors

    @priors.setter
    def priors(self, priors: list[torch.Tensor] | None) -> None:
        self._priors = None if priors is None else [p.to(self.device) for p in priors]

    def _labels(self, pp: PreparedPair, label: int, side: str) -> torch.Tensor:
        """(1, C, ...) label; with prefiltering, C = number of scales, filtered once and cached."""
        source = pp.moving_labels if side == "moving" else pp.fixed_labels
        raw = source[label][None, None]
        if not self.config.loss.prefilter:
            return raw
        key = (pp.name, label, side)
        if key not in self._prefiltered:
            shape = raw.shape[2:]
            spacing = (pp.grid if side == "fixed" else pp.moving_grid).spacing
            self._prefiltered[key] = MultiScaleFilter(shape, spacing, self.config.loss.scales_mm)(raw)
        return self._prefiltered[key]

    def _prior(self, p: int, t_moving: torch.Tensor) -> torch.Tensor:
        """Pair ``p``'s prior DDF seen through the moving side's augmentation ``t_moving`` (network voxels).

        The moving side maps network voxel x to ``to_moving @ t_moving @ (x + d)``: the prior,
        a displacement at ``t_moving @ x`` of the unaugmented grid, enters ``d`` as ``A^-1 u(t_moving @ x)``
        with A the augmentation's linear part.
        """
        inverse = to_device(torch.linalg.inv(t_moving[:3, :3]).float(), self.device)
        coordinates = moving_coordinates(to_device(t_moving[None].float(), self.device), self.shape)
        return torch.einsum("ij,bjdhw->bidhw", inverse, sample(self.priors[p], coordinates, padding="border"))

    def __call__(self, step: int):
        """``(inputs (B, 2, ...), fixed labels, matrices (B, 4, 4), moving labels, priors)`` of one step.

        The label entries are lists over the minibatch of ``(1, M * C, ...)``
        tensors: M label pairs (1, or all of the pair's with
        ``label_sampling="all"``) of C channels (1, or one per scale when
        pre-filtered).  ``priors``: the gland prior's DDF of each entry
        ``(B, 3, ...)``, to which the
        network's DDF is added; None without a prior.
        """
        g = step_generator(self.config.seed, self.rank, step)
        counts = [pp.num_labels for pp in self.prepared]
        inputs, fixed_labels, matrices, moving_labels, priors = [], [], [], [], []
        for p, label in draw_quartets(counts, self.config.batch_size, g):
            pp = self.prepared[p]
            chosen = range(pp.num_labels) if self.config.label_sampling == "all" else [label]
            t_moving = torch.as_tensor(affine_matrix(draw_affine(self.config.augment, g), pp.grid))
            t_fixed = torch.as_tensor(affine_matrix(draw_affine(self.config.augment, g), pp.grid))[None]
            matrix = to_device((pp.net_to_moving @ t_moving)[None], self.device)
            fixed_coords = moving_coordinates(to_device(t_fixed, self.device), self.shape)
            prior = None
            if self.priors is not None:
                prior = self._prior(p, t_moving)
                priors.append(prior)
            moving = sample(pp.moving_image[None], moving_coordinates(matrix, self.shape, prior))
            fixed = sample(pp.fixed_image[None], fixed_coords)
            inputs.append(torch.cat([moving, fixed], dim=1))
            fixed_stack = torch.cat([self._labels(pp, k, "fixed") for k in chosen], dim=1)
            fixed_labels.append(sample(fixed_stack, fixed_coords))
            matrices.append(matrix)
            moving_labels.append(torch.cat([self._labels(pp, k, "moving") for k in chosen], dim=1))
        priors = torch.cat(priors) if priors else None
        return torch.cat(inputs), fixed_labels, torch.cat(matrices), moving_labels, priors


def compute_loss(model, batch, similarity, regulariser, weight: float, device, precision: str, *,
                 label_channels: int = 1, folding_weight: float = 0.0):
    """(loss, similarity mean, regulariser mean) of one minibatch (see :meth:`Batcher.__call__`).

    ``label_channels``: C, the channels of one label (1, or the number of
    scales when pre-filtered).  The similarity of a minibatch entry is the mean
    over its label pairs; the loss averages the entries.  The loss adds
    ``weight`` times the regulariser of the network's DDF and ``folding_weight``
    times the folding of the whole DDF (network and prior; :func:`folding`).
    """
    inputs, fixed_labels, matrices, moving_labels, priors = batch
    with autocast(device, precision):
        ddf = model(fast_layout(inputs, precision))
    ddf = ddf.float()
    total = ddf if priors is None else ddf + priors  # the regulariser sees the network's own DDF
    shape = inputs.shape[2:]
    sims = []
    for b, (moving, fixed) in enumerate(zip(moving_labels, fixed_labels)):
        warped = sample(moving, moving_coordinates(matrices[b : b + 1], shape, total[b : b + 1]))
        c = label_channels  # (1, M * C, ...) -> M labels of C channels
        sims.append(similarity(warped.view(-1, c, *shape), fixed.view(-1, c, *shape)).mean())
    sim = torch.stack(sims).mean()
    reg = regulariser(ddf).mean()
    loss = sim + weight * reg
    if folding_weight:
        loss = loss + folding_weight * folding(total).mean()
    return loss, sim, reg


def network_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    return adam(model.parameters(), config.learning_rate)


def train_step(net: nn.Module, optimizer: torch.optim.Optimizer, batch, similarity, regulariser,
               config: TrainConfig, device: torch.device) -> torch.Tensor:
    """One step on ``batch`` (see :meth:`Batcher.__call__`): the loss, its gradients, Adam's update (skipped on
    the device when not finite: :func:`descend`).  Returns the step's :func:`figures`, unread."""
    channels = len(config.loss.scales_mm) if config.loss.prefilter else 1
    before = buffers_before(net)
    loss, sim, reg = compute_loss(net, batch, similarity, regulariser, config.loss.weight, device,
                                  config.precision, label_channels=channels, folding_weight=config.loss.folding)
    return figures(loss, descend(optimizer, loss, before), sim, reg)
