"""Patient-level cross-validation: folds by subject, saved once and reused.

``splits.json`` holds the folds (lists of image-pair names) and the seed that
made them; a later run, or one fold run as a separate cluster job, reads the
same file instead of drawing again.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd

from ..config import InferenceConfig, TrainConfig
from ..core.io import Pair, atomic_write
from ..pipeline.checkpoint import CHECKPOINT
from ..pipeline.stages import Progress
from ..pipeline.train import train

SPLITS = "splits.json"
RESULTS = "results.csv"


def make_folds(subjects: dict[str, str], folds: int, seed: int) -> list[list[str]]:
    """Assign whole subjects to ``folds`` folds at random (seeded); returns pair names per fold.

    Subjects are dealt to the currently smallest fold, largest subjects first,
    so folds stay balanced in pairs and no subject is split.
    """
    by_subject: dict[str, list[str]] = {}
    for pair, subject in sorted(subjects.items()):
        by_subject.setdefault(subject, []).append(pair)
    if folds < 2 or folds > len(by_subject):
        raise ValueError(f"need 2 <= folds <= number of subjects ({len(by_subject)}), got {folds}")
    rng = np.random.default_rng(seed)
    order = list(by_subject)
    rng.shuffle(order)
    order.sort(key=lambda s: -len(by_subject[s]))  # stable: random among equal sizes
    result: list[list[str]] = [[] for _ in range(folds)]
    for subject in order:
        smallest = min(range(folds), key=lambda f: len(result[f]))
        result[smallest].extend(by_subject[subject])
    return [sorted(f) for f in result]


def load_or_make_splits(out_dir: str | os.PathLike, subjects: dict[str, str], folds: int, seed: int) -> list[list[str]]:
    """The folds of ``out_dir/splits.json``, made and saved there on first use."""
    path = Path(out_dir) / SPLITS
    if path.exists():
        saved = json.loads(path.read_text())
        if sorted(p for f in saved["folds"] for p in f) != sorted(subjects) or len(saved["folds"]) != folds:
            raise ValueError(f"{path}: saved folds do not match these {len(subjects)} pairs and {folds} folds; "
                             "use a new output folder")
        return saved["folds"]
    result = make_folds(subjects, folds, seed)
    payload = json.dumps({"seed": seed, "folds": result, "subjects": subjects}, indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(payload))
    return result


def run_fold(pairs: Sequence[Pair], folds: list[list[str]], fold: int, config: TrainConfig,
             out_dir: str | os.PathLike, *, evaluate: Callable[[str | os.PathLike, list[Pair]], pd.DataFrame],
             use: InferenceConfig | None = None, device: str | None = None) -> Iterator[Progress]:
    """Train on every fold but ``fold``, then ``evaluate(run_dir, held_out_pairs)`` into ``fold{k}/results.csv``.

    A fold with results is skipped; one with only a checkpoint (a killed job)
    resumes from it.
    """
    test_names = set(folds[fold])
    training = [p for p in pairs if p.name not in test_names]
    testing = [p for p in pairs if p.name in test_names]
    run_dir = Path(out_dir) / f"fold{fold}"
    if (run_dir / RESULTS).exists():
        return  # done already (e.g. by another job)
    resume = (run_dir / CHECKPOINT).exists()
    yield from train(training, replace(config, seed=config.seed + fold), run_dir, use=use, resume=resume,
                     device=device)
    frame = evaluate(run_dir, testing)
    frame.insert(0, "fold", fold)
    atomic_write(run_dir / RESULTS, lambda tmp: frame.to_csv(tmp, index=False))


def collect(out_dir: str | os.PathLike) -> pd.DataFrame:
    """All folds' per-pair results in one table, written to ``out_dir/results.csv``."""
    out = Path(out_dir)
    parts = [pd.read_csv(p) for p in sorted(out.glob(f"fold*/{RESULTS}"))]
    if not parts:
        raise ValueError(f"{out}: no fold has finished yet")
    frame = pd.concat(parts, ignore_index=True)
    atomic_write(out / RESULTS, lambda tmp: frame.to_csv(tmp, index=False))
    return frame
