"""Where pairs come from: a folder in the mrus_prostate layout (or a phantom set)."""

from __future__ import annotations

import os
from typing import Iterator

from .io import Pair, list_folder_pairs, load_folder_pair


def folder_pairs(root: str | os.PathLike, names: list[str] | None = None) -> list[Pair]:
    """Every (or the named) pair of a folder in the mrus_prostate layout, checked."""
    return list(iter_folder_pairs(root, names))


def iter_folder_pairs(root, names=None) -> Iterator[Pair]:
    for name in names if names is not None else list_folder_pairs(root):
        yield load_folder_pair(root, name)


def phantom_pairs(count: int, *, seed: int = 0, **kwargs) -> list[Pair]:
    """``count`` phantom pairs (seeds ``seed``, ``seed + 1``, ...)."""
    from .phantom import make_phantom

    return [make_phantom(seed + i, **kwargs).pair for i in range(count)]
