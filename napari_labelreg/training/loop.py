"""The training loop, written as a generator of :class:`Progress` reports.

The CLI iterates it with a progress bar; napari's ``thread_worker`` turns the
same generator into progress events and cancellation (closing the generator
saves a checkpoint).  Under ``torchrun`` it runs DistributedDataParallel: one
process per GPU (NCCL) or CPU process (gloo), each rank drawing its own
quartets, rank 0 alone writing to the run folder.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn

from ..config import TrainConfig
from ..io import Pair, atomic_write
from ..nn.checkpoint import load_checkpoint, save_checkpoint
from ..nn.device import autocast, fast_layout, pick_device
from ..nn.losses import BendingEnergy, GradientL2, MultiScaleCrossEntropy, MultiScaleDice, MultiScaleFilter
from ..nn.networks import build_model
from ..nn.warp import moving_coordinates, sample
from .data import PreparedPair, prepare_pairs
from .sampling import affine_matrix, draw_affine, draw_quartets, step_generator

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class Progress:
    """One training step's report."""

    step: int
    total: int | None
    loss: float
    similarity: float
    regulariser: float
    elapsed_s: float
    step_s: float
    checkpoint: str | None = None


def distributed_context() -> tuple[int, int]:
    """(rank, world size), starting the process group when run under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def build_losses(config: TrainConfig, grid) -> tuple[nn.Module, nn.Module]:
    filter_ = MultiScaleFilter(grid.shape, grid.spacing, config.loss.scales_mm)
    similarity = (MultiScaleDice if config.loss.similarity == "msdice" else MultiScaleCrossEntropy)(filter_)
    regulariser = BendingEnergy() if config.loss.regulariser == "bending" else GradientL2()
    return similarity, regulariser


class Batcher:
    """Draws and assembles the minibatch of one step (see sampling)."""

    def __init__(self, prepared: list[PreparedPair], config: TrainConfig, device: torch.device, rank: int = 0):
        self.prepared, self.config, self.device, self.rank = prepared, config, device, rank
        self.shape = prepared[0].grid.shape
        self._prefiltered: dict[tuple[str, int, int], torch.Tensor] = {}

    def _labels(self, pp: PreparedPair, label: int, side: str) -> torch.Tensor:
        """(1, C, ...) label; with prefiltering, C = number of scales, filtered once and cached."""
        source = pp.moving_labels if side == "moving" else pp.fixed_labels
        raw = source[label][None, None]
        if not self.config.loss.prefilter:
            return raw
        key = (pp.name, label, side)
        if key not in self._prefiltered:
            shape = raw.shape[2:]
            spacing = pp.grid.spacing if side == "fixed" else pp.moving_spacing
            self._prefiltered[key] = MultiScaleFilter(shape, spacing, self.config.loss.scales_mm)(raw)
        return self._prefiltered[key]

    def __call__(self, step: int):
        g = step_generator(self.config.seed, self.rank, step)
        counts = [pp.num_labels for pp in self.prepared]
        inputs, fixed_labels, matrices, moving_labels = [], [], [], []
        for p, label in draw_quartets(counts, self.config.batch_size, g):
            pp = self.prepared[p]
            t_moving = affine_matrix(draw_affine(self.config.augment, g), pp.grid)
            t_fixed = torch.as_tensor(affine_matrix(draw_affine(self.config.augment, g), pp.grid))[None]
            matrix = (pp.net_to_moving @ torch.as_tensor(t_moving))[None]
            fixed_coords = moving_coordinates(t_fixed, self.shape)
            moving = sample(pp.moving_image[None], moving_coordinates(matrix, self.shape))
            fixed = sample(pp.fixed_image[None], fixed_coords)
            inputs.append(torch.cat([moving, fixed], dim=1))
            fixed_labels.append(sample(self._labels(pp, label, "fixed"), fixed_coords))
            matrices.append(matrix)
            moving_labels.append(self._labels(pp, label, "moving").to(self.device))
        to = dict(device=self.device)
        return torch.cat(inputs).to(**to), torch.cat(fixed_labels).to(**to), torch.cat(matrices).to(**to), moving_labels


def compute_loss(model, batch, similarity, regulariser, weight: float, device, precision: str):
    """(loss, similarity mean, regulariser mean) of one minibatch."""
    inputs, fixed_labels, matrices, moving_labels = batch
    with autocast(device, precision):
        ddf = model(fast_layout(inputs, precision))
    ddf = ddf.float()
    shape = inputs.shape[2:]
    warped = torch.cat([
        sample(lab, moving_coordinates(matrices[b : b + 1], shape, ddf[b : b + 1]))
        for b, lab in enumerate(moving_labels)
    ])
    sim = similarity(warped, fixed_labels).mean()
    reg = regulariser(ddf).mean()
    return sim + weight * reg, sim, reg


def train(
    pairs: Sequence[Pair],
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    device: str | None = None,
) -> Iterator[Progress]:
    """Train on ``pairs``, yielding a :class:`Progress` per step.

    Writes ``config.json``, ``log.csv`` and ``checkpoint.pt`` (every
    ``config.checkpoint_every`` steps, at the end, and when the generator is
    closed early) to ``out_dir``.  With ``resume`` it continues from the
    folder's checkpoint, drawing the same minibatches an uninterrupted run
    would have drawn.
    """
    rank, world = distributed_context()
    dev = pick_device(device)
    if world > 1 and dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
    out = Path(out_dir)
    torch.manual_seed(config.seed)
    prepared = prepare_pairs(pairs, config.geometry, config.spacing_mm)
    model = fast_layout(build_model(config.model).to(dev), config.precision)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    step = 0
    if resume and (out / CHECKPOINT).exists():
        state = load_checkpoint(out / CHECKPOINT)
        if state["config"].model != config.model:
            raise ValueError(f"{out / CHECKPOINT}: network {state['config'].model} differs from {config.model}")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    similarity, regulariser = build_losses(config, prepared[0].grid)
    batcher = Batcher(prepared, config, dev, rank)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(config.to_dict(), indent=2)))

    def checkpoint() -> str | None:
        if rank != 0:
            return None
        save_checkpoint(out / CHECKPOINT, config=config, model=model, optimizer=optimizer, step=step)
        return str(out / CHECKPOINT)

    start, saved = time.perf_counter(), step
    budget_s = None if config.minutes is None else 60.0 * config.minutes
    net.train()
    try:
        while config.iterations is None or step < config.iterations:
            if budget_s is not None and time.perf_counter() - start >= budget_s:
                break
            t0 = time.perf_counter()
            loss, sim, reg = compute_loss(
                net, batcher(step), similarity, regulariser, config.loss.weight, dev, config.precision
            )
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {float(loss)} at step {step}; lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            path = None
            if step % config.checkpoint_every == 0:
                path, saved = checkpoint(), step
            report = Progress(step, config.iterations, loss.item(), sim.item(), reg.item(),
                              time.perf_counter() - start, time.perf_counter() - t0, path)
            if rank == 0:
                _log(out, report)
            yield report
    finally:
        if step != saved:
            checkpoint()


def _log(out: Path, report: Progress) -> None:
    path = out / "log.csv"
    new = not path.exists()
    with open(path, "a") as fh:
        if new:
            fh.write("step,loss,similarity,regulariser,elapsed_s,step_s\n")
        fh.write(f"{report.step},{report.loss:.6g},{report.similarity:.6g},{report.regulariser:.6g},"
                 f"{report.elapsed_s:.3f},{report.step_s:.3f}\n")
