"""Point lists in world millimetres: CSV and 3D Slicer markups (``.mrk.json``).

Points are held as an ``(N, 3)`` array in the NIfTI (RAS) world frame of the images, with a label each.

* CSV: a header row and one point per row.  Coordinates are read from columns ``x, y, z`` or ``r, a, s``
  (RAS mm) or ``l, p, s`` (LPS mm, as ITK and DICOM), case-insensitive; a ``label`` (or ``name``) column is
  kept.  Written with ``label, x, y, z`` (RAS mm) and any extra columns given.
* Slicer markups JSON: every placed control point of every markup (unplaced ones, ``positionStatus``
  ``undefined``, are skipped); ``coordinateSystem`` ``RAS`` or ``LPS`` as the file says (Slicer writes LPS).
  Written as one fiducial list in LPS, as Slicer 5 writes them, extra values in each point's description.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np

from .io import LPS_TO_RAS, DataError, atomic_write

LPS = np.diag(LPS_TO_RAS)  # per-axis signs between LPS and RAS coordinates
MARKUPS_SCHEMA = ("https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/Resources/Schema/"
                  "markups-schema-v1.0.3.json#")
COLUMNS = {("x", "y", "z"): 1.0, ("r", "a", "s"): 1.0, ("l", "p", "s"): LPS}


def is_markups(path) -> bool:
    return str(path).lower().endswith(".json")


def read_points(path: str | os.PathLike, notes: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """``(labels, points (N, 3) RAS mm)`` from a CSV or a Slicer ``.mrk.json`` file; what a user should know of
    what was left out (Slicer's unplaced points) is appended to ``notes``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        labels, points = _read_markups(path, notes) if is_markups(path) else _read_csv(path)
    except DataError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read points ({type(exc).__name__}: {exc})") from None
    if not len(points):
        raise DataError(f"{path}: no points")
    if not np.all(np.isfinite(points)):
        raise DataError(f"{path}: points hold NaN or infinite coordinates")
    return labels, points


def _read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    with open(path, newline="", encoding="utf-8-sig") as fh:  # -sig: a spreadsheet's byte-order mark
        reader = csv.DictReader(fh)
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    header = {str(name).strip().lower(): name for name in columns}
    for axes, sign in COLUMNS.items():
        if all(a in header for a in axes):
            points = np.array([[float(row[header[a]]) for a in axes] for row in rows]) * sign
            name = header.get("label", header.get("name"))
            labels = [row[name] if name else str(i + 1) for i, row in enumerate(rows)]
            return labels, points.reshape(-1, 3)
    found = f"its first line reads {','.join(columns)}" if columns else "the file is empty"
    raise DataError(f"{path}: expected a header line naming columns x,y,z (RAS mm), r,a,s or l,p,s (LPS mm), "
                    f"then one point per line; {found}")


def _read_markups(path: Path, notes: list[str] | None) -> tuple[list[str], np.ndarray]:
    data = json.loads(path.read_text(encoding="utf-8"))
    labels, points, unplaced = [], [], []
    for markup in data["markups"]:
        sign = LPS if markup.get("coordinateSystem", "LPS").upper() == "LPS" else 1.0
        for k, point in enumerate(markup.get("controlPoints", [])):
            if point.get("positionStatus", "defined") != "defined":
                unplaced.append(str(point.get("label") or k + 1))  # listed but not placed
                continue
            labels.append(str(point.get("label") or k + 1))
            points.append(np.asarray(point["position"], float) * sign)
    if unplaced and notes is not None:
        notes.append(f"{path}: {len(unplaced)} point{'s' * (len(unplaced) > 1)} not placed in Slicer, left out: "
                     f"{', '.join(map(repr, unplaced))}")
    return labels, np.array(points, float).reshape(-1, 3)


def write_points(path: str | os.PathLike, labels, points_mm: np.ndarray, **columns) -> None:
    """Write points (RAS mm) as CSV (``label, x, y, z`` and ``columns``) or as a Slicer ``.mrk.json`` (LPS)."""
    path, points = Path(path), np.asarray(points_mm, float)
    if is_markups(path):
        notes = [", ".join(f"{name} {np.asarray(values)[k]:.3g}" for name, values in columns.items())
                 for k in range(len(points))]
        control = [{"id": str(k + 1), "label": str(label), "description": note,
                    "position": [float(v) for v in p * LPS], "positionStatus": "defined"}
                   for k, (label, p, note) in enumerate(zip(labels, points, notes))]
        doc = {"@schema": MARKUPS_SCHEMA,
               "markups": [{"type": "Fiducial", "coordinateSystem": "LPS", "coordinateUnits": "mm",
                            "controlPoints": control}]}
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(doc, indent=2), encoding="utf-8"))
        return

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            out = csv.writer(fh)
            out.writerow(["label", "x", "y", "z", *columns])
            for k, (label, p) in enumerate(zip(labels, points)):
                out.writerow([label, *(f"{v:.4f}" for v in p), *(f"{np.asarray(c)[k]:.4g}" for c in columns.values())])

    atomic_write(path, write)


def refusal(path, labels, rows, reason: str, then: str = "nothing written") -> str:
    """One line saying which points of ``path`` (by label and place in the file) could not be mapped, why, and
    ``then`` what became of the others."""
    named = ", ".join(f"{labels[i]!r} (point {i + 1})" for i in rows[:5]) + (", ..." if len(rows) > 5 else "")
    return f"{path}: {named}: {reason}; {then}"
