"""Helper process for the database concurrency and crash tests (not a test module).

    python db_writer.py DB PAIR_ID COUNT TAG LOG [HOLD_MARKER]
    python db_writer.py edit DB LABEL_PAIR_ID ROUNDS TAG LOG GO

Adds COUNT label pairs named TAG-i to image pair PAIR_ID, appending each
committed id to LOG.  With HOLD_MARKER, it then opens one more transaction,
writes a label pair in it, touches the marker and sleeps (to be killed there).

``edit``: ROUNDS times, reads the label pair and saves a moving mask of its own over the revision it read, as
an annotator does, logging ``saved N`` or ``conflict``.  The first read is followed by touching ``GO.TAG`` and
waiting for ``GO``: every editor saves over the same revision.
"""

import sys
import time
from pathlib import Path

import numpy as np

from napari_labelreg.database import ConflictError, LabelDB


def main(db_path, pair_id, count, tag, log, hold=None):
    db = LabelDB.open(db_path)
    rec = db.image_pair(int(pair_id))
    m = np.zeros(rec.moving_shape, bool)
    f = np.zeros(rec.fixed_shape, bool)
    for i in range(int(count)):
        m[:] = False
        f[:] = False
        m[i % 5 : i % 5 + 3, 2:5, 2:5] = True
        f[2:5, i % 5 : i % 5 + 3, 2:5] = True
        lp = db.add_label_pair(rec.id, m, f, type="calcification", name=f"{tag}-{i}", annotator=tag)
        with open(log, "a") as fh:
            fh.write(f"{lp}\n")
    if hold:
        with db.transaction() as conn:
            db.add_label_pair(rec.id, m, f, type="cyst", name=f"{tag}-uncommitted", annotator=tag, conn=conn)
            Path(hold).touch()
            time.sleep(120)


def edit(db_path, label_pair_id, rounds, tag, log, go):
    db = LabelDB.open(db_path)
    lp = int(label_pair_id)
    rec = db.image_pair(db.label_pair(lp).image_pair_id)
    for i in range(int(rounds)):
        read = db.label_pair(lp).revision
        if i == 0:
            Path(f"{go}.{tag}").touch()
            while not Path(go).exists():
                time.sleep(0.01)
        m = np.zeros(rec.moving_shape, bool)
        m[int(tag[-1]) : int(tag[-1]) + 3, i % 5 : i % 5 + 3, 2:5] = True
        try:
            outcome = f"saved {db.set_mask(lp, 'moving', m, author=tag, expected_revision=read)}"
        except ConflictError:
            outcome = "conflict"
        with open(log, "a") as fh:
            fh.write(f"{outcome}\n")


if __name__ == "__main__":
    if sys.argv[1] == "edit":
        edit(*sys.argv[2:])
    else:
        main(*sys.argv[1:])
