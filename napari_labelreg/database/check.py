"""``db check``: read everything, change nothing, report every problem found."""

from __future__ import annotations

import json

from sqlalchemy import select, text

from . import schema as s
from .masks import decode_mask
from .images import unpack_image
from .store import LabelDB, unsafe_name


def check(db: LabelDB) -> list[str]:
    """Problems found, one line each (an empty list means the database is sound)."""
    problems: list[str] = []
    with db.transaction() as c:
        integrity = c.execute(text("PRAGMA integrity_check")).scalar() if db.engine.dialect.name == "sqlite" else "ok"
        if integrity != "ok":
            problems.append(f"SQLite integrity check: {integrity}")
        pairs = c.execute(select(s.image_pairs)).mappings().all()
        labels = c.execute(select(s.label_pairs)).mappings().all()
        masks = {r["id"]: r for r in c.execute(select(s.masks)).mappings().all()}
        history = c.execute(select(s.revisions.c.moving_mask_id, s.revisions.c.fixed_mask_id)).all()
        images = {r["sha256"]: r for r in c.execute(select(s.images)).mappings().all()}
    for sha, image in images.items():
        if unpack_image(image) is None:
            problems.append(f"image {sha[:12]} is corrupt (its bytes do not match their hash)")
    for p in pairs:
        if unsafe_name(p["name"]):
            problems.append(f"image pair {p['id']} ({p['name']!r}): its name has {unsafe_name(p['name'])}, so it "
                            "could write outside a folder; export, training and evaluation refuse it")
        for side in ("moving", "fixed"):
            if p[f"{side}_sha256"] not in images:
                problems.append(f"{p['name']}: {side} image is not in the database (recorded at {p[f'{side}_path']}; "
                                "opening the pair once where that file is takes it in)")
    shapes = {p["id"]: {side: json.loads(p[f"{side}_shape"]) for side in ("moving", "fixed")} for p in pairs}
    used = {mid for row in history for mid in row if mid is not None}  # earlier revisions keep their masks
    for lp in labels:
        where = f"label pair {lp['id']} (image pair {lp['image_pair_id']}, position {lp['position']})"
        for side in ("moving", "fixed"):
            mid = lp[f"{side}_mask_id"]
            if mid is None:
                if lp["status"] != "incomplete":
                    problems.append(f"{where}: {lp['status']} but its {side} mask is missing")
                continue
            used.add(mid)
            m = masks.get(mid)
            if m is None:
                problems.append(f"{where}: {side} mask {mid} does not exist")
                continue
            if json.loads(m["shape"]) != shapes[lp["image_pair_id"]][side]:
                problems.append(f"{where}: {side} mask shape differs from its image")
            try:
                mask = decode_mask(m["data"], json.loads(m["shape"]), json.loads(m["offset"]), json.loads(m["box"]),
                                   m["sha256"])
                if not mask.any():
                    problems.append(f"{where}: {side} mask is empty")
            except Exception as exc:
                problems.append(f"{where}: {side} mask {mid} is corrupt ({exc})")
    orphans = sorted(set(masks) - used)
    if orphans:
        problems.append(f"{len(orphans)} orphaned masks (no label pair or revision refers to them): "
                        f"ids {orphans[:10]}")
    return problems
