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
from typing import Callable, Iterator, Sequence

import torch
import torch.distributed as dist
from torch import nn

from ..config import TrainConfig
from ..io import Pair, atomic_write
from ..nn.checkpoint import CHECKPOINT, load_checkpoint, save_checkpoint
from ..nn.device import autocast, fast_layout, pick_device
from ..nn.losses import BendingEnergy, GradientL2, MultiScaleCrossEntropy, MultiScaleDice, MultiScaleFilter, folding
from ..nn.networks import build_model
from ..nn.warp import moving_coordinates, sample
from .data import PreparedPair, cross_subject_matrix, prepare_pairs
from ..nn.locator import GlandLocator, locator_from_state
from ..nn.prior import GlandPrior, prior_from_state, prior_state
from .locator import train_locator
from .prior import train_prior
from .sampling import affine_matrix, draw_affine, draw_quartets, step_generator
from .schedule import budget_used, cosine



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
    val_tre_mm: float | None = None  # median over the validation pairs, when there are any
    val_dice: float | None = None
    phase: str = "registration"  # or "locator", then "prior": the gland locator's and prior's steps, before


def launched_rank() -> int:
    """This process's rank as torchrun set it (0 when not launched by torchrun)."""
    return int(os.environ.get("RANK", "0"))


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
        # per pair, the gland prior's DDF on its network grid (1, 3, *shape), network voxels; None: no prior
        self.priors: list[torch.Tensor] | None = None

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

    def _entry(self, p: int, label: int, g: torch.Generator):
        """(pair giving the moving side, network -> moving voxels, [(fixed label, moving label)]) of a quartet.

        With probability ``cross_subject`` the moving side comes from another
        pair and the glands are the one label pair; no draw is made when it is 0.
        """
        pp, cfg = self.prepared[p], self.config
        if cfg.cross_subject and len(self.prepared) > 1 and torch.rand((), generator=g) < cfg.cross_subject:
            q = int(torch.randint(len(self.prepared) - 1, (1,), generator=g))
            other = self.prepared[q + (q >= p)]
            return other, cross_subject_matrix(pp, other), [(pp.gland, other.gland)]
        chosen = range(pp.num_labels) if cfg.label_sampling == "all" else [label]
        return pp, pp.net_to_moving, [(k, k) for k in chosen]

    def _prior(self, p: int, t_moving: torch.Tensor) -> torch.Tensor:
        """Pair ``p``'s prior DDF seen through the moving side's augmentation ``t_moving`` (network voxels).

        The moving side maps network voxel x to ``to_moving @ t_moving @ (x + d)``: the prior,
        a displacement at ``t_moving @ x`` of the unaugmented grid, enters ``d`` as ``A^-1 u(t_moving @ x)``
        with A the augmentation's linear part.
        """
        u = sample(self.priors[p], moving_coordinates(t_moving[None].float(), self.shape), padding="border")
        return torch.einsum("ij,bjdhw->bidhw", torch.linalg.inv(t_moving[:3, :3]).float(), u)

    def __call__(self, step: int):
        """``(inputs (B, 2, ...), fixed labels, matrices (B, 4, 4), moving labels, priors)`` of one step.

        The label entries are lists over the minibatch of ``(1, M * C, ...)``
        tensors: M label pairs (1, or all of the pair's with
        ``label_sampling="all"``) of C channels (1, or one per scale when
        pre-filtered).  ``priors``: the gland prior's DDF of each entry
        ``(B, 3, ...)`` (zero for cross-subject entries), to which the
        network's DDF is added; None without a prior.
        """
        g = step_generator(self.config.seed, self.rank, step)
        counts = [pp.num_labels for pp in self.prepared]
        inputs, fixed_labels, matrices, moving_labels, priors = [], [], [], [], []
        for p, label in draw_quartets(counts, self.config.batch_size, g):
            pp = self.prepared[p]
            source, to_moving, chosen = self._entry(p, label, g)
            t_moving = torch.as_tensor(affine_matrix(draw_affine(self.config.augment, g), pp.grid))
            t_fixed = torch.as_tensor(affine_matrix(draw_affine(self.config.augment, g), pp.grid))[None]
            matrix = (to_moving @ t_moving)[None]
            fixed_coords = moving_coordinates(t_fixed, self.shape)
            prior = None
            if self.priors is not None:
                prior = self._prior(p, t_moving) if source is pp else torch.zeros(1, 3, *self.shape)
                priors.append(prior)
            moving = sample(source.moving_image[None], moving_coordinates(matrix, self.shape, prior))
            fixed = sample(pp.fixed_image[None], fixed_coords)
            inputs.append(torch.cat([moving, fixed], dim=1))
            fixed_stack = torch.cat([self._labels(pp, k, "fixed") for k, _ in chosen], dim=1)
            fixed_labels.append(sample(fixed_stack, fixed_coords).to(self.device))
            matrices.append(matrix)
            moving_stack = torch.cat([self._labels(source, k, "moving") for _, k in chosen], dim=1)
            moving_labels.append(moving_stack.to(self.device))
        to = dict(device=self.device)
        priors = torch.cat(priors).to(**to) if priors else None
        return torch.cat(inputs).to(**to), fixed_labels, torch.cat(matrices).to(**to), moving_labels, priors


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


class Trainer:
    """A training run: set up on construction, iterated for :class:`Progress` reports.

    Iterating writes ``config.json``, ``log.csv`` and ``checkpoint.pt`` (every
    ``config.checkpoint_every`` steps, at the end, and when the iteration is
    closed early, as a GUI's cancel does) to ``out_dir``.  With ``resume`` it
    continues from the folder's checkpoint, drawing the same minibatches an
    uninterrupted run would have drawn.
    """

    def __init__(self, pairs: Sequence[Pair], config: TrainConfig, out_dir: str | os.PathLike, *,
                 resume: bool = False, device: str | None = None,
                 validator: Callable[..., dict] | None = None, validate_every: int = 50) -> None:
        # validator(model in eval mode, config, locator, prior) -> {"val_tre_mm": ..., "val_dice": ...}
        self.validator, self.validate_every = validator, validate_every
        self.rank, self.world = distributed_context()
        dev = pick_device(device)
        if self.world > 1 and dev.type == "cuda":
            dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", self.rank)))
        self.device, self.config, self.out = dev, config, Path(out_dir)
        prepared = prepare_pairs(pairs, config.geometry, config.spacing_mm, glands=config.locator > 0)
        self.pairs = pairs
        self._new_network(config.seed)
        self.locator, self.located = None, False
        if config.locator:
            self.locator = fast_layout(GlandLocator(config.model.width).to(dev), config.precision)
        self.prior = GlandPrior() if config.prior else None
        self.step = 0
        checkpoint = self.out / CHECKPOINT
        if resume and checkpoint.exists():
            state = load_checkpoint(checkpoint)
            if state["config"].model != config.model:
                raise ValueError(f"{checkpoint}: network {state['config'].model} differs from {config.model}")
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step = state["step"]
            if self.locator is not None and "locator" in state["extra"]:  # trained: kept as it was
                self.locator = fast_layout(locator_from_state(state, checkpoint, dev), config.precision)
                self.located = True
        self.similarity, self.regulariser = (m.to(dev) for m in build_losses(config, prepared[0].grid))
        self.batcher = Batcher(prepared, config, dev, self.rank)
        if resume and checkpoint.exists() and self.prior is not None and "prior" in state["extra"]:
            self.prior = prior_from_state(state)  # fitted: kept as it was
            self._use_prior()
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            text = json.dumps(config.to_dict(), indent=2)
            atomic_write(self.out / "config.json", lambda tmp: Path(tmp).write_text(text))

    def checkpoint(self) -> str | None:
        """Write the checkpoint (rank 0 only); returns its path."""
        if self.rank != 0:
            return None
        extra = {}
        if self.located:
            extra.update(locator=self.locator.state_dict(), locator_cut=self.locator.cut,
                         locator_spacing_mm=self.locator.spacing_mm)
        if self.prior_fitted:
            extra["prior"] = prior_state(self.prior)
        save_checkpoint(self.out / CHECKPOINT, config=self.config, model=self.model, optimizer=self.optimizer,
                        step=self.step, extra=extra)
        return str(self.out / CHECKPOINT)

    def train_step(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.config
        channels = len(cfg.loss.scales_mm) if cfg.loss.prefilter else 1
        loss, sim, reg = compute_loss(self.net, self.batcher(self.step), self.similarity, self.regulariser,
                                      cfg.loss.weight, self.device, cfg.precision, label_channels=channels,
                                      folding_weight=cfg.loss.folding)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {self.step}; lower the learning rate")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return loss, sim, reg

    def validate(self) -> dict[str, float]:
        """The validator's figures, with BatchNorm in eval mode for the call."""
        self.model.eval()
        try:
            with torch.no_grad():
                return self.validator(self.model, self.config, self.locator, self.prior)
        finally:
            self.model.train()

    def learning_rate(self, elapsed_s: float) -> float:
        """The rate for the next step: constant, or cosine over the budget used so far.

        The budget's fraction is the larger of steps / iterations and ``elapsed_s``
        (seconds since the registration's start in this session) / :attr:`budget_s`.
        """
        cfg = self.config
        if cfg.schedule == "constant":
            return cfg.learning_rate
        steps = (self.step, cfg.iterations) if cfg.iterations else (0, None)
        return cosine(cfg.learning_rate, budget_used(*steps, elapsed_s, self.budget_s))

    @property
    def budget_s(self) -> float | None:
        """Seconds of registration steps: the minutes budget less the locator's and prior's shares."""
        cfg = self.config
        return None if cfg.minutes is None else 60.0 * cfg.minutes * (1.0 - cfg.locator - cfg.prior)

    def _new_network(self, seed: int) -> None:
        """A registration network with weights drawn from ``seed``, its optimiser, and its DDP wrapper."""
        torch.manual_seed(seed)
        self.model = fast_layout(build_model(self.config.model).to(self.device), self.config.precision)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=self.config.learning_rate)
        self.net = nn.parallel.DistributedDataParallel(self.model) if self.world > 1 else self.model

    def _phase(self, phase: str, share: float, fit) -> Iterator[Progress]:
        """Reports of a phase given ``share`` of the budget before the registration's.

        ``fit(iterations, seconds, clock)`` yields ``(step, loss)``; with an iterations budget the phase
        takes ``share * iterations`` steps, with a minutes budget ``share`` of the minutes.
        """
        cfg = self.config
        iterations = round(share * cfg.iterations) if cfg.iterations else None
        seconds = 60.0 * cfg.minutes * share if cfg.minutes else None
        start = time.perf_counter()
        clock = lambda: self._elapsed(time.perf_counter() - start)  # noqa: E731
        last = start
        for step, loss in fit(iterations, seconds, clock):
            now = time.perf_counter()
            yield Progress(step, iterations, loss, loss, 0.0, now - start, now - last, phase=phase)
            last = now

    def _locate(self) -> Iterator[Progress]:
        """Train the gland locator (its share of the budget), then checkpoint it.

        A run closed during this phase trains the locator again on resume.
        """
        yield from self._phase("locator", self.config.locator, lambda iterations, seconds, clock: train_locator(
            self.locator, self.pairs, self.config, iterations=iterations, seconds=seconds, clock=clock,
            device=self.device, rank=self.rank, world=self.world))
        self.located = True
        self.checkpoint()

    @property
    def prior_fitted(self) -> bool:
        return self.prior is not None and self.batcher.priors is not None

    def _fit_prior(self) -> Iterator[Progress]:
        """Fit the gland prior (its share of the budget) from the true gland centroids, then checkpoint it.

        A run closed during this phase fits the prior again on resume.
        """
        cfg = self.config
        yield from self._phase("prior", cfg.prior, lambda iterations, seconds, clock: train_prior(
            self.prior, self.batcher.prepared, self.similarity, self.regulariser, cfg.loss.weight, seed=cfg.seed,
            iterations=iterations, seconds=seconds, clock=clock, device=self.device))
        self._use_prior()
        self.checkpoint()

    def _use_prior(self) -> None:
        """Put the fitted prior's DDF of every training pair where the minibatches take it."""
        self.batcher.priors = [self.prior.grid_ddf(pp.grid, pp.fixed_gland_mm) for pp in self.batcher.prepared]

    def _elapsed(self, seconds: float) -> float:
        """``seconds`` as rank 0 measured them, so that all ranks stop and schedule the rate alike."""
        if self.world == 1:
            return seconds
        t = torch.tensor([seconds], dtype=torch.float64, device=self.device)
        dist.broadcast(t, src=0)
        return float(t)

    def __iter__(self) -> Iterator[Progress]:
        cfg = self.config
        if self.locator is not None and not self.located:
            yield from self._locate()
        if self.prior is not None and not self.prior_fitted:
            yield from self._fit_prior()
        start, saved = time.perf_counter(), self.step
        budget_s = self.budget_s
        self.net.train()
        try:
            while cfg.iterations is None or self.step < cfg.iterations:
                t0 = time.perf_counter()
                elapsed = self._elapsed(t0 - start)
                if budget_s is not None and elapsed >= budget_s:
                    break
                for group in self.optimizer.param_groups:
                    group["lr"] = self.learning_rate(elapsed)
                loss, sim, reg = self.train_step()
                path = None
                if self.step % cfg.checkpoint_every == 0:
                    path, saved = self.checkpoint(), self.step
                val = self.validate() if self.validator and self.step % self.validate_every == 0 else {}
                report = Progress(self.step, cfg.iterations, loss.item(), sim.item(), reg.item(),
                                  time.perf_counter() - start, time.perf_counter() - t0, path, **val)
                if self.rank == 0:
                    _log(self.out, report)
                yield report
        finally:
            if self.step != saved:
                self.checkpoint()


def train(pairs: Sequence[Pair], config: TrainConfig, out_dir: str | os.PathLike, *, resume: bool = False,
          device: str | None = None, validator=None) -> Iterator[Progress]:
    """Train on ``pairs``, yielding a :class:`Progress` per step (see :class:`Trainer`)."""
    return iter(Trainer(pairs, config, out_dir, resume=resume, device=device, validator=validator))


def _log(out: Path, report: Progress) -> None:
    path = out / "log.csv"
    new = not path.exists()
    with open(path, "a") as fh:
        if new:
            fh.write("step,loss,similarity,regulariser,elapsed_s,step_s,val_tre_mm,val_dice\n")
        val = "" if report.val_tre_mm is None else f"{report.val_tre_mm:.4g},{report.val_dice:.4g}"
        fh.write(f"{report.step},{report.loss:.6g},{report.similarity:.6g},{report.regulariser:.6g},"
                 f"{report.elapsed_s:.3f},{report.step_s:.3f},{val or ','}\n")
