"""Runs of several registration networks: their shares, schedules, checkpoints, resume and averaged DDFs."""

import numpy as np
import pytest
import torch

from napari_labelreg.cli import build_parser, config_from_args
from napari_labelreg.config import ModelConfig, TrainConfig
from napari_labelreg.inference import Registrator
from napari_labelreg.nn.checkpoint import load_checkpoint, load_model
from napari_labelreg.nn.networks import Ensemble, build_model
from napari_labelreg.phantom import make_phantom
from napari_labelreg.training.locator import load_locator
from napari_labelreg.training.loop import Trainer, train

TINY = dict(fixed_shape=(16, 20, 12), moving_shape=(18, 18, 16), spacing=2.5)


def members_config(**kw):
    base = dict(model=ModelConfig(width=4), geometry="centred", learning_rate=1e-3, iterations=6, members=3,
                schedule="cosine", checkpoint_every=100, precision="fp32")
    return TrainConfig(**{**base, **kw})


def test_members_train_in_turn_each_with_its_own_cosine_and_register_as_the_mean_of_their_ddfs(tmp_path):
    pairs = [make_phantom(s, **TINY).pair for s in range(2)]
    trainer = Trainer(pairs, members_config(), tmp_path)
    rates = [(r.step, trainer.optimizer.param_groups[0]["lr"]) for r in trainer]
    # six steps shared out two by two; each member's rate starts at the top of its own cosine
    assert [step for step, _ in rates] == [1, 2, 3, 4, 5, 6]
    assert [rate for _, rate in rates] == pytest.approx([1e-3, 5e-4, 1e-3, 5e-4, 1e-3, 5e-4])
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["step"] == 6 and len(state["extra"]["members"]) == 2
    weights = [*state["extra"]["members"], state["model"]]
    first = "encoder.downs.0.conv.0.weight"
    assert first in weights[0]
    for a, b in [(0, 1), (0, 2), (1, 2)]:  # drawn from seeds 0, 1, 2: different networks
        assert not torch.allclose(weights[a][first], weights[b][first])
    ensemble, _ = load_model(tmp_path / "checkpoint.pt")
    assert isinstance(ensemble, Ensemble) and len(ensemble.members) == 3 and not ensemble.training

    config = state["config"]
    singles = []
    for w in weights:
        model = build_model(config.model)
        model.load_state_dict(w)
        singles.append(Registrator(model, config, "cpu", "fp32").register_pair(pairs[0]).ddf_mm)
    together = Registrator.from_run(tmp_path, device="cpu", precision="fp32").register_pair(pairs[0]).ddf_mm
    assert np.abs(singles[0] - singles[1]).max() > 1e-3  # the members disagree, so the mean is a test
    np.testing.assert_allclose(together, np.mean(singles, axis=0), atol=1e-5)


def test_a_run_of_members_stopped_inside_a_member_and_resumed_ends_as_one_run_straight_through(tmp_path):
    pairs = [make_phantom(s, **TINY).pair for s in range(2)]
    list(train(pairs, members_config(), tmp_path / "straight"))
    run = train(pairs, members_config(), tmp_path / "resumed")
    assert [next(run).step for _ in range(3)] == [1, 2, 3]  # the second member has taken one step
    run.close()
    stopped = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert stopped["step"] == 3 and len(stopped["extra"]["members"]) == 1
    assert isinstance(load_model(tmp_path / "resumed" / "checkpoint.pt")[0], Ensemble)  # usable as it stands
    with pytest.raises(ValueError, match="trains 3 members, not 2"):
        Trainer(pairs, members_config(members=2), tmp_path / "resumed", resume=True)
    assert [r.step for r in train(pairs, members_config(), tmp_path / "resumed", resume=True)] == [4, 5, 6]
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    for wa, wb in zip([*a["extra"]["members"], a["model"]], [*b["extra"]["members"], b["model"]], strict=True):
        for key, value in wa.items():
            assert torch.equal(value, wb[key]), key


def test_a_minutes_budget_is_shared_out_between_the_members(tmp_path):
    pairs = [make_phantom(0, **TINY).pair]
    trainer = Trainer(pairs, members_config(iterations=None, minutes=3.0, locator=0.5), tmp_path)
    assert trainer.budget_s == pytest.approx(30.0)  # 3 minutes less the locator's half, over three members
    assert trainer.learning_rate(15.0) == pytest.approx(5e-4) and trainer.learning_rate(30.0) == 0.0


def test_the_locator_keeps_its_own_grid_whatever_the_networks(tmp_path):
    pairs = [make_phantom(s, **TINY).pair for s in range(2)]
    config = members_config(members=1, iterations=2, locator=0.5, spacing_mm=5.0)
    list(Trainer(pairs, config, tmp_path))
    assert load_locator(tmp_path / "checkpoint.pt").spacing_mm == 3.0
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    del state["extra"]["locator_spacing_mm"]  # a run from before the entry: its locator used the network's grid
    torch.save(state, tmp_path / "checkpoint.pt")
    assert load_locator(tmp_path / "checkpoint.pt").spacing_mm == 5.0


def test_members_option_and_bad_counts():
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--members", "2"])
    assert config_from_args(args).members == 2
    with pytest.raises(ValueError, match="members must be >= 1"):
        members_config(members=0)
    with pytest.raises(ValueError, match="cannot train 3 members"):
        members_config(iterations=2)
