"""pandas views of the database for people: counts, volumes, centroids."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from sqlalchemy import func, select

from ..core.geometry import Grid
from ..core.metrics import centroid_mm
from . import schema as s
from .store import LabelDB


def label_pairs_frame(db: LabelDB, *, centroids: bool = False) -> pd.DataFrame:
    """One row per label pair: subject, image pair, type, name, annotator, status, volumes (mm³).

    With ``centroids``, the masks are decoded and their world centroids (mm) added.
    """
    lp, ip, sub = s.label_pairs, s.image_pairs, s.subjects
    q = (select(lp.c.id, sub.c.name.label("subject"), ip.c.name.label("pair"), lp.c.position, lp.c.type,
                lp.c.name, lp.c.annotator, lp.c.status, lp.c.verifier, lp.c.modified,
                lp.c.moving_volume_mm3, lp.c.fixed_volume_mm3, ip.c.moving_affine, ip.c.fixed_affine,
                ip.c.moving_shape, ip.c.fixed_shape)
         .select_from(lp.join(ip).join(sub)).order_by(ip.c.id, lp.c.position))
    with db.transaction() as c:
        frame = pd.DataFrame(c.execute(q).mappings().all())
    if frame.empty:
        return pd.DataFrame(columns=["id", "subject", "pair", "position", "type", "name", "annotator", "status"])
    if centroids:
        for side in ("moving", "fixed"):
            cents = []
            for row in frame.itertuples():
                mask = db.masks(row.id)[0 if side == "moving" else 1]
                shape = tuple(json.loads(getattr(row, f"{side}_shape")))
                grid = Grid(shape, np.array(json.loads(getattr(row, f"{side}_affine"))))
                cents.append(centroid_mm(mask, grid) if mask is not None else np.full(3, np.nan))
            frame[[f"{side}_centroid_{a}" for a in "xyz"]] = np.array(cents)
    return frame.drop(columns=["moving_affine", "fixed_affine", "moving_shape", "fixed_shape"])


def counts(db: LabelDB, by: str) -> pd.Series:
    """Label pairs per ``subject``, ``type``, ``annotator`` or ``status``."""
    frame = label_pairs_frame(db)
    return frame.groupby(by).size().rename("label_pairs") if not frame.empty else pd.Series(dtype=int)


def summary(db: LabelDB) -> dict:
    """Counts of subjects, image pairs, label pairs, and label pairs by type and status."""
    frame = label_pairs_frame(db)
    with db.transaction() as c:
        n_subjects = c.execute(select(func.count()).select_from(s.subjects)).scalar()
        n_pairs = c.execute(select(func.count()).select_from(s.image_pairs)).scalar()
    return {
        "subjects": int(n_subjects),
        "image_pairs": int(n_pairs),
        "label_pairs": len(frame),
        "by_type": frame.groupby("type").size().to_dict() if len(frame) else {},
        "by_status": frame.groupby("status").size().to_dict() if len(frame) else {},
    }
