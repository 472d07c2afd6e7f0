"""The gland prior: its field's frame and units, what it learns, how training and registration apply it."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from napari_labelreg.config import ModelConfig, TrainConfig
from napari_labelreg.core.geometry import Grid, apply_affine, fixed_to_moving, voxel_coordinates
from napari_labelreg.pipeline.registrator import Registrator
from napari_labelreg.core.io import Pair, Volume
from napari_labelreg.core.metrics import centroid_mm
from napari_labelreg.pipeline.checkpoint import load_checkpoint
from napari_labelreg.nn.networks import build_model
from napari_labelreg.nn.warp import moving_coordinates, transform_points
from napari_labelreg.core.phantom import make_phantom
from napari_labelreg.training.data import prepare_pairs
from napari_labelreg.nn.locator import GlandLocator
from napari_labelreg.pipeline.train import Trainer
from napari_labelreg.training.refine import Batcher, build_losses
from napari_labelreg.nn.prior import GlandPrior
from napari_labelreg.training.prior import prior_optimizer, train_prior
from napari_labelreg.training.schedule import Budget
from napari_labelreg.config import InferenceConfig
from napari_labelreg.pipeline.stages import Locate, Prior, Refine

TINY = dict(fixed_shape=(16, 20, 12), moving_shape=(18, 18, 16), spacing=2.5)


def linear_prior(gain: float) -> GlandPrior:
    """A prior whose field is ``gain * offset`` along every axis (trilinear interpolation keeps it exact)."""
    prior = GlandPrior(half_width_mm=30.0, points=7)
    lattice = torch.linspace(-30.0, 30.0, 7)
    with torch.no_grad():
        for axis in range(3):
            shape = [1, 1, 1]
            shape[axis] = 7
            prior.field[0, axis] = gain * lattice.view(shape).expand(7, 7, 7)
    return prior


def test_a_fresh_prior_is_the_identity_and_its_field_is_in_mm_about_the_gland():
    grid = Grid((10, 8, 6), np.diag([1.5, 2.0, 3.0, 1.0]))
    centre = np.array([6.0, 7.0, 9.0])
    assert torch.count_nonzero(GlandPrior().grid_ddf(grid, centre)) == 0
    prior = linear_prior(0.1)
    ddf = prior.grid_ddf(grid, centre)[0].permute(1, 2, 3, 0).numpy()  # grid voxels
    offsets = apply_affine(grid.affine, voxel_coordinates(grid.shape)) - centre
    np.testing.assert_allclose(ddf * grid.spacing, 0.1 * offsets, atol=1e-5)  # mm: 0.1 x the offset
    # beyond the cube the field is its edge's
    far = prior(torch.tensor([[100.0, 0.0, -100.0]], dtype=torch.float64))
    np.testing.assert_allclose(far.detach().numpy(), [[3.0, 0.0, -3.0]], atol=1e-5)
    with pytest.raises(ValueError, match="half-width"):
        GlandPrior(half_width_mm=0.0)


def shifted_landmark_pair(seed: int, shift_mm: float) -> Pair:
    """A gland (a ball) and one landmark (a cube 8 mm off its centre along axis 0); in the moving image
    the whole pair is translated at random and the landmark moved a further ``shift_mm`` along axis 0."""
    rng = np.random.default_rng(seed)
    grid = Grid.from_spacing((24, 24, 24), (2.0, 2.0, 2.0))
    mm = apply_affine(grid.affine, voxel_coordinates(grid.shape)) - 23.0  # about the volume centre

    def labels(origin, landmark_shift):
        gland = np.linalg.norm(mm - origin, axis=-1) <= 14.0
        landmark = np.all(np.abs(mm - origin - [8.0 + landmark_shift, 0.0, 0.0]) <= 3.0, axis=-1)
        return np.stack([gland, landmark])

    fixed_labels = labels(np.zeros(3), 0.0)
    moving_labels = labels(rng.uniform(-4.0, 4.0, 3), shift_mm)
    image = np.zeros(grid.shape, np.float32)
    return Pair(f"shift{seed}", Volume(image, grid), Volume(image, grid), moving_labels, fixed_labels)


def test_the_prior_learns_a_landmark_displacement_shared_by_the_training_pairs():
    """Every pair's landmark sits 4 mm further along axis 0 in the moving image: the prior, fitted by the
    training loss from the true gland centroids, displaces the fixed landmark by 4 +/- 0.75 mm on average
    over its voxels."""
    pairs = [shifted_landmark_pair(s, 4.0) for s in range(3)]
    config = TrainConfig(model=ModelConfig(width=4), geometry="centred", iterations=1, locator=0.5, prior=0.4)
    prepared = prepare_pairs(pairs, "centred", None, glands=True)
    similarity, regulariser = build_losses(config, prepared[0].grid)
    prior = GlandPrior()
    steps = train_prior(prior, prepared, similarity, regulariser, config.loss.weight, prior_optimizer(prior),
                        Budget(150, None, lambda: 0.0), seed=0)
    losses = [float(figures[0]) for _, figures in steps]
    assert losses[-1] < losses[0] - 0.05
    cube = np.stack(np.meshgrid(*[np.arange(-3.0, 3.01, 1.0)] * 3, indexing="ij"), -1).reshape(-1, 3)
    with torch.no_grad():
        at_landmark = prior(torch.as_tensor(cube + [8.0, 0.0, 0.0])).mean(0).numpy()
    assert at_landmark[0] == pytest.approx(4.0, abs=0.75)
    assert np.abs(at_landmark[1:]).max() < 0.75


def test_training_entries_see_the_moving_side_through_the_prior_and_the_augmentation():
    """Moving coordinates of an entry are ``to_moving @ (q + u(q))`` with ``q = t_moving @ x``."""
    pair = make_phantom(2, **TINY).pair
    config = TrainConfig(model=ModelConfig(width=4), geometry="centred", iterations=1, batch_size=1, locator=0.5,
                         prior=0.2)
    prepared = prepare_pairs([pair], "centred", None, glands=True)
    batcher = Batcher(prepared, config, torch.device("cpu"))
    prior = linear_prior(0.05)
    batcher.priors = [prior.grid_ddf(pp.grid, pp.fixed_gland_mm) for pp in prepared]
    inputs, _, matrices, _, priors = batcher(3)
    pp = prepared[0]
    to_moving = pp.net_to_moving.float()
    t_moving = torch.linalg.inv(to_moving) @ matrices[0].float()  # the draw's augmentation
    assert not torch.allclose(t_moving, torch.eye(4), atol=1e-3)
    shape = pp.grid.shape
    q = transform_points(t_moving[None], voxel_coordinates_t(shape))
    world = apply_affine(pp.grid.affine, q[0].double().numpy()) - pp.fixed_gland_mm
    u_vox = 0.05 * world / pp.grid.spacing  # the linear prior, in grid voxels (axis-aligned grid)
    expected = transform_points(to_moving[None], q + torch.as_tensor(u_vox, dtype=torch.float32)[None])
    got = moving_coordinates(matrices.float(), shape, priors)
    # away from the lattice's and the grid's edges, where the fields are clamped
    inside = torch.as_tensor(np.abs(world) < 25.0).all(-1) & ((q[0] >= 0) & (q[0] <= torch.tensor(shape) - 1.0)).all(-1)
    inside = inside[None]
    torch.testing.assert_close(got[inside], expected[inside], atol=2e-3, rtol=0)
    # without a prior the batch says so, and the network's input is the plain start
    plain = Batcher(prepared, config, torch.device("cpu"))(3)
    assert plain[4] is None and not torch.allclose(plain[0], inputs)


def voxel_coordinates_t(shape):
    return torch.as_tensor(voxel_coordinates(shape), dtype=torch.float32)


def perfect_locator(pair: Pair) -> tuple[GlandLocator, dict]:
    """A locator that finds the labelled glands' centroids (world mm), and those centroids by side."""
    g = pair.gland_index
    centroids = {"moving": centroid_mm(pair.moving_labels[g], pair.moving.grid),
                 "fixed": centroid_mm(pair.fixed_labels[g], pair.fixed.grid)}
    locator = GlandLocator(width=4)
    locator.locate = lambda volume, side, precision="bf16": centroids[side]
    return locator, centroids


FP32 = InferenceConfig(precision="fp32", device="cpu")


def stages(locator=None, prior=None, model=None) -> list:
    """The stages of the given parts, a fresh network last (its DDF is zero)."""
    parts = [Locate(locator=locator)] if locator is not None else []
    parts += [Prior(prior=prior)] if prior is not None else []
    return [*parts, Refine(model=model if model is not None else build_model(ModelConfig(width=4)))]


def test_registration_adds_the_prior_about_the_located_fixed_gland():
    pair = make_phantom(5, **TINY).pair
    config = TrainConfig(model=ModelConfig(width=4), geometry="centred", iterations=1, locator=0.25, prior=0.25)
    locator, centroids = perfect_locator(pair)
    prior = linear_prior(0.05)
    with pytest.raises(ValueError, match="a Locate stage must come before it"):
        Registrator(stages(prior=prior), config)
    result = Registrator(stages(locator, prior), config, FP32).register_pair(pair)
    # a fresh network predicts zero: the DDF is the located glands' shift plus the prior about the fixed gland
    shift = Registrator(stages(locator), config, FP32).register_pair(pair).ddf_mm
    offsets = apply_affine(pair.fixed.grid.affine, voxel_coordinates(pair.fixed.grid.shape)) - centroids["fixed"]
    np.testing.assert_allclose(result.ddf_mm, shift + 0.05 * offsets, atol=1e-4)
    np.testing.assert_allclose(result.matrix, fixed_to_moving(pair.fixed.grid, pair.moving.grid, "centred"))


def test_a_run_fits_its_prior_after_its_locator_keeps_it_and_resumes_as_if_uninterrupted(tmp_path):
    pairs = [make_phantom(s, **TINY).pair for s in range(2)]
    config = TrainConfig(model=ModelConfig(width=4), geometry="centred", learning_rate=1e-3, iterations=8,
                         locator=0.25, prior=0.125, checkpoint_every=100, precision="fp32")
    reports = list(Trainer(pairs, config, tmp_path / "straight"))
    assert [(r.stage, r.step) for r in reports] == [("locate", 1), ("locate", 2), ("prior", 1)] + [
        ("refine", s) for s in range(1, 6)]
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")["stages"]
    assert torch.count_nonzero(straight["prior"]["weights"]["field"]) > 0
    # stopped after two network steps, resumed: the prior is kept, not refitted, and the weights match
    run = Trainer(pairs, config, tmp_path / "resumed")
    for report in run:
        if report.stage == "refine" and report.step == 2:
            break
    run.checkpoint()
    resumed = Trainer(pairs, config, tmp_path / "resumed", resume=True)
    assert [r.stage for r in resumed] == ["refine"] * 2  # step 2 was reported once step 3 was taken
    state = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["stages"]
    torch.testing.assert_close(state["prior"]["weights"]["field"], straight["prior"]["weights"]["field"])
    for key, value in straight["refine"]["weights"].items():
        torch.testing.assert_close(state["refine"]["weights"][key], value, rtol=0, atol=0, msg=key)
    assert Registrator.from_run(tmp_path / "straight").prior is not None


def test_a_prior_needs_a_locator_and_a_share_that_leaves_a_budget():
    with pytest.raises(ValueError, match="locator"):
        TrainConfig(iterations=1, prior=0.1)
    with pytest.raises(ValueError, match="prior must be a share"):
        TrainConfig(iterations=1, locator=0.6, prior=0.4)


def test_the_network_weight_scales_the_networks_ddf_over_the_located_glands_and_prior():
    pair = make_phantom(5, **TINY).pair
    config = TrainConfig(model=ModelConfig(width=4), geometry="centred", iterations=1, locator=0.25, prior=0.25)
    locator, _ = perfect_locator(pair)
    trained = build_model(config.model)
    with torch.no_grad():  # a network whose DDF is not zero
        trained.heads["4"].bias.copy_(torch.tensor([0.7, -0.4, 0.3]))
    prior = linear_prior(0.05)

    def ddf(weight=1.0):
        use = replace(FP32, network_weight=weight)
        return Registrator(stages(locator, prior, trained), config, use).register_pair(pair).ddf_mm

    full, alone = ddf(), ddf(0.0)
    start = Registrator(stages(locator, prior), config, FP32).register_pair(pair).ddf_mm
    np.testing.assert_allclose(alone, start, atol=1e-5)  # weight 0: the located shift and the prior alone
    assert np.abs(full - alone).max() > 0.5
    np.testing.assert_allclose(ddf(0.25), alone + 0.25 * (full - alone), atol=1e-5)  # only the network's part
    with pytest.raises(ValueError, match="no gland locator"):
        Registrator(stages(model=trained), config, replace(FP32, network_weight=0.0))
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="network_weight"):
            InferenceConfig(network_weight=bad)


def test_validation_during_training_registers_through_the_locator_and_prior(tmp_path):
    from napari_labelreg.evaluation.scoring import validator

    pairs = [make_phantom(s, **TINY).pair for s in range(2)]
    config = TrainConfig(model=ModelConfig(width=4), geometry="centred", iterations=4, locator=0.25, prior=0.25,
                         checkpoint_every=100, precision="fp32")
    reports = list(Trainer(pairs, config, tmp_path, validator=validator(pairs[:1]), validate_every=1))
    assert [r.stage for r in reports] == ["locate", "prior", "refine", "refine"]
    assert all(np.isfinite(r.val_tre_mm) and 0.0 <= r.val_dice <= 1.0 for r in reports[2:])
