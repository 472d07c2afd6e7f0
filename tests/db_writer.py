"""Helper process for the database concurrency and crash tests (not a test module).

    python db_writer.py DB PAIR_ID COUNT TAG LOG [HOLD_MARKER]

Adds COUNT label pairs named TAG-i to image pair PAIR_ID, appending each
committed id to LOG.  With HOLD_MARKER, it then opens one more transaction,
writes a label pair in it, touches the marker and sleeps (to be killed there).
"""

import sys
import time
from pathlib import Path

import numpy as np

from napari_labelreg.database import LabelDB


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


if __name__ == "__main__":
    main(*sys.argv[1:])
