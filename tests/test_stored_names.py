"""A database made elsewhere cannot write outside the folder a command writes to: every stored image-pair name
that could name a path elsewhere is refused in one line naming the pair, and nothing is written (both backends)."""

from pathlib import Path

import pytest
from sqlalchemy import update

from napari_labelreg.cli import main
from napari_labelreg.database import schema as s

PLANTED = ["../x", "/abs/x", "a/../../x", "nul\0x"]


@pytest.fixture(params=PLANTED)
def planted(request, db):
    """The database's first image pair renamed in its row, as another tool might have left it."""
    if "\0" in request.param and db.engine.dialect.name == "postgresql":
        pytest.skip("PostgreSQL's text type refuses a NUL itself: no such row can exist there")
    first = db.image_pairs()[0]
    with db.transaction() as c:
        c.execute(update(s.image_pairs).where(s.image_pairs.c.id == first.id).values(name=request.param))
    url = str(db.location)
    db.close()
    return url, first.id, request.param


def files_under(root):
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def refused_in_one_line(capsys, pair_id, name):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"image pair {pair_id} ({name!r})" in err and "nothing was written" in err, err


@pytest.mark.parametrize("how", [[], ["--per-label"]])
def test_export_refuses_a_stored_name_that_would_leave_its_folder(planted, how, tmp_path, capsys):
    url, pair_id, name = planted
    out = tmp_path / "out"  # "../x" from out/a's subfolders lands in out, "/abs/x" at the file system's root
    out.mkdir()
    assert main(["db", "export", str(out / "a"), "--db", url, *how]) == 2
    refused_in_one_line(capsys, pair_id, name)
    assert files_under(out) == [] and not Path("/abs").exists()


@pytest.mark.parametrize("command", [["train", "--iterations", "1", "--width", "4", "--spacing", "0",
                                      "--preset", "paper", "--out"],
                                     ["evaluate", "--out"],
                                     ["crossval", "--folds", "3", "--fold", "0", "--iterations", "1", "--width", "4",
                                      "--spacing", "0", "--preset", "paper", "--out"]])
def test_training_evaluation_and_crossval_refuse_it_before_writing_a_record_of_it(planted, command, tmp_path,
                                                                                  capsys):
    url, pair_id, name = planted
    out = tmp_path / "out"
    out.mkdir()
    assert main([command[0], "--db", url, *command[1:], str(out / "result")]) == 2
    refused_in_one_line(capsys, pair_id, name)
    assert files_under(out) == [] and not Path("/abs").exists()


def test_db_check_lists_such_names(planted, capsys):
    url, pair_id, name = planted
    with pytest.raises(SystemExit) as ended:
        main(["db", "check", "--db", url])
    assert ended.value.code == 1
    assert f"image pair {pair_id} ({name!r}): its name has" in capsys.readouterr().out
