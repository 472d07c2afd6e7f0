"""napari reader and writer: medical images placed where they are in the world, and label maps written back.

World coordinates
-----------------
Every layer this module makes is placed in **world millimetres of the patient**: napari's world axes are
``(S, P, L)`` in that order (superior, posterior, left: DICOM's and ITK's LPS coordinates, last axis first),
so napari's 2-D view opens on **axial** slices seen as radiologists read them, anterior up and the patient's
right on the screen's left, with the slider running feet to head.  A layer holds its file's array in ITK's
``(k, j, i)`` order, placed by the file's voxel -> world RAS matrix (NIfTI's; NRRD, MetaImage and DICOM LPS
geometry is converted to RAS when read, :mod:`napari_labelreg.core.io`) and a fixed change of axes
(:mod:`napari_labelreg.app.placement`, which places the Inspect widget's layers the same way), rotation
included, so an MR and a TRUS opened from their files overlay where the scanners put them, whatever their
orientations.  The coordinates napari shows are (S, P, L) mm: a point ``x, y, z`` (RAS) of the command line's
CSV files shows as ``z, -y, -x``.  The 3-D view shows oblique volumes exactly.  napari's 2-D view slices a
volume along its own array axes: it shows the array slice nearest the viewed plane, rotated in that plane,
as if the volume were not tilted out of it (and warns "Non-orthogonal slicing").  For the usual obliquity of
a few degrees that is a fair picture; a strongly oblique volume is best seen in 3-D (in 2-D the slice shown
can fall near an edge of the volume, far from the viewed point).

* :func:`get_reader` claims ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``, a DICOM series
  directory, and a ``napari-labelreg register`` output folder; anything else gets ``None``.
* An image opens as an Image layer, or as a Labels layer when its **file name** says labels (contains
  ``label``, ``mask`` or ``seg``) **and** every voxel is a non-negative integer.  Both are needed: an
  8-bit ultrasound or a CT is integer-valued too, and a name alone cannot vouch for the voxels.  A 4-D
  stack of binary masks with such a name opens as one Labels layer, value ``k + 1`` for mask ``k`` (the
  later mask shows where they overlap).  Any Image layer converts to Labels in napari's layer menu.
* A register output folder opens as the Inspect widget's layers (:func:`~napari_labelreg.app.inspection.
  inspection_layers`, placed as the images are), so they overlay the TRUS file opened on its own.
* :func:`write_labels` writes a Labels layer on the grid of the image it was painted on: the 4x4 in its
  ``metadata["affine"]`` (which this reader sets), else napari's own data -> world transform of the layer.

Layer metadata: ``affine`` (voxel -> world RAS, 4x4 as lists) and ``source`` (the file read).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from .app.placement import NAPARI_FROM_RAS, REVERSED, label_map, napari_layer
from .core.geometry import Grid
from .core.io import (NIFTI_SUFFIXES, WRITE_SUFFIXES, DataError, image_stem, image_suffix, load_labels, load_volume,
                      save_volume)

LABEL_NAME = re.compile(r"label|mask|seg", re.IGNORECASE)
DICOM_PROBE = 16  # files looked at to recognise a DICOM series directory


class NotWritten(RuntimeError):
    """A layer the writer cannot write, with a one-line message.

    Not a ValueError: napari turns a ValueError from a writer into "not a valid writer" and drops the message.
    """


# --- reading ---------------------------------------------------------------------------------------------


def get_reader(path):
    """npe2 ``get_reader``: a function reading ``path``, or None when it is not ours to read (never raises)."""
    if not isinstance(path, (str, os.PathLike)):
        return None  # a list: napari asks to stack; these images carry their own geometry, never stacked
    try:
        kind = _kind(Path(path))
    except OSError:
        return None
    return {"image": read_image, "folder": read_result_folder}.get(kind)


def _kind(path: Path) -> str | None:
    from .app.results import is_result_folder

    if path.is_dir():
        if is_result_folder(path):
            return "folder"
        return "image" if _is_dicom_dir(path) else None
    if path.is_file() and image_suffix(path.name):
        return "image"
    return None


def _is_dicom_dir(path: Path) -> bool:
    files = [f for f in sorted(path.iterdir())[:DICOM_PROBE * 4] if f.is_file()][:DICOM_PROBE]
    for f in files:
        if f.suffix.lower() in (".dcm", ".dicom", ".ima"):
            return True
        with open(f, "rb") as fh:
            head = fh.read(132)
        if head[128:132] == b"DICM":
            return True
    return False


def read_image(path) -> list[tuple]:
    """One Image (or Labels, see the module's rule) layer in napari's world; DataError for a file it cannot use."""
    path = Path(path)
    labels_named = bool(LABEL_NAME.search(image_stem(path)))
    try:
        volume = load_volume(path)
    except DataError as error:
        if not labels_named:
            raise
        if not path.name.lower().endswith(NIFTI_SUFFIXES):
            raise
        try:
            stack = load_labels(path)  # a 4-D NIfTI stack of masks
        except DataError:
            raise error from None
        affine = _stack_affine(path, stack)
        return [napari_layer(label_map(stack), affine, path, "labels", name=image_stem(path),
                             metadata={"stack": len(stack)})]
    data, affine = volume.data, volume.grid.affine
    if labels_named and _integral(data):
        return [napari_layer(_label_dtype(data), affine, path, "labels", name=image_stem(path))]
    return [napari_layer(data, affine, path, "image", name=image_stem(path), colormap="gray")]


def _stack_affine(path: Path, stack: np.ndarray) -> np.ndarray:
    """The voxel -> world affine of a 4-D NIfTI mask stack (load_labels returns no grid): its header's."""
    import nibabel as nib

    return np.asarray(nib.load(str(path)).affine, np.float64)


def _integral(data: np.ndarray) -> bool:
    return bool(data.size) and data.min() >= 0 and data.max() < 2 ** 31 and bool(np.all(data == np.round(data)))


def _label_dtype(data: np.ndarray) -> np.ndarray:
    data = np.asarray(data)
    if data.dtype == bool:
        return data.astype(np.uint8)
    top = int(data.max()) if data.size else 0
    if int(data.min() if data.size else 0) < 0:
        return data.astype(np.int32)
    return data.astype(np.uint8 if top < 2 ** 8 else np.uint16 if top < 2 ** 16 else np.int32)


def read_result_folder(path) -> list[tuple]:
    """A register output folder as the Inspect widget's layers, in napari's world (see the module docstring).

    The TRUS image when the file registered to is still where it was; the warped MR labels when the
    folder has them.  Layer names start with the folder's name.
    """
    from .app.inspection import inspection_layers
    from .app.results import WARPED_LABELS_FILE, read_registration

    folder = Path(path)
    registration, fixed, record = read_registration(folder)
    grid = registration.fixed
    if fixed is None and record.get("fixed"):
        warnings.warn(f"{record['fixed']}: not found, or no longer on the registration's fixed grid; the TRUS "
                      f"image is left out of {folder.name}")
    layers = inspection_layers(registration, None, fixed_image=None if fixed is None else fixed.data, source=folder)
    for _, kwargs, _ in layers:
        kwargs["name"] = f"{folder.name}: {kwargs['name']}"
        if kwargs["name"].endswith("TRUS image (fixed)"):
            kwargs["metadata"]["source"] = record["fixed"]
    labels_path = folder / WARPED_LABELS_FILE
    if labels_path.is_file():
        try:
            stack = load_labels(labels_path, grid)
        except DataError as exc:  # an empty mask (a label warped out of the field) among them
            warnings.warn(f"warped MR labels left out: {exc}")
        else:
            layers.append(napari_layer(label_map(stack), grid.affine, labels_path, "labels",
                                       name=f"{folder.name}: warped MR labels", opacity=0.7))
    return layers


# --- writing ---------------------------------------------------------------------------------------------


def layer_affine(meta: dict) -> np.ndarray:
    """The voxel ``(i, j, k)`` -> world RAS 4x4 of a 3-D layer's array turned back to ``(i, j, k)``:
    ``metadata["affine"]`` when there, else napari's data -> world transform, composed from the layer's
    ``scale``, ``translate``, ``rotate``, ``shear`` and ``affine``, taken out of napari's (S, P, L) world."""
    stored = (meta.get("metadata") or {}).get("affine")
    if stored is not None:
        stored = np.asarray(stored, np.float64)
        if stored.shape == (4, 4) and np.all(np.isfinite(stored)):
            return stored
    from napari.utils.transforms import Affine, CompositeAffine

    data2physical = CompositeAffine(scale=meta.get("scale", (1.0,) * 3), translate=meta.get("translate", (0.0,) * 3),
                                    rotate=meta.get("rotate"), shear=meta.get("shear"), ndim=3)
    physical2world = np.asarray(meta["affine"], np.float64) if meta.get("affine") is not None else np.eye(4)
    napari_world = Affine(affine_matrix=physical2world).affine_matrix @ data2physical.affine_matrix
    return np.linalg.inv(NAPARI_FROM_RAS) @ napari_world @ REVERSED


def write_labels(path: str, data, meta: dict) -> list[str]:
    """npe2 single-layer writer: a 3-D Labels layer to NIfTI, NRRD or MetaImage on its image's grid."""
    if meta.get("multiscale"):
        data = data[0]
    array = np.asarray(data)
    if array.ndim != 3:
        raise NotWritten(f"{path}: napari-labelreg writes 3-D label maps; layer {meta.get('name', '')!r} is "
                         f"{array.ndim}-D {tuple(array.shape)}")
    if not str(path).lower().endswith(WRITE_SUFFIXES):
        raise NotWritten(f"{path}: napari-labelreg writes labels as {', '.join(WRITE_SUFFIXES)}")
    array = array.transpose(2, 1, 0)  # napari's (k, j, i) back to the file's (i, j, k), see _layer
    try:
        grid = Grid(array.shape, layer_affine(meta))
        save_volume(path, _label_dtype(array), grid)
    except ValueError as exc:  # DataError among them
        raise NotWritten(str(exc)) from None
    return [str(path)]
