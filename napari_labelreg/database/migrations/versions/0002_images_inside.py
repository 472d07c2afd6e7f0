"""Images inside the database: an ``images`` table keyed by the SHA-256 of each file's bytes.

Every image file a pair recorded is taken in when it is still at its recorded path with its recorded hash.  One
that is not (moved, changed, or on another machine) stays recorded by path: it loads from there, with its hash
checked, and is taken in then; ``db check`` lists it.

Revision ID: 0002
Revises: 0001
"""

import hashlib
import logging
import zlib
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

def upgrade() -> None:
    op.create_table('images',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('suffix', sa.String(), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('compression', sa.String(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.PrimaryKeyConstraint('sha256')
    )
    conn = op.get_bind()
    images = sa.table("images", sa.column("sha256"), sa.column("suffix"), sa.column("size"), sa.column("compression"),
                      sa.column("data"))
    pairs = sa.table("image_pairs", sa.column("name"), sa.column("moving_path"), sa.column("moving_sha256"),
                     sa.column("fixed_path"), sa.column("fixed_sha256"))
    kept = set()
    for row in conn.execute(sa.select(pairs)).mappings().all():
        for side in ("moving", "fixed"):
            path, sha = Path(row[f"{side}_path"]), row[f"{side}_sha256"]
            if sha in kept:
                continue
            data = path.read_bytes() if path.is_file() else None
            if data is None or hashlib.sha256(data).hexdigest() != sha:
                logging.getLogger("napari_labelreg").warning(
                    "%s: %s image of pair %r %s; it stays recorded by path", path, side, row["name"],
                    "is missing" if data is None else "changed since it was recorded")
                continue
            packed = zlib.compress(data, 6)  # kept only where it gains: .nii.gz and most .nrrd are compressed
            small = len(packed) < 0.95 * len(data)
            conn.execute(images.insert().values(sha256=sha, suffix=_suffix(path.name), size=len(data),
                                                compression="zlib" if small else "none",
                                                data=packed if small else data))
            kept.add(sha)


def _suffix(name: str) -> str:
    """The file's image suffix as it is spelt (the formats release 0.1 recorded)."""
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha"):
        if name.lower().endswith(suffix):
            return name[-len(suffix):]
    return Path(name).suffix


def downgrade() -> None:
    op.drop_table('images')
