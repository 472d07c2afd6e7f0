"""Fitting the gland prior (the field itself, and why it exists: :mod:`napari_labelreg.nn.prior`)."""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from ..nn.prior import GlandPrior, grid_frame
from ..nn.warp import moving_coordinates, sample
from .data import PreparedPair
from .sampling import step_generator
from .schedule import Budget, budgeted_steps, cosine

LEARNING_RATE = 0.1  # millimetres per Adam step, cosine-decayed over the prior's budget
BATCH = 16  # image pairs per step, all of their label pairs


def prior_optimizer(prior: GlandPrior) -> torch.optim.Optimizer:
    return torch.optim.Adam(prior.parameters(), lr=LEARNING_RATE)


def train_prior(prior: GlandPrior, pairs: Sequence[PreparedPair], similarity, regulariser, weight: float, optimizer,
                budget: Budget, *, seed: int, start: int = 0,
                device: torch.device = torch.device("cpu")) -> Iterator[tuple[int, float]]:
    """Fit the prior to ``pairs`` (prepared from their true gland centroids) from step ``start``; yields
    ``(step, loss)``.

    ``optimizer``: :func:`prior_optimizer`'s (or its restored state).  Each step draws ``BATCH`` pairs (a
    function of the seed and step only, so that every rank of a distributed run fits the same prior) and
    averages the similarity of all their label pairs, warped by the prior alone, plus ``weight`` times the
    regulariser of the prior's field on the network grid.
    """
    prior.to(device)
    frames = [grid_frame(pp.grid, pp.fixed_gland_mm, device) for pp in pairs]
    prior.train()
    for step in budgeted_steps(optimizer, lambda used: cosine(LEARNING_RATE, used), budget, start):
        g = step_generator(seed, 0, step)
        sims, regs = [], []
        for i in torch.randperm(len(pairs), generator=g)[:BATCH].tolist():
            pp = pairs[i]
            ddf = prior.on_grid(frames[i])
            m = pp.num_labels
            coords = moving_coordinates(pp.net_to_moving[None].float().expand(m, 4, 4).to(device), pp.grid.shape,
                                        ddf.expand(m, -1, -1, -1, -1))
            warped = sample(pp.moving_labels[:, None].to(device), coords)
            sims.append(similarity(warped, pp.fixed_labels[:, None].to(device)).mean())
            regs.append(regulariser(ddf).mean())
        loss = torch.stack(sims).mean() + weight * torch.stack(regs).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        yield step + 1, loss.item()
    prior.cpu().eval()
