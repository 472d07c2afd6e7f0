"""What a registration did, as napari layer-data tuples (no viewer needed).

``inspection_layers`` returns ``(data, kwargs, layer_type)`` tuples for: the
TRUS image, the warped MR over it, displacement magnitude, Jacobian
determinant (diverging colormap centred on 1) with folding voxels
highlighted, displacement-gradient norm, the DDF as subsampled vectors, and,
when the pair has labels, warped MR labels against TRUS labels with each
landmark pair's centroids and error.  Layer coordinates are voxel index times
voxel size (napari's ``scale``), so every layer overlays the TRUS grid.  With
``world=True`` they are world millimetres of the RAS frame instead (the fixed
image's voxel -> RAS affine), and :func:`in_napari_world` places such a tuple
in napari's world as the plugin's reader places image files, so the layers
also overlay the TRUS and MR files opened on their own.

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

from ..core import metrics
from ..evaluation.scoring import score
from ..core.geometry import apply_affine, ddf_mm_to_voxels
from ..pipeline.registrator import Registration, Registrator
from ..core.io import Pair


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


def in_napari_world(data, kwargs: dict, kind: str, source="") -> tuple:
    """A tuple of ``inspection_layers(..., world=True)`` placed in napari's world."""
    kwargs = dict(kwargs)
    if kind in ("image", "labels"):
        return napari_layer(data, kwargs.pop("affine"), source, kind, **kwargs)
    return to_napari(data), {**kwargs, "axis_labels": WORLD_AXES}, kind  # points and vectors: world positions


def _label_stack(masks: np.ndarray) -> np.ndarray:
    stack = np.zeros(masks.shape[1:], np.uint16)
    for k, mask in enumerate(masks):
        stack[mask] = k + 1
    return stack


def ddf_vectors(ddf_mm: np.ndarray, pair_grid, step: int = 4, *, world: bool = False) -> np.ndarray:
    """napari vectors ``(N, 2, 3)``: a decimated set of voxels' positions and displacements, in layer units (mm).

    The voxels kept are those with ``(j - i) % step == 0`` and ``(k - i) % step == 0``: every slice
    along every axis holds a ``step``-spaced lattice of them, so vectors show on whichever slice is
    viewed (a plain ``[::step]`` subsample leaves three slices in four empty).
    ``world``: positions in world mm (the grid's affine) and the displacements as they are (world mm).
    """
    spacing = pair_grid.spacing
    i, j, k = np.meshgrid(*[np.arange(n) for n in ddf_mm.shape[:3]], indexing="ij")
    keep = ((j - i) % step == 0) & ((k - i) % step == 0)
    idx = np.stack([i[keep], j[keep], k[keep]], -1)
    if world:
        return np.stack([apply_affine(pair_grid.affine, idx.astype(np.float64)), ddf_mm[keep]], axis=1)
    along_axes = ddf_mm_to_voxels(ddf_mm[keep], pair_grid) * spacing  # mm along the array axes
    return np.stack([idx * spacing, along_axes], axis=1)


def inspection_layers(registration: Registration, pair: Pair | None, *, vector_step: int = 4,
                      names: list[str] | None = None, world: bool = False,
                      fixed_image: np.ndarray | None = None) -> list[tuple]:
    """Layer tuples for a registered pair; metrics go into the first layer's ``metadata``.

    ``names``: what to call each label pair in the landmark errors (default: from ``pair.label_names``).
    ``world``: place the layers in world mm (RAS) rather than voxel index x voxel size: image and labels
    layers get ``affine`` (the fixed grid's voxel -> world) instead of ``scale``, vectors and points world
    positions.  ``pair`` None: a registration without its images (a result folder read back): no label
    layers, and the TRUS image from ``fixed_image`` (on the registration's fixed grid) when given.
    """
    grid = pair.fixed.grid if pair is not None else registration.fixed
    scale = tuple(float(s) for s in grid.spacing)
    ddf = registration.ddf_mm
    det = metrics.jacobian_determinant(ddf, grid)
    folding = det <= 0
    spread = float(max(np.abs(det - 1).max(), 1e-3))
    labelled = pair is not None and pair.num_labels > 0
    summary = score(registration, pair) if labelled else {"folding_voxels": int(folding.sum())}
    base = {"affine": grid.affine} if world else {"scale": scale}
    fixed_data = pair.fixed.data if pair is not None else fixed_image
    warped_meta = {} if fixed_data is not None else {"metadata": summary}  # the first layer carries the metrics
    layers = [
        (fixed_data, {**base, "name": "TRUS image (fixed)", "colormap": "gray", "metadata": summary}, "image"),
        (registration.warped, {**base, "name": "warped MR (moving on fixed)", "colormap": "magenta",
                               "blending": "additive", "opacity": 0.6, **warped_meta}, "image"),
        (metrics.displacement_magnitude(ddf), {**base, "name": "displacement magnitude (mm)", "colormap": "viridis",
                                               "visible": False, "metadata": {"colorbar": True}}, "image"),
        (det, {**base, "name": "Jacobian determinant", "colormap": "bwr", "contrast_limits": (1 - spread, 1 + spread),
               "visible": False, "metadata": {"colorbar": True}}, "image"),
        (folding.astype(np.uint8), {**base, "name": f"folding voxels (det <= 0): {int(folding.sum())}",
                                    "opacity": 0.8}, "labels"),
        (metrics.gradient_norm(ddf, grid), {**base, "name": "displacement gradient norm", "colormap": "inferno",
                                            "visible": False, "metadata": {"colorbar": True}}, "image"),
        (ddf_vectors(ddf, grid, vector_step, world=world), {"name": "DDF (fixed -> moving, mm)", "edge_width": 0.3,
                                                            "edge_color": "yellow", "visible": False}, "vectors"),
    ]
    if fixed_data is None:
        layers = layers[1:]
    if labelled:
        layers += _label_layers(registration, pair, base, names, world)
    return layers


def _label_layers(registration: Registration, pair: Pair, base: dict, names: list[str] | None,
                  world: bool = False) -> list[tuple]:
    grid = pair.fixed.grid
    warped = registration.warp_labels(pair.moving_labels) >= 0.5
    errors = metrics.centroid_errors(warped, pair.fixed_labels, grid)

    def to_layer(mask):
        centroid = np.argwhere(mask).mean(0) if mask.any() else np.full(3, np.nan)
        return apply_affine(grid.affine, centroid) if world else centroid * grid.spacing
    moved = np.array([to_layer(m) for m in warped])
    target = np.array([to_layer(m) for m in pair.fixed_labels])
    if names is None:
        names = [n.split(":", 1)[-1] for n in pair.label_names] or [f"label {k}" for k in range(pair.num_labels)]
    features = {"label": names, "error_mm": errors, "gland": np.arange(pair.num_labels) == pair.gland_index}
    return [
        # outlines, so the labels never cover the overlay beneath them
        (_label_stack(pair.fixed_labels), {**base, "name": "TRUS labels (fixed)", "opacity": 0.9,
                                           "metadata": {"outline": True}}, "labels"),
        (_label_stack(warped), {**base, "name": "warped MR labels", "opacity": 0.9, "visible": False,
                                "metadata": {"outline": True}}, "labels"),
        (target, {"name": "landmark centroids (TRUS)", "features": features, "face_color": "cyan", "size": 3},
         "points"),
        (moved, {"name": "landmark centroids (warped MR)", "features": features, "face_color": "magenta", "size": 3,
                 "text": {"string": "{label}: {error_mm:.1f} mm", "size": 9, "color": "white"}}, "points"),
    ]


def register_for_inspection(model_dir: str, db_path: str | None, pair_index: int = 0,
                            network_weight: float | None = None):
    """(registration, pair, layer tuples) for pair ``pair_index`` of a database (a phantom when None).

    ``network_weight``: of the network's DDF over the located glands and prior (None: the run's).
    """
    if db_path:
        from ..database import LabelDB

        with LabelDB.open(db_path) as db:
            records = db.image_pairs()
            if not records:
                raise ValueError(f"{db_path}: no image pairs")
            record = records[pair_index % len(records)]
            pair = db.load_pair(record.id)
            named = {lp.id: f"{lp.name or lp.type} ({lp.type})" for lp in db.label_pairs(record.id)}
        names = [named[int(n.split(":", 1)[0])] for n in pair.label_names]  # load_pair names them "id:type"
    else:
        from ..core.phantom import make_phantom

        pair, names = make_phantom(1000 + pair_index).pair, None
    registration = Registrator.from_run(model_dir, network_weight=network_weight).register_pair(pair)
    layers = [in_napari_world(*layer) for layer in inspection_layers(registration, pair, names=names, world=True)]
    return registration, pair, layers
