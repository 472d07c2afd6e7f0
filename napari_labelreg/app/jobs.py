"""Plain-function twins of the widgets' long jobs (training, registration, export).

The widgets run these in napari's ``thread_worker``; the tests and scripts
call them directly.  Nothing here imports Qt.
"""

from __future__ import annotations

import math
import os
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from ..config import InferenceConfig, TrainConfig
from ..core.io import DataError, Pair
from ..pipeline.checkpoint import CHECKPOINT


def split_validation(pairs: list[Pair], subjects: dict[str, str], fraction: float, seed: int
                     ) -> tuple[list[Pair], list[Pair]]:
    """Hold out about ``fraction`` of the subjects (all their pairs) for validation."""
    if fraction <= 0:
        return pairs, []
    names = sorted({subjects.get(p.name, p.name) for p in pairs})
    rng = np.random.default_rng(seed)
    held = set(rng.permutation(names)[: max(1, math.floor(fraction * len(names)))])
    if len(held) == len(names):
        raise DataError("the validation split would leave no subject to train on")
    train = [p for p in pairs if subjects.get(p.name, p.name) not in held]
    return train, [p for p in pairs if subjects.get(p.name, p.name) in held]


def db_training_pairs(db_path, *, types: Sequence[str] | None = None, verified_only: bool = False,
                      annotators: Sequence[str] | None = None, consensus: bool = False
                      ) -> tuple[list[Pair], dict[str, str]]:
    """Pairs passing the filters and their subjects, read from a label database (``consensus``: one label pair
    per landmark, :func:`~napari_labelreg.database.store.consensus_masks`)."""
    from ..database import LabelDB

    statuses = ["verified"] if verified_only else None
    if "://" not in str(db_path) and not Path(db_path).is_file():
        raise DataError(f"{db_path}: database not found")
    with LabelDB.open(db_path) as db:
        pairs = db.training_pairs(types=types or None, statuses=statuses, annotators=annotators or None,
                                  consensus=consensus)
        subjects = {r.name: r.subject for r in db.image_pairs()}
    if not pairs:
        raise DataError(f"{db_path}: no complete label pairs pass the filters")
    return pairs, subjects


def training_job(db_path, config: TrainConfig, out_dir: str | os.PathLike, *, use: InferenceConfig | None = None,
                 types=None, verified_only=False, consensus=False, validation_fraction: float = 0.0,
                 resume: bool = False,
                 device: str | None = None, validate_every: int = 50, stop=None) -> Iterator:
    """Train from a database with an optional subject-level validation split; yields Progress.

    ``use``: what the run records it is to be registered with (see :class:`Trainer`).  ``stop`` (a
    ``threading.Event``) ends the run after the current step; the run's checkpoint is written before
    this generator returns.
    """
    from ..evaluation.scoring import validator
    from ..pipeline.train import Trainer

    from ..database import LabelDB

    run = Path(out_dir) / CHECKPOINT
    if resume and not run.exists():
        raise DataError(f"{out_dir}: no run to resume here (Start begins one)")
    if not resume and run.exists():
        raise DataError(f"{out_dir}: holds a run already; Resume continues it, or choose another output folder")
    pairs, subjects = db_training_pairs(db_path, types=types, verified_only=verified_only, consensus=consensus)
    if not resume:  # the initial correspondence the database's pairs were imported with
        with LabelDB.open(db_path) as db:
            config = replace(config, geometry=db.recorded_geometry([p.name for p in pairs]))
    train, val = split_validation(pairs, subjects, validation_fraction, config.seed)
    trainer = Trainer(train, config, out_dir, use=use, resume=resume, device=device,
                      validator=validator(val) if val else None, validate_every=validate_every)
    run = iter(trainer)
    try:
        for progress in run:
            yield progress
            if stop is not None and stop.is_set():
                break
    finally:
        run.close()  # writes the checkpoint now, in this thread


def overall_fraction(progress, config: TrainConfig) -> float:
    """How much of the whole run's budget (all its stages) ``progress`` has used, in [0, 1]: of its steps or
    of its minutes, whichever is further on (with both, the run ends with the first to run out)."""
    budgets = config.stage_budgets()
    before = list(budgets)[: list(budgets).index(progress.stage)]
    used = []
    if config.iterations:
        used.append((sum(budgets[s][0] for s in before) + progress.step) / config.iterations)
    if config.minutes:
        used.append((sum(budgets[s][1] for s in before) + progress.elapsed_s) / (60.0 * config.minutes))
    return min(1.0, max(used))


def budget_warning(out_dir: str | os.PathLike) -> str | None:
    """What to tell a user whose run's time budget bought a stage fewer steps than it needs (the run's
    ``config.json`` records them, :class:`~napari_labelreg.pipeline.train.Trainer`); None when it did not."""
    import json

    path = Path(out_dir) / "config.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    trained = record.get("trained") or {}
    if not trained.get("short"):
        return None
    took = ", ".join(f"{name} {trained['stages'][name]['steps']} of the {trained['stages'][name]['needs']} steps it "
                     "needs" for name in trained["short"])
    return (f"the {record['minutes']:g}-minute budget bought too few steps ({took}): the run will register little "
            "better than its start. The machine may have been busy; train longer (resume with more minutes) or "
            "for a number of iterations")
