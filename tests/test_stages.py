"""The pipeline of stages: the same registrations and training steps as before the stages existed, and
resumption inside any stage.

tests/data/format2/ was written by the version before the stages (commit 4e9e9f3, checkpoint format 2;
its make.py says how): two tiny runs, the DDFs they gave on an unseen phantom pair, and every step's loss.
"""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_labelreg.config import InferenceConfig, LossConfig, ModelConfig, TrainConfig
from napari_labelreg.core.io import DataError
from napari_labelreg.core.phantom import make_phantom
from napari_labelreg.pipeline.checkpoint import CHECKPOINT, FORMAT, load_checkpoint
from napari_labelreg.pipeline.registrator import Registrator
from napari_labelreg.pipeline.stages import Locate, Prior, Refine
from napari_labelreg.pipeline.train import TRAINING_SET, Trainer

BEFORE = Path(__file__).parent / "data" / "format2"
TINY = dict(fixed_shape=(16, 20, 12), moving_shape=(18, 18, 16), spacing=2.5)
STAGE = {"locator": "locate", "prior": "prior", "registration": "refine"}  # the old phases' names


@pytest.mark.parametrize("run", ["staged", "paper"])
def test_a_checkpoint_written_before_the_stages_registers_exactly_as_it_did(run):
    expected = np.load(BEFORE / "ddfs.npz")
    test = make_phantom(9, **TINY).pair
    for weight in (None, 1.0):
        registrator = Registrator.from_run(BEFORE / f"{run}.pt", precision="fp32", network_weight=weight)
        np.testing.assert_array_equal(registrator.register_pair(test).ddf_mm, expected[f"{run}_w{weight}"])
    names = [s.name for s in registrator.stages]
    assert names == (["locate", "prior", "refine"] if run == "staged" else ["refine"])


def test_the_converter_keeps_the_runs_weight_and_counts_the_steps_of_every_stage_in_its_budget():
    state = load_checkpoint(BEFORE / "staged.pt")
    assert state["format"] == FORMAT == 3 and state["use"] == InferenceConfig(network_weight=0.5)
    config = state["config"]
    # then: 4 network steps, the locator and prior taking 0.5 and 0.25 of them on top; now 7 steps shared out
    assert config.iterations == 7 and config.stage_budgets() == {"locate": (2, None), "prior": (1, None),
                                                                 "refine": (4, None)}
    assert state["fitted"] == ["locate", "prior"] and state["stages"]["refine"]["step"] == 4
    assert state["stages"]["locate"]["config"] == {"width": 2, "spacing_mm": 3.0, "cut": True}


def test_training_takes_the_steps_it_took_before_the_stages(tmp_path):
    """Same seed, same steps: every loss of the old run again, so figures measured before carry over."""
    recorded = json.loads((BEFORE / "reports.json").read_text())
    pairs = [make_phantom(s, **TINY).pair for s in range(3)]
    for run, steps in recorded.items():
        config = load_checkpoint(BEFORE / f"{run}.pt")["config"]
        reports = [(r.stage, r.step, r.loss) for r in Trainer(pairs, config, tmp_path / run)]
        assert [(s, n) for s, n, _ in reports] == [(STAGE[phase], n) for phase, n, _ in steps]
        np.testing.assert_allclose([loss for *_, loss in reports], [loss for *_, loss in steps], rtol=1e-5)


def staged_config(**changes) -> TrainConfig:
    """Three stages of 2 steps each, with the preset's sampling."""
    return replace(TrainConfig(model=ModelConfig(width=2), geometry="centred", learning_rate=1e-3, iterations=6,
                               locator=1 / 3, prior=1 / 3, checkpoint_every=100, precision="fp32", spacing_mm=4.0,
                               label_sampling="all", schedule="cosine",
                               loss=LossConfig(folding=1.0)), **changes)


@pytest.mark.parametrize("stop_in", ["locate", "prior", "refine"])
def test_a_run_stopped_inside_any_stage_resumes_with_the_step_it_would_have_taken(tmp_path, stop_in):
    pairs = [make_phantom(s, **TINY).pair for s in range(2)]
    config = staged_config(iterations=9)
    straight = [(r.stage, r.step, r.loss) for r in Trainer(pairs, config, tmp_path / "straight")]
    assert [(s, n) for s, n, _ in straight] == [(s, n) for s in ("locate", "prior", "refine") for n in (1, 2, 3)]
    run = iter(Trainer(pairs, config, tmp_path / "stopped"))
    for report in run:
        if (report.stage, report.step) == (stop_in, 1):
            break
    run.close()  # as a GUI's cancel: the checkpoint is written inside the stage
    # a step is reported once the next is taken (its figures are read a step late): stopped at report 1,
    # the stage has taken 2 steps, and the checkpoint keeps both
    taken = 2
    assert load_checkpoint(tmp_path / "stopped" / CHECKPOINT)["stages"][stop_in]["step"] == taken
    resumed = [(r.stage, r.step, r.loss) for r in Trainer(pairs, config, tmp_path / "stopped", resume=True)]
    first = [s[:2] for s in straight].index((stop_in, taken)) + 1
    assert [(s, n) for s, n, _ in resumed] == [(s, n) for s, n, _ in straight[first:]]
    np.testing.assert_allclose([x for *_, x in resumed], [x for *_, x in straight[first:]], rtol=1e-6)
    a, b = (load_checkpoint(tmp_path / d / CHECKPOINT)["stages"] for d in ("straight", "stopped"))
    for name in a:
        for key, value in a[name]["weights"].items():
            torch.testing.assert_close(b[name]["weights"][key], value, rtol=1e-6, atol=1e-7, msg=f"{name} {key}")


def test_a_checkpoint_keeps_each_stages_own_config_and_the_use_it_was_trained_for(tmp_path):
    pairs = [make_phantom(s, **TINY).pair for s in range(2)]
    list(Trainer(pairs, staged_config(), tmp_path, use=InferenceConfig(network_weight=0.25)))
    # whoever trains (CLI, widget, script), the run records what it trained on, for evaluate's warning
    assert set(json.loads((tmp_path / TRAINING_SET).read_text())) == {p.name for p in pairs}
    state = load_checkpoint(tmp_path / CHECKPOINT)
    assert state["use"].network_weight == 0.25 and state["fitted"] == ["locate", "prior"]
    assert state["stages"]["prior"]["config"] == {"half_width_mm": 60.0, "points": 21}
    assert "optimizer" not in state["stages"]["locate"] and "optimizer" in state["stages"]["refine"]
    registrator = Registrator.from_run(tmp_path)
    assert [type(s) for s in registrator.stages] == [Locate, Prior, Refine]
    assert registrator.use.network_weight == 0.25
    assert Registrator.from_run(tmp_path, network_weight=1.0, precision="fp32").use == InferenceConfig(1.0, "fp32")


def test_a_run_stopped_before_a_stage_before_the_network_was_trained_is_refused_by_name(tmp_path):
    pairs = [make_phantom(s, **TINY).pair for s in range(2)]
    run = iter(Trainer(pairs, staged_config(), tmp_path))
    next(run)
    run.close()
    with pytest.raises(DataError, match=f"{tmp_path}.*stopped before its locate stage was trained; resume it"):
        Registrator.from_run(tmp_path)
    with pytest.raises(ValueError, match="stages were locate, prior, refine; these settings make refine"):
        Trainer(pairs, staged_config(locator=0.0, prior=0.0), tmp_path, resume=True)
