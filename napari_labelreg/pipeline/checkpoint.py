"""Checkpoints: the run's config, the use it was trained for, and each stage's state, written atomically.

A checkpoint is a plain dict of tensors and JSON-like values, so it loads with
``torch.load(weights_only=True)``: no code from the file is ever run.  Format 3::

    {"format": 3, "config": TrainConfig.to_dict(), "use": InferenceConfig.to_dict(),
     "stages": {name: {"config": ..., "weights": ..., "step": ..., ["optimizer": ...]}},
     "fitted": [names of the stages whose training is complete]}

Formats 1 and 2 (one network with the gland locator and prior beside it in ``extra``) are converted on
loading (:func:`_from_format_2`); a run that used a setting since removed is refused by name.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

from ..config import InferenceConfig, TrainConfig
from ..core.io import DataError, atomic_write
from ..nn.locator import SPACING_MM

FORMAT = 3
READS = (1, 2, 3)
CHECKPOINT = "checkpoint.pt"  # a run folder's checkpoint file


def save_checkpoint(path, *, config: TrainConfig, use: InferenceConfig, stages: dict[str, dict],
                    fitted: list[str]) -> None:
    """Write a checkpoint atomically: a crash mid-write leaves the previous file intact."""
    state = {"format": FORMAT, "config": config.to_dict(), "use": use.to_dict(), "stages": stages,
             "fitted": list(fitted)}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_checkpoint(path) -> dict:
    """Read a checkpoint safely (``weights_only=True``), converted to format 3; config and use come back typed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = str(exc)
        culprit = next((line.strip() for line in text.splitlines() if "GLOBAL" in line), "")
        if isinstance(exc, pickle.UnpicklingError) and culprit:  # a reference to code, refused unrun
            raise DataError(f"{path}: the checkpoint holds pickled code or objects, which are never run or loaded "
                            f"(only tensors and plain values are): {culprit}") from None
        # torch's first line of an unpickling failure advises loading the file unsafely: not repeated here
        first = "" if isinstance(exc, pickle.UnpicklingError) or not text.strip() else text.strip().split(". ")[0]
        raise DataError(f"{path}: cannot read checkpoint, the file is damaged or not one"
                        f"{f' ({type(exc).__name__}: {first})' if first else ''}") from None
    if not isinstance(state, dict) or "format" not in state or "config" not in state:
        raise DataError(f"{path}: not a napari-labelreg checkpoint")
    version = state["format"]
    if version not in READS:
        raise DataError(f"{path}: checkpoint format {version}; this napari-labelreg reads formats "
                        f"{', '.join(map(str, READS))}")
    if state.get("extra", {}).get("members"):
        raise DataError(f"{path}: checkpoint format {version} of a run of averaged networks (--members), "
                        "which this version no longer has; retrain it without")
    try:
        if version < 3:
            state = _from_format_2(state)
        state["config"] = TrainConfig.from_dict(state["config"])
        state["use"] = InferenceConfig(**state["use"])
    except (ValueError, TypeError, KeyError) as exc:
        raise DataError(f"{path}: checkpoint format {version}: {exc}") from None
    return state


def _from_format_2(old: dict) -> dict:
    """A format 1 or 2 checkpoint as format 3.

    Then the network's weight was a training setting, and ``iterations`` counted the network's steps,
    the locator and prior taking their shares of it on top; now it is the whole run's, shared out.
    """
    config = dict(old["config"])
    use = {"network_weight": config.pop("network_weight", 1.0)}
    iterations, extra = config.get("iterations"), old.get("extra", {})
    shares = {"locate": config.get("locator", 0.0), "prior": config.get("prior", 0.0)}
    steps = {k: round(v * iterations) if iterations else 0 for k, v in shares.items()}
    if iterations and any(shares.values()):
        total = iterations + sum(steps.values())
        config.update(iterations=total, locator=steps["locate"] / total, prior=steps["prior"] / total)
    refine = {"config": {"model": config["model"]}, "weights": old["model"], "step": old["step"]}
    if old.get("optimizer"):
        refine["optimizer"] = old["optimizer"]
    stages, fitted = {"refine": refine}, []
    if "locator" in extra:
        spacing = extra.get("locator_spacing_mm", config.get("spacing_mm") or SPACING_MM)
        locate = {"width": config["model"]["width"], "spacing_mm": spacing, "cut": extra.get("locator_cut", False)}
        stages["locate"] = {"config": locate, "weights": extra["locator"], "step": steps["locate"]}
        fitted.append("locate")
    if "prior" in extra:
        prior = extra["prior"]
        stages["prior"] = {"config": {"half_width_mm": prior["half_width_mm"], "points": prior["points"]},
                           "weights": {"field": prior["field"]}, "step": steps["prior"]}
        fitted.append("prior")
    return {"format": FORMAT, "config": config, "use": use, "stages": stages, "fitted": fitted}


def run_checkpoint(run_dir: str | os.PathLike) -> Path:
    """The checkpoint of a run folder (or the path itself if it is a file)."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise DataError(f"{run_dir}: not found (a run folder, or its {CHECKPOINT})")
    path = run_dir if run_dir.is_file() else run_dir / CHECKPOINT
    if not path.is_file():
        raise DataError(f"{run_dir}: no {CHECKPOINT} in this run folder")
    return path
