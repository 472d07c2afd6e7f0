"""The gland locator: the start it gives, where it is applied, and how a run keeps it."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from pathlib import Path

from napari_labelreg.config import InferenceConfig, ModelConfig, TrainConfig
from napari_labelreg.pipeline.checkpoint import load_checkpoint
from napari_labelreg.pipeline.stages import Locate, Refine
from napari_labelreg.core.geometry import Grid, apply_affine, centroid_shift, fixed_to_moving, translation
from napari_labelreg.pipeline.registrator import Registrator
from napari_labelreg.core.io import DataError, Volume
from napari_labelreg.core.metrics import centroid_mm
from napari_labelreg.nn.networks import build_model
from napari_labelreg.core.phantom import make_phantom
from napari_labelreg.nn.grid import network_grid
from napari_labelreg.nn.locator import GlandLocator
from napari_labelreg.training.data import prepare_pairs
from napari_labelreg.pipeline.train import Trainer

TINY = dict(fixed_shape=(16, 20, 12), moving_shape=(18, 18, 16), spacing=2.5)
BEFORE = Path(__file__).parent / "data" / "format2"  # see test_stages.py


def tilted_grid(shape, spacing, origin):
    """A grid whose axes are rotated and anisotropic: no convention is an identity on it."""
    c, s = np.cos(0.3), np.sin(0.3)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag(spacing)
    affine[:3, 3] = origin
    return Grid(tuple(shape), affine)


def test_centroid_shift_as_a_constant_ddf_brings_the_moving_point_onto_the_fixed_one():
    fixed = tilted_grid((10, 14, 8), (1.0, 2.0, 3.5), (5.0, -7.0, 2.0))
    moving = Grid.from_spacing((12, 9, 11), (1.5, 2.5, 1.2))
    matrix = fixed_to_moving(fixed, moving, "centred")
    moving_mm, fixed_mm = np.array([4.0, 9.0, 6.0]), np.array([3.0, 1.0, 12.0])
    shift = centroid_shift(moving_mm, fixed_mm, moving, fixed, matrix)
    # the fixed point, displaced by the shift, lands where matrix sends it onto the moving point
    fixed_vox = apply_affine(np.linalg.inv(fixed.affine), fixed_mm)
    landed = apply_affine(moving.affine @ matrix @ translation(fixed, shift), fixed_vox)
    np.testing.assert_allclose(landed, moving_mm, atol=1e-9)
    np.testing.assert_allclose(translation(fixed, np.zeros(3)), np.eye(4))


def test_training_starts_from_the_labelled_gland_centroids():
    pair = make_phantom(3, **TINY).pair
    plain, = prepare_pairs([pair], "centred", None)
    glands, = prepare_pairs([pair], "centred", None, glands=True)
    g = pair.gland_index
    # network voxel of the fixed gland centroid -> the moving gland centroid, under the gland start
    fixed_vox = apply_affine(np.linalg.inv(pair.fixed.grid.affine), centroid_mm(pair.fixed_labels[g], pair.fixed.grid))
    net_vox = apply_affine(np.linalg.inv(glands.net_to_fixed), fixed_vox)
    moving_vox = apply_affine(np.linalg.inv(pair.moving.grid.affine),
                              centroid_mm(pair.moving_labels[g], pair.moving.grid))
    np.testing.assert_allclose(apply_affine(glands.net_to_moving.numpy(), net_vox), moving_vox, atol=1e-9)
    assert not np.allclose(apply_affine(plain.net_to_moving.numpy(), net_vox), moving_vox, atol=0.5)


def test_locate_returns_the_world_centroid_of_what_the_network_segments():
    volume = Volume(np.random.default_rng(0).normal(size=(14, 9, 12)).astype(np.float32),
                    tilted_grid((14, 9, 12), (1.5, 3.0, 2.0), (10.0, 4.0, -3.0)))
    locator = GlandLocator(width=4, spacing_mm=3.0)
    grid, to_volume = network_grid(volume.grid, 3.0)
    mask = np.zeros(grid.shape, bool)
    mask[1:4, 2:4, 3:7] = True
    locator.forward = lambda image, side: torch.as_tensor(np.where(mask, 9.0, -9.0), dtype=torch.float32)[None, None]
    expected = apply_affine(volume.grid.affine @ to_volume, np.argwhere(mask).mean(0))
    np.testing.assert_allclose(locator.locate(volume, "fixed"), expected, atol=1e-9)
    # nothing at >= 0.5: the centroid of the probabilities (here uniform: the grid's centre)
    locator.forward = lambda image, side: torch.full((1, 1, *grid.shape), -9.0)
    centre = apply_affine(volume.grid.affine @ to_volume, (np.array(grid.shape) - 1) / 2)
    np.testing.assert_allclose(locator.locate(volume, "moving"), centre, atol=1e-6)


def test_the_locator_grid_is_cut_centrally_to_multiples_of_16_where_that_cuts_at_most_a_tenth():
    # at 3 mm: 34 x 34 x 24 voxels.  34 -> 32 cuts 2 voxels (6%); 24 -> 16 would cut a third, so it stays
    volume = Volume(np.zeros((68, 68, 48), np.float32), tilted_grid((68, 68, 48), (1.5, 1.5, 1.5), (10.0, 4.0, -3.0)))
    full, to_volume = network_grid(volume.grid, 3.0)
    assert full.shape == (34, 34, 24)
    locator = GlandLocator(width=4, spacing_mm=3.0)
    seen, mask = [], np.zeros((32, 32, 24), bool)
    mask[0, 5, 3] = True

    def segment(image, side):
        seen.append(tuple(image.shape[2:]))
        return torch.as_tensor(np.where(mask, 9.0, -9.0), dtype=torch.float32)[None, None]

    locator.forward = segment
    # the cut grid's voxel (0, 5, 3) is the full grid's (1, 6, 3)
    expected = apply_affine(volume.grid.affine @ to_volume, np.array([1.0, 6.0, 3.0]))
    np.testing.assert_allclose(locator.locate(volume, "moving"), expected, atol=1e-9)
    assert seen == [(32, 32, 24)]
    # nothing found: the probabilities' centroid is the cut grid's centre, which is the full grid's
    mask[:] = False
    centre = apply_affine(volume.grid.affine @ to_volume, (np.array(full.shape) - 1) / 2)
    np.testing.assert_allclose(locator.locate(volume, "fixed"), centre, atol=1e-6)
    # a locator trained before the cut (its checkpoint says nothing of it) sees the whole grid, as it was trained
    seen.clear()
    whole = GlandLocator(width=4, spacing_mm=3.0, cut=False)
    whole.forward = lambda image, side: seen.append(tuple(image.shape[2:])) or torch.full((1, 1, *full.shape), -9.0)
    np.testing.assert_allclose(whole.locate(volume, "fixed"), centre, atol=1e-6)
    assert seen == [(34, 34, 24)]


def test_registration_from_located_glands_adds_their_shift_to_the_ddf():
    pair = make_phantom(5, **TINY).pair
    g = pair.gland_index
    config = TrainConfig(model=ModelConfig(width=4), geometry="centred", iterations=1, locator=0.25)
    centroids = {"moving": centroid_mm(pair.moving_labels[g], pair.moving.grid),
                 "fixed": centroid_mm(pair.fixed_labels[g], pair.fixed.grid)}
    locator = GlandLocator(width=4)
    locator.locate = lambda volume, side, precision="bf16": centroids[side]  # a perfect locator
    stages = [Locate(locator=locator), Refine(model=build_model(config.model))]
    result = Registrator(stages, config, InferenceConfig(precision="fp32", device="cpu")).register_pair(pair)
    # a fresh network predicts a zero DDF: what is left is the gland-centroid alignment
    matrix = fixed_to_moving(pair.fixed.grid, pair.moving.grid, "centred")
    shift = centroid_shift(centroids["moving"], centroids["fixed"], pair.moving.grid, pair.fixed.grid, matrix)
    np.testing.assert_allclose(result.ddf_mm, np.broadcast_to(shift, result.ddf_mm.shape), atol=1e-5)
    np.testing.assert_allclose(result.matrix, matrix)


def test_a_run_trains_its_locator_first_keeps_it_and_does_not_retrain_it_on_resume(tmp_path):
    pairs = [make_phantom(s, **TINY).pair for s in range(2)]
    config = TrainConfig(model=ModelConfig(width=4), geometry="centred", learning_rate=1e-3, iterations=4,
                         locator=0.5, checkpoint_every=100, precision="fp32")
    reports = list(Trainer(pairs, config, tmp_path))
    assert [(r.stage, r.step) for r in reports] == [("locate", 1), ("locate", 2), ("refine", 1), ("refine", 2)]
    trained = Registrator.from_run(tmp_path).locator
    # a larger budget: the locator is kept as it was (its share of 8 would be 4 steps), the network continues
    resumed = Trainer(pairs, replace(config, iterations=8), tmp_path, resume=True)
    assert [(r.stage, r.step) for r in resumed] == [("refine", 3), ("refine", 4)]
    for name, value in trained.state_dict().items():
        torch.testing.assert_close(resumed.stage("locate").locator.state_dict()[name], value)
    with pytest.raises(ValueError, match="locator"):
        replace(config, locator=1.0)


def test_a_locator_trained_before_the_cut_grid_keeps_the_whole_grid_through_loading_and_resume(tmp_path):
    old = torch.load(BEFORE / "staged.pt", weights_only=True)
    assert old["format"] == 2 and old["extra"]["locator_cut"] is True
    del old["extra"]["locator_cut"]  # as written before the cut grid
    torch.save(old, tmp_path / "checkpoint.pt")
    assert not Registrator.from_run(tmp_path).locator.cut
    pairs = [make_phantom(s, **TINY).pair for s in range(2)]
    config = load_checkpoint(tmp_path / "checkpoint.pt")["config"]
    resumed = Trainer(pairs, replace(config, iterations=config.iterations + 1), tmp_path, resume=True)
    assert [r.stage for r in resumed] == ["refine"] and not resumed.stage("locate").locator.cut
    state = load_checkpoint(tmp_path / "checkpoint.pt")["stages"]
    assert state["refine"]["step"] == 5 and state["locate"]["config"]["cut"] is False


def test_a_run_without_its_locator_is_refused_with_a_clear_error(tmp_path):
    pairs = [make_phantom(0, **TINY).pair]
    config = TrainConfig(model=ModelConfig(width=4), geometry="centred", iterations=1, locator=0.5)
    trainer = Trainer(pairs, config, tmp_path)
    trainer.checkpoint()  # as if stopped before the locator was trained
    with pytest.raises(DataError, match="resume it"):
        Registrator.from_run(tmp_path)


def test_a_locator_share_of_no_steps_ends_at_once(tmp_path):
    pairs = [make_phantom(0, **TINY).pair]
    config = TrainConfig(model=ModelConfig(width=4), geometry="centred", iterations=1, locator=0.3)  # 0.3 steps
    assert [r.stage for r in Trainer(pairs, config, tmp_path)] == ["refine"]
