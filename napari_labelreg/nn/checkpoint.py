"""Checkpoints: config + weights + optimiser + sampler state, written atomically.

A checkpoint is a plain dict of tensors and JSON-like values, so it loads with
``torch.load(weights_only=True)``: no code from the file is ever run.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..config import TrainConfig
from ..io import DataError, atomic_write
from .networks import Ensemble, build_model

FORMAT = 1


def save_checkpoint(path, *, config: TrainConfig, model: nn.Module, optimizer=None, step: int = 0,
                    generator: torch.Generator | None = None, extra: dict | None = None) -> None:
    """Write a checkpoint atomically: a crash mid-write leaves the previous file intact."""
    state = {
        "format": FORMAT,
        "config": config.to_dict(),
        "model": model.state_dict(),
        "step": int(step),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "generator": generator.get_state() if generator is not None else None,
        "extra": extra or {},
    }
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path) -> dict:
    """Read a checkpoint safely (``weights_only=True``); the config comes back typed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DataError(f"{path}: not a napari-labelreg checkpoint (format {FORMAT})")
    state["config"] = TrainConfig.from_dict(state["config"])
    return state


def load_model(path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """Rebuild the network from a checkpoint's own config, in eval mode."""
    state = load_checkpoint(path)
    return model_from_state(state, device), state["config"]


def model_from_state(state: dict, device: str | torch.device = "cpu") -> nn.Module:
    """The network of a loaded checkpoint (see :func:`load_checkpoint`), in eval mode.

    A run of several members (``TrainConfig.members``) gives their :class:`Ensemble`: the members it
    finished (``extra["members"]``) and the one it trained last (``model``).  A run stopped part-way
    registers with the members it has, as a single network stopped part-way does.
    """
    models = []
    for weights in [*state["extra"].get("members", []), state["model"]]:
        models.append(build_model(state["config"].model))
        models[-1].load_state_dict(weights)
    model = models[0] if len(models) == 1 else Ensemble(models)
    return model.to(device).eval()


def run_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The checkpoint of a run folder (or the path itself if it is a file)."""
    run_dir = Path(run_dir)
    path = run_dir if run_dir.is_file() else run_dir / "checkpoint.pt"
    if not path.is_file():
        raise DataError(f"{run_dir}: no checkpoint.pt in this run folder")
    return path
