"""Fitting the gland prior (the field itself, and why it exists: :mod:`napari_labelreg.nn.prior`)."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from ..nn.prior import GlandPrior, grid_frame
from ..nn.warp import moving_coordinates, sample
from .data import PreparedPair
from .sampling import step_generator
from .schedule import Budget, budgeted_steps, cosine
from .steps import adam, descend, figures

LEARNING_RATE = 0.1  # millimetres per Adam step, cosine-decayed over the prior's budget
BATCH = 16  # image pairs per step, all of their label pairs


def prior_optimizer(prior: GlandPrior) -> torch.optim.Optimizer:
    return adam(prior.parameters(), LEARNING_RATE)


def train_prior(prior: GlandPrior, pairs: Sequence[PreparedPair], similarity, regulariser, weight: float, optimizer,
                budget: Budget, *, seed: int, start: int = 0,
                device: torch.device = torch.device("cpu")) -> Iterator[tuple[int, torch.Tensor]]:
    """Fit the prior to ``pairs`` (prepared from their true gland centroids) from step ``start``; yields
    ``(step, figures)`` of its loss (:func:`.steps.figures`, unread).

    ``optimizer``: :func:`prior_optimizer`'s (or its restored state).  Each step draws ``BATCH`` pairs (a
    function of the seed and step only, so that every rank of a distributed run fits the same prior) and
    averages the similarity of all their label pairs, warped by the prior alone, plus ``weight`` times the
    regulariser of the prior's field on the network grid.
    """
    prior.to(device)
    frames = [grid_frame(pp.grid, pp.fixed_gland_mm, device) for pp in pairs]
    # on the device once: each pair's labels (M, 1, ...) and its network-to-moving matrix for each of them
    labels = [(pp.moving_labels[:, None].to(device), pp.fixed_labels[:, None].to(device)) for pp in pairs]
    to_moving = [pp.net_to_moving[None].float().expand(pp.num_labels, 4, 4).to(device) for pp in pairs]
    prior.train()
    for step in budgeted_steps(optimizer, lambda used: cosine(LEARNING_RATE, used), budget, start):
        g = step_generator(seed, 0, step)
        sims, regs = [], []
        for i in torch.randperm(len(pairs), generator=g)[:BATCH].tolist():
            ddf = prior.on_grid(frames[i])
            moving, fixed = labels[i]
            coords = moving_coordinates(to_moving[i], pairs[i].grid.shape, ddf.expand(len(moving), -1, -1, -1, -1))
            sims.append(similarity(sample(moving, coords), fixed).mean())
            regs.append(regulariser(ddf).mean())
        loss = torch.stack(sims).mean() + weight * torch.stack(regs).mean()
        yield step + 1, figures(loss, descend(optimizer, loss))
    prior.cpu().eval()
