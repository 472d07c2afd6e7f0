"""The scripting interface: load a model, register a pair, warp labels or points.

    >>> from napari_labelreg import api
    >>> model = api.load_model("runs/mine")                    # a run folder
    >>> result = api.register(model, mr, us, moving_spacing=(1.5,) * 3, fixed_spacing=(1.5,) * 3)
    >>> result.ddf_mm.shape          # (*us.shape, 3), mm, fixed -> moving
    >>> labels_on_us = result.warp_labels(mr_labels) >= 0.5
    >>> api.register(model, "mr.nii.gz", "us.nii.gz")          # NIfTI paths work too

Arrays are indexed (i, j, k) like nibabel's; spacing is the voxel size in mm
along those axes.  Arrays given without an affine sit on axis-aligned grids, so
the ``world`` geometry then aligns their corner voxels: pass
``geometry="centred"`` to align their centres instead.
"""

from __future__ import annotations

import os

import numpy as np

from .core.geometry import Grid
from .pipeline.registrator import Registration, Registrator
from .core.io import Volume, load_volume

__all__ = ["Registration", "Registrator", "load_model", "register", "as_volume"]


def load_model(run_dir: str | os.PathLike, *, device: str | None = None, precision: str | None = None,
               network_weight: float | None = None) -> Registrator:
    """A trained network from a run folder (or checkpoint file), ready to register.

    ``network_weight``: the weight of the network's DDF on top of the run's located glands and gland prior
    (default: the run's; 0: without the network; see the README).
    """
    return Registrator.from_run(run_dir, device=device, precision=precision, network_weight=network_weight)


def as_volume(image, spacing=None, affine=None) -> Volume:
    """A :class:`Volume` from a NIfTI path, a Volume, or an array with spacing or affine."""
    if isinstance(image, Volume):
        return image
    if isinstance(image, (str, os.PathLike)):
        return load_volume(image)
    data = np.asarray(image, np.float32)
    if data.ndim != 3 or not np.all(np.isfinite(data)):
        raise ValueError(f"expected a finite 3-D array, got shape {data.shape}")
    if affine is not None:
        return Volume(data, Grid(data.shape, affine))
    return Volume(data, Grid.from_spacing(data.shape, spacing if spacing is not None else (1.0, 1.0, 1.0)))


def register(model: Registrator, moving, fixed, *, moving_spacing=None, fixed_spacing=None,
             moving_affine=None, fixed_affine=None, geometry: str | None = None) -> Registration:
    """Register ``moving`` to ``fixed`` (arrays, Volumes or NIfTI paths) in one forward pass."""
    mov = as_volume(moving, moving_spacing, moving_affine)
    fix = as_volume(fixed, fixed_spacing, fixed_affine)
    return model.register(mov, fix, geometry=geometry)
