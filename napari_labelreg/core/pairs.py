"""Where pairs come from: a folder in the mrus_prostate layout (or a phantom set)."""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np

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


GEOMETRY_FILE = "geometry.txt"  # beside a folder's moving_images/: the word world, centred or fov


def folder_geometry(root: str | os.PathLike) -> tuple[str, str]:
    """The initial correspondence of a folder's pairs, and where that choice came from.

    The word in the folder's :data:`GEOMETRY_FILE`; else ``centred`` when the first pair's two headers put
    their first voxels at the same point (headers that hold no scanner position, as the public mrus_prostate
    data's: ``world`` would align the volumes' corners); else ``world``, the headers' positions.
    """
    from pathlib import Path

    from .geometry import CONVENTIONS
    from .io import DataError, folder_pair_paths, load_volume

    stated = Path(root) / GEOMETRY_FILE
    if stated.is_file():
        word = stated.read_text(errors="replace").strip()
        if word not in CONVENTIONS:
            raise DataError(f"{stated}: says {word[:40]!r}; it holds one word: {', '.join(CONVENTIONS)}")
        return word, f"stated in {stated}"
    first = folder_pair_paths(root, list_folder_pairs(root)[0])
    moving, fixed = (load_volume(first[f]).grid.affine for f in ("moving_images", "fixed_images"))
    if np.allclose(moving[:3, 3], fixed[:3, 3], atol=1e-3):
        return "centred", (f"{root}'s headers place both images' first voxels at one point (no scanner "
                           f"positions); write world in {stated} if they are positions")
    return "world", f"{root}'s headers (scanner positions)"
