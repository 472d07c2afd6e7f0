"""Made ``labels.db`` with release 0.1's code (commit 2256361, before Alembic), for the upgrade test:

    git worktree add /tmp/old 2256361 && PYTHONPATH=/tmp/old python tests/data/schema1/make.py

Two small phantom pairs imported with their labels, one label pair verified, one left incomplete.  Release 0.1
recorded images by absolute path: the images are kept beside it (``data/``), and the test points the database's
paths at them as the machine that made it would have (or leaves them pointing nowhere, as on another machine).
"""

import shutil
from pathlib import Path

import numpy as np

from napari_labelreg.core import io
from napari_labelreg.core.phantom import make_phantom
from napari_labelreg.database import LabelDB
from napari_labelreg.database.transfer import import_folder

HERE = Path(__file__).resolve().parent

data = HERE / "data"
shutil.rmtree(data, ignore_errors=True)
for seed in range(2):
    pair = make_phantom(seed, fixed_shape=(12, 14, 10), moving_shape=(12, 12, 12)).pair
    name = f"case{seed}.nii.gz"
    io.save_volume(data / "moving_images" / name, pair.moving.data, pair.moving.grid)
    io.save_volume(data / "fixed_images" / name, pair.fixed.data, pair.fixed.grid)
    io.save_volume(data / "moving_labels" / name, np.moveaxis(pair.moving_labels, 0, -1).astype(np.uint8),
                   pair.moving.grid)
    io.save_volume(data / "fixed_labels" / name, np.moveaxis(pair.fixed_labels, 0, -1).astype(np.uint8),
                   pair.fixed.grid)
(HERE / "labels.db").unlink(missing_ok=True)
with LabelDB.open(HERE / "labels.db") as db:
    import_folder(db, data, convention="centred", annotator="alice")
    first = db.label_pairs(db.image_pairs()[0].id)[0]
    db.verify(first.id, "bob")
    db.create_label_pair(db.image_pairs()[1].id, type="lesion", name="to do", annotator="carol")
for extra in HERE.glob("labels.db-*"):  # WAL files: the checkpointed database alone is the fixture
    extra.unlink()
