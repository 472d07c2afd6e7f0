"""Checkpoint formats: what an older file becomes, and what is refused by name."""

from pathlib import Path

import numpy as np
import pytest
import torch

from napari_labelreg.core.io import DataError
from napari_labelreg.pipeline.checkpoint import FORMAT, load_checkpoint

OLD = Path(__file__).parent / "data" / "format2" / "paper.pt"  # format 2, made before the stages (test_stages.py)


def rewrite(source, target, change):
    state = torch.load(source, map_location="cpu", weights_only=True)
    change(state)
    torch.save(state, target)
    return target


def as_format_1(state, members=1, elastic=0.0):
    """A checkpoint as the version before this one wrote it: format 1, with the settings since removed."""
    state["format"] = 1
    state["config"]["members"] = members
    state["config"]["augment"].update(elastic_mm=elastic, elastic_grid_mm=20.0)


def test_a_format_1_checkpoint_loads_and_registers_exactly_as_it_did(tmp_path):
    from napari_labelreg.pipeline.registrator import Registrator
    from napari_labelreg.core.phantom import make_phantom

    old = rewrite(OLD, tmp_path / "old.pt", as_format_1)
    state = load_checkpoint(old)
    assert state["format"] == FORMAT == 3 and not hasattr(state["config"], "members")
    pair = make_phantom(7).pair
    now = Registrator.from_run(OLD, precision="fp32").register_pair(pair, geometry="centred").ddf_mm
    before = Registrator.from_run(old, precision="fp32").register_pair(pair, geometry="centred").ddf_mm
    np.testing.assert_array_equal(before, now)


@pytest.mark.parametrize("change,words", [
    (lambda s: as_format_1(s, members=3), "--members (averaged networks) = 3"),
    (lambda s: as_format_1(s, elastic=2.0), "--elastic (elastic augmentation) = 2.0"),
    (lambda s: s["extra"].update(members=[s["model"]]), "run of averaged networks (--members)"),
    (lambda s: s.update(format=7), "checkpoint format 7; this napari-labelreg reads formats 1, 2, 3"),
    (lambda s: s.pop("model"), "checkpoint format 2: 'model'"),
    (lambda s: s.pop("config"), "not a napari-labelreg checkpoint"),
])
def test_checkpoints_this_version_cannot_use_are_refused_in_one_line_naming_why(tmp_path, change, words):
    path = rewrite(OLD, tmp_path / "run.pt", change)
    with pytest.raises(DataError) as refused:
        load_checkpoint(path)
    message = str(refused.value)
    assert message.startswith(str(path)) and words in message and "\n" not in message


def test_the_cli_refuses_an_old_ensemble_run_in_one_line(tmp_path, capsys):
    from napari_labelreg.cli import main

    run = tmp_path / "run"
    run.mkdir()
    rewrite(OLD, run / "checkpoint.pt", lambda s: as_format_1(s, members=2))
    from napari_labelreg.core.io import save_volume
    from napari_labelreg.core.phantom import make_phantom

    pair = make_phantom(3).pair
    save_volume(tmp_path / "mr.nii.gz", pair.moving.data, pair.moving.grid)
    save_volume(tmp_path / "us.nii.gz", pair.fixed.data, pair.fixed.grid)
    code = main(["register", "--model", str(run), "--moving", str(tmp_path / "mr.nii.gz"), "--fixed",
                 str(tmp_path / "us.nii.gz"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "--members" in err, err


def test_a_run_trained_with_cross_subject_pairs_loads_and_registers_as_it_did(tmp_path):
    """--cross-subject (deleted: no gain in its own paired runs) only shaped training: such runs are kept."""
    from napari_labelreg.core.phantom import make_phantom
    from napari_labelreg.pipeline.registrator import Registrator

    old = rewrite(OLD, tmp_path / "old.pt", lambda s: s["config"].update(cross_subject=0.5))
    assert not hasattr(load_checkpoint(old)["config"], "cross_subject")
    pair = make_phantom(7).pair
    now = Registrator.from_run(OLD, precision="fp32").register_pair(pair, geometry="centred").ddf_mm
    np.testing.assert_array_equal(Registrator.from_run(old, precision="fp32").register_pair(
        pair, geometry="centred").ddf_mm, now)
