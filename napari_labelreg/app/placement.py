"""Where the plugin puts voxels in napari: one world for the reader's images and the Inspect widget's layers.

napari's world
--------------
The plugin's world axes are ``(S, P, L)`` (superior, posterior, left: DICOM's and ITK's LPS millimetres,
last axis first), so napari's 2-D view opens on axial slices as radiologists read them: anterior up, the
patient's right on the screen's left.  napari pairs a layer's array axes with the world axes in order, so
arrays go in as ``(k, j, i)`` (ITK's order) with ``NAPARI_FROM_RAS @ affine @ REVERSED``: for an
axis-aligned image a diagonal matrix.
"""

from __future__ import annotations

import numpy as np

WORLD_AXES = ("S", "P", "L")
# napari's world (S, P, L) from RAS: axial slices in 2-D, anterior up, the patient's right on the screen's left
NAPARI_FROM_RAS = np.array([[0.0, 0, 1, 0], [0, -1, 0, 0], [-1, 0, 0, 0], [0, 0, 0, 1]])
REVERSED = np.array([[0.0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]])  # (k, j, i) <-> (i, j, k)


def to_napari(points_ras) -> np.ndarray:
    """World RAS points (or displacements) ``(..., 3)`` -> napari's world (S, P, L)."""
    return np.asarray(points_ras, np.float64) @ NAPARI_FROM_RAS[:3, :3].T


def napari_layer(data: np.ndarray, affine: np.ndarray, source, kind: str, **kwargs) -> tuple:
    """A layer tuple placing voxel data ``(i, j, k)`` with a voxel -> RAS ``affine`` in napari's world.

    The metadata keeps the RAS ``affine`` of the ``(i, j, k)`` array and the ``source`` read, for the writer.
    """
    meta = {**kwargs.pop("metadata", {}), "affine": np.asarray(affine).tolist(), "source": str(source)}
    kwargs = {**kwargs, "affine": NAPARI_FROM_RAS @ np.asarray(affine) @ REVERSED, "axis_labels": WORLD_AXES,
              "metadata": meta}
    return np.asarray(data).transpose(2, 1, 0), kwargs, kind


def label_map(masks: np.ndarray) -> np.ndarray:
    """One label map of a ``(M, I, J, K)`` mask stack: value ``m + 1`` for mask ``m`` (the later where they overlap)."""
    stack = np.zeros(masks.shape[1:], np.uint8 if len(masks) < 255 else np.uint16)
    for k, mask in enumerate(masks):
        stack[mask] = k + 1
    return stack
