"""The label database at scale: import rate, summary, opening one pair, training start-up, peak memory.

    python benchmarks/db_scale.py --db scale.db [--pairs 2000] [--labels 10]
    python benchmarks/db_scale.py --db postgresql://user@host/scale ...

Generates ``--pairs`` image pairs (small phantom volumes, a few distinct files reused under distinct pair
names) with ``--labels`` label pairs each, then times what people do with a database of that size.  Per-pair
operations (opening the first pair and the last) must not grow with the number of pairs.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_labelreg.core import io
from napari_labelreg.core.phantom import make_phantom
from napari_labelreg.database import LabelDB
from napari_labelreg.database.views import summary


def timed(what: str, fn):
    start = time.perf_counter()
    out = fn()
    print(f"  {what:44s} {time.perf_counter() - start:8.3f} s")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a new SQLite file or an empty PostgreSQL database URL")
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--labels", type=int, default=10)
    parser.add_argument("--distinct", type=int, default=8, help="distinct image files, reused across pairs")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for seed in range(args.distinct):
            pair = make_phantom(seed, fixed_shape=(24, 28, 20), moving_shape=(26, 26, 24)).pair
            paths = (Path(tmp) / f"m{seed}.nii.gz", Path(tmp) / f"f{seed}.nii.gz")
            io.save_volume(paths[0], pair.moving.data, pair.moving.grid)
            io.save_volume(paths[1], pair.fixed.data, pair.fixed.grid)
            files.append((paths, pair.moving.grid.shape, pair.fixed.grid.shape))
        db = LabelDB.open(args.db)
        print(f"{args.db}: {args.pairs} image pairs x {args.labels} label pairs")

        def populate():
            for n in range(args.pairs):
                (moving, fixed), ms, fs = files[n % len(files)]
                with db.transaction() as conn:
                    pid = db.add_image_pair(moving, fixed, subject=f"s{n // 2}", name=f"pair{n:05d}",
                                            convention="centred", conn=conn)
                    items = []
                    for k in range(args.labels):
                        m, f = np.zeros(ms, bool), np.zeros(fs, bool)
                        at = rng.integers(2, 14, 3)
                        m[tuple(slice(a, a + 4) for a in at)] = True
                        f[tuple(slice(a, a + 4) for a in at)] = True
                        items.append((m, f, "gland" if k == 0 else "other", f"label {k}"))
                    db.add_label_pairs(pid, items, annotator="bench", conn=conn)  # as db import does

        start = time.perf_counter()
        populate()
        took = time.perf_counter() - start
        print(f"  {'import':44s} {took:8.3f} s ({args.pairs / took:.1f} image pairs/s, "
              f"{args.pairs * args.labels / took:.0f} label pairs/s)")
        timed("db summary", lambda: summary(db))
        records = db.image_pairs()
        timed("open the first pair for annotation (load_pair)", lambda: db.load_pair(records[0].id))
        timed("open the last pair for annotation (load_pair)", lambda: db.load_pair(records[-1].id))
        timed("find one pair by id (image_pair)", lambda: db.image_pair(records[-1].id))
        labels = db.label_pairs(records[-1].id)
        timed("a label pair's history (revisions)", lambda: db.revisions(labels[-1].id))
        timed("save a mask over the revision read (set_mask)",
              lambda: db.set_mask(labels[-1].id, "moving", db.masks(labels[-1].id)[0], author="bench",
                                  expected_revision=labels[-1].revision))
        timed("train --db start-up (training_pairs)", lambda: db.training_pairs())
        with db.transaction() as c:
            size = (c.exec_driver_sql("SELECT pg_database_size(current_database())").scalar()
                    if c.dialect.name == "postgresql" else Path(db.location).stat().st_size)
        print(f"  {'database size':44s} {size / 2**20:8.0f} MB")
        db.close()
    print(f"  {'peak memory (max RSS)':44s} {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.0f} MB")


if __name__ == "__main__":
    main()
