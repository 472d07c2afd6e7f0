"""One forward pass: model + image pair -> DDF (mm, fixed grid) -> warped volumes.

The default path is the fast one: bf16 autocast and channels-last memory on
CPU and CUDA alike (``precision='fp32'`` for the reference path).  BatchNorm
is always in inference mode here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import numpy as np
import torch
from scipy.ndimage import map_coordinates
from torch import nn

from .config import TrainConfig
from .geometry import Grid, apply_affine, ddf_voxels_to_mm, fixed_to_moving, translation, voxel_coordinates, warp
from .geometry import sample as sample_np
from .io import Pair, Volume
from .nn.checkpoint import load_checkpoint, model_from_state, run_checkpoint
from .nn.device import autocast, fast_layout, pick_device
from .nn.warp import moving_coordinates, sample
from .nn.grid import network_grid, normalise
from .nn.locator import GlandLocator, locator_from_state
from .nn.prior import GlandPrior, prior_from_state


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

    def warp(self, volume: np.ndarray) -> np.ndarray:
        """Warp another moving-grid volume (e.g. a label) onto the fixed grid; soft."""
        return warp(np.asarray(volume, np.float32), self.fixed, self.moving, self.matrix, self.ddf_mm)

    def warp_labels(self, labels: np.ndarray) -> np.ndarray:
        """Warp a ``(M, *moving.shape)`` stack; returns soft ``(M, *fixed.shape)``."""
        return np.stack([self.warp(label) for label in labels]) if len(labels) else np.zeros((0, *self.fixed.shape))

    def map_points(self, points_mm: np.ndarray) -> np.ndarray:
        """Map fixed-world points ``(N, 3)`` (mm) to their moving-world positions."""
        vox = apply_affine(np.linalg.inv(self.fixed.affine), np.asarray(points_mm, float))
        u = np.stack([sample_np(self.ddf_mm[..., c], vox) for c in range(3)], -1)
        return apply_affine(self.moving.affine @ self.matrix @ np.linalg.inv(self.fixed.affine), points_mm + u)


class Registrator:
    """A trained network ready to register pairs: ``Registrator.from_run(run_dir)``."""

    def __init__(self, model: nn.Module, config: TrainConfig, device: str | None = None,
                 precision: str | None = None, locator: GlandLocator | None = None,
                 prior: GlandPrior | None = None, *, network_weight: float | None = None) -> None:
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        # the run's config, with the network DDF's weight asked for (checked there); weight 0: the located
        # glands' shift and the prior alone
        self.config = config if network_weight is None else replace(config, network_weight=float(network_weight))
        self.precision = precision or "bf16"
        self.model = fast_layout(self.model, self.precision)
        if config.locator and locator is None:
            raise ValueError("this model starts from located glands: give its GlandLocator")
        self.locator = None if locator is None else fast_layout(locator.to(self.device).eval(), self.precision)
        if config.prior and prior is None:
            raise ValueError("this model adds its DDF to a gland prior: give its GlandPrior")
        self.prior = None if prior is None else prior.eval()
        if not self.network_weight and locator is None:
            raise ValueError("without its network a model registers from its located glands (and gland prior); "
                             "this one has no gland locator")

    @property
    def network_weight(self) -> float:
        return self.config.network_weight

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, device: str | None = None,
                 precision: str | None = None, *, network_weight: float | None = None) -> "Registrator":
        path = run_checkpoint(run_dir)
        state = load_checkpoint(path)  # read once: the network and the locator both come from it
        return cls(model_from_state(state), state["config"], device, precision, locator_from_state(state, path),
                   prior_from_state(state), network_weight=network_weight)

    def network_ddf(self, moving: Volume, fixed: Volume, matrix: np.ndarray,
                    gland_mm: np.ndarray | None = None) -> tuple[np.ndarray, Grid, np.ndarray]:
        """DDF in network-grid voxels ``(*net.shape, 3)``, the network grid and net->fixed map.

        With a gland prior, the DDF is the prior's about the fixed gland centroid ``gland_mm`` (world mm)
        plus the network's, which sees the moving image through the prior, times :attr:`network_weight`.
        """
        grid, net_to_fixed = network_grid(fixed.grid, self.config.spacing_mm)
        to_moving = torch.as_tensor(matrix @ net_to_fixed, dtype=torch.float32)[None]
        to_fixed = torch.as_tensor(net_to_fixed, dtype=torch.float32)[None]
        prior = None
        if self.prior is not None:
            prior = self.prior.grid_ddf(grid, gland_mm).cpu()
        ddf = torch.zeros(1, 3, *grid.shape)
        if self.network_weight:
            mov = sample(torch.as_tensor(normalise(moving.data))[None, None],
                         moving_coordinates(to_moving, grid.shape, prior))
            fix = sample(torch.as_tensor(normalise(fixed.data))[None, None], moving_coordinates(to_fixed, grid.shape))
            x = fast_layout(torch.cat([mov, fix], dim=1).to(self.device), self.precision)
            with torch.inference_mode(), autocast(self.device, self.precision):
                ddf = self.network_weight * self.model(x).float().cpu()
        if prior is not None:
            ddf = ddf + prior
        return ddf[0].permute(1, 2, 3, 0).numpy(), grid, net_to_fixed

    def register(self, moving: Volume, fixed: Volume, *, geometry: str | None = None) -> Registration:
        """Register ``moving`` to ``fixed`` (the run's geometry unless told otherwise).

        With a gland locator the network starts from the located glands'
        centroids brought together; the DDF returned includes that shift.
        """
        matrix = fixed_to_moving(fixed.grid, moving.grid, geometry or self.config.geometry)
        shift, gland_mm = np.zeros(3), None
        if self.locator is not None:
            shift, gland_mm = self.locator.start(moving, fixed, matrix, self.precision)
        ddf_net, grid, net_to_fixed = self.network_ddf(moving, fixed, matrix @ translation(fixed.grid, shift),
                                                       gland_mm)
        ddf_mm = ddf_voxels_to_mm(ddf_net, grid)
        if grid.shape != fixed.grid.shape:
            ddf_mm = resample_field(ddf_mm, np.linalg.inv(net_to_fixed), fixed.grid.shape)
        ddf_mm = ddf_mm + shift.astype(np.float32)
        warped = warp(moving.data, fixed.grid, moving.grid, matrix, ddf_mm)
        return Registration(ddf_mm.astype(np.float32), fixed.grid, moving.grid, matrix, warped)

    def register_pair(self, pair: Pair, *, geometry: str | None = None) -> Registration:
        return self.register(pair.moving, pair.fixed, geometry=geometry)


def resample_field(field: np.ndarray, fixed_to_net: np.ndarray, shape) -> np.ndarray:
    """Trilinearly resample a vector field ``(*net, 3)`` onto a ``shape`` grid; edges clamped."""
    coords = np.moveaxis(apply_affine(fixed_to_net, voxel_coordinates(tuple(shape))), -1, 0)
    return np.stack(
        [map_coordinates(field[..., c], coords, order=1, mode="nearest") for c in range(3)], axis=-1
    )


def identity_registration(moving: Volume, fixed: Volume, geometry: str) -> Registration:
    """The initial correspondence alone (zero DDF): the baseline every method must beat."""
    matrix = fixed_to_moving(fixed.grid, moving.grid, geometry)
    ddf = np.zeros((*fixed.grid.shape, 3), np.float32)
    return Registration(ddf, fixed.grid, moving.grid, matrix, warp(moving.data, fixed.grid, moving.grid, matrix))
