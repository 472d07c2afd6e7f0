"""Reading and writing volumes, label stacks and DDFs as NIfTI (nibabel).

Every reader checks what it reads and raises :class:`DataError` with a one-line
message that names the file.  Nothing here imports torch.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from .geometry import Grid

NIFTI_SUFFIXES = (".nii.gz", ".nii")
FOLDERS = ("moving_images", "fixed_images", "moving_labels", "fixed_labels")


class DataError(ValueError):
    """Input data that cannot be used, with a message naming the file."""


@dataclass(frozen=True)
class Volume:
    """A 3-D image: ``data`` (float32, shape = grid.shape) on ``grid``."""

    data: np.ndarray
    grid: Grid
    source: str = ""


@dataclass(frozen=True)
class Pair:
    """One moving/fixed image pair with ``M`` corresponding label pairs.

    ``moving_labels`` has shape ``(M, *moving.grid.shape)`` and
    ``fixed_labels`` ``(M, *fixed.grid.shape)``, both boolean; label ``m`` of
    one side corresponds to label ``m`` of the other.  ``M`` may be 0.
    """

    name: str
    moving: Volume
    fixed: Volume
    moving_labels: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 2, 2), bool))
    fixed_labels: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 2, 2), bool))
    label_names: tuple[str, ...] = ()

    @property
    def num_labels(self) -> int:
        return int(self.moving_labels.shape[0])

    @property
    def gland_index(self) -> int:
        """Which label is the gland: the one typed ``gland`` when types are known, else label 0."""
        for k, name in enumerate(self.label_names):
            if name == "gland" or name.endswith(":gland"):
                return k
        return 0


def _load(path: str | os.PathLike) -> nib.Nifti1Image:
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise DataError(f"{path}: dangling symbolic link (to {os.readlink(path)})")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
        img.get_fdata(dtype=np.float32)  # force a full read: truncated gzip fails here
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise DataError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from None
    return img


def _grid_of(img: nib.Nifti1Image, path) -> Grid:
    try:
        return Grid(tuple(img.shape[:3]), img.affine)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None


def load_volume(path: str | os.PathLike) -> Volume:
    """Read a 3-D image; refuses other dimensionalities and non-finite values."""
    img = _load(path)
    if img.ndim != 3:
        raise DataError(f"{path}: expected a 3-D image, got shape {img.shape}")
    data = np.asarray(img.get_fdata(dtype=np.float32))
    if not np.all(np.isfinite(data)):
        raise DataError(f"{path}: image holds NaN or infinite values")
    return Volume(data, _grid_of(img, path), str(path))


def check_mask(mask: np.ndarray, what: str) -> np.ndarray:
    """Return ``mask`` as bool after checking it is finite, binary and non-empty."""
    mask = np.asarray(mask)
    if mask.dtype != bool:
        if not np.all(np.isfinite(mask)):
            raise DataError(f"{what}: mask holds NaN or infinite values")
        values = np.unique(mask)
        if not np.all(np.isin(values, (0, 1))):
            shown = ", ".join(f"{v:g}" for v in values[:5])
            raise DataError(f"{what}: mask is not binary (values {shown}...)")
        mask = mask.astype(bool)
    if not mask.any():
        raise DataError(f"{what}: mask is empty")
    return mask


def load_labels(path: str | os.PathLike, grid: Grid | None = None) -> np.ndarray:
    """Read a 3-D mask or a 4-D stack of masks as bool ``(M, I, J, K)``."""
    img = _load(path)
    if img.ndim not in (3, 4):
        raise DataError(f"{path}: expected a 3-D mask or a 4-D label stack, got shape {img.shape}")
    data = np.asarray(img.dataobj)
    stack = data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)
    if grid is not None and stack.shape[1:] != grid.shape:
        raise DataError(f"{path}: label shape {stack.shape[1:]} differs from its image's {grid.shape}")
    return np.stack([check_mask(m, f"{path} label {i}") for i, m in enumerate(stack)])


def load_pair(
    moving: str | os.PathLike,
    fixed: str | os.PathLike,
    moving_labels: str | os.PathLike | None = None,
    fixed_labels: str | os.PathLike | None = None,
    *,
    name: str | None = None,
) -> Pair:
    """Read an image pair and, optionally, its corresponding label stacks."""
    mov, fix = load_volume(moving), load_volume(fixed)
    if (moving_labels is None) != (fixed_labels is None):
        missing = "fixed" if fixed_labels is None else "moving"
        raise DataError(f"{name or moving}: {missing} labels missing; labels come in pairs")
    if moving_labels is None:
        return Pair(name or _stem(moving), mov, fix,
                    np.zeros((0, *mov.grid.shape), bool), np.zeros((0, *fix.grid.shape), bool))
    ml, fl = load_labels(moving_labels, mov.grid), load_labels(fixed_labels, fix.grid)
    if ml.shape[0] != fl.shape[0]:
        raise DataError(
            f"{moving_labels}: {ml.shape[0]} moving labels but {fixed_labels} has {fl.shape[0]}"
        )
    return Pair(name or _stem(moving), mov, fix, ml, fl)


def _stem(path) -> str:
    name = Path(path).name
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def list_folder_pairs(root: str | os.PathLike) -> list[str]:
    """Pair names of a folder in the mrus_prostate layout, checked for partners."""
    root = Path(root)
    for folder in FOLDERS[:2]:
        if not (root / folder).is_dir():
            raise DataError(f"{root / folder}: folder not found (expected {', '.join(FOLDERS)})")
    names = {f: {_stem(p): p for p in (root / f).glob("*.nii*")} for f in FOLDERS}
    pairs = sorted(set(names["moving_images"]) | set(names["fixed_images"]))
    has_labels = any(names["moving_labels"].values()) or any(names["fixed_labels"].values())
    needed = FOLDERS if has_labels else FOLDERS[:2]
    for n in pairs:
        for folder in needed:
            if n not in names[folder]:
                raise DataError(f"{root / folder / (n + '.nii.gz')}: missing partner file for pair {n}")
    if not pairs:
        raise DataError(f"{root}: no NIfTI pairs found")
    return pairs


def folder_pair_paths(root: str | os.PathLike, name: str) -> dict[str, Path | None]:
    root = Path(root)
    out: dict[str, Path | None] = {}
    for folder in FOLDERS:
        candidates = [root / folder / (name + s) for s in NIFTI_SUFFIXES]
        hits = [c for c in candidates if c.exists() or c.is_symlink()]  # a dangling link is named when read
        out[folder] = hits[0] if hits else None
    return out


def load_folder_pair(root: str | os.PathLike, name: str) -> Pair:
    """Read one named pair from a folder in the mrus_prostate layout."""
    p = folder_pair_paths(root, name)
    return load_pair(p["moving_images"], p["fixed_images"], p["moving_labels"], p["fixed_labels"], name=name)


def _process_umask() -> int:
    mask = os.umask(0o022)  # read it the only way POSIX offers, once, at import (single-threaded then)
    os.umask(mask)
    return mask


UMASK = _process_umask()


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then move the file into place atomically.

    The file gets the permissions the user's umask gives a new file (``mkstemp`` alone would
    leave it ``-rw-------``, unreadable to colleagues on a shared server).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_volume(path, data: np.ndarray, grid: Grid) -> None:
    """Write a 3-D (or 4-D stack) array on ``grid`` as NIfTI."""
    img = nib.Nifti1Image(np.asarray(data), grid.affine)
    img.set_qform(grid.affine, code=1)
    img.set_sform(grid.affine, code=1)
    atomic_write(path, lambda tmp: nib.save(img, tmp))


def save_ddf(path, ddf_mm: np.ndarray, grid: Grid) -> None:
    """Write a DDF ``(I, J, K, 3)`` in mm as a NIfTI vector image.

    The file is 5-D ``(I, J, K, 1, 3)`` with intent ``NIFTI_INTENT_DISPVECT``
    (1006), the layout ITK and SimpleITK read as a displacement field.
    Components are millimetres along the fixed image's NIfTI world axes (RAS);
    ITK converts them to its LPS frame on reading because of that intent, and
    its displacement-field transforms use the same direction (fixed -> moving).
    """
    if ddf_mm.shape != (*grid.shape, 3):
        raise ValueError(f"DDF shape {ddf_mm.shape} does not match grid {grid.shape} + (3,)")
    img = nib.Nifti1Image(ddf_mm[:, :, :, None, :].astype(np.float32), grid.affine)
    img.header.set_intent("displacement vector", (), name="DDF mm fixed->moving")
    img.header.set_xyzt_units("mm")
    img.set_qform(grid.affine, code=1)
    img.set_sform(grid.affine, code=1)
    atomic_write(path, lambda tmp: nib.save(img, tmp))


def load_ddf(path) -> tuple[np.ndarray, Grid]:
    """Read a DDF written by :func:`save_ddf`: ``(I, J, K, 3)`` mm and its grid."""
    img = _load(path)
    data = np.asarray(img.get_fdata(dtype=np.float32))
    if data.ndim == 5 and data.shape[3] == 1:
        data = data[:, :, :, 0, :]
    if data.ndim != 4 or data.shape[-1] != 3:
        raise DataError(f"{path}: expected a 3-component vector image, got shape {img.shape}")
    return data, _grid_of(img, path)
