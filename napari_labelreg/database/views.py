"""pandas views of the database for people: counts, volumes, centroids."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pandas as pd
from sqlalchemy import func, select

from ..core.geometry import Grid
from ..core.metrics import centroid_mm, dice
from . import schema as s
from .store import LabelDB, landmark_name


def label_pairs_frame(db: LabelDB, *, centroids: bool = False, geometry: bool = False) -> pd.DataFrame:
    """One row per label pair (deleted ones left out): subject, image pair, type, name, annotator, status, volumes (mm³).

    With ``centroids``, the masks are decoded and their world centroids (mm) added; with ``geometry``, the
    image pair's recorded shapes and affines are kept (JSON; :func:`recorded_grid`).
    """
    lp, ip, sub = s.label_pairs, s.image_pairs, s.subjects
    q = (select(lp.c.id, sub.c.name.label("subject"), ip.c.name.label("pair"), lp.c.position, lp.c.type,
                lp.c.name, lp.c.annotator, lp.c.status, lp.c.verifier, lp.c.modified,
                lp.c.moving_volume_mm3, lp.c.fixed_volume_mm3, ip.c.moving_affine, ip.c.fixed_affine,
                ip.c.moving_shape, ip.c.fixed_shape)
         .select_from(lp.join(ip).join(sub)).where(lp.c.deleted.is_(False)).order_by(ip.c.id, lp.c.position))
    with db.transaction() as c:
        frame = pd.DataFrame(c.execute(q).mappings().all())
    if frame.empty:
        return pd.DataFrame(columns=["id", "subject", "pair", "position", "type", "name", "annotator", "status"])
    if centroids:
        for k, side in enumerate(("moving", "fixed")):
            cents = []
            for _, row in frame.iterrows():
                mask = db.masks(row.id)[k]
                cents.append(centroid_mm(mask, recorded_grid(row, side)) if mask is not None else np.full(3, np.nan))
            frame[[f"{side}_centroid_{a}" for a in "xyz"]] = np.array(cents)
    return frame if geometry else frame.drop(columns=["moving_affine", "fixed_affine", "moving_shape", "fixed_shape"])


def recorded_grid(row, side: str) -> Grid:
    """The ``moving`` or ``fixed`` grid an image pair recorded, from a row holding its shape and affine (JSON)."""
    return Grid(tuple(json.loads(row[f"{side}_shape"])), np.array(json.loads(row[f"{side}_affine"])))


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


def agreement(db: LabelDB) -> pd.DataFrame:
    """How closely annotators agree where two of them labelled the same landmark of the same image pair.

    A landmark is a label pair's image pair, type and name (a ``gland`` needs no name: there is one).  For every
    two annotators' complete (or verified) label pairs of one landmark, one row per side (``moving``, ``fixed``):
    the distance between their masks' world centroids (mm) and their Dice.  This is the noise floor against
    which a registration's TRE is to be read.
    """
    frame = label_pairs_frame(db, geometry=True)
    columns = ["pair", "type", "name", "annotator_a", "annotator_b", "side", "centroid_distance_mm", "dice"]
    frame = frame[frame.status.isin(["complete", "verified"])]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    landmark = [landmark_name(kind, name) for kind, name in zip(frame.type, frame.name)]
    rows = []
    for (pair, kind, name), group in frame.groupby(["pair", "type", landmark], sort=True):
        group = group.drop_duplicates("annotator")  # one label pair per annotator and landmark: their first
        if len(group) < 2:
            continue
        masks = {row.annotator: db.masks(int(row.id)) for row in group.itertuples()}
        for a, b in combinations(sorted(masks), 2):
            for k, side in enumerate(("moving", "fixed")):
                grid = recorded_grid(group.iloc[0], side)
                distance = float(np.linalg.norm(centroid_mm(masks[a][k], grid) - centroid_mm(masks[b][k], grid)))
                rows.append((pair, kind, name, a, b, side, distance, dice(masks[a][k], masks[b][k])))
    return pd.DataFrame(rows, columns=columns)


def agreement_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Median and 90th percentile of the centroid distance (mm) and median Dice, per label type and overall."""
    if pairs.empty:
        return pd.DataFrame(columns=["comparisons", "centroid_median_mm", "centroid_p90_mm", "dice_median"])

    def stats(group):
        return pd.Series({"comparisons": len(group),
                          "centroid_median_mm": group.centroid_distance_mm.median(),
                          "centroid_p90_mm": group.centroid_distance_mm.quantile(0.9),
                          "dice_median": group.dice.median()})

    per_type = pairs.groupby("type")[["centroid_distance_mm", "dice"]].apply(stats)
    per_type.loc["all"] = stats(pairs)
    per_type["comparisons"] = per_type["comparisons"].astype(int)
    return per_type
