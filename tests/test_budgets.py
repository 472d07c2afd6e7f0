"""Budgets a newcomer can trust: refused when not positive, warned about when a busy machine made them buy too
little, continued (not restarted) by --resume; one geometry rule for every command."""

import json
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from napari_labelreg.cli import main
from napari_labelreg.config import AugmentConfig, ModelConfig, TrainConfig
from napari_labelreg.core.pairs import GEOMETRY_FILE, folder_geometry
from napari_labelreg.core.phantom import make_phantom
from napari_labelreg.pipeline import stages
from napari_labelreg.pipeline.checkpoint import CHECKPOINT
from napari_labelreg.pipeline.train import Trainer

TINY = ["--width", "4", "--spacing", "0", "--geometry", "centred"]


def one_line_error(capsys, *words) -> str:
    """The refusal: one line of stderr."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("budget", [["--minutes", "-1"], ["--minutes", "0"], ["--iterations", "0"],
                                    ["--iterations", "-5"], ["--minutes", "nan"], ["--minutes", "inf"]])
def test_a_budget_that_is_not_positive_is_refused_in_one_line_with_nothing_written(budget, phantom_folder,
                                                                                   tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(phantom_folder), "--out", str(out), *TINY, *budget]) == 2
    one_line_error(capsys, budget[0], "must be positive and finite", "nothing was written")
    assert not out.exists()


def test_ctrl_c_before_the_first_step_says_there_is_nothing_to_resume(phantom_folder, tmp_path, capsys,
                                                                      monkeypatch):
    from napari_labelreg.pipeline import train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train.Trainer, "__iter__", interrupted)
    out = tmp_path / "run"
    assert main(["train", "--data", str(phantom_folder), "--out", str(out), *TINY, "--iterations", "2"]) == 130
    assert capsys.readouterr().err.strip() == ("interrupted before the first step: nothing to resume; run the same "
                                               "command again")
    assert not (out / CHECKPOINT).exists()


def test_the_demo_refuses_a_budget_that_is_not_positive(tmp_path, capsys):
    assert main(["demo", "--iterations", "0", "--out", str(tmp_path / "demo")]) == 2
    one_line_error(capsys, "iterations must be a positive number of steps, got 0")
    assert not (tmp_path / "demo").exists()


class SlowClock:
    """A clock on which every training step takes ``step_s`` seconds (a busy machine, or a slow one)."""

    def __init__(self, step_s: float) -> None:
        self.now, self.step_s = 0.0, step_s

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def slow_steps(monkeypatch):
    """Each training step of the network moves the returned clock on."""
    clock = SlowClock(10.0)
    real = stages.train_step

    def step(*args, **kwargs):
        clock.now += clock.step_s
        return real(*args, **kwargs)

    monkeypatch.setattr(stages, "train_step", step)
    return clock


def tiny_config(**changes) -> TrainConfig:
    return replace(TrainConfig(model=ModelConfig(width=4), geometry="centred", learning_rate=1e-4,
                               augment=AugmentConfig(enabled=False), iterations=None, minutes=1.0,
                               schedule="cosine", checkpoint_every=1000), **changes)


PAIRS = [make_phantom(s).pair for s in range(2)]


def test_a_time_budget_too_small_for_the_stage_warns_and_the_run_records_it(slow_steps, tmp_path):
    from napari_labelreg.app.jobs import budget_warning

    trainer = Trainer(PAIRS, tiny_config(), tmp_path / "run", clock=slow_steps)
    reports = list(trainer)
    assert len(reports) == 6  # a minute of 10-second steps
    assert trainer.short == ["refine"] and trainer.trained["refine"]["steps"] == 6
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["trained"] == {"stages": {"refine": {"steps": 6, "seconds": 60.0, "needs": 50}},
                                 "short": ["refine"]}
    warning = budget_warning(tmp_path / "run")
    assert "refine 6 of the 50 steps it needs" in warning and "1-minute budget" in warning


def test_a_time_budget_that_buys_enough_steps_gives_no_warning(slow_steps, tmp_path):
    from napari_labelreg.app.jobs import budget_warning

    slow_steps.step_s = 0.5  # 120 steps in the minute
    trainer = Trainer(PAIRS, tiny_config(), tmp_path / "run", clock=slow_steps)
    assert len(list(trainer)) == 120 and trainer.short == []
    assert budget_warning(tmp_path / "run") is None


def test_a_run_stopped_and_resumed_spends_the_time_share_and_learning_rates_of_an_uninterrupted_one(
        slow_steps, tmp_path):
    slow_steps.step_s = 3.0  # 20 steps in the minute
    whole = list(Trainer(PAIRS, tiny_config(), tmp_path / "whole", clock=slow_steps))
    assert len(whole) == 20

    slow_steps.now = 0.0
    reports = iter(Trainer(PAIRS, tiny_config(), tmp_path / "parts", clock=slow_steps))
    first = [next(reports) for _ in range(7)]
    reports.close()  # cancelled: the checkpoint keeps every step taken
    slow_steps.now = 1000.0  # time passes while the run is stopped: none of it is the run's
    rest = list(Trainer(PAIRS, tiny_config(), tmp_path / "parts", resume=True, clock=slow_steps))
    log = pd.read_csv(tmp_path / "parts" / "log.csv")
    whole_log = pd.read_csv(tmp_path / "whole" / "log.csv")
    assert list(log.step) == list(range(1, 21))  # the same steps in all, none twice
    np.testing.assert_allclose(log.lr, whole_log.lr, rtol=1e-6)  # the schedule goes on where it stopped
    np.testing.assert_allclose(log.elapsed_s, whole_log.elapsed_s)  # elapsed_s continues across the sessions
    # step 8 was queued when the run was cancelled: logged and kept, never reported
    assert [r.step for r in first + rest] == [*range(1, 8), *range(9, 21)] and rest[-1].elapsed_s == 60.0


def test_resuming_a_finished_run_trains_no_further_without_a_larger_budget(phantom_folder, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "--data", str(phantom_folder), "--out", str(out), *TINY, "--preset", "paper"]
    assert main([*args, "--iterations", "2"]) == 0
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    said = capsys.readouterr().out
    assert "had used its whole budget (2 steps)" in said
    assert len(pd.read_csv(out / "log.csv")) == 2
    assert main([*args, "--resume", "--iterations", "3"]) == 0
    said = capsys.readouterr().out
    assert "the run's budget goes from 2 steps to 3 steps" in said and "refine 3 steps" in said
    assert list(pd.read_csv(out / "log.csv").step) == [1, 2, 3]


def test_the_end_of_run_line_gives_each_stage_s_steps_and_time(phantom_folder, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(phantom_folder), "--out", str(out), *TINY, "--iterations", "10",
                 "--checkpoint-every", "5"]) == 0
    said = capsys.readouterr().out.splitlines()[-2]  # the line before "next: ..."
    assert re.search("stages locate 3 steps in [0-9]+ s, refine 7 steps in [0-9]+ s;", said), said
    log = pd.read_csv(out / "log.csv")
    assert list(log.stage) == ["locate"] * 3 + ["refine"] * 7 and log.lr.notna().all()


def test_train_on_a_folder_that_states_centred_trains_in_centred_without_a_flag(phantom_folder, tmp_path, capsys):
    (phantom_folder / GEOMETRY_FILE).write_text("centred\n")
    out = tmp_path / "run"
    assert main(["train", "--data", str(phantom_folder), "--out", str(out), "--width", "4", "--spacing", "0",
                 "--iterations", "2", "--preset", "paper"]) == 0
    said = capsys.readouterr().out
    assert f"geometry centred (stated in {phantom_folder / GEOMETRY_FILE})" in said
    assert json.loads((out / "config.json").read_text())["geometry"] == "centred"


def test_a_folder_s_geometry_file_wins_then_headers_without_positions_mean_centred(phantom_folder, tmp_path):
    import shutil

    from napari_labelreg.core import io
    from napari_labelreg.core.geometry import Grid

    assert folder_geometry(phantom_folder)[0] == "centred"  # phantoms: both first voxels at the origin
    (phantom_folder / GEOMETRY_FILE).write_text("world")
    assert folder_geometry(phantom_folder) == ("world", f"stated in {phantom_folder / GEOMETRY_FILE}")
    (phantom_folder / GEOMETRY_FILE).write_text("sideways")
    with pytest.raises(io.DataError, match="holds one word: world, centred, fov"):
        folder_geometry(phantom_folder)

    placed = shutil.copytree(phantom_folder, tmp_path / "placed")
    (placed / GEOMETRY_FILE).unlink()
    for name in ("obs000", "obs001", "obs002"):  # scanner positions: the MR 40 mm from the TRUS
        path = placed / "moving_images" / f"{name}.nii.gz"
        volume = io.load_volume(path)
        affine = volume.grid.affine.copy()
        affine[:3, 3] += 40.0
        io.save_volume(path, volume.data, Grid(volume.grid.shape, affine))
    assert folder_geometry(placed)[0] == "world"


def test_every_command_says_which_geometry_it_uses_and_why(phantom_folder, tmp_path, capsys):
    db = tmp_path / "labels.db"
    assert main(["db", "import", str(phantom_folder), "--db", str(db)]) == 0
    assert "napari-labelreg db import: geometry centred (" in capsys.readouterr().out
    assert main(["evaluate", "--db", str(db), "--out", str(tmp_path / "e.csv")]) == 0
    assert f"geometry centred (as {db} records its pairs)" in capsys.readouterr().out
    assert main(["evaluate", "--data", str(phantom_folder), "--geometry", "fov", "--out", str(tmp_path / "f.csv")]) == 0
    assert "geometry fov (--geometry)" in capsys.readouterr().out
    assert main(["baseline", "--method", "centroid", "--data", str(phantom_folder), "--out", str(tmp_path / "b")]) == 0
    assert "napari-labelreg baseline: geometry centred (" in capsys.readouterr().out


def test_importing_a_folder_twice_points_to_skip_existing_and_imports_nothing(phantom_folder, tmp_path, capsys):
    db = tmp_path / "labels.db"
    assert main(["db", "import", str(phantom_folder), "--db", str(db)]) == 0
    capsys.readouterr()
    assert main(["db", "import", str(phantom_folder), "--db", str(db)]) == 2
    one_line_error(capsys, "3 of its 3 pairs are in", "--skip-existing imports only the new ones")


def test_a_mistyped_option_is_refused_by_its_sub_command_with_the_nearest_option(capsys):
    with pytest.raises(SystemExit) as ended:
        main(["train", "--data", "x", "--out", "y", "--minuts", "3"])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert "usage: napari-labelreg train" in err
    assert "unrecognized arguments: --minuts 3 (did you mean --minutes?)" in err


def test_the_crossval_summary_names_the_network_not_a_baseline(phantom_folder, tmp_path, capsys):
    out = tmp_path / "cv"
    assert main(["crossval", "--data", str(phantom_folder), "--folds", "3", "--fold", "0", "--out", str(out),
                 *TINY, "--iterations", "2", "--preset", "paper"]) == 0
    summary = pd.read_csv(out / "summary.csv")
    assert "network, baseline variant" in summary.to_string()
    assert "geometry centred (--geometry)" in capsys.readouterr().out
