"""``db check``: read everything, change nothing, report every problem found."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import select, text

from . import schema as s
from .masks import decode_mask
from .store import LabelDB, file_sha256


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
    for p in pairs:
        for side in ("moving", "fixed"):
            path = Path(p[f"{side}_path"])
            if not path.is_file():
                problems.append(f"{p['name']}: {side} image missing: {path}")
            elif file_sha256(path) != p[f"{side}_sha256"]:
                problems.append(f"{p['name']}: {side} image changed since import: {path}")
    shapes = {p["id"]: {side: json.loads(p[f"{side}_shape"]) for side in ("moving", "fixed")} for p in pairs}
    used = set()
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
        problems.append(f"{len(orphans)} orphaned masks (no label pair refers to them): ids {orphans[:10]}")
    return problems
