"""Import from and export to the mrus_prostate folder layout; per-label NIfTI export."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..core.io import FOLDERS, atomic_write, list_folder_pairs, load_folder_pair, save_volume
from .store import LabelDB, ValidationError, safe_name, unsafe_name

FIRST_LABEL_TYPE = "gland"  # label 0 of the layout


def read_subject_map(path: str | os.PathLike | None) -> dict[str, str]:
    """pair name -> subject, from a CSV with columns ``pair,subject`` (or nothing)."""
    if path is None:
        return {}
    with open(path, newline="") as fh:
        return {row["pair"]: row["subject"] for row in csv.DictReader(fh)}


def import_folder(db: LabelDB, root: str | os.PathLike, *, subjects: str | os.PathLike | None = None,
                  convention: str = "centred", annotator: str = "import", skip_existing: bool = False,
                  progress: Callable[[str], None] | None = None) -> int:
    """Import every pair of a folder; returns the number of image pairs added.

    Label 0 becomes a ``gland`` label pair, labels 1.. ``other`` ones named
    ``label k``.  Each image pair is one transaction: a failure leaves the
    pairs before it imported and nothing of the failing one.  ``skip_existing``:
    pairs whose name the database holds already are left as they are (a folder
    that grows is imported again for its new pairs).
    """
    mapping = read_subject_map(subjects)
    existing = {r.name for r in db.image_pairs()}
    names = list_folder_pairs(root)
    held = [name for name in names if name in existing]
    if held and not skip_existing:
        shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
        raise ValidationError(f"{root}: {len(held)} of its {len(names)} pairs are in {db.location} already ({shown}); "
                              "nothing was imported: --skip-existing imports only the new ones")
    count = 0
    for name in names:
        if name in existing:
            if progress:
                progress(name)
            continue
        pair = load_folder_pair(root, name)  # partners, shapes and label counts checked, each in one line
        with db.transaction() as conn:
            pair_id = db.add_image_pair(pair.moving.source, pair.fixed.source, subject=mapping.get(name, name),
                                        name=name, convention=convention, conn=conn)
            db.add_label_pairs(pair_id, [(pair.moving_labels[k], pair.fixed_labels[k],
                                          FIRST_LABEL_TYPE if k == 0 else "other", f"label {k}")
                                         for k in range(pair.num_labels)], annotator=annotator, conn=conn)
        count += 1
        if progress:
            progress(name)
    return count


def export_folder(db: LabelDB, root: str | os.PathLike, *, statuses=("complete", "verified")) -> int:
    """Write the database back in the folder layout (images byte for byte as imported)."""
    root = Path(root)
    records = _safely_named(db.image_pairs())
    for folder in FOLDERS:
        (root / folder).mkdir(parents=True, exist_ok=True)
    for rec in records:
        pair = db.load_pair(rec.id, statuses=statuses)
        file = f"{rec.name}.nii.gz"
        for folder, side in (("moving_images", "moving"), ("fixed_images", "fixed")):
            # the file as imported, under the pair's name (which its labels take too), in its own format
            data, suffix = db.image_file(rec.id, side)
            atomic_write(root / folder / f"{rec.name}{suffix}", lambda tmp: Path(tmp).write_bytes(data))
        if pair.num_labels:
            for folder, labels, vol in (("moving_labels", pair.moving_labels, pair.moving),
                                        ("fixed_labels", pair.fixed_labels, pair.fixed)):
                save_volume(root / folder / file, np.moveaxis(labels, 0, -1).astype(np.uint8), vol.grid)
    return len(records)


def _safely_named(records):
    """``records``, every name checked before anything is written (:func:`~.store.safe_name`)."""
    for rec in records:
        safe_name(rec.id, rec.name)
    return records


def export_per_label(db: LabelDB, root: str | os.PathLike) -> int:
    """One NIfTI per mask: ``<pair>/<position>_<type>_{moving,fixed}.nii.gz``."""
    root = Path(root)
    written = 0
    records = _safely_named(db.image_pairs())
    for lp in db.label_pairs():  # a type no release of this tool stores, from a row made elsewhere
        if unsafe_name(lp.type):
            raise ValidationError(f"label pair {lp.id} (image pair {lp.image_pair_id}): its stored type {lp.type!r} "
                                  f"has {unsafe_name(lp.type)}, so it could write outside a folder; nothing was "
                                  "written")
    for rec in records:
        pair = db.load_pair(rec.id)
        for k, tag in enumerate(pair.label_names):
            kind = tag.split(":", 1)[1].replace(" ", "_")
            sides = (("moving", pair.moving_labels, pair.moving), ("fixed", pair.fixed_labels, pair.fixed))
            for side, labels, vol in sides:
                save_volume(root / rec.name / f"{k:03d}_{kind}_{side}.nii.gz", labels[k].astype(np.uint8), vol.grid)
                written += 1
    return written
