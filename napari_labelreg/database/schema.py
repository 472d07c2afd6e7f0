"""Tables, the controlled vocabulary and schema migrations.

Migrations are Alembic's (``migrations/versions``, the base revision being the schema of release 0.1):
:func:`migrate` brings a database to the newest revision inside the opener's transaction, so databases
written by earlier versions keep opening.  The ``meta`` table's schema version is what releases before
Alembic read: it counts the revisions beyond the base, so that they refuse a database they cannot read.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    inspect,
    text,
)

from ..core.geometry import CONVENTIONS  # noqa: F401 - re-exported: the database records one of these
from ..core.io import DataError

SCHEMA_VERSION = 3  # 1 + the revisions beyond the base: releases before Alembic refuse a newer one
LABEL_TYPES = ("gland", "apex", "base", "urethra", "zonal boundary", "calcification", "cyst", "lesion", "other")
STATUSES = ("incomplete", "complete", "verified")

metadata = MetaData()


def now() -> datetime:
    return datetime.now(timezone.utc)


def _in(column: str, values) -> CheckConstraint:
    return CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=f"valid_{column}")


meta = Table("meta", metadata, Column("key", String, primary_key=True), Column("value", String, nullable=False))

subjects = Table(
    "subjects", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String, nullable=False, unique=True),
    Column("created", DateTime(timezone=True), nullable=False, default=now),
)


def _image_columns(side: str):
    return [
        Column(f"{side}_path", Text, nullable=False),  # the file it was imported from (provenance)
        Column(f"{side}_sha256", String(64), nullable=False),  # the image's key in ``images``
        Column(f"{side}_shape", String, nullable=False),  # JSON [I, J, K]
        Column(f"{side}_spacing", String, nullable=False),  # JSON [mm, mm, mm]
        Column(f"{side}_affine", Text, nullable=False),  # JSON 4x4
    ]


image_pairs = Table(
    "image_pairs", metadata,
    Column("id", Integer, primary_key=True),
    Column("subject_id", Integer, ForeignKey("subjects.id", ondelete="RESTRICT"), nullable=False, index=True),
    Column("name", String, nullable=False, unique=True),
    *_image_columns("moving"),
    *_image_columns("fixed"),
    Column("convention", String, nullable=False, default="world"),
    Column("created", DateTime(timezone=True), nullable=False, default=now),
    _in("convention", CONVENTIONS),
)

# Images live inside the database, keyed by the SHA-256 of their file's bytes: a SQLite file copied elsewhere and a
# PostgreSQL server reached from another machine (which shares no disk with the importer) load every pair from the
# database alone, a file used by several pairs is stored once, and a recorded image cannot change under its masks.
# The file's own bytes are kept (zlib-compressed unless already compressed), so an export is the file as imported.
images = Table(
    "images", metadata,
    Column("sha256", String(64), primary_key=True),  # of the file's bytes, as imported
    Column("suffix", String, nullable=False),  # .nii.gz, .nrrd, .mha ...: how to read the bytes
    Column("size", BigInteger, nullable=False),  # of the file, in bytes
    Column("compression", String, nullable=False),  # 'zlib' or 'none'
    Column("data", LargeBinary, nullable=False),
)

masks = Table(
    "masks", metadata,
    Column("id", Integer, primary_key=True),
    Column("shape", String, nullable=False),
    Column("offset", String, nullable=False),
    Column("box", String, nullable=False),
    Column("voxels", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("data", LargeBinary, nullable=False),
)

label_pairs = Table(
    "label_pairs", metadata,
    Column("id", Integer, primary_key=True),
    Column("image_pair_id", Integer, ForeignKey("image_pairs.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("position", Integer, nullable=False),  # order within the pair (label index k)
    Column("type", String, nullable=False),
    Column("name", String, nullable=False, default=""),
    Column("annotator", String, nullable=False, default=""),
    Column("status", String, nullable=False, default="incomplete"),
    Column("verifier", String),
    Column("verified", DateTime(timezone=True)),
    Column("created", DateTime(timezone=True), nullable=False, default=now),
    Column("modified", DateTime(timezone=True), nullable=False, default=now),
    Column("moving_mask_id", Integer, ForeignKey("masks.id")),
    Column("fixed_mask_id", Integer, ForeignKey("masks.id")),
    Column("moving_volume_mm3", Float),
    Column("fixed_volume_mm3", Float),
    Column("revision", Integer, nullable=False, server_default="1"),  # the newest in ``revisions``
    Column("modified_by", String, nullable=False, server_default=""),
    Column("deleted", Boolean, nullable=False, server_default=false()),  # deleting keeps the row: restorable
    _in("type", LABEL_TYPES),
    _in("status", STATUSES),
    CheckConstraint(
        "status = 'incomplete' OR (moving_mask_id IS NOT NULL AND fixed_mask_id IS NOT NULL)",
        name="complete_pairs_have_both_masks",
    ),
    UniqueConstraint("image_pair_id", "position"),
)

# Every change to a label pair is a revision: who, when, what, and the label pair's whole state after it (masks are
# never deleted, so any revision can be restored).  ``label_pairs`` holds the newest state, for fast reads.
revisions = Table(
    "revisions", metadata,
    Column("id", Integer, primary_key=True),
    Column("label_pair_id", Integer, ForeignKey("label_pairs.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),  # 1, 2, ... within its label pair
    Column("action", String, nullable=False),  # e.g. "created", "painted moving", "verified", "restored 3"
    Column("author", String, nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("type", String, nullable=False),
    Column("name", String, nullable=False),
    Column("status", String, nullable=False),
    Column("moving_mask_id", Integer, ForeignKey("masks.id")),
    Column("fixed_mask_id", Integer, ForeignKey("masks.id")),
    Column("deleted", Boolean, nullable=False),
    UniqueConstraint("label_pair_id", "number"),
)

REVISION_STATE = ("type", "name", "status", "moving_mask_id", "fixed_mask_id", "deleted")  # what a revision keeps

MIGRATIONS = Path(__file__).with_name("migrations")
BASE_REVISION = "0001"  # release 0.1's schema: SCHEMA_VERSION 1 in ``meta``


class SchemaError(DataError, RuntimeError):
    """A database this code cannot open: newer than it, or not a label database at all."""


def refuse_foreign(tables: set[str]) -> None:
    """Refuse a database that holds tables but none of ours: it is someone else's, and stays untouched."""
    if tables and not tables & {"meta", "alembic_version"}:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise SchemaError(f"not a label database (it holds tables {shown}); give a new file or an empty database")


def schema_version(conn) -> int:
    row = conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).first()
    return int(row[0]) if row else 0


def migrate(conn) -> None:
    """Create or upgrade the schema within the caller's transaction.

    Openers take turns (a SQLite writer holds the file from its ``BEGIN IMMEDIATE``; on PostgreSQL a
    transaction-scoped advisory lock), and nothing is written when the database is up to date: two processes
    opening one database at once had raced to rewrite its version.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(8150221)"))  # any fixed key: this schema's migrations
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    scripts = ScriptDirectory.from_config(config)
    current = MigrationContext.configure(conn).get_current_revision()
    tables = set(inspect(conn).get_table_names())
    refuse_foreign(tables)
    has_meta = "meta" in tables
    version = schema_version(conn) if has_meta else 0
    if version > SCHEMA_VERSION:
        raise SchemaError(f"database schema {version} is newer than this napari-labelreg ({SCHEMA_VERSION})")
    if current is None and has_meta:  # made before migrations were Alembic's: the base revision's schema
        command.stamp(config, BASE_REVISION)
    elif current is not None:
        try:
            scripts.get_revision(current)
        except CommandError:
            raise SchemaError(f"database schema revision {current} is newer than this napari-labelreg") from None
    if MigrationContext.configure(conn).get_current_revision() != scripts.get_current_head():
        command.upgrade(config, "head")
    if version != SCHEMA_VERSION:
        conn.execute(meta.delete().where(meta.c.key == "schema_version"))
        conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
