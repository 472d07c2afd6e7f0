"""What a registration did, as napari layer-data tuples (no viewer needed).

``inspection_layers`` returns ``(data, kwargs, layer_type)`` tuples for: the
TRUS image, the warped MR over it, displacement magnitude, Jacobian
determinant (diverging colormap centred on 1) with folding voxels
highlighted, displacement-gradient norm, the DDF as subsampled vectors, and,
when the pair has labels, warped MR labels against TRUS labels with each
landmark pair's centroids and error.  The layers are placed in the plugin's
world (:mod:`.placement`), as its reader places image files, so they also
overlay the TRUS and MR files opened on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..core import metrics
from ..evaluation.scoring import score
from ..core.geometry import apply_affine
from ..pipeline.registrator import Registration, Registrator
from ..core.io import Pair
from .placement import WORLD_AXES, label_map, napari_layer, to_napari


def ddf_vectors(ddf_mm: np.ndarray, grid, step: int = 4) -> np.ndarray:
    """Vectors ``(N, 2, 3)`` in world RAS mm: a decimated set of voxels' positions and their displacements.

    The voxels kept are those with ``(j - i) % step == 0`` and ``(k - i) % step == 0``: every slice
    along every axis holds a ``step``-spaced lattice of them, so vectors show on whichever slice is
    viewed (a plain ``[::step]`` subsample leaves three slices in four empty).
    """
    i, j, k = np.meshgrid(*[np.arange(n) for n in ddf_mm.shape[:3]], indexing="ij")
    keep = ((j - i) % step == 0) & ((k - i) % step == 0)
    idx = np.stack([i[keep], j[keep], k[keep]], -1).astype(np.float64)
    return np.stack([apply_affine(grid.affine, idx), ddf_mm[keep]], axis=1)


def inspection_layers(registration: Registration, pair: Pair | None, *, vector_step: int = 4,
                      names: list[str] | None = None, fixed_image: np.ndarray | None = None,
                      source="") -> list[tuple]:
    """Layer tuples for a registered pair, in napari's world; metrics go into the first layer's ``metadata``.

    ``names``: what to call each label pair in the landmark errors (default: from ``pair.label_names``).
    ``pair`` None: a registration without its images (a result folder read back): no label layers, and the
    TRUS image from ``fixed_image`` (on the registration's fixed grid) when given.  ``source``: recorded in
    the image layers' metadata.
    """
    grid = pair.fixed.grid if pair is not None else registration.fixed
    ddf = registration.ddf_mm
    gradient = metrics.displacement_gradient(ddf, grid)
    det = np.linalg.det(np.eye(3) + gradient)
    folding = det <= 0
    spread = float(max(np.abs(det - 1).max(), 1e-3))
    labelled = pair is not None and pair.num_labels > 0
    summary = score(registration, pair) if labelled else {"folding_voxels": int(folding.sum())}
    fixed_data = pair.fixed.data if pair is not None else fixed_image
    warped_meta = {} if fixed_data is not None else {"metadata": summary}  # the first layer carries the metrics
    volume = lambda data, kind, **kwargs: napari_layer(data, grid.affine, source, kind, **kwargs)  # noqa: E731
    layers = [
        volume(registration.warped, "image", name="warped MR (moving on fixed)", colormap="magenta",
               blending="additive", opacity=0.6, **warped_meta),
        volume(metrics.displacement_magnitude(ddf), "image", name="displacement magnitude (mm)", colormap="viridis",
               visible=False, metadata={"colorbar": True}),
        volume(det, "image", name="Jacobian determinant", colormap="bwr", contrast_limits=(1 - spread, 1 + spread),
               visible=False, metadata={"colorbar": True}),
        volume(folding.astype(np.uint8), "labels", name=f"folding voxels (det <= 0): {int(folding.sum())}",
               opacity=0.8),
        volume(np.linalg.norm(gradient, axis=(-2, -1)), "image", name="displacement gradient norm",
               colormap="inferno", visible=False, metadata={"colorbar": True}),
        (to_napari(ddf_vectors(ddf, grid, vector_step)),
         {"name": "DDF (fixed -> moving, mm)", "edge_width": 0.3, "edge_color": "yellow", "visible": False,
          "axis_labels": WORLD_AXES}, "vectors"),
    ]
    if registration.glands is not None:
        layers += _gland_layers(registration, volume)
        summary["gland_fit"] = registration.glands.said()
    if fixed_data is not None:
        layers.insert(0, volume(fixed_data, "image", name="TRUS image (fixed)", colormap="gray", metadata=summary))
    if labelled:
        layers += _label_layers(registration, pair, volume, names)
    return layers


def _gland_layers(registration: Registration, volume) -> list[tuple]:
    """The glands the registration was fitted to, as outlines on the TRUS: the TRUS gland and the MR gland warped."""
    glands = registration.glands
    warped = registration.warp(glands.moving) >= 0.5
    return [
        volume(glands.fixed.astype(np.uint8), "labels", name=f"TRUS gland fitted to ({glands.sources[1]})",
               opacity=0.9, metadata={"outline": True}),
        volume(warped.astype(np.uint8) * 2, "labels", name=f"warped MR gland ({glands.sources[0]})", opacity=0.9,
               metadata={"outline": True}),
    ]


def _label_layers(registration: Registration, pair: Pair, volume, names: list[str] | None) -> list[tuple]:
    grid = pair.fixed.grid
    warped = registration.warp_labels(pair.moving_labels) >= 0.5
    errors = metrics.centroid_errors(warped, pair.fixed_labels, grid)
    moved = to_napari([metrics.centroid_mm(m, grid) for m in warped])
    target = to_napari([metrics.centroid_mm(m, grid) for m in pair.fixed_labels])
    if names is None:
        names = [n.split(":", 1)[-1] for n in pair.label_names] or [f"label {k}" for k in range(pair.num_labels)]
    features = {"label": names, "error_mm": errors, "gland": np.arange(pair.num_labels) == pair.gland_index}
    points = {"features": features, "size": 3, "axis_labels": WORLD_AXES}
    return [
        # outlines, so the labels never cover the overlay beneath them
        volume(label_map(pair.fixed_labels), "labels", name="TRUS labels (fixed)", opacity=0.9,
               metadata={"outline": True}),
        volume(label_map(warped), "labels", name="warped MR labels", opacity=0.9, visible=False,
               metadata={"outline": True}),
        (target, {**points, "name": "landmark centroids (TRUS)", "face_color": "cyan"}, "points"),
        (moved, {**points, "name": "landmark centroids (warped MR)", "face_color": "magenta",
                 "text": {"string": "{label}: {error_mm:.1f} mm", "size": 9, "color": "white"}}, "points"),
    ]


def register_for_inspection(model_dir: str, db_path: str | None, pair_index: int = 0,
                            network_weight: float | None = None, glands: str = "none"):
    """(registration, pair, layer tuples) for pair ``pair_index`` of a database (a phantom when None).

    ``network_weight``: of the network's DDF over the located glands and prior (None: the run's).
    ``glands``: what the registration is fitted to at its end (``Registrator.register_pair``'s).
    """
    if db_path:
        from ..database import LabelDB
        from .annotation import shown_name

        with LabelDB.open(db_path) as db:
            records = db.image_pairs()
            if not records:
                raise ValueError(f"{db_path}: no image pairs")
            record = records[pair_index % len(records)]
            pair = db.load_pair(record.id)
            named = {lp.id: shown_name(lp) for lp in db.label_pairs(record.id)}
        names = [named[int(n.split(":", 1)[0])] for n in pair.label_names]  # load_pair names them "id:type"
    else:
        from ..core.phantom import make_phantom

        pair, names = make_phantom(1000 + pair_index).pair, None
    registration = Registrator.from_run(model_dir, network_weight=network_weight).register_pair(pair, glands=glands)
    return registration, pair, inspection_layers(registration, pair, names=names)


@dataclass(frozen=True)
class RegisteredPair:
    """A registration of a database pair as arrays on the fixed image's voxels ``(i, j, k)``: what the annotation
    workspace's registration cell shows, placed as its TRUS cell is.

    ``label_ids``: the database id of each label pair (in ``pair``'s order); ``moved``/``target``: each label
    pair's centroid in fixed voxels, the warped MR label's and the TRUS label's (NaN where empty).
    ``summary``: ``tre_mm``, ``dice`` and ``folding_voxels`` after, ``tre_before_mm`` and ``dice_before`` with
    the initial correspondence alone, and the gland fit's line where one was made.
    """

    registration: Registration
    pair_id: int
    warped: np.ndarray
    displacement_mm: np.ndarray
    jacobian: np.ndarray
    warped_labels: np.ndarray
    label_ids: tuple[int, ...]
    names: tuple[str, ...]
    moved: np.ndarray
    target: np.ndarray
    errors_mm: np.ndarray
    summary: dict


def registered_pair(registration: Registration, pair: Pair, pair_id: int, names: dict[int, str]) -> RegisteredPair:
    """:class:`RegisteredPair` of ``pair`` as the database loads it (label names ``"id:type"``); ``names``: label
    pair id -> the name shown for it."""
    grid = pair.fixed.grid
    warped = registration.warp_labels(pair.moving_labels) >= 0.5
    ids = tuple(int(n.split(":", 1)[0]) for n in pair.label_names)
    centroid = lambda m: np.argwhere(m).mean(0) if m.any() else np.full(3, np.nan)  # noqa: E731
    det = metrics.jacobian_determinant(registration.ddf_mm, grid)
    summary = {"folding_voxels": int((det <= 0).sum())}
    if pair.num_labels:
        after = score(registration, pair)
        before = score(replace(registration, ddf_mm=np.zeros_like(registration.ddf_mm), glands=None), pair)
        summary.update(tre_mm=after["tre_mm"], dice=after["dice"], tre_before_mm=before["tre_mm"],
                       dice_before=before["dice"])
    if registration.glands is not None:
        summary["gland_fit"] = registration.glands.said()
    return RegisteredPair(
        registration, pair_id, registration.warped, metrics.displacement_magnitude(registration.ddf_mm), det,
        warped, ids, tuple(names.get(i, str(i)) for i in ids),
        np.array([centroid(m) for m in warped]).reshape(-1, 3),
        np.array([centroid(m) for m in pair.fixed_labels]).reshape(-1, 3),
        metrics.centroid_errors(warped, pair.fixed_labels, grid), summary)


def register_in_workspace(model_dir: str, db_location: str, image_pair_id: int, network_weight: float | None = None,
                          glands: str = "none") -> RegisteredPair:
    """Register image pair ``image_pair_id`` of the database with a trained run, for the workspace's cell."""
    from ..database import LabelDB
    from .annotation import shown_name

    with LabelDB.open(db_location) as db:
        pair = db.load_pair(image_pair_id)
        names = {lp.id: shown_name(lp) for lp in db.label_pairs(image_pair_id)}
    registration = Registrator.from_run(model_dir, network_weight=network_weight).register_pair(pair, glands=glands)
    return registered_pair(registration, pair, image_pair_id, names)
