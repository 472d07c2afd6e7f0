"""Image files kept inside the label database: stored once under their hash, read back as volumes.

Why inside, and not by path: docs/database.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
import zlib
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import Connection

from ..core.io import Volume, load_volume
from . import schema as s


def unpack_image(row) -> bytes | None:
    """An ``images`` row's file bytes, or None where they do not match their hash (a corrupt row)."""
    try:
        data = zlib.decompress(row["data"]) if row["compression"] == "zlib" else bytes(row["data"])
    except zlib.error:
        return None
    return data if hashlib.sha256(data).hexdigest() == row["sha256"] else None


def keep_image(c: Connection, data: bytes, sha256: str, suffix: str) -> None:
    """Store an image file's bytes under their hash, unless they are stored already (by anyone)."""
    if c.execute(select(s.images.c.sha256).where(s.images.c.sha256 == sha256)).first():
        return
    packed = zlib.compress(data, 6)
    small = len(packed) < 0.95 * len(data)  # .nii.gz and most NRRD compress themselves: kept as they are
    if c.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    c.execute(insert(s.images).values(sha256=sha256, suffix=suffix, size=len(data),
                                      compression="zlib" if small else "none", data=packed if small else data)
              .on_conflict_do_nothing(index_elements=["sha256"]))  # another importer stored it meanwhile


def read_volume(data: bytes, suffix: str, source: str) -> Volume:
    """An image file's bytes read as its format says; ``source`` (the file it was imported from) names it."""
    with tempfile.TemporaryDirectory(prefix="labelreg-") as tmp:  # the readers (nibabel, ITK) want a file
        path = Path(tmp) / f"image{suffix}"
        path.write_bytes(data)
        return dataclasses.replace(load_volume(path), source=source)
