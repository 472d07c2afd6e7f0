"""Sampling, augmentation, checkpoints, resume, recovery of a known deformation."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_labelreg.config import AugmentConfig, ModelConfig, TrainConfig
from napari_labelreg.core.geometry import Grid, ddf_mm_to_voxels
from napari_labelreg.core.io import DataError
from napari_labelreg.pipeline.checkpoint import load_checkpoint
from napari_labelreg.nn.warp import moving_coordinates, sample
from napari_labelreg.core.phantom import make_phantom
from napari_labelreg.training.data import prepare_pairs
from napari_labelreg.pipeline.train import train
from napari_labelreg.training.refine import build_losses
from napari_labelreg.training.sampling import affine_matrix, draw_affine, draw_quartets, step_generator

TINY = dict(fixed_shape=(16, 20, 12), moving_shape=(18, 18, 16), spacing=2.5)


def tiny_config(**kw):
    base = dict(model=ModelConfig(width=4), geometry="centred", learning_rate=1e-3, iterations=3, checkpoint_every=100)
    return TrainConfig(**{**base, **kw})


def test_two_stage_sampling_fixed_batch_and_uniform_over_pairs():
    counts = [1, 6, 2]  # label counts differ: pairs must still be drawn uniformly
    draws = [q for step in range(600) for q in draw_quartets(counts, 4, step_generator(0, 0, step))]
    assert len(draws) == 2400
    pairs = np.bincount([p for p, _ in draws], minlength=3) / len(draws)
    np.testing.assert_allclose(pairs, 1 / 3, atol=0.03)
    labels_of_1 = np.bincount([lab for p, lab in draws if p == 1], minlength=6)
    assert labels_of_1.min() > 0 and all(lab < counts[p] for p, lab in draws)


def test_sampling_is_a_function_of_seed_rank_step():
    a = draw_quartets([3, 3, 3], 4, step_generator(1, 0, 5))
    assert a == draw_quartets([3, 3, 3], 4, step_generator(1, 0, 5))
    assert a != draw_quartets([3, 3, 3], 4, step_generator(1, 1, 5))


def test_augmentation_has_no_flips_and_disabled_is_identity():
    grid = Grid.from_spacing((10, 12, 8), (1.0, 2.0, 1.5))
    cfg = AugmentConfig(rotation_deg=20, scale=0.2, shear=0.1)
    dets = [np.linalg.det(affine_matrix(draw_affine(cfg, step_generator(0, 0, s)), grid)[:3, :3]) for s in range(200)]
    assert min(dets) > 0
    off = affine_matrix(draw_affine(AugmentConfig(enabled=False), step_generator(0, 0, 1)), grid)
    np.testing.assert_allclose(off, np.eye(4), atol=1e-12)


def test_pairs_without_labels_are_refused():
    pair = make_phantom(0, **TINY).pair
    from dataclasses import replace

    empty = replace(pair, moving_labels=pair.moving_labels[:0], fixed_labels=pair.fixed_labels[:0])
    with pytest.raises(DataError, match="phantom000"):
        prepare_pairs([empty], "centred", None)


def test_resume_gives_the_same_next_step_as_an_uninterrupted_run(tmp_path):
    pairs = [make_phantom(s, **TINY).pair for s in range(2)]
    list(train(pairs, tiny_config(iterations=3), tmp_path / "straight"))
    list(train(pairs, tiny_config(iterations=2), tmp_path / "resumed"))
    list(train(pairs, tiny_config(iterations=3), tmp_path / "resumed", resume=True))
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    a, b = a["stages"]["refine"], b["stages"]["refine"]
    assert a["step"] == b["step"] == 3
    for key, value in a["weights"].items():
        assert torch.equal(value, b["weights"][key]), key


@pytest.mark.parametrize("prefilter", [False, True])
def test_all_labels_is_the_exact_mean_of_the_one_label_losses(prefilter):
    from napari_labelreg.config import LossConfig
    from napari_labelreg.nn.networks import build_model
    from napari_labelreg.training.data import prepare_pairs
    from napari_labelreg.training.refine import Batcher, build_losses, compute_loss

    pair = make_phantom(3, **TINY).pair  # one pair: every draw picks it, with a random label
    assert pair.num_labels >= 3
    loss_cfg = LossConfig(prefilter=prefilter, scales_mm=(0.0, 2.0, 4.0))
    cfg = tiny_config(batch_size=1, loss=loss_cfg, label_sampling="all", precision="fp32")
    prepared = prepare_pairs([pair], "centred", None)
    model = build_model(cfg.model)
    with torch.no_grad():  # a non-zero DDF, so the warp matters
        model.heads["4"].bias.copy_(torch.tensor([0.7, -0.4, 0.3]))
    similarity, regulariser = build_losses(cfg, prepared[0].grid)
    channels = 3 if prefilter else 1
    every = Batcher(prepared, cfg, torch.device("cpu"))(5)
    assert every[1][0].shape[1] == pair.num_labels * channels
    _, all_sim, _ = compute_loss(model, every, similarity, regulariser, 0.5, torch.device("cpu"), "fp32",
                                 label_channels=channels)
    inputs, fixed, matrices, moving, priors = every
    one = [compute_loss(model, (inputs, [fixed[0][:, k * channels:(k + 1) * channels]], matrices,
                                [moving[0][:, k * channels:(k + 1) * channels]], priors),
                        similarity, regulariser, 0.5, torch.device("cpu"), "fp32", label_channels=channels)[1]
           for k in range(pair.num_labels)]
    assert float(all_sim) == pytest.approx(float(torch.stack(one).mean()), rel=1e-6)
    assert max(map(float, one)) - min(map(float, one)) > 1e-3  # the labels do differ
    single = Batcher(prepared, replace(cfg, label_sampling="one"), torch.device("cpu"))(5)
    assert single[1][0].shape[1] == channels and torch.equal(single[0], inputs)  # same draws, same images


def test_the_folding_weight_adds_the_folding_of_the_whole_ddf_to_the_loss():
    from napari_labelreg.cli import build_parser, config_from_args, use_from_args
    from napari_labelreg.config import PRESETS, LossConfig
    from napari_labelreg.nn.losses import folding
    from napari_labelreg.training.refine import Batcher, compute_loss

    prepared = prepare_pairs([make_phantom(3, **TINY).pair], "centred", None)
    cfg = tiny_config(batch_size=2, precision="fp32")
    similarity, regulariser = build_losses(cfg, prepared[0].grid)
    batch = Batcher(prepared, cfg, torch.device("cpu"))(0)
    shape = batch[0].shape[2:]
    axis0 = torch.arange(shape[0], dtype=torch.float32).view(1, 1, -1, 1, 1).expand(2, 1, *shape)
    mirror = torch.cat([-2 * axis0, torch.zeros(2, 2, *shape)], 1)  # x -> -x along axis 0: folding 1

    def network(x):
        return mirror

    plain = compute_loss(network, batch, similarity, regulariser, 0.5, torch.device("cpu"), "fp32")
    penalised = compute_loss(network, batch, similarity, regulariser, 0.5, torch.device("cpu"), "fp32",
                             folding_weight=0.7)
    assert float(folding(mirror).mean()) == pytest.approx(1.0)
    assert float(penalised[0] - plain[0]) == pytest.approx(0.7, rel=1e-5)
    assert float(penalised[2]) == float(plain[2]) == pytest.approx(0.0, abs=1e-6)  # bending energy cannot see it
    # the prior is part of the whole DDF: a prior that undoes the mirror leaves nothing to penalise
    unfolded = compute_loss(network, (*batch[:4], -mirror), similarity, regulariser, 0.5, torch.device("cpu"),
                            "fp32", folding_weight=0.7)
    assert float(unfolded[0] - unfolded[1] - 0.5 * unfolded[2]) == pytest.approx(0.0, abs=1e-6)
    # the cpu preset penalises folding, the paper does not; the CLI sets it; negative weights are refused
    assert PRESETS["cpu"].loss.folding == 1.0 and PRESETS["paper"].loss.folding == 0.0
    args = build_parser().parse_args(["train", "--data", "d", "--out", "o", "--folding", "0.3",
                                      "--network-weight", "0.5"])
    assert config_from_args(args).loss.folding == 0.3 and use_from_args(args).network_weight == 0.5
    with pytest.raises(ValueError, match="folding"):
        LossConfig(folding=-1.0)


def test_cosine_schedule_values_and_resume(tmp_path):
    from napari_labelreg.training.schedule import Budget, budgeted_steps, cosine

    def rates(budget, start=0, clock_steps=None):
        optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        out = []
        for _ in budgeted_steps(optimizer, lambda used: cosine(1e-3, used), budget, start):
            out.append(optimizer.param_groups[0]["lr"])
        return out

    np.testing.assert_allclose(rates(Budget(4, None, lambda: 0.0)),
                               1e-3 * np.array([1, (1 + np.sqrt(0.5)) / 2, 0.5, (1 - np.sqrt(0.5)) / 2]))
    np.testing.assert_allclose(rates(Budget(4, None, lambda: 0.0), start=2), 1e-3 * np.array([0.5, (1 - np.sqrt(0.5)) / 2]))
    ticks = iter([0.0, 60.0, 500.0])  # the clock at the start, then before each step: 60 s of 120, then past the end
    assert rates(Budget(None, 120.0, lambda: next(ticks))) == [pytest.approx(5e-4)]
    # interrupted after 2 of 4 steps and resumed: the same weights as straight through
    pairs = [make_phantom(s, **TINY).pair for s in range(2)]
    list(train(pairs, tiny_config(iterations=4, schedule="cosine"), tmp_path / "straight"))
    run = train(pairs, tiny_config(iterations=4, schedule="cosine"), tmp_path / "resumed")
    next(run), next(run)
    run.close()
    list(train(pairs, tiny_config(iterations=4, schedule="cosine"), tmp_path / "resumed", resume=True))
    a = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["stages"]["refine"]["weights"]
    b = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["stages"]["refine"]["weights"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key
    with pytest.raises(ValueError, match="schedule"):
        tiny_config(schedule="linear")


def test_closing_the_generator_saves_a_usable_checkpoint_and_logs_every_step_it_took(tmp_path):
    pairs = [make_phantom(0, **TINY).pair]
    run = train(pairs, tiny_config(iterations=50), tmp_path)
    assert [next(run).step, next(run).step] == [1, 2]
    run.close()  # what a GUI's cancel does
    # step 2 is reported once step 3 is under way (the host reads a step late): the checkpoint keeps all three
    # steps, and the log has a row for each
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["stages"]["refine"]["step"] == 3 and state["config"].iterations == 50
    log = (tmp_path / "log.csv").read_text().splitlines()
    assert [row.split(",")[1] for row in log[1:]] == ["1", "2", "3"]
    from napari_labelreg.pipeline.registrator import Registrator

    assert not Registrator.from_run(tmp_path).stages[-1].model.training


def test_a_checkpoint_taken_at_a_report_holds_exactly_the_steps_reported(tmp_path):
    """Reports come a step late, except where the run checkpoints: there the stage waits for the step."""
    pairs = [make_phantom(0, **TINY).pair]
    steps = []
    for report in train(pairs, tiny_config(iterations=5, checkpoint_every=2), tmp_path):
        if report.checkpoint:
            steps.append((report.step, load_checkpoint(report.checkpoint)["stages"]["refine"]["step"]))
    assert steps == [(2, 2), (4, 4)]


def test_a_step_whose_loss_is_not_finite_is_skipped_on_the_device_and_stops_the_run_in_one_line(
        tmp_path, monkeypatch, capsys):
    from napari_labelreg.cli.main import main
    from napari_labelreg.training import refine

    calls = []

    def poisoned(*args, **kw):  # the second step's loss (and so its gradients) become NaN
        loss, sim, reg = compute_loss(*args, **kw)
        calls.append(1)
        return (loss * float("nan"), sim, reg) if len(calls) == 2 else (loss, sim, reg)

    compute_loss = refine.compute_loss
    monkeypatch.setattr(refine, "compute_loss", poisoned)
    pairs = [make_phantom(0, **TINY).pair]
    with pytest.raises(FloatingPointError, match="refine step 2: the loss was nan; training stopped there, the "
                                                 "weights as after step 1"):
        list(train(pairs, tiny_config(iterations=3), tmp_path / "run"))
    # step 2 is read once step 3 is queued: both were skipped on the device (the flag stays up), their
    # forward passes' moves of BatchNorm's running statistics undone there, so the run ends with step 1's
    # weights and buffers, bit for bit those of a run of one step, and the log and checkpoint agree
    list(train(pairs, tiny_config(iterations=1), tmp_path / "one"))
    state, one = (load_checkpoint(tmp_path / run / "checkpoint.pt")["stages"]["refine"] for run in ("run", "one"))
    assert state["step"] == 1
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {1}  # one update applied
    assert any("running_var" in key for key in one["weights"])
    for key, value in one["weights"].items():
        assert torch.equal(state["weights"][key], value), key
    assert [row.split(",")[1] for row in (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]] == ["1"]

    # the command line says so in one line
    from conftest import write_phantom_folder

    calls.clear()
    data = write_phantom_folder(tmp_path / "data", count=1)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "cli"), "--device", "cpu", "--preset",
                 "paper", "--iterations", "3", "--width", "4", "--geometry", "centred", "--spacing", "0"]) == 2
    err = capsys.readouterr().err  # the progress bar, then one line
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("napari-labelreg train: error: refine step 2: the loss was nan")


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="checkpoint.pt: cannot read"):
        load_checkpoint(path)


def test_known_deformation_is_recovered_through_warp_and_loss():
    """Gradient descent on a free DDF through the training warp and loss finds the phantom's DDF."""
    phantom = make_phantom(3, amplitude_mm=0.0, translation_mm=4.0, n_landmarks=4)
    cfg = TrainConfig(geometry="centred", loss=TrainConfig().loss.__class__(weight=1.0))
    pp = prepare_pairs([phantom.pair], "centred", None)[0]
    similarity, _ = build_losses(cfg, pp.grid)
    shift = torch.zeros(3, requires_grad=True)  # a translation, in fixed voxels
    opt = torch.optim.Adam([shift], lr=0.1)
    m = pp.net_to_moving[None].float().expand(pp.num_labels, 4, 4)
    for _ in range(150):
        ddf = shift.view(1, 3, 1, 1, 1).expand(pp.num_labels, 3, *pp.grid.shape)
        warped = sample(pp.moving_labels[:, None], moving_coordinates(m, pp.grid.shape, ddf))
        loss = similarity(warped, pp.fixed_labels[:, None]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    truth = ddf_mm_to_voxels(phantom.ddf_mm[0, 0, 0], phantom.pair.fixed.grid)
    error_mm = np.linalg.norm((shift.detach().numpy() - truth) * phantom.pair.fixed.grid.spacing)
    initial_mm = np.linalg.norm(truth * phantom.pair.fixed.grid.spacing)
    assert initial_mm > 2.5
    assert error_mm < 0.5, (shift, truth)


@pytest.mark.slow
def test_network_fits_its_training_pairs(tmp_path):
    """A small network trained on phantom pairs brings their labels closer than identity.

    Measured in eval mode (BatchNorm running statistics), as at inference.
    """
    from napari_labelreg.evaluation.scoring import score
    from napari_labelreg.pipeline.registrator import Registrator, identity_registration

    phantoms = [make_phantom(s, amplitude_mm=2.0, translation_mm=5.0) for s in range(4)]
    cfg = tiny_config(iterations=120, learning_rate=1e-4, model=ModelConfig(width=8),
                      augment=AugmentConfig(rotation_deg=3, scale=0.03, shear=0, translation_mm=1.0))
    for _ in train([p.pair for p in phantoms], cfg, tmp_path):
        pass
    reg = Registrator.from_run(tmp_path, precision="fp32")
    before = [score(identity_registration(p.pair.moving, p.pair.fixed, "centred"), p.pair) for p in phantoms]
    after = [score(reg.register_pair(p.pair), p.pair) for p in phantoms]
    tre_before = np.mean([s["tre_all_mm"] for s in before])
    tre_after = np.mean([s["tre_all_mm"] for s in after])
    assert tre_after < 0.75 * tre_before, (tre_before, tre_after)
    assert all(s["folding_voxels"] == 0 for s in after)
