"""The annotation session: plain-Python state and actions behind the annotate widget.

Every widget action is a method here, so tests and scripts drive annotation
without a viewer.  Masks reach the database through its validated writes; a
side left empty is stored as missing, which keeps the label pair
``incomplete`` (shown as such, never trained on) instead of refusing it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..database import LabelDB, LabelPairRecord
from ..database.store import ImagePairRecord
from ..core.geometry import display_affines
from ..core.io import Volume

SIDES = ("moving", "fixed")


@dataclass
class AnnotationSession:
    """An open database, the current image pair and the selected label pair."""

    db: LabelDB
    annotator: str = ""
    pair_index: int = 0
    selected: int | None = None
    listeners: list[Callable[[str], None]] = field(default_factory=list)
    remembered: dict[int, int] = field(default_factory=dict)  # image pair id -> the label pair last selected
    # label pair id -> the revision this session last read or wrote: a change to a label pair someone else has
    # changed since is refused (ConflictError), never written over their work
    seen: dict[int, int] = field(default_factory=dict)

    @classmethod
    def open(cls, location: str | os.PathLike, annotator: str = "") -> "AnnotationSession":
        return cls(LabelDB.open(location), annotator)

    def _emit(self, what: str) -> None:
        for listener in list(self.listeners):
            listener(what)

    # ---- image pairs ----------------------------------------------------------
    @property
    def pairs(self) -> list[ImagePairRecord]:
        return self.db.image_pairs()

    @property
    def pair(self) -> ImagePairRecord | None:
        pairs = self.pairs
        return pairs[self.pair_index] if pairs else None

    def select_pair(self, index: int) -> None:
        n = len(self.pairs)
        if n == 0:
            raise ValueError(f"{self.db.location}: the database holds no image pairs")
        self.pair_index = index % n
        self.selected = None
        ids = [lp.id for lp in self.label_pairs()]
        remembered = self.remembered.get(self.pair.id)
        # a pair not visited yet opens with nothing selected: no stray stroke lands in its gland
        self.selected = remembered if remembered in ids else None
        self._emit("pair")

    def select_pair_id(self, pair_id: int) -> None:
        ids = [p.id for p in self.pairs]
        if pair_id not in ids:
            raise ValueError(f"no image pair with id {pair_id}; ids are {ids[:10]}")
        self.select_pair(ids.index(pair_id))

    def next_pair(self) -> None:
        self.select_pair(self.pair_index + 1)

    def previous_pair(self) -> None:
        self.select_pair(self.pair_index - 1)

    def images(self) -> tuple[Volume, Volume]:
        """(moving MR, fixed TRUS) volumes of the current pair."""
        return self.db.images(self.pair.id)

    # ---- label pairs ------------------------------------------------------------
    def label_pairs(self) -> list[LabelPairRecord]:
        rec = self.pair
        return self.db.label_pairs(rec.id) if rec else []

    def create_label_pair(self, type: str, name: str = "") -> int:
        """A new (empty, incomplete) label pair on the current pair, selected; without a name, named after its
        type and number ("other 3")."""
        name = name.strip()
        if name:
            self._check_unique(name)
        self.selected = self.db.create_label_pair(self.pair.id, type=type, name=name or None,
                                                  annotator=self.annotator)
        self.remembered[self.pair.id] = self.selected
        self.seen[self.selected] = 1
        self._emit("labels")
        return self.selected

    def select_label_pair(self, label_pair_id: int | None) -> None:
        self.selected = label_pair_id
        if label_pair_id is not None:
            self.remembered[self.pair.id] = label_pair_id
        self._emit("selection")

    def step_label_pair(self, step: int) -> None:
        """Select the next (``step`` = 1) or previous (-1) label pair of the image pair, cyclically."""
        ids = [lp.id for lp in self.label_pairs()]
        if not ids:
            raise ValueError(f"{self.pair.name} has no label pairs yet: add one first")
        index = ids.index(self.selected) + step if self.selected in ids else 0
        self.select_label_pair(ids[index % len(ids)])

    def view(self, pair_id: int) -> "PairView":
        """Everything the workspace shows of image pair ``pair_id``: images, placement, every label pair's masks.

        Reads files and the database only, so it can run in a worker thread.
        """
        rec = self.db.image_pair(pair_id)
        moving, fixed = self.db.images(rec.id)
        fixed_affine, moving_affine, exact = display_affines(fixed.grid, moving.grid, rec.convention)
        records = self.db.label_pairs(rec.id)
        masks = {lp.id: _filled(rec, *self.db.masks(lp.id)) for lp in records}
        self.seen.update({lp.id: lp.revision for lp in records})  # what the annotator now sees
        return PairView(rec, moving, fixed, moving_affine, fixed_affine, exact, records, masks,
                        {"moving": window(moving.data, MR_WINDOW), "fixed": window(fixed.data, TRUS_WINDOW)})

    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        """The selected pair's (moving, fixed) masks; zeros where unpainted."""
        return _filled(self.pair, *((None, None) if self.selected is None else self.db.masks(self.selected)))

    def save_mask(self, side: str, mask: np.ndarray, label_pair_id: int | None = None) -> None:
        """Store one side of a label pair (default: the selected one); an empty mask clears that side.

        Safe to call from a worker thread with an explicit ``label_pair_id``.
        """
        label_pair_id = self.selected if label_pair_id is None else label_pair_id
        if label_pair_id is None:
            raise ValueError("select or create a label pair before painting")
        mask = np.asarray(mask) > 0
        self.seen[label_pair_id] = self.db.set_mask(label_pair_id, side, mask if mask.any() else None,
                                                    author=self.annotator,
                                                    expected_revision=self.seen.get(label_pair_id))
        self._emit("saved")

    def keep_mine(self, label_pair_id: int) -> None:
        """After a conflict: let this session's next save replace the newer revision (which stays in the
        history, restorable)."""
        self.seen[label_pair_id] = self.db.label_pair(label_pair_id).revision

    def propose_fixed(self, registrator) -> np.ndarray:
        """Model-assisted annotation: the selected MR mask warped onto the TRUS (thresholded at 0.5).

        ``registrator`` is a trained :class:`~napari_labelreg.pipeline.registrator.Registrator`;
        the pair's recorded initial correspondence is used.  The proposal is
        not saved: the annotator accepts, corrects or rejects it.
        """
        moving, _ = self.masks()
        if not moving.any():
            raise ValueError("paint the MR (moving) side first: the proposal is warped from it")
        mov, fix = self.images()
        registration = registrator.register(mov, fix, geometry=self.pair.convention)
        return registration.warp(moving) >= 0.5

    def propose_glands(self, registrator) -> dict[str, np.ndarray]:
        """Model-assisted annotation: the gland on both images as the run's segmenters find it, ``{"moving":
        mask, "fixed": mask}`` on the images' grids.  Not saved: the annotator accepts, corrects or rejects it."""
        if registrator.locator is None:
            raise ValueError("this run has no gland segmenters (it was trained without a gland locator)")
        precision = registrator.use.precision
        return {side: registrator.locator.segment(volume, side, precision)
                for side, volume in zip(("moving", "fixed"), self.images())}

    def _check_unique(self, name: str, label_pair_id: int | None = None) -> None:
        clash = [lp for lp in self.label_pairs() if shown_name(lp) == name and lp.id != label_pair_id]
        if clash:
            raise ValueError(f"{self.pair.name} already has a label pair named {name!r} (#{number(clash[0])}): "
                             "give another name")

    def rename(self, type: str | None = None, name: str | None = None) -> None:
        if self.selected is None:
            raise ValueError("no label pair selected")
        if name is not None:
            name = name.strip()
            if not name:
                raise ValueError("a label pair's name cannot be empty")
            self._check_unique(name, self.selected)
        self.seen[self.selected] = self.db.update_label_pair(self.selected, type=type, name=name,
                                                             author=self.annotator,
                                                             expected_revision=self.seen.get(self.selected))
        self._emit("labels")

    def delete_selected(self) -> None:
        """Delete the selected label pair (restorable: ``db history --deleted``, ``db restore``)."""
        if self.selected is None:
            raise ValueError("no label pair selected")
        self.db.delete_label_pair(self.selected, author=self.annotator, expected_revision=self.seen.get(self.selected))
        labels = self.label_pairs()
        self.selected = labels[-1].id if labels else None
        self._emit("labels")

    def verify_selected(self, verifier: str) -> None:
        self.seen[self.selected] = self.db.verify(self.selected, verifier, expected_revision=self.seen.get(self.selected))
        self._emit("labels")


def number(lp: LabelPairRecord) -> int:
    """A label pair's number in its image pair: the list's "#3", the status line's, and the value napari's label
    box shows while it is painted (positions are never reused, so neither are numbers)."""
    return lp.position + 1


def shown_name(lp: LabelPairRecord) -> str:
    """The name every view shows (list, canvas caption, Inspect's errors): the stored one, or for a label pair
    made before names were given, its type and number as a new one would be named."""
    return lp.name or f"{lp.type} {number(lp)}"


def _filled(rec: ImagePairRecord, moving: np.ndarray | None, fixed: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray]:
    """A label pair's (moving, fixed) masks with unpainted sides as zeros on their image's grid."""
    return (moving if moving is not None else np.zeros(rec.moving_shape, bool),
            fixed if fixed is not None else np.zeros(rec.fixed_shape, bool))


@dataclass(frozen=True)
class PairView:
    """One image pair as the annotation workspace shows it.

    ``moving_affine`` and ``fixed_affine`` place the volumes (voxel -> display
    mm) so that the pair's initial correspondence is the identity;
    ``exact`` is False where that correspondence had to drop a rotation.
    ``masks`` maps each label pair id to its (moving, fixed) masks, zeros
    where a side is unpainted.
    """

    record: ImagePairRecord
    moving: Volume
    fixed: Volume
    moving_affine: np.ndarray
    fixed_affine: np.ndarray
    exact: bool
    label_pairs: list[LabelPairRecord]
    masks: dict[int, tuple[np.ndarray, np.ndarray]]
    windows: dict[str, tuple[float, float, float, float]]  # side -> (low, high, min, max) display intensities

    def volume(self, side: str) -> Volume:
        return self.moving if side == "moving" else self.fixed

    def affine(self, side: str) -> np.ndarray:
        return self.moving_affine if side == "moving" else self.fixed_affine


MR_WINDOW = (0.5, 99.5)  # percentiles: MR keeps nearly its full range
TRUS_WINDOW = (1.0, 99.0)  # TRUS: speckle's bright tail clipped


def window(data: np.ndarray, percentiles: tuple[float, float]) -> tuple[float, float, float, float]:
    """Display window of an image: (low, high) at ``percentiles`` of its finite values, then its (min, max)."""
    finite = data[np.isfinite(data)]
    if not finite.size:
        return 0.0, 1.0, 0.0, 1.0
    low, high = (float(v) for v in np.percentile(finite, percentiles))
    return low, max(high, low + 1e-6), float(finite.min()), max(float(finite.max()), low + 1e-6)


def ball(shape: tuple[int, int, int], spacing, centre_voxel, radius_mm: float) -> tuple[np.ndarray, ...]:
    """Indices of the voxels within ``radius_mm`` of ``centre_voxel`` (anisotropic voxels; at least the centre)."""
    spacing = np.asarray(spacing, float)
    centre = np.asarray(centre_voxel, float)
    reach = np.ceil(radius_mm / spacing).astype(int)
    lo = np.maximum(np.round(centre).astype(int) - reach, 0)
    hi = np.minimum(np.round(centre).astype(int) + reach + 1, shape)
    if np.any(hi <= lo):
        raise ValueError(f"the point {np.round(centre, 1).tolist()} lies outside the volume {tuple(shape)}")
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1)
    inside = (((grid - centre) * spacing) ** 2).sum(-1) <= radius_mm ** 2
    nearest = np.clip(np.round(centre).astype(int), 0, np.asarray(shape) - 1)
    points = np.concatenate([grid[inside], nearest[None]])
    return tuple(points.T)


def phantom_database(folder: str | os.PathLike, count: int = 2, database: str | None = None) -> Path | str:
    """A database holding ``count`` phantom pairs (labels included), their images in ``folder``: the file
    ``folder/labels.db``, or ``database`` (a SQLAlchemy URL) when given.  Returns where the database is."""
    from ..database.transfer import import_folder
    from ..core.io import save_volume
    from ..core.phantom import make_phantom

    folder = Path(folder)
    data = folder / "phantom_data"
    for seed in range(count):
        pair = make_phantom(seed, fixed_shape=(40, 48, 36), moving_shape=(48, 48, 44), spacing=1.5).pair
        name = f"phantom{seed:03d}.nii.gz"
        save_volume(data / "moving_images" / name, pair.moving.data, pair.moving.grid)
        save_volume(data / "fixed_images" / name, pair.fixed.data, pair.fixed.grid)
        save_volume(data / "moving_labels" / name, np.moveaxis(pair.moving_labels, 0, -1).astype(np.uint8),
                    pair.moving.grid)
        save_volume(data / "fixed_labels" / name, np.moveaxis(pair.fixed_labels, 0, -1).astype(np.uint8),
                    pair.fixed.grid)
    path = database or folder / "labels.db"
    with LabelDB.open(path) as db:
        if not db.image_pairs():
            import_folder(db, data, annotator="phantom")
    return path
