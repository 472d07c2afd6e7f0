"""A label database a team shares: images inside it, every change a revision, conflicts refused, on both backends."""

import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_labelreg.app.annotation import AnnotationSession
from napari_labelreg.cli import main
from napari_labelreg.core.io import DataError
from napari_labelreg.database import ConflictError, LabelDB, ValidationError
from napari_labelreg.database.check import check
from napari_labelreg.database.transfer import export_folder, import_folder

from test_database import snapshot


def test_a_database_opened_elsewhere_without_the_image_files_loads_every_pair_bit_identically(
        database_url, tmp_path, monkeypatch):
    from conftest import write_phantom_folder

    here = tmp_path / "annotator1"
    data = write_phantom_folder(here / "data")
    location = str(here / "labels.db") if "://" not in database_url else database_url
    with LabelDB.open(location) as db:
        import_folder(db, data)
        loaded = {rec.name: db.load_pair(rec.id) for rec in db.image_pairs()}
    files = {p.relative_to(data): p.read_bytes() for p in data.glob("*_images/*")}
    if "://" not in location:  # the SQLite file copied to another machine's folder
        (tmp_path / "annotator2").mkdir()
        location = shutil.copy(location, tmp_path / "annotator2" / "labels.db")
    shutil.rmtree(here)  # the original image files are gone
    monkeypatch.chdir(tmp_path / "annotator2" if "://" not in database_url else tmp_path)
    with LabelDB.open(location) as db:
        assert len(db.image_pairs()) == len(loaded) == 3
        for rec in db.image_pairs():
            a, b = loaded[rec.name], db.load_pair(rec.id)
            for side in ("moving", "fixed"):
                va, vb = getattr(a, side), getattr(b, side)
                assert va.data.dtype == vb.data.dtype and va.data.tobytes() == vb.data.tobytes()
                np.testing.assert_array_equal(va.grid.affine, vb.grid.affine)
            np.testing.assert_array_equal(a.moving_labels, b.moving_labels)
            np.testing.assert_array_equal(a.fixed_labels, b.fixed_labels)
        export_folder(db, tmp_path / "exported")
        assert check(db) == []
    exported = {p.relative_to(tmp_path / "exported"): p.read_bytes()
                for p in (tmp_path / "exported").glob("*_images/*")}
    assert exported == files  # every image byte for byte as it was imported


def test_an_image_used_by_several_pairs_is_stored_once(db, phantom_folder):
    from sqlalchemy import func, select

    from napari_labelreg.database import schema

    with db.transaction() as c:
        before = c.execute(select(func.count()).select_from(schema.images)).scalar()
    first = db.image_pairs()[0]
    db.add_image_pair(first.moving_path, first.fixed_path, subject="again", name="the same files")
    with db.transaction() as c:
        assert c.execute(select(func.count()).select_from(schema.images)).scalar() == before == 6


def _masks(db, shift=0):
    rec = db.image_pairs()[0]
    m, f = np.zeros(rec.moving_shape, bool), np.zeros(rec.fixed_shape, bool)
    m[5 + shift:8 + shift, 5:8, 5:8] = True
    f[4:7, 4 + shift:7 + shift, 4:7] = True
    return rec, m, f


def test_every_change_is_a_revision_and_any_revision_can_be_restored(db):
    rec, m, f = _masks(db)
    lp = db.add_label_pair(rec.id, m, f, type="apex", name="tip", annotator="alice")
    _, m2, _ = _masks(db, shift=2)
    assert db.set_mask(lp, "moving", m2, author="bob") == 2
    db.verify(lp, "carol")
    history = db.revisions(lp)
    assert [(r.number, r.action, r.author, r.status) for r in history] == [
        (1, "created", "alice", "complete"), (2, "painted moving", "bob", "complete"),
        (3, "verified", "carol", "verified")]
    assert history[0].moving_sha256 != history[1].moving_sha256 == history[2].moving_sha256
    assert history[0].fixed_sha256 == history[2].fixed_sha256
    assert db.label_pair(lp).modified_by == "carol"

    assert db.restore(lp, 1, author="alice") == 4  # alice's first moving mask again, as a new revision
    np.testing.assert_array_equal(db.masks(lp)[0], m)
    now = db.label_pair(lp)
    assert (now.status, now.verifier, now.revision) == ("complete", None, 4)  # a restore needs a new check
    assert db.revisions(lp)[-1].moving_sha256 == history[0].moving_sha256

    db.delete_label_pair(lp, author="bob")
    assert lp not in {r.id for r in db.label_pairs()} and [r.id for r in db.label_pairs(deleted=True)] == [lp]
    assert all(name != f"{lp}:apex" for name in db.load_pair(rec.id).label_names)  # not trained on
    with pytest.raises(ValidationError, match=f"label pair {lp} was deleted by bob: restore it first"):
        db.set_mask(lp, "moving", m, author="alice")
    assert db.restore(lp, author="bob") == 6
    assert f"{lp}:apex" in db.load_pair(rec.id).label_names
    np.testing.assert_array_equal(db.masks(lp)[0], m)
    with pytest.raises(ValidationError, match=f"label pair {lp} has no revision 99 \\(its revisions are 1 to 6\\)"):
        db.restore(lp, 99, author="bob")
    assert check(db) == []


def test_saving_over_a_change_made_since_it_was_read_is_refused_as_a_conflict(db):
    rec, m, f = _masks(db)
    alice, bob = AnnotationSession(db, "alice"), AnnotationSession(db, "bob")
    alice.select_pair_id(rec.id)
    lp = alice.create_label_pair("base", "left")
    alice.save_mask("moving", m)
    bob.view(rec.id)  # bob opens the pair: he sees alice's revision
    alice.save_mask("fixed", f)  # alice goes on painting; bob has not seen this
    bob.select_pair_id(rec.id)
    bob.select_label_pair(lp)
    before = snapshot(db)
    _, m2, f2 = _masks(db, shift=1)
    at = db.label_pair(lp).modified.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")  # local time, with its zone
    with pytest.raises(ConflictError, match=f"{rec.name} label pair {lp} \\(base left\\) was changed by alice at "
                                            f"{at} \\(revision 3\\) after you read revision 2; nothing was saved"):
        bob.save_mask("fixed", f2)
    for action in (bob.delete_selected, lambda: bob.verify_selected("bob"), lambda: bob.rename(name="right")):
        with pytest.raises(ConflictError):
            action()
    assert snapshot(db) == before  # alice's work stands, nothing of bob's was written
    bob.keep_mine(lp)  # bob chooses to replace it: alice's revision stays in the history
    bob.save_mask("fixed", f2)
    assert [(r.author, r.action) for r in db.revisions(lp)][-2:] == [("alice", "painted fixed"),
                                                                   ("bob", "painted fixed")]
    np.testing.assert_array_equal(db.masks(lp)[1], f2)
    with pytest.raises(ConflictError, match="was changed by bob"):
        alice.save_mask("moving", m2)  # now alice is the one behind
    assert db.revisions(lp)[-1].author == "bob"


def test_history_and_restore_from_the_command_line(db, capsys):
    rec, m, f = _masks(db)
    lp = db.create_label_pair(rec.id, type="lesion", name="PZ", annotator="alice")
    db.set_mask(lp, "moving", m, author="alice")
    db.set_mask(lp, "fixed", f, author="alice")
    db.delete_label_pair(lp, author="bob")
    assert main(["db", "history", "--db", db.location, "--deleted"]) == 0
    out = capsys.readouterr().out
    assert f"label pair {lp}  {rec.name}  lesion · PZ  deleted by bob at" in out and "1 deleted label pairs" in out
    assert main(["db", "restore", "--db", db.location, "--label-pair", str(lp), "--annotator", "bob"]) == 0
    assert capsys.readouterr().out == f"label pair {lp} undeleted (its revision 5)\n"
    assert main(["db", "restore", "--db", db.location, "--label-pair", str(lp), "--revision", "2",
                 "--annotator", "carol"]) == 0
    assert capsys.readouterr().out == f"label pair {lp}: revision 2 restored as its revision 6\n"
    assert db.label_pair(lp).status == "incomplete" and db.masks(lp)[1] is None  # as it was before its TRUS side
    assert main(["db", "history", "--db", db.location, "--label-pair", str(lp)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"label pair {lp} of {rec.name}: lesion · PZ"
    assert [line.split()[0] for line in lines[1:]] == ["1", "2", "3", "4", "5", "6"]
    assert "carol" in lines[-1] and "restored 2" in lines[-1]
    assert main(["db", "restore", "--db", db.location, "--label-pair", "999", "--annotator", "x"]) == 2
    assert capsys.readouterr().err.strip() == "napari-labelreg db restore: error: no label pair with id 999"


def _editor(location, label_pair_id, rounds, tag, log, go):
    script = Path(__file__).with_name("db_writer.py")
    args = [sys.executable, str(script), "edit", str(location), str(label_pair_id), str(rounds), tag, str(log), str(go)]
    err = open(f"{log}.err", "w")
    return subprocess.Popen(args, stderr=err)


def test_four_processes_editing_one_label_pair_get_their_conflicts_reported_and_lose_nothing(db, tmp_path):
    rec, m, f = _masks(db)
    lp = db.add_label_pair(rec.id, m, f, type="urethra", name="", annotator="import")
    go = tmp_path / "go"
    tags = [f"ann{i}" for i in range(4)]
    logs = {tag: tmp_path / f"{tag}.log" for tag in tags}
    procs = [_editor(db.location, lp, 5, tag, logs[tag], go) for tag in tags]
    deadline = time.time() + 120
    while not all(Path(f"{go}.{tag}").exists() for tag in tags):  # all four have read the same revision
        assert all(p.poll() is None for p in procs) and time.time() < deadline, "an editor ended early"
        time.sleep(0.05)
    go.touch()  # and now save at once
    codes = [p.wait(timeout=240) for p in procs]
    assert codes == [0] * 4, {tag: open(f"{logs[tag]}.err").read()[-2000:] for tag in tags}
    outcomes = {tag: logs[tag].read_text().split("\n")[:-1] for tag in tags}
    assert sum(lines[0].startswith("saved") for lines in outcomes.values()) == 1  # one of four wins the first round
    saved = {int(line.split()[1]): tag for tag, lines in outcomes.items() for line in lines if line.startswith("saved")}
    conflicts = sum(line == "conflict" for lines in outcomes.values() for line in lines)
    assert conflicts >= 3 and len(saved) + conflicts == 20
    history = {r.number: r.author for r in db.revisions(lp)}
    assert {n: a for n, a in history.items() if n > 1} == saved  # every save that was told it landed, did
    assert sorted(history) == list(range(1, 2 + len(saved)))
    assert check(db) == []


@pytest.mark.parametrize("kind", ["text", "foreign"])
def test_a_file_that_is_not_a_label_database_is_refused_and_left_alone(tmp_path, capsys, kind):
    import sqlite3

    path = tmp_path / "labels.db"
    if kind == "text":
        path.write_text("patient,age\n1,64\n")
    else:
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE patients (id INTEGER PRIMARY KEY, age INTEGER)")
            conn.execute("INSERT INTO patients VALUES (1, 64)")
    before = path.read_bytes()
    assert main(["db", "summary", "--db", str(path)]) == 2
    err = capsys.readouterr().err
    words = "not a label database (file is not a database)" if kind == "text" else \
        "not a label database (it holds tables patients); give a new file or an empty database"
    assert err == f"napari-labelreg db summary: error: {path}: {words}\n"
    assert path.read_bytes() == before


def test_a_database_holding_someone_elses_tables_is_refused_and_left_alone(database_url):
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(database_url if "://" in database_url else f"sqlite:///{database_url}")
    with engine.begin() as c:
        c.execute(text("CREATE TABLE patients (id INTEGER PRIMARY KEY, age INTEGER)"))
    with pytest.raises(DataError, match="not a label database \\(it holds tables patients\\)"):
        LabelDB.open(database_url)
    assert inspect(engine).get_table_names() == ["patients"]
    engine.dispose()


def test_training_on_each_landmarks_consensus(db):
    rec = db.image_pairs()[0]
    gland_m, gland_f = db.masks(db.label_pairs(rec.id, types=["gland"])[0].id)  # the import's gland
    shifted = np.roll(gland_m, 1, axis=0)
    db.add_label_pair(rec.id, shifted, gland_f, type="gland", name="mine", annotator="bob")
    _, m, f = _masks(db)
    a = db.add_label_pair(rec.id, m, f, type="apex", annotator="bob")
    c = db.add_label_pair(rec.id, np.roll(m, 1, axis=1), f, type="apex", annotator="carol")
    d = db.add_label_pair(rec.id, np.roll(m, 2, axis=1), f, type="apex", annotator="dan")
    plain = db.load_pair(rec.id)
    pair = db.load_pair(rec.id, consensus=True)
    assert plain.num_labels == 8 and pair.num_labels == 5  # gland, three imported others, apex
    gland = pair.label_names.index(next(n for n in pair.label_names if n.endswith(":gland")))
    np.testing.assert_array_equal(pair.moving_labels[gland], gland_m | shifted)  # two annotators: their union
    np.testing.assert_array_equal(pair.fixed_labels[gland], gland_f)
    assert pair.label_names[-1] == f"{a}+{c}+{d}:apex"
    votes = m.astype(int) + np.roll(m, 1, axis=1) + np.roll(m, 2, axis=1)
    np.testing.assert_array_equal(pair.moving_labels[-1], votes >= 2)  # three: where two of them agree
    assert 0 < (votes >= 2).sum() < (votes >= 1).sum()
    far = np.roll(m, 6, axis=0)  # a landmark two annotators put in different places
    db.add_label_pair(rec.id, m, f, type="base", annotator="bob")
    db.add_label_pair(rec.id, far, f, type="base", annotator="carol")
    db.add_label_pair(rec.id, np.roll(far, 6, axis=2), f, type="base", annotator="dan")
    with pytest.warns(UserWarning, match=f"{rec.name}: the 3 annotators of base '' share no voxel on one side"):
        assert db.load_pair(rec.id, consensus=True).num_labels == 5


def test_folders_and_database_files_with_spaces_and_accents_in_their_paths(tmp_path, capsys):
    from conftest import write_phantom_folder

    data = write_phantom_folder(tmp_path / "Données IRM" / "patients 2024")
    location = tmp_path / "Base d'étiquettes" / "labels é.db"
    assert main(["db", "import", str(data), "--db", str(location)]) == 0
    assert main(["db", "export", str(tmp_path / "export ü"), "--db", str(location)]) == 0
    assert main(["db", "check", "--db", str(location)]) == 0
    assert "no problems found" in capsys.readouterr().out
    for image in data.glob("*_images/*.nii.gz"):
        assert (tmp_path / "export ü" / image.parent.name / image.name).read_bytes() == image.read_bytes()


def test_adding_many_label_pairs_at_once_is_all_or_nothing(db):
    rec, m, f = _masks(db)
    before = snapshot(db)
    bad = f.astype(np.uint8) * 2
    with pytest.raises(ValidationError, match=f"{rec.name} label 6 \\(fixed\\)"):  # positions 4, 5, 6: the third
        db.add_label_pairs(rec.id, [(m, f, "apex", "a"), (m, f, "base", "b"), (m, bad, "cyst", "c")], annotator="x")
    assert snapshot(db) == before
    ids = db.add_label_pairs(rec.id, [(m, f, "apex", "a"), (m, f, "base", "b")], annotator="x")
    assert [(r.id, r.position, r.type, r.revision) for r in db.label_pairs(rec.id)][-2:] == [
        (ids[0], 4, "apex", 1), (ids[1], 5, "base", 1)]
    np.testing.assert_array_equal(db.masks(ids[1])[1], f)


def test_a_grown_folder_imports_its_new_pairs_and_leaves_the_others(tmp_path, capsys):
    from conftest import write_phantom_folder

    data = write_phantom_folder(tmp_path / "data")
    location = str(tmp_path / "labels.db")
    assert main(["db", "import", str(data), "--db", location]) == 0
    with LabelDB.open(location) as db:
        first = db.image_pairs()[0]
        lp = db.label_pairs(first.id)[0]
        db.set_mask(lp.id, "moving", np.roll(db.masks(lp.id)[0], 1, axis=0), author="alice")  # work since then
        before = snapshot(db)
    assert main(["db", "import", str(data), "--db", location]) == 2
    assert "3 of its 3 pairs are in" in capsys.readouterr().err
    shutil.copytree(data, tmp_path / "grown")
    for folder in ("moving_images", "fixed_images", "moving_labels", "fixed_labels"):
        shutil.copy(tmp_path / "grown" / folder / "obs000.nii.gz", tmp_path / "grown" / folder / "obs009.nii.gz")
    assert main(["db", "import", str(tmp_path / "grown"), "--db", location, "--skip-existing"]) == 0
    assert capsys.readouterr().out.endswith("imported 1 image pairs into "
                                            f"{location} (3 there already, left as they were)\n")
    with LabelDB.open(location) as db:
        after = snapshot(db)
        assert [r.name for r in db.image_pairs()] == ["obs000", "obs001", "obs002", "obs009"]
    assert all(set(before[k]) <= set(after[k]) for k in before)  # everything there before, unchanged


def test_an_open_that_fails_leaves_no_file_and_an_empty_file_is_not_a_database(tmp_path, capsys, monkeypatch):
    from napari_labelreg.database import schema

    empty = tmp_path / "empty.db"
    empty.touch()
    assert main(["db", "summary", "--db", str(empty)]) == 2
    assert capsys.readouterr().err == (f"napari-labelreg db summary: error: {empty}: an empty file, not a label database "
                                       "(db import makes one)\n")
    assert empty.stat().st_size == 0

    def broken(conn):
        raise ModuleNotFoundError("No module named 'alembic'")

    monkeypatch.setattr(schema, "migrate", broken)
    fresh = tmp_path / "new.db"
    with pytest.raises(ModuleNotFoundError):
        LabelDB.open(fresh)
    assert list(tmp_path.iterdir()) == [empty]  # no half-made labels database left to trip the next try


def test_a_revision_from_the_future_is_refused_as_such(db):
    rec, m, f = _masks(db)
    lp = db.add_label_pair(rec.id, m, f, type="apex", annotator="alice")
    with pytest.raises(ValidationError, match=f"label pair {lp} has no revision 7 \\(its newest is 1\\)"):
        db.delete_label_pair(lp, author="bob", expected_revision=7)
    assert not db.label_pair(lp).deleted


def test_a_damaged_database_is_one_line_from_the_command_line(tmp_path, capsys):
    import sqlite3

    from conftest import write_phantom_folder

    location = tmp_path / "labels.db"
    assert main(["db", "import", str(write_phantom_folder(tmp_path / "data")), "--db", str(location)]) == 0
    with sqlite3.connect(location) as conn:  # a blob turned into text that is not UTF-8
        conn.execute("UPDATE masks SET data = CAST(X'FFFE00' AS TEXT) WHERE id = 1")
    capsys.readouterr()
    assert main(["db", "check", "--db", str(location)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"napari-labelreg db check: error: {location}: database error (") and err.count("\n") == 1
