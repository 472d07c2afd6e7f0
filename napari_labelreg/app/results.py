"""A registration's output folder: what ``register`` and the Inspect widget's Export write, and read back.

==========================  =================================================================================
``ddf.nii.gz``              the whole transform: fixed world -> the moving file's world, mm (RAS, NIfTI intent
                            1006).  ITK, SimpleITK and 3D Slicer resample the moving file with it, as a
                            displacement-field transform, to reproduce ``warped.nii.gz``.
``warped.nii.gz``           the moving image on the fixed grid.
``warped_labels.nii.gz``    with moving labels: them warped and thresholded at 0.5 (3-D, or a 4-D stack).
``inverse_ddf.nii.gz``      with ``--inverse``: moving world -> fixed world, on the moving grid.
``moving_gland.nii.gz``     with a gland fit: the glands it fitted to (the MR's on the moving grid, the TRUS's
``fixed_gland.nii.gz``      on the fixed grid), given or predicted, to check and correct.
``registration.json``       the initial correspondence (4x4, fixed world -> moving world, applied after the
                            deformation), the moving grid, the files registered, and with a gland fit where
                            each gland came from (given or predicted) and the gland Dice before and after the
                            fit: what the napari reader needs to show the same layers as the Inspect widget.
==========================  =================================================================================
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..core import transform
from ..core.geometry import Grid, warp
from ..core.io import DataError, Volume, atomic_write, load_ddf, load_volume, save_ddf, save_volume
from ..pipeline.registrator import Registration

DDF_FILE, WARPED_FILE, WARPED_LABELS_FILE = "ddf.nii.gz", "warped.nii.gz", "warped_labels.nii.gz"
INVERSE_FILE, RECORD_FILE = "inverse_ddf.nii.gz", "registration.json"
GLAND_FILES = ("moving_gland.nii.gz", "fixed_gland.nii.gz")  # the glands fitted to, given or predicted
FORMAT = 1


def export_registration(registration: Registration, folder: str | os.PathLike,
                        moving_labels: np.ndarray | None = None, *, inverse: bool = False,
                        sources: dict[str, str | os.PathLike | None] | None = None) -> list[Path]:
    """Write a registration's files (see the module's table) to ``folder``; returns the paths written.

    ``moving_labels``: ``(M, *moving shape)``, warped too.  ``inverse``: also the inverse DDF.
    ``sources``: the files registered (``moving``, ``fixed``, ``model``), recorded in ``registration.json``.
    """
    folder = Path(folder)
    save_ddf(folder / DDF_FILE, registration.complete_ddf(), registration.fixed)
    save_volume(folder / WARPED_FILE, registration.warped.astype(np.float32), registration.fixed)
    written = [folder / DDF_FILE, folder / WARPED_FILE]
    if moving_labels is not None:
        warped = (registration.warp_labels(moving_labels) >= 0.5).astype(np.uint8)
        stack = warped[0] if len(warped) == 1 else warped.transpose(1, 2, 3, 0)
        save_volume(folder / WARPED_LABELS_FILE, stack, registration.fixed)
        written.append(folder / WARPED_LABELS_FILE)
    if inverse:
        field, _ = registration.inverse_ddf()
        save_ddf(folder / INVERSE_FILE, field, registration.moving, name="DDF moving->fixed")
        written.append(folder / INVERSE_FILE)
    record = {
        "format": FORMAT,
        "initial": registration.initial.tolist(),
        "moving_grid": {"shape": list(registration.moving.shape), "affine": registration.moving.affine.tolist()},
        **{key: str(Path(path).resolve()) if path else None for key, path in (sources or {}).items()},
    }
    glands = registration.glands
    if glands is not None:  # the glands the registration was fitted to, as files beside it, and where they came from
        save_volume(folder / GLAND_FILES[0], glands.moving.astype(np.uint8), registration.moving)
        save_volume(folder / GLAND_FILES[1], glands.fixed.astype(np.uint8), registration.fixed)
        written += [folder / name for name in GLAND_FILES]
        record["glands"] = {"moving": glands.sources[0], "fixed": glands.sources[1],
                            "dice_before_fit": round(glands.dice_before, 4), "dice_after_fit": round(glands.dice_after, 4)}
    atomic_write(folder / RECORD_FILE, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1), encoding="utf-8"))
    return [*written, folder / RECORD_FILE]


def is_result_folder(path: str | os.PathLike) -> bool:
    path = Path(path)
    return path.is_dir() and (path / DDF_FILE).is_file() and (path / RECORD_FILE).is_file()


def read_registration(folder: str | os.PathLike) -> tuple[Registration, Volume | None, dict]:
    """A result folder back as ``(registration, fixed image or None, record)``.

    The registration's DDF is relative to its initial correspondence again, as :class:`Registration` holds it;
    the fixed image is the file it was registered to, when that file is still where it was, on the same grid.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: {'not a folder' if folder.exists() else 'not found'}; a register output folder "
                        f"(with {DDF_FILE} and {RECORD_FILE}) is expected")
    record_path = folder / RECORD_FILE
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
        initial = np.asarray(record["initial"], np.float64)
        moving = Grid(tuple(record["moving_grid"]["shape"]), np.asarray(record["moving_grid"]["affine"]))
    except FileNotFoundError:
        raise DataError(f"{record_path}: file not found; is {folder} a register output folder?") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{record_path}: not a registration record ({type(exc).__name__}: {exc})") from None
    if record.get("format") != FORMAT or initial.shape != (4, 4):
        raise DataError(f"{record_path}: registration record format {record.get('format')!r}; this napari-labelreg "
                        f"reads format {FORMAT}")
    complete, fixed = load_ddf(folder / DDF_FILE)
    matrix = np.linalg.inv(moving.affine) @ initial @ fixed.affine
    ddf = transform.relative_ddf(complete, fixed, initial)
    warped_path = folder / WARPED_FILE
    warped = load_volume(warped_path).data if warped_path.is_file() else None
    fixed_image = None
    if record.get("fixed") and Path(record["fixed"]).exists():
        fixed_image = load_volume(record["fixed"])
        if fixed_image.grid.shape != fixed.shape or not np.allclose(fixed_image.grid.affine, fixed.affine, atol=1e-4):
            fixed_image = None  # replaced by another image since
    if warped is None:
        if not (record.get("moving") and Path(record["moving"]).exists()):
            raise DataError(f"{warped_path}: file not found, and the moving image is not where it was")
        warped = warp(load_volume(record["moving"]).data, fixed, moving, matrix, ddf)
    return Registration(ddf, fixed, moving, matrix, warped), fixed_image, record
