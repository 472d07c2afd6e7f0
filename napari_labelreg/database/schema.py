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
    inspect,
    text,
)

from ..core.geometry import CONVENTIONS  # noqa: F401 - re-exported: the database records one of these

SCHEMA_VERSION = 1
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
        Column(f"{side}_path", Text, nullable=False),
        Column(f"{side}_sha256", String(64), nullable=False),
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
    _in("type", LABEL_TYPES),
    _in("status", STATUSES),
    CheckConstraint(
        "status = 'incomplete' OR (moving_mask_id IS NOT NULL AND fixed_mask_id IS NOT NULL)",
        name="complete_pairs_have_both_masks",
    ),
    UniqueConstraint("image_pair_id", "position"),
)

MIGRATIONS = Path(__file__).with_name("migrations")
BASE_REVISION = "0001"  # release 0.1's schema: SCHEMA_VERSION 1 in ``meta``


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
    has_meta = inspect(conn).has_table("meta")
    version = schema_version(conn) if has_meta else 0
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"database schema {version} is newer than this napari-labelreg ({SCHEMA_VERSION})")
    if current is None and has_meta:  # made before migrations were Alembic's: the base revision's schema
        command.stamp(config, BASE_REVISION)
    elif current is not None:
        try:
            scripts.get_revision(current)
        except CommandError:
            raise RuntimeError(f"database schema revision {current} is newer than this napari-labelreg") from None
    if MigrationContext.configure(conn).get_current_revision() != scripts.get_current_head():
        command.upgrade(config, "head")
    if version != SCHEMA_VERSION:
        conn.execute(meta.delete().where(meta.c.key == "schema_version"))
        conn.execute(meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
