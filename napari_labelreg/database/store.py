"""LabelDB: validated, transactional reads and writes of the label database."""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from sqlalchemy import create_engine, event, func, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DatabaseError

from ..core.io import DataError, Pair, Volume, check_mask, image_suffix, load_volume
from . import schema as s
from .images import keep_image, read_volume, unpack_image
from .masks import decode_mask, encode_mask


class ValidationError(DataError):
    """A write that was refused; the database is unchanged."""


def unsafe_name(name: str) -> str | None:
    """Why an image pair's name cannot name a file in a folder (export writes ``FOLDER/moving_images/NAME.nii.gz``,
    and a run records its pairs by name); None when it can."""
    for bad, why in (("\0", "a NUL character"), ("/", "a path separator"), ("\\", "a path separator")):
        if bad in name:
            return why
    if not name or name in (".", "..") or name.startswith("."):
        return "nothing in it" if not name else "a leading dot"
    return "surrounding spaces" if name != name.strip() else None


def safe_name(pair_id: int, name: str) -> str:
    """An image pair's stored ``name``, refused when it could name a path outside a folder (a row made by another
    tool, an older release or a careless script: names are checked where they are stored and again where used)."""
    why = unsafe_name(name)
    if why:
        raise ValidationError(f"image pair {pair_id} ({name!r}): its stored name has {why}, so it could write "
                              "outside a folder; nothing was written (db check lists such names)")
    return name


class ConflictError(ValidationError):
    """A change made to a revision someone else has replaced since it was read; nothing was written."""


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
    revision: int = 1  # pass it back with a change: a change to an older revision is refused as a conflict
    modified_by: str = ""
    deleted: bool = False


@dataclass(frozen=True)
class Revision:
    """One state of a label pair: the change that made it (who, when, what) and its masks' hashes."""

    number: int
    action: str
    author: str
    at: datetime
    type: str
    name: str
    status: str
    deleted: bool
    moving_sha256: str | None
    fixed_sha256: str | None


def utc(at: datetime) -> datetime:
    """A stored time as an aware UTC datetime (SQLite returns them naive; they were written in UTC)."""
    return at.replace(tzinfo=timezone.utc) if at.tzinfo is None else at


def when(at: datetime) -> str:
    """A stored time as people read it: local, with its zone."""
    return utc(at).astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


def _label_record(r) -> LabelPairRecord:
    return LabelPairRecord(r["id"], r["image_pair_id"], r["position"], r["type"], r["name"], r["annotator"],
                           r["status"], r["verifier"], utc(r["created"]), utc(r["modified"]),
                           r["moving_mask_id"] is not None,
                           r["fixed_mask_id"] is not None, r["revision"], r["modified_by"], bool(r["deleted"]))


def _check_type(kind: str) -> None:
    if kind not in s.LABEL_TYPES:
        raise ValidationError(f"label type must be one of {s.LABEL_TYPES}, got {kind!r}")


def _voxel_mm3(image, side: str) -> float:
    """The volume of one voxel of an image pair's ``side`` (mm³), from its recorded spacing."""
    return float(np.prod(json.loads(image[f"{side}_spacing"])))


def landmark_name(type: str, name: str | None) -> str:
    """The name that, with its type, identifies a label pair's landmark within its image pair: none for the gland
    (there is one), else the label pair's name.  Agreement and consensus compare label pairs of one landmark."""
    return "" if type == "gland" else (name or "")


def _label_query(image_pair_id=None, types=None, statuses=None, annotators=None, deleted: bool = False):
    lp = s.label_pairs.c
    query = select(s.label_pairs).where(lp.deleted.is_(deleted))
    if image_pair_id is not None:
        query = query.where(lp.image_pair_id == image_pair_id)
    for column, wanted in ((lp.type, types), (lp.status, statuses), (lp.annotator, annotators)):
        if wanted:
            query = query.where(column.in_(list(wanted)))
    return query.order_by(lp.image_pair_id, lp.position)


def _refuse_foreign_sqlite(path: Path) -> None:
    """Refuse, without writing to it, a file that is not a SQLite database or holds someone else's tables."""
    import sqlite3

    try:
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
            tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise DataError(f"{path}: not a label database ({exc})") from None
    try:
        s.refuse_foreign(tables)
    except s.SchemaError as exc:
        raise s.SchemaError(f"{path}: {exc}") from None


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
        try:
            with self.transaction() as conn:
                s.migrate(conn)
        except s.SchemaError as exc:
            engine.dispose()
            raise s.SchemaError(f"{location}: {exc}") from None
        except DatabaseError as exc:  # SQLite's "file is not a database" and its kin
            engine.dispose()
            first = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
            raise DataError(f"{location}: not a label database ({first})") from None

    @classmethod
    def open(cls, location: str | os.PathLike) -> "LabelDB":
        text_location = str(location)
        if "://" in text_location:
            return cls(_server_engine(text_location), text_location)
        path = Path(location).expanduser().resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        new = not path.exists()
        if not new and path.stat().st_size:
            _refuse_foreign_sqlite(path)  # before our connection settings (WAL) rewrite its header
        try:
            return cls(_sqlite_engine(path), str(path))
        except BaseException:
            if new:  # a failed first open leaves no half-made database behind
                for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                    leftover.unlink(missing_ok=True)
            raise

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
        """Register an image pair: both files are checked, then taken into the database (each file once)."""
        if convention not in s.CONVENTIONS:
            raise ValidationError(f"convention must be one of {s.CONVENTIONS}, got {convention!r}")
        name = name or Path(moving).name.split(".")[0]
        if unsafe_name(name):
            raise ValidationError(f"image pair name {name!r}: names a file on export, so no path separators, no "
                                  "leading dot and no surrounding spaces")
        values = {"convention": convention, "created": s.now()}
        files = {}
        for side, path in (("moving", moving), ("fixed", fixed)):
            path = Path(path).resolve()
            if path.is_dir() or path.name.lower().endswith((".mhd", ".nhdr")):
                raise DataError(f"{path}: the database keeps each image as one file; save this image as .nii.gz, "
                                ".nrrd or .mha to add it (a DICOM series, .mhd and .nhdr are several files)")
            vol = load_volume(path)
            files[side] = data = path.read_bytes()
            values.update({
                f"{side}_path": str(path), f"{side}_sha256": hashlib.sha256(data).hexdigest(),
                f"{side}_shape": json.dumps(list(vol.grid.shape)),
                f"{side}_spacing": json.dumps([float(x) for x in vol.grid.spacing]),
                f"{side}_affine": json.dumps(vol.grid.affine.tolist()),
            })
        with self._maybe(conn) as c:
            if c.execute(select(s.image_pairs.c.id).where(s.image_pairs.c.name == name)).first():
                raise ValidationError(f"an image pair named {name!r} exists already")
            for side, data in files.items():
                keep_image(c, data, values[f"{side}_sha256"], image_suffix(Path(values[f"{side}_path"]).name))
            values["subject_id"] = self.add_subject(subject, conn=c)
            return int(c.execute(s.image_pairs.insert().values(name=name, **values)).inserted_primary_key[0])

    def image_file(self, image_pair_id: int, side: str) -> tuple[bytes, str]:
        """(bytes, suffix) of one image of a pair: the file exactly as it was imported."""
        with self.transaction() as c:
            row = self._image_row(c, image_pair_id)
            blob = self._image_blob(c, row, side)
        return self._unpacked(row, side, blob)

    def images(self, image_pair_id: int) -> tuple[Volume, Volume]:
        """(moving, fixed) volumes of an image pair, read from the database alone."""
        with self.transaction() as c:
            row = self._image_row(c, image_pair_id)
            blobs = {side: self._image_blob(c, row, side) for side in ("moving", "fixed")}
        return tuple(read_volume(*self._unpacked(row, side, blobs[side]), row[f"{side}_path"]) for side in blobs)

    @staticmethod
    def _image_blob(c: Connection, row, side: str):
        return c.execute(select(s.images).where(s.images.c.sha256 == row[f"{side}_sha256"])).mappings().first()

    def _unpacked(self, row, side: str, blob) -> tuple[bytes, str]:
        """The file bytes and suffix of an image pair's ``side``, from its ``images`` row (None: not stored)."""
        sha, what = row[f"{side}_sha256"], f"{side} image of pair {row['name']!r}"
        if blob is not None:
            data = unpack_image(blob)
            if data is None:
                raise DataError(f"{self.location}: the {what} is corrupt in the database")
            return data, blob["suffix"]
        # recorded before images lived in the database, and not found by the upgrade: read where it was recorded
        path = Path(row[f"{side}_path"])
        if not path.is_file():
            raise ValidationError(f"{path}: {what} is neither in the database nor at its recorded path")
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha:
            raise ValidationError(f"{path}: {what} changed since it was recorded")
        suffix = image_suffix(path.name) or path.suffix
        with self.transaction() as c:
            keep_image(c, data, sha, suffix)  # found and intact: the database keeps it from now on
        return data, suffix

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

    # ---- label pairs -------------------------------------------------------
    # Every change goes through :meth:`_change`: it refuses a change made to a revision that is no longer the
    # newest (``expected_revision``, from the record the caller read), and records the new state as a revision.
    def add_label_pair(self, image_pair_id: int, moving_mask: np.ndarray, fixed_mask: np.ndarray, *,
                       type: str, name: str = "", annotator: str = "", conn: Connection | None = None) -> int:
        """Add a complete label pair in one transaction; both masks validated against their images."""
        return self.add_label_pairs(image_pair_id, [(moving_mask, fixed_mask, type, name)], annotator=annotator,
                                    conn=conn)[0]

    def add_label_pairs(self, image_pair_id: int, items: Sequence[tuple[np.ndarray, np.ndarray, str, str]], *,
                        annotator: str = "", conn: Connection | None = None) -> list[int]:
        """Add complete label pairs, ``(moving mask, fixed mask, type, name)`` each, at the end of the pair's list:
        one transaction, every mask validated, each label pair created whole in its revision 1.  A handful of
        statements however many there are (what an import of thousands of pairs needs)."""
        with self._maybe(conn) as c:
            image, first = self._next_position(c, image_pair_id)
            t, masks, labels = s.now(), [], []
            for k, (moving, fixed, kind, name) in enumerate(items):
                _check_type(kind)
                position = first + k
                label = {"image_pair_id": image_pair_id, "position": position, "type": kind, "name": name,
                         "annotator": annotator, "status": "complete", "created": t, "modified": t, "revision": 1,
                         "modified_by": annotator, "deleted": False}
                for side, mask in (("moving", moving), ("fixed", fixed)):
                    row, volume = self._encoded(image, position, side, mask)
                    masks.append(row)
                    label[f"{side}_volume_mm3"] = volume
                labels.append(label)
            if not labels:
                return []
            mask_ids = c.execute(s.masks.insert().returning(s.masks.c.id, sort_by_parameter_order=True),
                                 masks).scalars().all()
            for k, label in enumerate(labels):
                label.update(moving_mask_id=mask_ids[2 * k], fixed_mask_id=mask_ids[2 * k + 1])
            ids = c.execute(s.label_pairs.insert().returning(s.label_pairs.c.id, sort_by_parameter_order=True),
                            labels).scalars().all()
            c.execute(s.revisions.insert(), [
                {"label_pair_id": i, "number": 1, "action": "created", "author": annotator, "at": t,
                 **{k: label[k] for k in s.REVISION_STATE}}
                for i, label in zip(ids, labels)])
            return [int(i) for i in ids]

    def _encoded(self, image, position: int, side: str, mask: np.ndarray) -> tuple[dict, float]:
        """A mask validated against its image's ``side`` (shape, binary, not empty), as a ``masks`` row, and its
        volume in mm³."""
        shape = tuple(json.loads(image[f"{side}_shape"]))
        what = f"{image['name']} label {position} ({side})"
        mask = np.asarray(mask)
        if mask.shape != shape:
            raise ValidationError(f"{what}: mask shape {mask.shape} differs from its image's {shape}")
        try:
            mask = check_mask(mask, what)
        except DataError as exc:
            raise ValidationError(str(exc)) from None
        enc = encode_mask(mask)
        row = {"shape": json.dumps(enc.shape), "offset": json.dumps(enc.offset), "box": json.dumps(enc.box),
               "voxels": enc.voxels, "sha256": enc.sha256, "data": enc.payload}
        return row, enc.voxels * _voxel_mm3(image, side)

    def _next_position(self, c: Connection, image_pair_id: int):
        """(the image pair's row, the position a new label pair takes), the row locked so that the position is
        read and taken in one turn."""
        image = self._image_row(c, image_pair_id, lock=True)
        last = c.execute(select(func.max(s.label_pairs.c.position))
                         .where(s.label_pairs.c.image_pair_id == image_pair_id)).scalar()
        return image, 0 if last is None else last + 1

    def create_label_pair(self, image_pair_id: int, *, type: str, name: str | None = "", annotator: str = "",
                          conn: Connection | None = None) -> int:
        """A new, still empty (incomplete) label pair at the end of the pair's list (revision 1).

        ``name`` None: named after its type and number, e.g. ``"other 3"`` (:func:`number`), unique in its image
        pair since no two of its label pairs share a position."""
        _check_type(type)
        with self._maybe(conn) as c:
            _, position = self._next_position(c, image_pair_id)
            if name is None:
                name = f"{type} {position + 1}"
            t = s.now()
            state = {"type": type, "name": name, "status": "incomplete", "moving_mask_id": None,
                     "fixed_mask_id": None, "deleted": False}
            pid = int(c.execute(s.label_pairs.insert().values(
                image_pair_id=image_pair_id, position=position, annotator=annotator,
                created=t, modified=t, revision=1, modified_by=annotator, **state)).inserted_primary_key[0])
            c.execute(s.revisions.insert().values(label_pair_id=pid, number=1, action="created", author=annotator,
                                                  at=t, **state))
            return pid

    def set_mask(self, label_pair_id: int, side: str, mask: np.ndarray | None, *, author: str = "",
                 expected_revision: int | None = None, conn: Connection | None = None) -> int:
        """Store (or, with None, clear) one side's mask; the status follows completeness.  Returns the new
        revision; with ``expected_revision``, a label pair changed by anyone since that revision is refused."""
        if side not in ("moving", "fixed"):
            raise ValidationError(f"side must be 'moving' or 'fixed', got {side!r}")
        with self._maybe(conn) as c:
            lp = self._label_row(c, label_pair_id, lock=True)
            image = self._image_row(c, lp["image_pair_id"])
            if mask is None:
                values = {f"{side}_mask_id": None, f"{side}_volume_mm3": None, "status": "incomplete"}
            else:
                row, volume = self._encoded(image, lp["position"], side, mask)
                self._check_expected(c, lp, expected_revision)  # before storing the mask: a conflict writes nothing
                mid = c.execute(s.masks.insert().values(**row)).inserted_primary_key[0]
                values = {f"{side}_mask_id": mid, f"{side}_volume_mm3": volume}
                other = lp["fixed_mask_id" if side == "moving" else "moving_mask_id"]
                if lp["status"] == "incomplete" and other is not None:
                    values["status"] = "complete"
                elif lp["status"] == "verified":
                    values.update(status="complete", verifier=None, verified=None)  # an edit needs a new check
            action = f"{'cleared' if mask is None else 'painted'} {side}"
            return self._change(c, lp, expected_revision, author, action, values)

    def update_label_pair(self, label_pair_id: int, *, type: str | None = None, name: str | None = None,
                          author: str = "", expected_revision: int | None = None) -> int:
        if type is not None:
            _check_type(type)
        values = {k: v for k, v in {"type": type, "name": name}.items() if v is not None}
        with self.transaction() as c:
            lp = self._label_row(c, label_pair_id, lock=True)
            return self._change(c, lp, expected_revision, author, "renamed", values)

    def verify(self, label_pair_id: int, verifier: str, *, expected_revision: int | None = None) -> int:
        """Mark a complete label pair verified by ``verifier`` (not its annotator)."""
        with self.transaction() as c:
            lp = self._label_row(c, label_pair_id, lock=True)
            if lp["status"] == "incomplete":
                raise ValidationError(f"label pair {label_pair_id} is incomplete: paint both sides first")
            if not verifier or verifier == lp["annotator"]:
                raise ValidationError("a label pair is verified by another annotator than its author")
            return self._change(c, lp, expected_revision, verifier, "verified",
                                {"status": "verified", "verifier": verifier, "verified": s.now()})

    def delete_label_pair(self, label_pair_id: int, *, author: str = "", expected_revision: int | None = None
                          ) -> int:
        """Delete a label pair from every list and from training; :meth:`restore` brings it back."""
        with self.transaction() as c:
            lp = self._label_row(c, label_pair_id, lock=True)
            return self._change(c, lp, expected_revision, author, "deleted", {"deleted": True})

    def restore(self, label_pair_id: int, number: int | None = None, *, author: str = "") -> int:
        """Make revision ``number`` of a label pair its newest state again (default: undo its deletion).

        Nothing is lost: the states in between stay in its history.  A restored verification needs a new check.
        """
        with self.transaction() as c:
            lp = self._label_row(c, label_pair_id, lock=True, deleted=True)
            if number is None:
                if not lp["deleted"]:
                    raise ValidationError(f"label pair {label_pair_id} is not deleted: give the revision to restore")
                return self._change(c, lp, None, author, "undeleted", {"deleted": False})
            old = c.execute(select(s.revisions).where(s.revisions.c.label_pair_id == label_pair_id,
                                                      s.revisions.c.number == number)).mappings().first()
            if old is None:
                raise ValidationError(f"label pair {label_pair_id} has no revision {number} "
                                      f"(its revisions are 1 to {lp['revision']})")
            image = self._image_row(c, lp["image_pair_id"])
            values = {"type": old["type"], "name": old["name"], "deleted": False, "verifier": None, "verified": None}
            for side in ("moving", "fixed"):
                mid = old[f"{side}_mask_id"]
                voxels = None if mid is None else c.execute(
                    select(s.masks.c.voxels).where(s.masks.c.id == mid)).scalar()
                values.update({f"{side}_mask_id": mid,
                               f"{side}_volume_mm3": None if mid is None else voxels * _voxel_mm3(image, side)})
            complete = values["moving_mask_id"] is not None and values["fixed_mask_id"] is not None
            values["status"] = "complete" if complete else "incomplete"
            return self._change(c, lp, None, author, f"restored {number}", values)

    def revisions(self, label_pair_id: int) -> list[Revision]:
        """Every state a label pair has had, oldest first (deleted label pairs too)."""
        r, mm, fm = s.revisions, s.masks.alias("moving_mask"), s.masks.alias("fixed_mask")
        q = (select(r, mm.c.sha256.label("moving_sha256"), fm.c.sha256.label("fixed_sha256"))
             .select_from(r.outerjoin(mm, r.c.moving_mask_id == mm.c.id).outerjoin(fm, r.c.fixed_mask_id == fm.c.id))
             .where(r.c.label_pair_id == label_pair_id).order_by(r.c.number))
        with self.transaction() as c:
            self._label_row(c, label_pair_id, deleted=True)
            rows = c.execute(q).mappings().all()
        return [Revision(x["number"], x["action"], x["author"], utc(x["at"]), x["type"], x["name"], x["status"],
                         bool(x["deleted"]), x["moving_sha256"], x["fixed_sha256"]) for x in rows]

    def _check_expected(self, c: Connection, lp, expected: int | None) -> None:
        if expected is None or lp["revision"] == expected:
            return
        if expected > lp["revision"]:
            raise ValidationError(f"label pair {lp['id']} has no revision {expected} (its newest is {lp['revision']})")
        pair = c.execute(select(s.image_pairs.c.name).where(s.image_pairs.c.id == lp["image_pair_id"])).scalar()
        raise ConflictError(f"{pair} label pair {lp['id']} ({lp['type']} {lp['name'] or '-'}) was changed by "
                            f"{lp['modified_by'] or 'someone'} at {when(lp['modified'])} (revision {lp['revision']}) "
                            f"after you read revision {expected}; nothing was saved")

    def _change(self, c: Connection, lp, expected: int | None, author: str, action: str, values: dict) -> int:
        """Apply ``values`` to a label pair locked by the caller, as its next revision; returns the revision."""
        self._check_expected(c, lp, expected)
        number = lp["revision"] + 1
        values = {**values, "revision": number, "modified": s.now(), "modified_by": author}
        c.execute(s.label_pairs.update().where(s.label_pairs.c.id == lp["id"]).values(**values))
        state = {**lp, **values}
        c.execute(s.revisions.insert().values(
            label_pair_id=lp["id"], number=number, action=action, author=author, at=values["modified"],
            **{k: state[k] for k in s.REVISION_STATE}))
        return number

    def _label_row(self, c: Connection, label_pair_id: int, *, lock: bool = False, deleted: bool = False):
        """A label pair's row (``deleted``: deleted ones too); ``lock`` as in :meth:`_image_row`."""
        query = select(s.label_pairs).where(s.label_pairs.c.id == label_pair_id)
        row = c.execute(query.with_for_update() if lock else query).mappings().first()
        if row is None:
            raise ValidationError(f"no label pair with id {label_pair_id}")
        if row["deleted"] and not deleted:
            raise ValidationError(f"label pair {label_pair_id} was deleted by {row['modified_by'] or 'someone'}: "
                                  f"restore it first (db restore --label-pair {label_pair_id})")
        return row

    def label_pairs(self, image_pair_id: int | None = None, *, types: Sequence[str] | None = None,
                    statuses: Sequence[str] | None = None, annotators: Sequence[str] | None = None,
                    deleted: bool = False) -> list[LabelPairRecord]:
        """Label pairs passing the filters, in order; ``deleted``: the deleted ones instead."""
        with self.transaction() as c:
            rows = c.execute(_label_query(image_pair_id, types, statuses, annotators, deleted)).mappings().all()
        return [_label_record(r) for r in rows]

    def label_pair(self, label_pair_id: int) -> LabelPairRecord:
        """One label pair by id (deleted ones too), as it is now."""
        with self.transaction() as c:
            return _label_record(self._label_row(c, label_pair_id, deleted=True))

    def masks(self, label_pair_id: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(moving, fixed) masks of a label pair, exactly as written (None where unpainted)."""
        with self.transaction() as c:
            lp = self._label_row(c, label_pair_id, deleted=True)
            return tuple(self._mask(c, lp[f"{side}_mask_id"]) for side in ("moving", "fixed"))

    def _mask(self, c: Connection, mask_id: int | None) -> np.ndarray | None:
        if mask_id is None:
            return None
        return self._decoded(c.execute(select(s.masks).where(s.masks.c.id == mask_id)).mappings().first())

    def _decoded(self, r) -> np.ndarray:
        try:
            return decode_mask(r["data"], json.loads(r["shape"]), json.loads(r["offset"]), json.loads(r["box"]),
                               r["sha256"])
        except Exception as exc:  # zlib, hash or shape errors alike
            raise DataError(f"{self.location}: mask {r['id']} is corrupt ({exc})") from None

    # ---- reading pairs for training --------------------------------------------
    def load_pair(self, image_pair_id: int, *, types=None, statuses=("complete", "verified"),
                  annotators=None, consensus: bool = False) -> Pair:
        """An :class:`io.Pair` with the pair's label pairs that pass the filters (complete ones only); with
        ``consensus``, one label pair per landmark (:func:`consensus_masks`)."""
        statuses = [st for st in (statuses or ("complete", "verified")) if st != "incomplete"]
        with self.transaction() as c:  # one transaction, five queries, however many label pairs
            row = self._image_row(c, image_pair_id)
            blobs = {side: self._image_blob(c, row, side) for side in ("moving", "fixed")}
            rows = c.execute(_label_query(image_pair_id, types, statuses, annotators)).mappings().all()
            ids = [r[f"{side}_mask_id"] for r in rows for side in ("moving", "fixed")]
            stored = {m["id"]: m for m in c.execute(select(s.masks).where(s.masks.c.id.in_(ids))).mappings()}
        name = safe_name(row["id"], row["name"])
        moving, fixed = (read_volume(*self._unpacked(row, side, blobs[side]), row[f"{side}_path"]) for side in blobs)
        records = [_label_record(r) for r in rows]
        pairs = [(self._decoded(stored[r["moving_mask_id"]]), self._decoded(stored[r["fixed_mask_id"]])) for r in rows]
        names = [f"{r.id}:{r.type}" for r in records]
        if consensus:
            pairs, names = consensus_masks(name, records, pairs)
        empty = lambda v: np.zeros((0, *v.grid.shape), bool)  # noqa: E731
        ml = np.stack([m for m, _ in pairs]) if pairs else empty(moving)
        fl = np.stack([f for _, f in pairs]) if pairs else empty(fixed)
        return Pair(name, moving, fixed, ml, fl, tuple(names))

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
        """Every image pair that has at least one label pair passing the filters (those of :meth:`load_pair`)."""
        wanted = {r.image_pair_id for r in self.label_pairs(
            types=filters.get("types"), annotators=filters.get("annotators"),
            statuses=[st for st in (filters.get("statuses") or ("complete", "verified")) if st != "incomplete"])}
        pairs = [self.load_pair(i, **filters) for i in sorted(wanted)]
        return [p for p in pairs if p.num_labels]  # a consensus may leave none

    def _maybe(self, conn: Connection | None):
        """The caller's transaction, or a new one."""
        if conn is not None:
            @contextmanager
            def same():
                yield conn
            return same()
        return self.transaction()


def consensus_masks(pair: str, records: Sequence[LabelPairRecord], masks: Sequence[tuple[np.ndarray, np.ndarray]]
                    ) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[str]]:
    """One label pair per landmark: on each side, the voxels that at least half of its annotators marked.

    A landmark is a type and name (the gland by its type alone: there is one), as :func:`views.agreement` has
    it; each annotator votes once, with their first label pair of it.  With two annotators that is their union;
    with three, the voxels two marked.  A landmark whose annotators share no voxel on a side is left out, with
    a warning naming it: there is no consensus on where it is.
    """
    import warnings

    landmarks: dict[tuple[str, str], dict[str, int]] = {}
    for i, r in enumerate(records):
        landmarks.setdefault((r.type, landmark_name(r.type, r.name)), {}).setdefault(r.annotator, i)
    out, names = [], []
    for (kind, name), voters in landmarks.items():
        chosen = list(voters.values())
        sides = tuple(np.mean([masks[i][k] for i in chosen], axis=0) >= 0.5 for k in (0, 1))
        if not all(side.any() for side in sides):
            warnings.warn(f"{pair}: the {len(chosen)} annotators of {kind} {name!r} share no voxel on one side; "
                          "it is left out of training", stacklevel=2)
            continue
        out.append(sides)
        names.append(f"{'+'.join(str(records[i].id) for i in chosen)}:{kind}")
    return out, names
