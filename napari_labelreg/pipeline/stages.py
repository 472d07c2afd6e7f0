"""The stages of a registration: each has one job, trains itself, and applies itself in turn.

A registration starts from the initial correspondence of the run's geometry and hands an
:class:`Estimate` (the transform so far) through its stages, in order:

- :class:`Locate`: two gland segmenters, one per modality; the translation that brings the located
  glands' centroids together (:mod:`napari_labelreg.nn.locator`).
- :class:`Prior`: the training population's mean deformation about the fixed gland's centroid
  (:mod:`napari_labelreg.nn.prior`).
- :class:`Refine`: the paper's network, which sees the moving image through the transform so far
  and adds its DDF, scaled by the run's network weight.

The paper's method is ``[Refine]``; the ``cpu`` preset is the three.  Training runs the stages in the
same order (:mod:`napari_labelreg.pipeline.train`), each from the training pairs as the stages before
it left them: the network learns from the true gland centroids and the fitted prior.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, ClassVar, Iterator

import numpy as np
import torch
from torch import nn

from ..config import InferenceConfig, ModelConfig, TrainConfig
from ..core.geometry import Grid, centroid_shift, ddf_voxels_to_mm, fixed_to_moving, resample_field, translation
from ..core.io import DataError, Pair, Volume
from ..core.metrics import centroid_mm
from ..nn.device import autocast, fast_layout, to_host
from ..nn.fit import FitConfig, fit_glands
from ..nn.grid import network_grid, normalise
from ..nn.locator import SIDES, SPACING_MM, GlandLocator
from ..nn.networks import build_model
from ..nn.prior import CONTROL_POINTS, HALF_WIDTH_MM, GlandPrior
from ..nn.threads import CoreShare
from ..nn.warp import moving_coordinates, sample
from ..training.data import PreparedPair, prepare_pairs
from ..training.locator import locator_optimizer, train_locator
from ..training.prior import prior_optimizer, train_prior
from ..training.refine import Batcher, build_losses, network_optimizer, train_step
from ..training.schedule import Budget, budgeted_steps, cosine


@dataclass(frozen=True)
class Progress:
    """One training step's report: the ``step``-th of ``stage``'s ``total`` (None with a minutes budget)."""

    step: int
    total: int | None
    loss: float
    similarity: float
    regulariser: float
    elapsed_s: float  # the stage's training time so far, the sessions before a resume included
    step_s: float
    checkpoint: str | None = None
    val_tre_mm: float | None = None  # median over the validation pairs, when there are any
    val_dice: float | None = None
    stage: str = "refine"
    lr: float | None = None  # the learning rate the step took


@dataclass(frozen=True)
class Estimate:
    """One pair's transform so far, from fixed voxels to moving voxels, on the registration grid.

    ``matrix``: the initial correspondence, then the located translation ``shift_mm`` (world mm along
    the fixed axes; added back to the DDF at the end).  ``ddf``: ``(1, 3, *grid.shape)`` displacement
    on top of ``matrix`` in registration-grid voxels, None while it is zero.  ``gland_mm``: the fixed
    gland's centroid (world mm) once located.  ``glands``: the moving and fixed gland masks (bool, on their
    images' grids) when the registration is fitted to them (:class:`Fit`); a side still None is predicted by
    the :class:`Locate` stage.
    """

    matrix: np.ndarray
    grid: Grid
    net_to_fixed: np.ndarray
    shift_mm: np.ndarray = field(default_factory=lambda: np.zeros(3))
    ddf: torch.Tensor | None = None
    gland_mm: np.ndarray | None = None
    glands: tuple[np.ndarray | None, np.ndarray | None] | None = None

    @classmethod
    def start(cls, moving: Volume, fixed: Volume, geometry: str, spacing_mm: float | None) -> "Estimate":
        grid, net_to_fixed = network_grid(fixed.grid, spacing_mm)
        return cls(fixed_to_moving(fixed.grid, moving.grid, geometry), grid, net_to_fixed)

    def plus(self, ddf: torch.Tensor) -> "Estimate":
        return replace(self, ddf=ddf if self.ddf is None else self.ddf + ddf)

    def ddf_mm(self, fixed: Grid) -> np.ndarray:
        """The whole displacement, world mm on the ``fixed`` grid ``(*fixed.shape, 3)``, shift included."""
        ddf = np.zeros((*self.grid.shape, 3), np.float32) if self.ddf is None else self.ddf[0].permute(1, 2, 3, 0)
        ddf_mm = ddf_voxels_to_mm(np.asarray(ddf), self.grid)
        if self.grid.shape != fixed.shape:
            ddf_mm = resample_field(ddf_mm, np.linalg.inv(self.net_to_fixed), fixed.shape)
        return (ddf_mm + self.shift_mm.astype(np.float32)).astype(np.float32)


@dataclass
class TrainingData:
    """What the stages train from: the pairs, prepared once on the registration grid, and the run's settings.

    ``prepared`` start from the labelled glands' centroids when the run locates glands (the network learns
    from true centroids, and meets located ones at registration).  ``priors``: each prepared pair's gland
    prior DDF on its grid once a :class:`Prior` is fitted (:meth:`Stage.hand_on`).
    """

    pairs: list[Pair]
    config: TrainConfig
    device: torch.device
    rank: int = 0
    world: int = 1
    prepared: list[PreparedPair] = field(init=False)
    priors: list[torch.Tensor] | None = None

    def __post_init__(self) -> None:
        cfg = self.config
        self.prepared = prepare_pairs(self.pairs, cfg.geometry, cfg.spacing_mm, glands=cfg.locator > 0)
        self.similarity, self.regulariser = (m.to(self.device) for m in build_losses(cfg, self.prepared[0].grid))


class Stage:
    """One job of a registration.  Subclasses set :attr:`name` and :attr:`config` and implement :meth:`fit`,
    :meth:`apply`, :meth:`ready`, :meth:`weights` and :meth:`load_weights`.

    ``step`` counts the steps trained so far and ``elapsed_s`` the seconds they took (by ``clock``); a stage
    saved mid-way resumes from both, drawing what an uninterrupted run would have drawn.  ``needs``: the steps
    below which it has learnt too little to be worth registering with (a time budget that buys fewer is
    warned about).
    """

    name: ClassVar[str]
    needs: ClassVar[int]

    def __init__(self) -> None:
        self.step = 0
        self.elapsed_s = 0.0
        self.clock: Callable[[], float] = time.perf_counter
        self.optimizer: torch.optim.Optimizer | None = None
        self._saved_optimizer: dict | None = None  # a loaded state's, restored when training resumes
        self._pending: deque = deque()  # (step, its figures on their way to the host), not yet reported

    def fit(self, data: TrainingData, budget: Budget, settle: Callable[[int], bool] = lambda step: False
            ) -> Iterator[Progress]:
        """Train within ``budget`` from :attr:`step`, yielding a report per step.

        A step is reported once the next is queued (:meth:`_reports`); ``settle(n)``: whether the caller needs
        step ``n``'s report before another step is taken (it checkpoints or validates there).
        """
        raise NotImplementedError

    def apply(self, moving: Volume, fixed: Volume, estimate: Estimate, use: InferenceConfig) -> Estimate:
        """The transform so far with this stage's part added."""
        raise NotImplementedError

    def ready(self, device: torch.device, precision: str) -> "Stage":
        """The stage on ``device`` in inference mode, laid out for ``precision``."""
        raise NotImplementedError

    def weights(self) -> dict:
        raise NotImplementedError

    def load_weights(self, weights: dict) -> None:
        raise NotImplementedError

    def module(self) -> nn.Module:
        """What the stage trains."""
        raise NotImplementedError

    def hand_on(self, data: TrainingData) -> None:
        """What this fitted stage gives the training of the stages after it (nothing by default)."""

    def state_dict(self) -> dict:
        """The stage's state: its weights, and while training its step and optimiser."""
        state = {"config": asdict(self.config), "weights": self.weights(), "step": self.step,
                 "elapsed_s": self.elapsed_s}
        if self.optimizer is not None:
            state["optimizer"] = self.optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.load_weights(state["weights"])
        self.step = int(state["step"])
        self.elapsed_s = float(state.get("elapsed_s", 0.0))  # a checkpoint made before it was kept: 0
        self._saved_optimizer = state.get("optimizer")

    def _optimizer(self, make) -> torch.optim.Optimizer:
        """The stage's optimiser, made on first use and restored from a loaded state (keeping the
        implementation ``make`` chose: a state saved by a non-fused Adam resumes in a fused one)."""
        if self.optimizer is None:
            self.optimizer = make()
            saved = self._saved_optimizer
            if saved is not None:
                made = {key: self.optimizer.param_groups[0].get(key) for key in ("fused", "foreach", "capturable")}
                self.optimizer.load_state_dict({**saved, "param_groups": [{**group, **made}
                                                                          for group in saved["param_groups"]]})
        return self.optimizer

    def _reports(self, steps: Iterator[tuple[int, torch.Tensor]], budget: Budget,
                 settle: Callable[[int], bool]) -> Iterator[Progress]:
        """Reports of a training function's ``(step, figures)`` (:func:`~napari_labelreg.training.steps.figures`,
        on the device), :attr:`step` kept up to date.

        A step's figures start their copy to the host as the step is queued and are read once the next step
        is queued too: the host waits only for a step the device has moved past, so a GPU is never left idle.
        A step ``settle`` names is reported before another is taken.  Its times are the queueing's (on a
        GPU, paced by the device's steps).  The report of a step the device skipped (its loss or gradients
        not finite) stops the run with an error, :attr:`step` back to the last step applied.
        """
        self._pending.clear()
        self._total, self._last = budget.iterations, self.clock()
        self._start = self._last - self.elapsed_s  # a resumed stage's time goes on
        share = CoreShare()  # fewer threads while other work shares the CPU
        for step, figures in steps:
            share()
            self.step = step
            lr = self.optimizer.param_groups[0]["lr"] if self.optimizer is not None else None
            self._pending.append((step, to_host(figures), self.clock(), lr))
            while len(self._pending) > 1 or (self._pending and settle(step)):
                yield self._report()
        while self._pending:
            yield self._report()

    def _report(self, check: bool = True) -> Progress:
        """The report of the oldest step not yet reported; with ``check``, an error if the device skipped it."""
        step, read, queued, lr = self._pending[0]
        loss, similarity, regulariser, skipped = read()
        if check and skipped:  # it and every step after it were skipped on the device (see descend)
            self._pending.clear()
            self.step = step - 1
            advice = ": start a new run with a lower learning rate" if isinstance(self, Refine) else ""
            what = f"the gradients were not finite (loss {loss:.4g})" if math.isfinite(loss) else f"the loss was {loss}"
            raise FloatingPointError(f"{self.name} step {step}: {what}; training stopped there, the weights as "
                                     f"after step {step - 1}{advice}")
        self._pending.popleft()
        report = Progress(step, self._total, loss, similarity, regulariser, queued - self._start,
                          queued - self._last, stage=self.name, lr=lr)
        self._last, self.elapsed_s = queued, report.elapsed_s
        return report

    def unreported(self) -> list[Progress]:
        """The reports of steps taken but not reported when :meth:`fit` was closed or stopped, read now."""
        return [self._report(check=False) for _ in range(len(self._pending))]


@dataclass(frozen=True)
class LocateConfig:
    """The gland segmenters: LocalNet width and the grid they see (``cut``: see nn.locator._cut)."""

    width: int = 16
    spacing_mm: float = SPACING_MM
    cut: bool = True


class Locate(Stage):
    """Locate both glands; the start is the translation that brings their centroids together."""

    name = "locate"
    needs = 20

    def __init__(self, config: LocateConfig = LocateConfig(), locator: GlandLocator | None = None) -> None:
        super().__init__()
        self.config = config
        self.locator = locator or GlandLocator(config.width, config.spacing_mm, config.cut)

    def fit(self, data: TrainingData, budget: Budget, settle=lambda step: False) -> Iterator[Progress]:
        cfg = data.config
        self.locator = fast_layout(self.locator.to(data.device), cfg.precision)
        optimizer = self._optimizer(lambda: locator_optimizer(self.locator, data.rank, data.world))
        yield from self._reports(train_locator(self.locator, data.pairs, cfg, optimizer, budget, start=self.step,
                                               device=data.device, rank=data.rank, world=data.world), budget,
                                 settle)

    def apply(self, moving: Volume, fixed: Volume, estimate: Estimate, use: InferenceConfig) -> Estimate:
        """The located glands' centroids brought together.  When the registration is to be fitted to the glands
        (``estimate.glands``), a side not given is segmented on its image's grid, and the centroids are those
        of the two masks: a given gland's own, as the network trained from."""
        if estimate.glands is None:
            shift, gland_mm = self.locator.start(moving, fixed, estimate.matrix, use.precision)
            glands = None
        else:
            glands = tuple(self._segmented(volume, side, use.precision) if mask is None else mask
                           for mask, volume, side in zip(estimate.glands, (moving, fixed), SIDES))
            centres = centroid_mm(glands[0], moving.grid), centroid_mm(glands[1], fixed.grid)
            shift, gland_mm = centroid_shift(*centres, moving.grid, fixed.grid, estimate.matrix), centres[1]
        return replace(estimate, matrix=estimate.matrix @ translation(fixed.grid, shift),
                       shift_mm=estimate.shift_mm + shift, gland_mm=gland_mm, glands=glands)

    def _segmented(self, volume: Volume, side: str, precision: str) -> np.ndarray:
        mask = self.locator.segment(volume, side, precision)
        if not mask.any():
            raise DataError(f"{volume.source or f'the {side} image'}: the run's {side} gland segmenter found no "
                            f"gland there; give the {side} gland")
        return mask

    def ready(self, device: torch.device, precision: str) -> "Locate":
        self.locator = fast_layout(self.locator.to(device).eval(), precision)
        return self

    def weights(self) -> dict:
        return self.locator.state_dict()

    def module(self) -> nn.Module:
        return self.locator

    def load_weights(self, weights: dict) -> None:
        self.locator.load_state_dict(weights)

    def state_dict(self) -> dict | None:
        """None while a DDP rank trains one side alone: a run stopped then trains both afresh on resume."""
        partial = self.optimizer is not None and len(self.optimizer.param_groups[0]["params"]) < len(
            list(self.locator.parameters()))
        return None if partial else super().state_dict()


@dataclass(frozen=True)
class PriorConfig:
    """The gland prior's field: a cube of ``half_width_mm`` about the gland, ``points`` control points per axis."""

    half_width_mm: float = HALF_WIDTH_MM
    points: int = CONTROL_POINTS


class Prior(Stage):
    """Add the population's mean deformation about the located fixed gland."""

    name = "prior"
    needs = 10

    def __init__(self, config: PriorConfig = PriorConfig(), prior: GlandPrior | None = None) -> None:
        super().__init__()
        self.config = config
        self.prior = prior or GlandPrior(config.half_width_mm, config.points)

    def fit(self, data: TrainingData, budget: Budget, settle=lambda step: False) -> Iterator[Progress]:
        optimizer = self._optimizer(lambda: prior_optimizer(self.prior))
        yield from self._reports(train_prior(
            self.prior, data.prepared, data.similarity, data.regulariser, data.config.loss.weight, optimizer, budget,
            seed=data.config.seed, start=self.step, device=data.device), budget, settle)

    def hand_on(self, data: TrainingData) -> None:
        data.priors = [self.prior.grid_ddf(pp.grid, pp.fixed_gland_mm) for pp in data.prepared]

    def apply(self, moving: Volume, fixed: Volume, estimate: Estimate, use: InferenceConfig) -> Estimate:
        if estimate.gland_mm is None:
            raise ValueError("a gland prior sits on the located gland: a Locate stage must come before it")
        return estimate.plus(self.prior.grid_ddf(estimate.grid, estimate.gland_mm).cpu())

    def ready(self, device: torch.device, precision: str) -> "Prior":
        self.prior.eval()  # a small field: it stays on the CPU, where the registration grid is
        return self

    def weights(self) -> dict:
        return {"field": self.prior.field.detach().clone()}

    def module(self) -> nn.Module:
        return self.prior

    def load_weights(self, weights: dict) -> None:
        self.prior.load_state_dict(weights)


@dataclass(frozen=True)
class RefineConfig:
    """The paper's network: its variant and width."""

    model: ModelConfig = ModelConfig()


class Refine(Stage):
    """The paper's network: it sees the moving image through the transform so far and adds its DDF."""

    name = "refine"
    needs = 50

    def __init__(self, config: RefineConfig = RefineConfig(), model: nn.Module | None = None) -> None:
        super().__init__()
        self.config = config
        self.model = model if model is not None else build_model(config.model)
        self.net: nn.Module | None = None  # the model, or its DDP wrapper, once on the training device

    def prepare(self, device: torch.device, precision: str, world: int = 1) -> None:
        """Put the network on the training device, with its optimiser and (under DDP) its wrapper."""
        self.model = fast_layout(self.model.to(device), precision)
        self.net = nn.parallel.DistributedDataParallel(self.model) if world > 1 else self.model

    def fit(self, data: TrainingData, budget: Budget, settle: Callable[[int], bool] = lambda step: False
            ) -> Iterator[Progress]:
        cfg = data.config
        if self.net is None:
            self.prepare(data.device, cfg.precision, data.world)
        optimizer = self._optimizer(lambda: network_optimizer(self.model, cfg))
        batcher = Batcher(data.prepared, cfg, data.device, data.rank)
        batcher.priors = data.priors
        rate = (lambda used: cfg.learning_rate) if cfg.schedule == "constant" else (
            lambda used: cosine(cfg.learning_rate, used))
        self.net.train()
        steps = ((step + 1, train_step(self.net, optimizer, batcher(step), data.similarity, data.regulariser, cfg,
                                       data.device))
                 for step in budgeted_steps(optimizer, rate, budget, self.step))
        yield from self._reports(steps, budget, settle)

    def apply(self, moving: Volume, fixed: Volume, estimate: Estimate, use: InferenceConfig) -> Estimate:
        if not use.network_weight:
            return estimate
        grid, device = estimate.grid, next(self.model.parameters()).device
        to_moving = torch.as_tensor(estimate.matrix @ estimate.net_to_fixed, dtype=torch.float32)[None]
        to_fixed = torch.as_tensor(estimate.net_to_fixed, dtype=torch.float32)[None]
        mov = sample(torch.as_tensor(normalise(moving.data))[None, None],
                     moving_coordinates(to_moving, grid.shape, estimate.ddf))
        fix = sample(torch.as_tensor(normalise(fixed.data))[None, None], moving_coordinates(to_fixed, grid.shape))
        x = fast_layout(torch.cat([mov, fix], dim=1).to(device), use.precision)
        with torch.inference_mode(), autocast(device, use.precision):
            ddf = use.network_weight * self.model(x).float().cpu()
        return estimate.plus(ddf)

    def ready(self, device: torch.device, precision: str) -> "Refine":
        self.model = fast_layout(self.model.to(device).eval(), precision)
        return self

    def weights(self) -> dict:
        return self.model.state_dict()

    def module(self) -> nn.Module:
        return self.model

    def load_weights(self, weights: dict) -> None:
        self.model.load_state_dict(weights)


class Fit(Stage):
    """Fit the registration so far to the two glands of ``estimate.glands`` (masks on the images' own grids,
    given or segmented by :class:`Locate`): a smooth field added on top (:mod:`napari_labelreg.nn.fit`).  It
    learns nothing; it is made for each registration."""

    name = "fit"
    needs = 0

    def __init__(self, config: FitConfig = FitConfig()) -> None:
        super().__init__()
        self.config = config

    def apply(self, moving: Volume, fixed: Volume, estimate: Estimate, use: InferenceConfig) -> Estimate:
        if estimate.glands is None or any(mask is None for mask in estimate.glands):
            raise ValueError("the gland fit needs both glands: give them, or predict them with a Locate stage first")
        moving_gland, fixed_gland = estimate.glands
        grid = estimate.grid
        to_moving = torch.as_tensor(estimate.matrix @ estimate.net_to_fixed, dtype=torch.float32)[None]
        to_fixed = torch.as_tensor(estimate.net_to_fixed, dtype=torch.float32)[None]
        fixed_gland = sample(torch.as_tensor(fixed_gland, dtype=torch.float32)[None, None],
                             moving_coordinates(to_fixed, grid.shape))
        added = fit_glands(torch.as_tensor(moving_gland, dtype=torch.float32)[None, None], fixed_gland,
                           to_moving, estimate.ddf, grid.spacing, self.config)
        return estimate.plus(added)

    def ready(self, device: torch.device, precision: str) -> "Fit":
        return self  # on the CPU, where the registration grid is


def build_stages(config: TrainConfig) -> list[Stage]:
    """The stages of a run, in order, with fresh weights drawn from torch's generator.

    The network is drawn before the segmenters (runs made before the stages existed drew them in this
    order, and a seed still gives the same weights).
    """
    refine = Refine(RefineConfig(config.model))
    stages: list[Stage] = []
    if config.locator:
        stages.append(Locate(LocateConfig(config.model.width)))
    if config.prior:
        stages.append(Prior())
    return [*stages, refine]


def stage_from_state(name: str, saved: dict) -> Stage:
    """A stage as a checkpoint saved it (:meth:`Stage.state_dict`), its own config included."""
    config = saved["config"]
    if name == "locate":
        stage = Locate(LocateConfig(**config))
    elif name == "prior":
        stage = Prior(PriorConfig(**config))
    elif name == "refine":
        stage = Refine(RefineConfig(ModelConfig(**config["model"])))
    else:
        raise ValueError(f"unknown stage {name!r}")
    stage.load_state_dict(saved)
    return stage
