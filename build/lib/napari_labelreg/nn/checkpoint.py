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
from .networks import build_model

# 2: no averaged members (extra["members"]) and no elastic augmentation settings; a format-1 file
# loads when it used neither (its config is converted), and is refused by name when it did
FORMAT = 2
READS = (1, 2)


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
    if not isinstance(state, dict) or "format" not in state or "config" not in state:
        raise DataError(f"{path}: not a napari-labelreg checkpoint")
    if state["format"] not in READS:
        raise DataError(f"{path}: checkpoint format {state['format']}; this napari-labelreg reads formats "
                        f"{', '.join(map(str, READS))}")
    if state.get("extra", {}).get("members"):
        raise DataError(f"{path}: checkpoint format {state['format']} of a run of averaged networks (--members), "
                        "which this version no longer has; retrain it without")
    try:
        state["config"] = TrainConfig.from_dict(state["config"])
    except ValueError as exc:
        raise DataError(f"{path}: checkpoint format {state['format']}: {exc}") from None
    state["format"] = FORMAT  # converted
    return state


def load_model(path, device: str | torch.device = "cpu") -> tuple[nn.Module, TrainConfig]:
    """Rebuild the network from a checkpoint's own config, in eval mode."""
    state = load_checkpoint(path)
    return model_from_state(state, device), state["config"]


def model_from_state(state: dict, device: str | torch.device = "cpu") -> nn.Module:
    """The network of a loaded checkpoint (see :func:`load_checkpoint`), in eval mode."""
    model = build_model(state["config"].model)
    model.load_state_dict(state["model"])
    return model.to(device).eval()


def run_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The checkpoint of a run folder (or the path itself if it is a file)."""
    run_dir = Path(run_dir)
    path = run_dir if run_dir.is_file() else run_dir / "checkpoint.pt"
    if not path.is_file():
        raise DataError(f"{run_dir}: no checkpoint.pt in this run folder")
    return path
