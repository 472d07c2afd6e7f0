"""LabelDB: validated, transactional reads and writes of the label database."""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Connection, Engine

from ..core.io import DataError, Pair, check_mask, load_volume
from . import schema as s
from .masks import decode_mask, encode_mask


class ValidationError(DataError):
    """A write that was refused; the database is unchanged."""


@dataclass(frozen=True)
class ImagePairRecord:
    id: int
    subject: str
    name: str
    moving_path: str
    fixed_path: str
    moving_shape: tuple[int, int, int]
    fixed_shape: tuple[int, int, int]
    convention: str


@dataclass(frozen=True)
class LabelPairRecord:
    id: int
    image_pair_id: int
    position: int
    type: str
    name: str
    annotator: str
    status: str
    verifier: str | None
    created: datetime
    modified: datetime
    has_moving: bool
    has_fixed: bool


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _sqlite_engine(path: Path) -> Engine:
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 60})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves, below
        cur = dbapi_conn.cursor()
        # readers never block writers; a killed writer loses only its own transaction
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # take the write lock up front: no upgrade deadlocks

    return engine


def _server_engine(url: str) -> Engine:
    """An engine for a database server URL, checked by connecting; ``postgresql://`` means psycopg 3 (the driver
    the ``postgres`` extra installs), not SQLAlchemy's default psycopg2."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, OperationalError

    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise DataError(f"{url}: not a database URL ({exc})") from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    shown = parsed.render_as_string(hide_password=True)
    try:
        if parsed.get_backend_name() not in ("postgresql", "sqlite"):
            raise NoSuchModuleError(parsed.drivername)
        engine = create_engine(parsed, pool_pre_ping=True)
    except NoSuchModuleError:
        raise DataError(f"{shown}: not a database this tool opens (a SQLite file, or a postgresql:// URL)") from None
    except ImportError as exc:
        raise DataError(f"{shown}: PostgreSQL needs its driver ({exc.name}): "
                        "pip install 'napari-labelreg[postgres]'") from None
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
        raise DataError(f"{shown}: cannot connect ({first})") from None
    return engine


class LabelDB:
    """A label database.  ``LabelDB.open(path_or_url)`` creates or upgrades it."""

    def __init__(self, engine: Engine, location: str) -> None:
        self.engine = engine
        self.location = location
        with self.transaction() as conn:
            s.migrate(conn)

    @classmethod
    def open(cls, location: str | os.PathLike) -> "LabelDB":
        text_location = str(location)
        if "://" in text_location:
            return cls(_server_engine(text_location), text_location)
        path = Path(location).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(_sqlite_engine(path), str(path))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "LabelDB":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One atomic unit: everything inside commits together or not at all."""
        with self.engine.begin() as conn:
            yield conn

    # ---- subjects and image pairs ----------------------------------------
    def add_subject(self, name: str, *, conn: Connection | None = None) -> int:
        """Id of the subject called ``name``, created if new."""
        with self._maybe(conn) as c:
            found = c.execute(select(s.subjects.c.id).where(s.subjects.c.name == name)).scalar()
            if found is not None:
                return int(found)
            return int(c.execute(s.subjects.insert().values(name=name, created=s.now())).inserted_primary_key[0])

    def add_image_pair(self, moving: str | os.PathLike, fixed: str | os.PathLike, *, subject: str,
                       name: str | None = None, convention: str = "world", conn: Connection | None = None) -> int:
        """Register an image pair (files stay where they are; their hashes are recorded)."""
        if convention not in s.CONVENTIONS:
            raise ValidationError(f"convention must be one of {s.CONVENTIONS}, got {convention!r}")
        values = {"convention": convention, "created": s.now()}
        for side, path in (("moving", moving), ("fixed", fixed)):
            path = Path(path).resolve()
            if path.is_dir() or path.name.lower().endswith((".mhd", ".nhdr")):
                raise DataError(f"{path}: the database records each image as one file it can hash and copy; "
                                "save this image as .nii.gz, .nrrd or .mha to add it (a DICOM series, .mhd and "
                                ".nhdr are several files)")
            vol = load_volume(path)
            values.update({
                f"{side}_path": str(path), f"{side}_sha256": file_sha256(path),
                f"{side}_shape": json.dumps(list(vol.grid.shape)),
                f"{side}_spacing": json.dumps([float(x) for x in vol.grid.spacing]),
                f"{side}_affine": json.dumps(vol.grid.affine.tolist()),
            })
        name = name or Path(moving).name.split(".")[0]
        if not name or name.startswith(".") or any(c in name for c in '/\\\0') or name != name.strip():
            raise ValidationError(f"image pair name {name!r}: names a file on export, so no path separators, no "
                                  "leading dot and no surrounding spaces")
        with self._maybe(conn) as c:
            if c.execute(select(s.image_pairs.c.id).where(s.image_pairs.c.name == name)).first():
                raise ValidationError(f"an image pair named {name!r} exists already")
            values["subject_id"] = self.add_subject(subject, conn=c)
            return int(c.execute(s.image_pairs.insert().values(name=name, **values)).inserted_primary_key[0])

    def image_pairs(self, subject: str | None = None) -> list[ImagePairRecord]:
        return self._image_records(None if subject is None else s.subjects.c.name == subject)

    def image_pair(self, pair_id: int) -> ImagePairRecord:
        """One image pair by id: one indexed row, however many pairs the database holds."""
        found = self._image_records(s.image_pairs.c.id == pair_id)
        if not found:
            raise ValidationError(f"no image pair with id {pair_id}")
        return found[0]

    def _image_records(self, where=None) -> list[ImagePairRecord]:
        q = select(s.image_pairs, s.subjects.c.name.label("subject")).join(s.subjects)
        if where is not None:
            q = q.where(where)
        with self.transaction() as c:
            rows = c.execute(q.order_by(s.image_pairs.c.id)).mappings().all()
        return [ImagePairRecord(r["id"], r["subject"], r["name"], r["moving_path"], r["fixed_path"],
                                tuple(json.loads(r["moving_shape"])), tuple(json.loads(r["fixed_shape"])),
                                r["convention"]) for r in rows]

    def _image_row(self, c: Connection, pair_id: int, *, lock: bool = False):
        """The image pair's row; ``lock``: held until the transaction ends (PostgreSQL's ``FOR UPDATE``; a SQLite
        writer holds the whole database from its ``BEGIN IMMEDIATE``), so writers to one pair take turns."""
        query = select(s.image_pairs).where(s.image_pairs.c.id == pair_id)
        row = c.execute(query.with_for_update() if lock else query).mappings().first()
        if row is None:
            raise ValidationError(f"no image pair with id {pair_id}")
        return row

    def _check_images(self, row) -> None:
        for side in ("moving", "fixed"):
            path = Path(row[f"{side}_path"])
            if not path.is_file():
                raise ValidationError(f"{path}: {side} image of pair {row['name']!r} is missing")
            if file_sha256(path) != row[f"{side}_sha256"]:
                raise ValidationError(f"{path}: {side} image of pair {row['name']!r} changed since it was recorded")

    # ---- label pairs -------------------------------------------------------
    def add_label_pair(self, image_pair_id: int, moving_mask: np.ndarray, fixed_mask: np.ndarray, *,
                       type: str, name: str = "", annotator: str = "", conn: Connection | None = None) -> int:
        """Add a complete label pair in one transaction; both masks validated against their images."""
        with self._maybe(conn) as c:
            pid = self.create_label_pair(image_pair_id, type=type, name=name, annotator=annotator, conn=c)
            self.set_mask(pid, "moving", moving_mask, conn=c)
            self.set_mask(pid, "fixed", fixed_mask, conn=c)
            return pid

    def create_label_pair(self, image_pair_id: int, *, type: str, name: str = "", annotator: str = "",
                          conn: Connection | None = None) -> int:
        """A new, still empty (incomplete) label pair at the end of the pair's list."""
        if type not in s.LABEL_TYPES:
            raise ValidationError(f"label type must be one of {s.LABEL_TYPES}, got {type!r}")
        with self._maybe(conn) as c:
            self._image_row(c, image_pair_id, lock=True)  # the next position is read and taken in one turn
            last = c.execute(select(func.max(s.label_pairs.c.position))
                             .where(s.label_pairs.c.image_pair_id == image_pair_id)).scalar()
            t = s.now()
            return int(c.execute(s.label_pairs.insert().values(
                image_pair_id=image_pair_id, position=0 if last is None else last + 1, type=type, name=name,
                annotator=annotator, status="incomplete", created=t, modified=t)).inserted_primary_key[0])

    def set_mask(self, label_pair_id: int, side: str, mask: np.ndarray | None, *,
                 conn: Connection | None = None) -> None:
        """Store (or, with None, clear) one side's mask; the status follows completeness."""
        if side not in ("moving", "fixed"):
            raise ValidationError(f"side must be 'moving' or 'fixed', got {side!r}")
        with self._maybe(conn) as c:
            lp = self._label_row(c, label_pair_id)
            image = self._image_row(c, lp["image_pair_id"])
            self._check_images(image)
            values = {"modified": s.now()}
            if mask is None:
                values.update({f"{side}_mask_id": None, f"{side}_volume_mm3": None, "status": "incomplete"})
            else:
                shape = tuple(json.loads(image[f"{side}_shape"]))
                what = f"{image['name']} label {lp['position']} ({side})"
                mask = np.asarray(mask)
                if mask.shape != shape:
                    raise ValidationError(f"{what}: mask shape {mask.shape} differs from its image's {shape}")
                try:
                    mask = check_mask(mask, what)
                except DataError as exc:
                    raise ValidationError(str(exc)) from None
                enc = encode_mask(mask)
                mid = c.execute(s.masks.insert().values(
                    shape=json.dumps(enc.shape), offset=json.dumps(enc.offset), box=json.dumps(enc.box),
                    voxels=enc.voxels, sha256=enc.sha256, data=enc.payload)).inserted_primary_key[0]
                voxel_mm3 = float(np.prod(json.loads(image[f"{side}_spacing"])))
                values.update({f"{side}_mask_id": mid, f"{side}_volume_mm3": enc.voxels * voxel_mm3})
                other = lp["fixed_mask_id" if side == "moving" else "moving_mask_id"]
                if lp["status"] == "incomplete" and other is not None:
                    values["status"] = "complete"
                elif lp["status"] == "verified":
                    values.update(status="complete", verifier=None, verified=None)  # an edit needs a new check
            old = lp[f"{side}_mask_id"]
            c.execute(s.label_pairs.update().where(s.label_pairs.c.id == label_pair_id).values(**values))
            if old is not None:
                c.execute(s.masks.delete().where(s.masks.c.id == old))

    def update_label_pair(self, label_pair_id: int, *, type: str | None = None, name: str | None = None) -> None:
        if type is not None and type not in s.LABEL_TYPES:
            raise ValidationError(f"label type must be one of {s.LABEL_TYPES}, got {type!r}")
        values = {k: v for k, v in {"type": type, "name": name}.items() if v is not None}
        with self.transaction() as c:
            self._label_row(c, label_pair_id)
            c.execute(s.label_pairs.update().where(s.label_pairs.c.id == label_pair_id)
                      .values(modified=s.now(), **values))

    def verify(self, label_pair_id: int, verifier: str) -> None:
        """Mark a complete label pair verified by ``verifier`` (not its annotator)."""
        with self.transaction() as c:
            lp = self._label_row(c, label_pair_id)
            if lp["status"] == "incomplete":
                raise ValidationError(f"label pair {label_pair_id} is incomplete: paint both sides first")
            if not verifier or verifier == lp["annotator"]:
                raise ValidationError("a label pair is verified by another annotator than its author")
            c.execute(s.label_pairs.update().where(s.label_pairs.c.id == label_pair_id)
                      .values(status="verified", verifier=verifier, verified=s.now()))

    def delete_label_pair(self, label_pair_id: int) -> None:
        with self.transaction() as c:
            lp = self._label_row(c, label_pair_id)
            c.execute(s.label_pairs.delete().where(s.label_pairs.c.id == label_pair_id))
            for side in ("moving", "fixed"):
                if lp[f"{side}_mask_id"] is not None:
                    c.execute(s.masks.delete().where(s.masks.c.id == lp[f"{side}_mask_id"]))

    def _label_row(self, c: Connection, label_pair_id: int):
        row = c.execute(select(s.label_pairs).where(s.label_pairs.c.id == label_pair_id)).mappings().first()
        if row is None:
            raise ValidationError(f"no label pair with id {label_pair_id}")
        return row

    def label_pairs(self, image_pair_id: int | None = None, *, types: Sequence[str] | None = None,
                    statuses: Sequence[str] | None = None, annotators: Sequence[str] | None = None
                    ) -> list[LabelPairRecord]:
        q = select(s.label_pairs)
        lp = s.label_pairs.c
        if image_pair_id is not None:
            q = q.where(lp.image_pair_id == image_pair_id)
        for column, wanted in ((lp.type, types), (lp.status, statuses), (lp.annotator, annotators)):
            if wanted:
                q = q.where(column.in_(list(wanted)))
        with self.transaction() as c:
            rows = c.execute(q.order_by(lp.image_pair_id, lp.position)).mappings().all()
        return [LabelPairRecord(r["id"], r["image_pair_id"], r["position"], r["type"], r["name"], r["annotator"],
                                r["status"], r["verifier"], r["created"], r["modified"],
                                r["moving_mask_id"] is not None, r["fixed_mask_id"] is not None) for r in rows]

    def masks(self, label_pair_id: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(moving, fixed) masks of a label pair, exactly as written (None where unpainted)."""
        with self.transaction() as c:
            lp = self._label_row(c, label_pair_id)
            return tuple(self._mask(c, lp[f"{side}_mask_id"]) for side in ("moving", "fixed"))

    def _mask(self, c: Connection, mask_id: int | None) -> np.ndarray | None:
        if mask_id is None:
            return None
        r = c.execute(select(s.masks).where(s.masks.c.id == mask_id)).mappings().first()
        try:
            return decode_mask(r["data"], json.loads(r["shape"]), json.loads(r["offset"]), json.loads(r["box"]),
                               r["sha256"])
        except Exception as exc:  # zlib, hash or shape errors alike
            raise DataError(f"{self.location}: mask {mask_id} is corrupt ({exc})") from None

    # ---- reading pairs for training --------------------------------------------
    def load_pair(self, image_pair_id: int, *, types=None, statuses=("complete", "verified"),
                  annotators=None) -> Pair:
        """An :class:`io.Pair` with the pair's label pairs that pass the filters (complete ones only)."""
        statuses = [st for st in (statuses or ("complete", "verified")) if st != "incomplete"]
        records = self.label_pairs(image_pair_id, types=types, statuses=statuses, annotators=annotators)
        with self.transaction() as c:
            row = self._image_row(c, image_pair_id)
            self._check_images(row)
        moving, fixed = load_volume(row["moving_path"]), load_volume(row["fixed_path"])
        pairs = [self.masks(r.id) for r in records]
        empty = lambda v: np.zeros((0, *v.grid.shape), bool)  # noqa: E731
        ml = np.stack([m for m, _ in pairs]) if pairs else empty(moving)
        fl = np.stack([f for _, f in pairs]) if pairs else empty(fixed)
        return Pair(row["name"], moving, fixed, ml, fl, tuple(f"{r.id}:{r.type}" for r in records))

    def recorded_geometry(self, names: Sequence[str]) -> str:
        """The initial correspondence the named image pairs were imported with; refused when they differ."""
        query = (select(s.image_pairs.c.convention, func.count()).where(s.image_pairs.c.name.in_(set(names)))
                 .group_by(s.image_pairs.c.convention))
        with self.transaction() as c:
            found = {convention: int(n) for convention, n in c.execute(query).all()}
        if len(found) > 1:
            counts = ", ".join(f"{k} {n}" for k, n in sorted(found.items()))
            raise ValidationError(f"{self.location}: these pairs were imported with different geometries ({counts}); "
                                  "choose one with --geometry")
        return next(iter(found), "world")

    def training_pairs(self, **filters) -> list[Pair]:
        """Every image pair that has at least one label pair passing the filters."""
        wanted = {r.image_pair_id for r in self.label_pairs(
            types=filters.get("types"), annotators=filters.get("annotators"),
            statuses=[st for st in (filters.get("statuses") or ("complete", "verified")) if st != "incomplete"])}
        return [self.load_pair(i, **filters) for i in sorted(wanted)]

    def _maybe(self, conn: Connection | None):
        """The caller's transaction, or a new one."""
        if conn is not None:
            @contextmanager
            def same():
                yield conn
            return same()
        return self.transaction()
