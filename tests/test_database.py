"""The label database: exact round trips, validation with unchanged state, import/export."""

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from napari_labelreg.database import LabelDB, ValidationError, decode_mask, encode_mask, schema
from napari_labelreg.database.check import check
from napari_labelreg.database.transfer import export_folder, export_per_label, import_folder
from napari_labelreg.database.views import counts, label_pairs_frame, summary
from napari_labelreg.core.io import DataError, list_folder_pairs, load_folder_pair


def snapshot(db):
    """Every row of every table: a refused write must leave this unchanged."""
    with db.transaction() as c:
        return {t.name: sorted(map(tuple, c.execute(select(t)).all()), key=repr) for t in schema.metadata.sorted_tables}


def test_mask_encoding_round_trip(rng):
    mask = np.zeros((20, 31, 17), bool)
    mask[3:6, 10:12, 16] = True
    mask[7, 30, 0] = True
    enc = encode_mask(mask)
    assert len(enc.payload) < 100
    np.testing.assert_array_equal(decode_mask(enc.payload, enc.shape, enc.offset, enc.box, enc.sha256), mask)
    with pytest.raises(ValueError, match="hash"):
        decode_mask(enc.payload, enc.shape, enc.offset, enc.box, "0" * 64)


def test_import_counts_and_exact_masks(db, phantom_folder):
    info = summary(db)
    assert (info["subjects"], info["image_pairs"], info["label_pairs"]) == (3, 3, 12)
    assert info["by_type"] == {"gland": 3, "other": 9}
    pair = load_folder_pair(phantom_folder, "obs001")
    rec = [r for r in db.image_pairs() if r.name == "obs001"][0]
    got = db.load_pair(rec.id)
    np.testing.assert_array_equal(got.moving_labels, pair.moving_labels)
    np.testing.assert_array_equal(got.fixed_labels, pair.fixed_labels)
    assert check(db) == []


def test_export_round_trip_is_identical(db, phantom_folder, tmp_path):
    out = tmp_path / "export"
    assert export_folder(db, out) == 3
    assert list_folder_pairs(out) == list_folder_pairs(phantom_folder)
    for name in list_folder_pairs(out):
        a, b = load_folder_pair(phantom_folder, name), load_folder_pair(out, name)
        np.testing.assert_array_equal(a.moving.data, b.moving.data)
        np.testing.assert_array_equal(a.fixed.data, b.fixed.data)
        np.testing.assert_array_equal(a.moving_labels, b.moving_labels)
        np.testing.assert_array_equal(a.fixed_labels, b.fixed_labels)
    assert export_per_label(db, tmp_path / "per_label") == 24


def _valid_masks(db):
    rec = db.image_pairs()[0]
    m = np.zeros(rec.moving_shape, bool)
    f = np.zeros(rec.fixed_shape, bool)
    m[5:8, 5:8, 5:8] = True
    f[4:7, 4:7, 4:7] = True
    return rec, m, f


@pytest.mark.parametrize("how,words", [
    ("shape", "mask shape"), ("empty", "empty"), ("nonbinary", "not binary"), ("nan", "NaN"),
    ("type", "label type"), ("pair", "no image pair"),
])
def test_each_refused_write_names_the_problem_and_changes_nothing(db, how, words):
    rec, m, f = _valid_masks(db)
    pair_id, kind = rec.id, "apex"
    if how == "shape":
        f = f[:-1]
    elif how == "empty":
        f = np.zeros_like(f)
    elif how == "nonbinary":
        f = f.astype(np.uint8) * 3
    elif how == "nan":
        f = f.astype(float)
        f[0, 0, 0] = np.nan
    elif how == "type":
        kind = "kidney"
    elif how == "pair":
        pair_id = 999
    before = snapshot(db)
    with pytest.raises(ValidationError, match=words):
        db.add_label_pair(pair_id, m, f, type=kind, name="x", annotator="ann")
    assert snapshot(db) == before


def test_incomplete_pairs_are_kept_but_not_trained_on(db):
    rec, m, f = _valid_masks(db)
    lp = db.create_label_pair(rec.id, type="apex", name="draft", annotator="ann")
    db.set_mask(lp, "moving", m)
    record = [r for r in db.label_pairs(rec.id) if r.id == lp][0]
    assert record.status == "incomplete" and record.has_moving and not record.has_fixed
    assert db.load_pair(rec.id).num_labels == 4  # the draft is left out
    db.set_mask(lp, "fixed", f)
    assert db.load_pair(rec.id).num_labels == 5
    with pytest.raises(ValidationError, match="another annotator"):
        db.verify(lp, "ann")
    db.verify(lp, "reviewer")
    assert db.load_pair(rec.id, statuses=["verified"]).num_labels == 1
    db.delete_label_pair(lp)
    assert db.load_pair(rec.id).num_labels == 4
    assert check(db) == []


def test_filters_select_types_and_annotators(db):
    rec, m, f = _valid_masks(db)
    db.add_label_pair(rec.id, m, f, type="apex", annotator="bob")
    glands = db.training_pairs(types=["gland"])
    assert len(glands) == 3 and all(p.label_names and all(n.endswith(":gland") for n in p.label_names) for p in glands)
    bobs = db.training_pairs(annotators=["bob"])
    assert [p.num_labels for p in bobs] == [1]
    frame = label_pairs_frame(db, centroids=True)
    assert {"moving_centroid_x", "fixed_volume_mm3"} <= set(frame.columns)
    assert counts(db, "annotator").to_dict() == {"bob": 1, "import": 12}


def test_check_reports_problems_without_changing_anything(db):
    rec = db.image_pairs()[0]
    with db.transaction() as c:  # one image's stored bytes damaged, as a bad disk or a hand edit would
        sha = c.execute(select(schema.image_pairs.c.moving_sha256).where(schema.image_pairs.c.id == rec.id)).scalar()
        c.execute(schema.images.update().where(schema.images.c.sha256 == sha).values(data=b"not an image"))
    before = snapshot(db)
    problems = check(db)
    assert problems == [f"image {sha[:12]} is corrupt (its bytes do not match their hash)"]
    assert snapshot(db) == before
    with pytest.raises(DataError, match=f"the moving image of pair '{rec.name}' is corrupt in the database"):
        db.load_pair(rec.id)


def test_old_schema_versions_are_refused_or_upgraded(database_url):
    db = LabelDB.open(database_url)
    with db.transaction() as c:
        assert schema.schema_version(c) == schema.SCHEMA_VERSION
        c.execute(schema.meta.update().values(value=str(schema.SCHEMA_VERSION + 1)))
    db.close()
    with pytest.raises(RuntimeError, match="newer"):
        LabelDB.open(database_url)


def test_a_revision_this_code_does_not_know_is_refused_as_newer(database_url):
    with LabelDB.open(database_url) as db, db.transaction() as c:
        c.exec_driver_sql("UPDATE alembic_version SET version_num = 'ffff_from_the_future'")
    with pytest.raises(RuntimeError, match="revision ffff_from_the_future is newer than this napari-labelreg"):
        LabelDB.open(database_url)


@pytest.mark.data
def test_the_shared_data_imports_and_exports_identically(tmp_path):
    from conftest import DATA

    db = LabelDB.open(tmp_path / "labels.db")
    assert import_folder(db, DATA) == 88
    info = summary(db)
    assert (info["image_pairs"], info["label_pairs"]) == (88, 340)
    export_folder(db, tmp_path / "out")
    for name in list_folder_pairs(DATA):
        a, b = load_folder_pair(DATA, name), load_folder_pair(tmp_path / "out", name)
        np.testing.assert_array_equal(a.moving_labels, b.moving_labels)
        np.testing.assert_array_equal(a.fixed_labels, b.fixed_labels)
        np.testing.assert_array_equal(a.moving.data, b.moving.data)
    assert check(db) == []


def _writer(db_path, pair_id, count, tag, log, hold=None):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("db_writer.py")
    args = [sys.executable, str(script), str(db_path), str(pair_id), str(count), tag, str(log)]
    with open(f"{log}.err", "w") as err:  # read by _finished when the writer fails
        return subprocess.Popen(args + ([str(hold)] if hold else []), stderr=err)


def _finished(procs, logs):
    """Wait for the writers; a failed one's own error is the assertion's message."""
    codes = [p.wait(timeout=240) for p in procs]
    errors = {str(log): open(f"{log}.err").read()[-2000:] for code, log in zip(codes, logs) if code}
    assert not errors, errors


def test_four_processes_annotating_at_once_lose_nothing(db, tmp_path):
    """Two annotators on one image pair and two on others, at once, each adding label pairs."""
    pairs = [p.id for p in db.image_pairs()]
    plan = {"ann1": pairs[0], "ann2": pairs[0], "ann3": pairs[1], "ann4": pairs[2]}
    logs = [tmp_path / f"{tag}.log" for tag in plan]
    _finished([_writer(db.location, pair_id, 10, tag, log) for (tag, pair_id), log in zip(plan.items(), logs)], logs)
    for tag, pair_id in plan.items():
        names = {r.name for r in db.label_pairs(pair_id, annotators=[tag])}
        assert names == {f"{tag}-{i}" for i in range(10)}
    positions = [r.position for r in db.label_pairs(pairs[0])]
    assert len(positions) == len(set(positions))  # no two annotators took one place in the pair's list
    assert check(db) == []


def test_a_writer_killed_mid_transaction_loses_only_that_write(db, tmp_path):
    import os
    import signal
    import time

    pair_id = db.image_pairs()[1].id
    marker = tmp_path / "holding"
    proc = _writer(db.location, pair_id, 5, "victim", tmp_path / "victim.log", hold=marker)
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline, "writer ended early"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    db.close()
    reopened = LabelDB.open(db.location)
    committed = {int(x) for x in (tmp_path / "victim.log").read_text().split()}
    present = {r.id for r in reopened.label_pairs(pair_id, annotators=["victim"])}
    assert present == committed and len(committed) == 5
    assert check(reopened) == []
    reopened.close()


@pytest.mark.parametrize("url,words", [
    ("postgresql://nobody@/labels?host=/nonexistent-socket-dir", "cannot connect (connection"),
    ("mysql://someone@somewhere/labels", "not a database this tool opens"),
])
def test_a_database_url_that_cannot_be_used_is_refused_in_one_line(url, words, capsys):
    from napari_labelreg.cli import main

    assert main(["db", "summary", "--db", url]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err and "Traceback" not in err, err


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_plain_postgresql_url_opens_with_psycopg_3(database_url):
    """``postgresql://`` (SQLAlchemy's default driver is psycopg2) means the driver the postgres extra installs."""
    plain = database_url.replace("postgresql+psycopg://", "postgresql://")
    with LabelDB.open(plain) as db:
        assert db.engine.dialect.driver == "psycopg" and db.image_pairs() == []


def test_an_import_whose_label_stacks_disagree_in_count_is_one_line_and_keeps_the_pairs_before(database_url,
                                                                                             phantom_folder, capsys):
    import nibabel as nib

    from napari_labelreg.cli import main

    culprit = phantom_folder / "fixed_labels" / "obs001.nii.gz"
    img = nib.load(culprit)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[..., :-1], img.affine), culprit)  # one label short
    assert main(["db", "import", str(phantom_folder), "--db", database_url]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # the import's progress bar, then the error
    assert "Traceback" not in "\n".join(err) and [line for line in err if "error:" in line] == err[-1:], err
    assert "obs001.nii.gz: 4 moving labels but" in err[-1] and "fixed_labels/obs001.nii.gz has 3" in err[-1], err
    with LabelDB.open(database_url) as db:
        assert [p.name for p in db.image_pairs()] == ["obs000"]  # the pair before it, whole; nothing of obs001


@pytest.mark.parametrize("name", ["../escape", "sub/dir", ".hidden", " padded", "back\\slash"])
def test_a_pair_name_that_would_escape_an_export_folder_is_refused(db, name):
    record = db.image_pairs()[0]
    before = snapshot(db)
    with pytest.raises(ValidationError, match="names a file on export"):
        db.add_image_pair(record.moving_path, record.fixed_path, subject="s", name=name)
    assert snapshot(db) == before


def test_a_pair_name_with_spaces_inside_and_non_ascii_exports_and_reads_back(db, tmp_path):
    record = db.image_pairs()[0]
    new = db.add_image_pair(record.moving_path, record.fixed_path, subject="s", name="Prostate é 7")
    first = db.label_pairs(record.id)[0]
    db.add_label_pair(new, *db.masks(first.id), type="gland", annotator="a")
    export_folder(db, tmp_path / "out")
    assert "Prostate é 7" in list_folder_pairs(tmp_path / "out")
    again = load_folder_pair(tmp_path / "out", "Prostate é 7")
    np.testing.assert_array_equal(again.moving_labels[0], db.masks(first.id)[0])


def test_finding_one_pair_asks_the_database_for_that_pair_alone(db):
    """Per-pair operations must not grow with the number of pairs: no reading every pair to find one."""
    from sqlalchemy import event

    statements = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
    target = db.image_pairs()[-1]
    statements.clear()
    assert db.image_pair(target.id) == target
    assert db.recorded_geometry([target.name]) == target.convention
    reads = [q for q in statements if "image_pairs" in q and q.lstrip().upper().startswith("SELECT")]
    assert len(reads) == 2 and all("WHERE" in q for q in reads), reads
    with pytest.raises(ValidationError, match="no image pair with id 999"):
        db.image_pair(999)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_server_restart_keeps_every_committed_write_and_open_databases_reconnect(database_url, phantom_folder,
                                                                                   tmp_path, restart_postgres):
    with LabelDB.open(database_url) as db:
        import_folder(db, phantom_folder)
        pair_id = db.image_pairs()[0].id
        log = tmp_path / "w.log"
        _finished([_writer(db.location, pair_id, 6, "before", log)], [log])
        restart_postgres()  # as a crash: the server recovers from its write-ahead log
        committed = {int(x) for x in log.read_text().split()}
        assert {r.id for r in db.label_pairs(pair_id, annotators=["before"])} == committed  # the same, reconnected
        m, f = db.masks(min(committed))
        db.add_label_pair(pair_id, m, f, type="cyst", name="after", annotator="after")
        assert check(db) == []
    with LabelDB.open(database_url) as again:
        assert len(again.label_pairs(pair_id, annotators=["before", "after"])) == 7


RELEASE_0_1 = Path(__file__).with_name("data") / "schema1" / "labels.db"  # made by release 0.1's code
RELEASE_0_1_IMAGES = RELEASE_0_1.with_name("data")  # its image files; it recorded them at MADE_AT
MADE_AT = "/work/main/tests/data/schema1/data"


def _release_0_1_database(database_url, images: Path):
    """Release 0.1's database (no Alembic yet) on the backend of ``database_url``, its recorded image paths
    pointing into ``images`` as on the machine that made it.  Returns its location and its tables as reflected
    (release 0.1's columns)."""
    import shutil

    from alembic import command
    from alembic.config import Config
    from sqlalchemy import MetaData, create_engine

    if "://" not in database_url:
        shutil.copyfile(RELEASE_0_1, database_url)
    else:
        old = create_engine(f"sqlite:///{RELEASE_0_1}")
        tables = MetaData()
        tables.reflect(old)
        with old.connect() as c:
            rows = {t.name: [dict(r) for r in c.execute(select(t)).mappings()] for t in tables.sorted_tables}
        old.dispose()
        new = create_engine(database_url)
        with new.begin() as c:  # release 0.1's tables (the base revision), without Alembic's mark, and its rows
            config = Config()
            config.set_main_option("script_location", str(schema.MIGRATIONS))
            config.attributes["connection"] = c
            command.upgrade(config, schema.BASE_REVISION)
            c.exec_driver_sql("DROP TABLE alembic_version")
            for table in tables.sorted_tables:
                if rows[table.name]:
                    c.execute(table.insert(), rows[table.name])
            for table in ("subjects", "image_pairs", "label_pairs", "masks"):  # ids were given: sequences past them
                c.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT MAX(id) FROM {table}))")
        new.dispose()
    engine = create_engine(database_url if "://" in database_url else f"sqlite:///{database_url}")
    with engine.begin() as c:
        for side in ("moving", "fixed"):
            column = getattr(schema.image_pairs.c, f"{side}_path")
            c.execute(schema.image_pairs.update().values({column: func.replace(column, MADE_AT, str(images))}))
    tables = MetaData()
    tables.reflect(engine)
    return database_url, engine, tables


def _rows(engine, tables):
    with engine.connect() as c:
        return {t.name: sorted(map(tuple, c.execute(select(t)).all()), key=repr) for t in tables.sorted_tables}


def test_a_release_0_1_database_upgrades_keeping_every_row_mask_and_image(database_url, tmp_path):
    import shutil

    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect

    images = tmp_path / "images"
    shutil.copytree(RELEASE_0_1_IMAGES, images)
    location, engine, old_tables = _release_0_1_database(database_url, images)
    before = _rows(engine, old_tables)
    assert not inspect(engine).has_table("alembic_version") and not inspect(engine).has_table("images")
    assert len(before["label_pairs"]) == 9 and len(before["masks"]) == 16
    files = {p.name + p.parent.name: p.read_bytes() for p in images.glob("*_images/*.nii.gz")}
    with LabelDB.open(location) as db:
        masks = {lp.id: db.masks(lp.id) for lp in db.label_pairs()}
        verified = [lp.annotator for lp in db.label_pairs() if lp.status == "verified"]
        history = {lp.id: db.revisions(lp.id) for lp in db.label_pairs()}
        annotators = {lp.id: lp.annotator for lp in db.label_pairs()}
    after = _rows(engine, old_tables)
    assert before.pop("meta") == [("schema_version", "1")] and after.pop("meta") == [("schema_version", "3")]
    assert after == before  # every row and mask byte of release 0.1's columns
    for lp_id, (moving, fixed) in masks.items():
        row = next(r for r in before["label_pairs"] if r[0] == lp_id)
        assert (moving is None) == (row[11] is None) and (fixed is None) == (row[12] is None)
    assert verified == ["alice"]
    # each label pair starts its history with the state it was found in, by its annotator
    assert {i: [(r.number, r.author) for r in h] for i, h in history.items()} == {i: [(1, a)] for i, a in
                                                                                  annotators.items()}
    with engine.connect() as c:
        stored = c.execute(select(func.count()).select_from(schema.images)).scalar()
    assert stored == len(files) == 4  # the image files it recorded, taken in
    shutil.rmtree(images)  # and no longer needed: every pair loads from the database alone, bit for bit
    with LabelDB.open(location) as db:
        for rec in db.image_pairs():
            for side in ("moving", "fixed"):
                data, suffix = db.image_file(rec.id, side)
                assert data == files[f"{rec.name}.nii.gz{side}_images"] and suffix == ".nii.gz"
            assert db.load_pair(rec.id).num_labels >= 3
        assert check(db) == []
    config = Config()
    config.set_main_option("script_location", str(schema.MIGRATIONS))
    head = ScriptDirectory.from_config(config).get_current_head()
    with engine.connect() as c:
        assert MigrationContext.configure(c).get_current_revision() == head
    engine.dispose()


def test_an_upgrade_without_the_image_files_keeps_the_pairs_and_takes_the_images_in_later(database_url, tmp_path):
    import shutil

    images = tmp_path / "elsewhere"
    location, engine, old_tables = _release_0_1_database(database_url, images)  # recorded where nothing is
    engine.dispose()
    with LabelDB.open(location) as db:
        rec = db.image_pairs()[0]
        assert len(check(db)) == 4 and "is not in the database (recorded at" in check(db)[0]
        with pytest.raises(ValidationError, match=f"{rec.moving_path}: moving image of pair 'case0' is neither in "
                                                  "the database nor at its recorded path"):
            db.load_pair(rec.id)
        shutil.copytree(RELEASE_0_1_IMAGES, images)  # the files appear where they were recorded
        for pair in db.image_pairs():
            db.load_pair(pair.id)
        shutil.rmtree(images)
        assert check(db) == []
        assert db.load_pair(rec.id).num_labels == 4


def test_the_newest_revision_is_the_schema_the_code_uses(database_url):
    """Alembic's comparison of a database made by the migrations with the tables the code declares finds nothing."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with LabelDB.open(database_url) as db, db.engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), schema.metadata) == []


def test_agreement_measures_two_annotators_on_the_same_landmarks(db, tmp_path, capsys):
    from napari_labelreg.cli import main
    from napari_labelreg.core.metrics import dice
    from napari_labelreg.database.views import agreement, agreement_summary

    record = db.image_pairs()[0]
    imported = {lp.name: lp for lp in db.label_pairs(record.id)}
    gland_m, gland_f = db.masks(imported["label 0"].id)
    moved = np.roll(gland_m, 1, axis=0)  # bob's MR gland one voxel along i from the import's
    assert not gland_m[-1].any()  # so the roll moves it whole
    db.add_label_pair(record.id, moved, gland_f, type="gland", name="bob's gland", annotator="bob")
    other_m, other_f = db.masks(imported["label 1"].id)
    db.add_label_pair(record.id, other_m, other_f, type="other", name="label 1", annotator="bob")
    db.add_label_pair(record.id, other_m, other_f, type="other", name="a landmark of his own", annotator="bob")

    pairs = agreement(db)
    assert len(pairs) == 4  # gland and "label 1", each side: the lone landmark is compared with nobody
    from napari_labelreg.core.io import load_volume

    spacing = load_volume(record.moving_path).grid.spacing[0]
    row = pairs[(pairs.type == "gland") & (pairs.side == "moving")].iloc[0]
    assert (row.annotator_a, row.annotator_b) == ("bob", "import")
    assert row.centroid_distance_mm == pytest.approx(spacing) and row.dice == pytest.approx(dice(gland_m, moved))
    same = pairs[pairs.type == "other"]
    assert np.allclose(same.centroid_distance_mm, 0) and np.allclose(same.dice, 1)
    table = agreement_summary(pairs)
    assert table.loc["all", "comparisons"] == 4 and table.loc["other", "dice_median"] == 1.0

    assert main(["db", "agreement", "--db", db.location, "--out", str(tmp_path / "a.csv"),
                 "--plot", str(tmp_path / "a.png")]) == 0
    assert "centroid_median_mm" in capsys.readouterr().out
    from pandas import read_csv

    assert len(read_csv(tmp_path / "a.csv")) == 4 and (tmp_path / "a.png").stat().st_size > 1000
