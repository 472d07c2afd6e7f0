"""The headless CLI end to end on phantom folders, and its refusals of bad input."""

import re
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from napari_labelreg.core import io
from napari_labelreg.cli import main

TINY = ["--width", "4", "--iterations", "2", "--geometry", "centred", "--spacing", "0"]


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "napari_labelreg", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_help_lists_the_commands():
    out = run_cli("--help")
    assert out.returncode == 0
    for command in ("train", "register", "evaluate", "demo"):
        assert command in out.stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from conftest import write_phantom_folder

    root = tmp_path_factory.mktemp("cli")
    data = write_phantom_folder(root / "data", count=2)
    assert main(["train", "--data", str(data), "--out", str(root / "run"), *TINY]) == 0
    return data, root / "run"


def test_register_writes_ddf_in_mm_on_the_fixed_grid(trained, tmp_path):
    data, run = trained
    out = tmp_path / "out"
    code = main(["register", "--model", str(run), "--moving", str(data / "moving_images/obs000.nii.gz"),
                 "--fixed", str(data / "fixed_images/obs000.nii.gz"),
                 "--moving-labels", str(data / "moving_labels/obs000.nii.gz"), "--out", str(out)])
    assert code == 0
    fixed = nib.load(data / "fixed_images/obs000.nii.gz")
    ddf = nib.load(out / "ddf.nii.gz")
    assert ddf.shape == (*fixed.shape, 1, 3)
    assert ddf.header.get_intent()[0] == "displacement vector"
    assert ddf.header.get_xyzt_units()[0] == "mm"
    warped = nib.load(out / "warped.nii.gz")
    assert warped.shape == fixed.shape
    np.testing.assert_allclose(warped.affine, fixed.affine)
    labels = nib.load(out / "warped_labels.nii.gz")
    assert labels.shape[:3] == fixed.shape and set(np.unique(labels.get_fdata())) <= {0.0, 1.0}
    data_mm, grid = io.load_ddf(out / "ddf.nii.gz")
    assert data_mm.shape == (*fixed.shape, 3)


def test_evaluate_writes_per_pair_csv(trained, tmp_path, capsys):
    data, run = trained
    csv = tmp_path / "results.csv"
    assert main(["evaluate", "--model", str(run), "--data", str(data), "--out", str(csv)]) == 0
    table = pd.read_csv(csv)
    assert list(table.pair) == ["obs000", "obs001"]
    assert {"tre_mm", "tre_all_mm", "dice", "folding_voxels"} <= set(table.columns)
    assert "median" in capsys.readouterr().out


def test_train_refuses_to_overwrite_a_run(trained, capsys):
    data, run = trained
    assert main(["train", "--data", str(data), "--out", str(run), *TINY]) == 2
    assert "--resume" in capsys.readouterr().err


def test_train_resume_continues(trained, tmp_path, capsys):
    data, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    from napari_labelreg.pipeline.checkpoint import load_checkpoint

    precision = load_checkpoint(copy / "checkpoint.pt")["config"].precision  # what this CPU ran it in
    assert main(["train", "--data", str(data), "--out", str(copy), "--resume", "--iterations", "4",
                 "--width", "8"]) == 0
    assert (f"resuming {copy} with its own settings (a baseline network of width 4, precision {precision}); only "
            "--iterations and --minutes change") in capsys.readouterr().out  # --width 8 is not silently taken

    # 4 steps in all: the trained locator is kept (its share would now be one step), the network has 3
    assert load_checkpoint(copy / "checkpoint.pt")["stages"]["refine"]["step"] == 3


def _break(data, how):
    lab = data / "fixed_labels/obs001.nii.gz"
    img = nib.load(lab)
    arr = np.asarray(img.dataobj).astype(np.float32)
    if how == "count":
        arr = arr[..., :-1]
    elif how == "empty":
        arr[..., 1] = 0
    elif how == "nonbinary":
        arr[0, 0, 0, 1] = 2
    elif how == "2d":
        arr = arr[:, :, 0, 0]
    elif how == "nan":
        arr = np.asarray(nib.load(data / "fixed_images/obs001.nii.gz").dataobj).astype(np.float32)
        arr[1, 1, 1] = np.nan
        nib.save(nib.Nifti1Image(arr, img.affine), data / "fixed_images/obs001.nii.gz")
        return data / "fixed_images/obs001.nii.gz"
    elif how == "missing":
        lab.unlink()
        return lab
    elif how == "unreadable":
        lab.write_bytes(b"\x1f\x8b garbage")
        return lab
    elif how == "dangling":
        image = data / "fixed_images/obs001.nii.gz"
        image.unlink()
        image.symlink_to(data / "gone" / "obs001.nii.gz")
        return image
    nib.save(nib.Nifti1Image(arr, img.affine), lab)
    return lab


@pytest.mark.parametrize("how,words", [
    ("count", "moving labels but"), ("empty", "empty"), ("nonbinary", "not binary"),
    ("2d", "label stack"), ("nan", "NaN"), ("missing", "missing partner"), ("unreadable", "cannot read"),
    ("dangling", "dangling symbolic link"),
])
def test_bad_input_is_one_clear_line_naming_the_file(tmp_path, how, words, capsys):
    from conftest import write_phantom_folder

    data = write_phantom_folder(tmp_path / "data", count=2, fixed_shape=(12, 14, 10), moving_shape=(12, 12, 12))
    culprit = _break(data, how)
    code = main(["train", "--data", str(data), "--out", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert words in err and culprit.name in err, err


def test_db_commands_and_train_from_a_filtered_database(phantom_folder, tmp_path, capsys):
    import json

    db = tmp_path / "labels.db"
    assert main(["db", "import", str(phantom_folder), "--db", str(db)]) == 0
    assert main(["db", "summary", "--db", str(db), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (info["subjects"], info["image_pairs"], info["label_pairs"]) == (3, 3, 12)
    assert main(["db", "check", "--db", str(db)]) == 0
    assert "no problems found" in capsys.readouterr().out
    run = tmp_path / "run"
    assert main(["train", "--db", str(db), "--types", "gland", "--out", str(run), *TINY]) == 0
    used = json.loads((run / "training_set.json").read_text())
    assert len(used) == 3 and all(len(v) == 1 and v[0].endswith(":gland") for v in used.values())
    out = capsys.readouterr().out
    # 2 steps of the cpu preset: the locator's 30% is one, the prior's 5% none, the network has the other
    assert re.search(f"run in {run}: geometry centred; stages locate 1 step in [0-9]+ s, refine 1 step in [0-9]+ s; "
                     "network weight 0.5.", out), out
    assert f"next: napari-labelreg evaluate --model {run} --data|--db PAIRS_IT_DID_NOT_TRAIN_ON" in out
    # evaluate reads the database as train does, a subset of its pairs, and says they were trained on
    scores = tmp_path / "scores.csv"
    assert main(["evaluate", "--model", str(run), "--db", str(db), "--types", "gland", "--pairs", "obs001",
                 "--geometry", "centred", "--out", str(scores)]) == 0
    assert list(pd.read_csv(scores)["pair"]) == ["obs001"]
    assert "1 of the 1 pairs scored were used to train" in capsys.readouterr().err
    assert main(["evaluate", "--model", str(run), "--db", str(db), "--pairs", "obs009", "--out", str(scores)]) == 2
    assert "no pair named obs009" in capsys.readouterr().err
    assert main(["db", "export", str(tmp_path / "out"), "--db", str(db)]) == 0
    assert main(["db", "summary", "--db", str(tmp_path / "missing.db")]) == 2


def test_headless_train_needs_no_qt(phantom_folder, tmp_path):
    code = (
        "import sys\n"
        "for name in ('qtpy', 'PyQt6', 'PyQt5', 'PySide6', 'napari', 'magicgui'):\n"
        "    sys.modules[name] = None  # any import of them now fails\n"
        "from napari_labelreg.cli import main\n"
        f"sys.exit(main(['train', '--data', {str(phantom_folder)!r}, '--out', {str(tmp_path / 'run')!r}, "
        "'--width', '4', '--iterations', '1', '--geometry', 'centred']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]


def test_written_files_follow_the_umask(trained, tmp_path):
    import os

    data, run = trained
    out = tmp_path / "reg"
    previous = os.umask(0o027)  # this process's umask is read at import; a subprocess reads its own
    try:
        done = subprocess.run([sys.executable, "-m", "napari_labelreg", "register", "--model", str(run), "--moving",
                               str(data / "moving_images/obs000.nii.gz"), "--fixed",
                               str(data / "fixed_images/obs000.nii.gz"), "--out", str(out)],
                              capture_output=True, text=True, timeout=300)
    finally:
        os.umask(previous)
    assert done.returncode == 0, done.stderr
    for name in ("ddf.nii.gz", "warped.nii.gz"):
        assert (out / name).stat().st_mode & 0o777 == 0o640, oct((out / name).stat().st_mode)
    assert (run / "checkpoint.pt").stat().st_mode & 0o777 == 0o666 & ~io.UMASK


def test_train_help_states_the_presets_defaults_for_every_option():
    import re

    from napari_labelreg.cli import TRAINING_SETTINGS, build_parser, preset_value
    from napari_labelreg.config import PRESETS

    train = build_parser()._subparsers._group_actions[0].choices["train"]
    actions = {a.dest: a for a in train._actions}
    assert all(a.help for a in train._actions), [a.dest for a in train._actions if not a.help]  # every option
    assert set(TRAINING_SETTINGS) <= set(actions)
    for dest, path in TRAINING_SETTINGS.items():
        text = " ".join(actions[dest].help.split())
        for name in ("cpu", "paper"):
            value = preset_value(name, path)
            shown = "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
            assert re.search(rf"default {re.escape(shown)}\b", text) or f"{shown} in the {name}" in text, (dest, text)
    assert "default 0.3 in the cpu preset, 0 in the paper one" in actions["locator"].help
    assert PRESETS["cpu"].locator == 0.3


def test_train_and_evaluate_from_a_database_start_from_the_geometry_its_pairs_were_imported_with(
        phantom_folder, tmp_path, capsys):
    import json

    db = tmp_path / "labels.db"
    assert main(["db", "import", str(phantom_folder), "--db", str(db), "--geometry", "fov"]) == 0
    run = tmp_path / "run"
    tiny = [a for a in TINY if a not in ("--geometry", "centred")]
    assert main(["train", "--db", str(db), "--out", str(run), *tiny]) == 0
    assert json.loads((run / "config.json").read_text())["geometry"] == "fov"
    assert f"run in {run}: geometry fov" in capsys.readouterr().out
    # without a model: the identity of the recorded geometry, what --geometry fov gives, not world's
    scores = {g: tmp_path / f"{g}.csv" for g in ("recorded", "fov", "world")}
    assert main(["evaluate", "--db", str(db), "--out", str(scores["recorded"])]) == 0
    for g in ("fov", "world"):
        assert main(["evaluate", "--db", str(db), "--geometry", g, "--out", str(scores[g])]) == 0
    recorded, fov, world = (pd.read_csv(scores[g]) for g in ("recorded", "fov", "world"))
    pd.testing.assert_frame_equal(recorded, fov)
    assert not np.allclose(recorded.tre_mm, world.tre_mm)


def test_an_out_of_the_wrong_kind_is_refused_in_one_line_before_any_work(trained, tmp_path, capsys):
    data, run = trained
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    mr, us = (str(data / side / "obs000.nii.gz") for side in ("moving_images", "fixed_images"))
    for argv in (["train", "--data", str(data), "--out", str(a_file), *TINY],
                 ["register", "--model", str(run), "--moving", mr, "--fixed", us, "--out", str(a_file)],
                 ["evaluate", "--model", str(run), "--data", str(data), "--out", str(tmp_path)]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"napari-labelreg {argv[0]}: error: ") and (
            str(a_file) in err or str(tmp_path) in err), err
    assert a_file.read_text() == "not a folder"


def test_map_points_carries_mr_targets_onto_the_ultrasound_and_back(trained, tmp_path, capsys):
    """MR targets (CSV, RAS mm) onto the TRUS and back through the same registration; Slicer markups both ways."""
    import json

    data, run = trained
    images = ["--model", str(run), "--moving", str(data / "moving_images/obs000.nii.gz"),
              "--fixed", str(data / "fixed_images/obs000.nii.gz")]
    moving = io.load_volume(data / "moving_images/obs000.nii.gz").grid
    vox = np.array([[10.0, 12, 11], [14, 15, 13], [12.5, 13.5, 12.5]])
    targets = vox @ moving.affine[:3, :3].T + moving.affine[:3, 3]
    pd.DataFrame({"label": ["lesion", "apex", "base"], "x": targets[:, 0], "y": targets[:, 1],
                  "z": targets[:, 2]}).to_csv(tmp_path / "targets.csv", index=False)
    assert main(["map-points", *images, "--points", str(tmp_path / "targets.csv"), "--to", "fixed",
                 "--out", str(tmp_path / "on_us.mrk.json")]) == 0
    assert "mapped 3 points from the moving image's world to the fixed image's" in capsys.readouterr().out
    markups = json.loads((tmp_path / "on_us.mrk.json").read_text())["markups"][0]
    assert markups["coordinateSystem"] == "LPS" and [p["label"] for p in markups["controlPoints"]] == [
        "lesion", "apex", "base"]
    assert main(["map-points", *images, "--points", str(tmp_path / "on_us.mrk.json"), "--to", "moving",
                 "--out", str(tmp_path / "back.csv")]) == 0
    back = pd.read_csv(tmp_path / "back.csv")
    np.testing.assert_allclose(back[["x", "y", "z"]].to_numpy(), targets, atol=1e-3)
    # a register output folder serves as well as the model and the images
    assert main(["register", *images, "--inverse", "--out", str(tmp_path / "reg")]) == 0
    assert (tmp_path / "reg" / "inverse_ddf.nii.gz").is_file()
    assert main(["map-points", "--registration", str(tmp_path / "reg"), "--points", str(tmp_path / "targets.csv"),
                 "--to", "fixed", "--out", str(tmp_path / "again.csv")]) == 0
    again = pd.read_csv(tmp_path / "again.csv")
    on_us = np.array([p["position"] for p in markups["controlPoints"]]) * [-1, -1, 1]
    np.testing.assert_allclose(again[["x", "y", "z"]].to_numpy(), on_us, atol=1e-3)


def test_map_points_refuses_a_target_outside_the_registration_in_one_line(trained, tmp_path, capsys):
    data, run = trained
    centre = io.load_volume(data / "moving_images/obs000.nii.gz").grid
    centre = centre.affine[:3, :3] @ centre.centre + centre.affine[:3, 3]
    (tmp_path / "far.csv").write_text("label,x,y,z\nlesion,{},{},{}\nstray,5000,0,0\n".format(*centre))
    code = main(["map-points", "--model", str(run), "--moving", str(data / "moving_images/obs000.nii.gz"),
                 "--fixed", str(data / "fixed_images/obs000.nii.gz"), "--points", str(tmp_path / "far.csv"),
                 "--to", "fixed", "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "far.csv: 'stray' (point 2): outside the fixed image once mapped" in err and "lesion" not in err, err
    assert err.endswith("nothing written")
    assert not (tmp_path / "o.csv").exists()


def test_the_train_header_gives_each_stage_its_share_and_says_which_get_none():
    from dataclasses import replace

    from napari_labelreg.cli.commands import _shares
    from napari_labelreg.config import TrainConfig

    config = TrainConfig(locator=0.3, prior=0.2, iterations=2)
    assert _shares(config) == "locate 1 step, prior 0 steps (skipped), refine 1 step"
    assert _shares(replace(config, iterations=None, minutes=30)) == "locate 9 min, prior 6 min, refine 15 min"
    assert _shares(replace(config, locator=0.0, prior=0.0, iterations=400)) == "refine 400 steps"
