"""Registering a pair with a trained run: its stages applied in turn -> DDF (mm, fixed grid) -> warped volumes.

The default path is the fast one: bf16 autocast and channels-last memory on
CPU and CUDA alike (``precision='fp32'`` for the reference path).  BatchNorm
is always in inference mode here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from ..config import GLAND_CHOICES, InferenceConfig, TrainConfig
from ..core import transform
from ..core.geometry import Grid, fixed_to_moving, warp
from ..core.io import DataError, Pair, Volume
from ..core.metrics import dice
from ..nn.device import pick_device, pick_precision
from ..nn.threads import CoreShare
from .checkpoint import load_checkpoint, run_checkpoint
from .stages import Estimate, Fit, Stage, stage_from_state


@dataclass(frozen=True)
class Registration:
    """Result of registering a moving volume to a fixed one.

    ``ddf_mm``: ``(*fixed.shape, 3)``, millimetres along the fixed world axes,
    fixed -> moving.  ``matrix``: the initial correspondence (fixed voxel ->
    moving voxel) the DDF is relative to.  ``warped``: the moving image on the
    fixed grid.
    """

    ddf_mm: np.ndarray
    fixed: Grid
    moving: Grid
    matrix: np.ndarray
    warped: np.ndarray
    glands: "FittedGlands | None" = None

    def warp(self, volume: np.ndarray) -> np.ndarray:
        """Warp another moving-grid volume (e.g. a label) onto the fixed grid; soft."""
        return warp(np.asarray(volume, np.float32), self.fixed, self.moving, self.matrix, self.ddf_mm)

    def warp_labels(self, labels: np.ndarray) -> np.ndarray:
        """Warp a ``(M, *moving.shape)`` stack; returns soft ``(M, *fixed.shape)``."""
        return np.stack([self.warp(label) for label in labels]) if len(labels) else np.zeros((0, *self.fixed.shape))

    @property
    def initial(self) -> np.ndarray:
        """The initial correspondence as a 4x4 map from fixed world mm to moving world mm (applied after the DDF)."""
        return transform.initial_world(self.fixed, self.moving, self.matrix)

    def complete_ddf(self) -> np.ndarray:
        """The whole transform as one DDF on the fixed grid, fixed world -> the moving file's world (mm, RAS):
        what ITK, SimpleITK and 3D Slicer apply to the moving file to reproduce :attr:`warped`."""
        return transform.complete_ddf(self.ddf_mm, self.fixed, self.initial)

    def inverse_ddf(self) -> tuple[np.ndarray, np.ndarray]:
        """The inverse of :meth:`complete_ddf` on the moving grid (moving world -> fixed world, mm), and each
        voxel's residual (mm; large where the field folds)."""
        return transform.inverse_ddf(self.ddf_mm, self.fixed, self.initial, self.moving)

    def map_points(self, points_mm, to: str = "moving") -> transform.Mapped:
        """Map world points ``(N, 3)`` (mm): fixed -> moving (``to="moving"``, through the DDF) or moving -> fixed
        (``to="fixed"``, by inverting it; an MR target onto the ultrasound).  Points outside the field, or where
        the field folds, raise :class:`~napari_labelreg.core.transform.OutsideField`."""
        if to == "moving":
            return transform.to_moving(self.ddf_mm, self.fixed, self.initial, points_mm)
        if to == "fixed":
            return transform.to_fixed(self.ddf_mm, self.fixed, self.initial, points_mm)
        raise ValueError(f"to must be 'moving' or 'fixed', got {to!r}")


@dataclass(frozen=True)
class FittedGlands:
    """The glands a registration was fitted to (:class:`~.stages.Fit`): bool masks on the moving and fixed
    images' grids, where each came from (``"given"`` or ``"predicted"`` by the run's segmenters), and the
    gland Dice on the fixed grid before and after the fit."""

    moving: np.ndarray
    fixed: np.ndarray
    sources: tuple[str, str]
    dice_before: float
    dice_after: float

    def said(self) -> str:
        """One line: where the glands came from and the gland Dice the fit brought."""
        line = (f"gland fit: MR gland {self.sources[0]}, TRUS gland {self.sources[1]}; gland Dice "
                f"{self.dice_before:.3f} before the fit, {self.dice_after:.3f} after")
        if "predicted" in self.sources:  # the Dice is with the glands fitted to: a predicted one is no truth
            line += " (with the predicted gland: how well the fit followed it, not how accurate it is; check it)"
        return line


class Registrator:
    """A trained run's stages, ready to register pairs: ``Registrator.from_run(run_dir)``.

    ``config``: the run's (its geometry and registration grid); ``use``: the network's weight, the
    precision and the device (see :class:`InferenceConfig`).
    """

    def __init__(self, stages: Sequence[Stage], config: TrainConfig, use: InferenceConfig = InferenceConfig()) -> None:
        names = [s.name for s in stages]
        if "prior" in names and "locate" not in names[: names.index("prior")]:
            raise ValueError("a gland prior sits on the located gland: a Locate stage must come before it")
        if not use.network_weight and "locate" not in names:
            raise ValueError("without its network a run registers from its located glands (and gland prior); "
                             "this run has no gland locator (no Locate stage)")
        self.device = pick_device(use.device)
        use = replace(use, precision=pick_precision(self.device, use.precision)[0])  # bf16 only where native
        self.config, self.use = config, use
        self.stages = [stage.ready(self.device, use.precision) for stage in stages]
        self._share = CoreShare()  # fewer threads while other work shares the CPU

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def locator(self):
        locate = self.stage("locate")
        return None if locate is None else locate.locator

    @property
    def prior(self):
        prior = self.stage("prior")
        return None if prior is None else prior.prior

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, use: InferenceConfig | None = None, **changes) -> "Registrator":
        """The run's stages with the use it recorded (its network weight), ``use`` instead when given, and
        ``changes`` to either (e.g. ``network_weight=0.0``, ``precision="fp32"``; None keeps a value)."""
        path = run_checkpoint(run_dir)
        state = load_checkpoint(path)
        names = list(state["config"].stage_budgets())
        untrained = [name for name in names[:-1] if name not in state["fitted"]]  # the last registers at any step
        if untrained:
            raise DataError(f"{path}: the run stopped before its {untrained[0]} stage was trained; resume it")
        stages = [stage_from_state(name, state["stages"][name]) for name in names]
        use = replace(use or state["use"], **{k: v for k, v in changes.items() if v is not None})
        return cls(stages, state["config"], use)

    def register(self, moving: Volume, fixed: Volume, *, geometry: str | None = None,
                 glands: tuple[np.ndarray | None, np.ndarray | None] | None = None) -> Registration:
        """Register ``moving`` to ``fixed`` (the run's geometry unless told otherwise).

        ``glands``: the moving and the fixed gland masks on their images' grids; the registration then ends
        with a :class:`~.stages.Fit` to them.  A side given as None is predicted by the run's segmenters (its
        Locate stage), and the start brings the two glands' centroids together.  A constant image (no
        contrast: nothing to register) is refused with :class:`DataError`, a gland mask that is empty or on
        another grid than its image too.
        """
        for volume, side in ((moving, "moving"), (fixed, "fixed")):
            if volume.data.size and float(volume.data.min()) == float(volume.data.max()):
                raise DataError(f"{volume.source or f'the {side} image'}: every voxel is {float(volume.data.min()):g}, "
                                "a constant image has nothing to register")
        self._share()
        start = Estimate.start(moving, fixed, geometry or self.config.geometry, self.config.spacing_mm)
        stages = self.stages
        if glands is not None:
            glands = _checked_glands(glands, moving, fixed)
            if any(mask is None for mask in glands) and self.locator is None:
                raise DataError("this run has no gland segmenters (it was trained without a gland locator): give "
                                "both glands to fit to")
            start, stages = replace(start, glands=glands), [*stages, Fit()]
        estimate = before_fit = start
        for stage in stages:
            if isinstance(stage, Fit):
                before_fit = estimate
            estimate = stage.apply(moving, fixed, estimate, self.use)
        ddf_mm = estimate.ddf_mm(fixed.grid)
        warped = warp(moving.data, fixed.grid, moving.grid, start.matrix, ddf_mm)
        fitted = None
        if glands is not None:
            moving_gland, fixed_gland = estimate.glands
            before, after = (warp(moving_gland.astype(np.float32), fixed.grid, moving.grid, start.matrix, ddf) >= 0.5
                             for ddf in (before_fit.ddf_mm(fixed.grid), ddf_mm))
            sources = tuple("predicted" if mask is None else "given" for mask in glands)
            fitted = FittedGlands(moving_gland, fixed_gland, sources, dice(before, fixed_gland), dice(after, fixed_gland))
        return Registration(ddf_mm, fixed.grid, moving.grid, start.matrix, warped, fitted)

    def register_pair(self, pair: Pair, *, geometry: str | None = None, glands: str = "none") -> Registration:
        """Register a pair; ``glands`` (:data:`GLAND_CHOICES`): ``"given"`` fits it to its own gland labels at
        the end (:attr:`Pair.gland_index`), ``"predicted"`` to the run's segmented glands, ``"moving-given"`` to
        its moving gland label and the segmented fixed gland (the MR contoured at planning), ``"none"`` not."""
        if glands not in GLAND_CHOICES:
            raise ValueError(f"glands must be one of {', '.join(GLAND_CHOICES)}, got {glands!r}")
        given = None if glands == "none" else (None, None)
        if glands in ("given", "moving-given"):
            if not pair.num_labels:
                raise DataError(f"{pair.name}: no gland label to fit to")
            g = pair.gland_index
            given = (pair.moving_labels[g], pair.fixed_labels[g] if glands == "given" else None)
        return self.register(pair.moving, pair.fixed, geometry=geometry, glands=given)


def _checked_glands(glands, moving: Volume, fixed: Volume) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The two gland masks as bool arrays, each on its image's grid and not empty (a None side stays None)."""
    checked = []
    for mask, volume, side in zip(glands, (moving, fixed), ("moving", "fixed")):
        if mask is None:
            checked.append(None)
            continue
        mask = np.asarray(mask)
        if mask.shape != volume.grid.shape:
            raise DataError(f"the {side} gland mask's shape {mask.shape} differs from the {side} image's "
                            f"{volume.grid.shape}: a gland is given on its own image's grid")
        if not mask.any():
            raise DataError(f"the {side} gland mask is empty")
        checked.append(mask.astype(bool))
    return checked[0], checked[1]


def identity_registration(moving: Volume, fixed: Volume, geometry: str) -> Registration:
    """The initial correspondence alone (zero DDF): the baseline every method must beat."""
    matrix = fixed_to_moving(fixed.grid, moving.grid, geometry)
    ddf = np.zeros((*fixed.grid.shape, 3), np.float32)
    return Registration(ddf, fixed.grid, moving.grid, matrix, warp(moving.data, fixed.grid, moving.grid, matrix))
