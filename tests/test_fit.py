"""The gland fit: a smooth field on top of a registration that brings the warped MR gland onto the TRUS gland."""

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from napari_labelreg.cli import main
from napari_labelreg.config import InferenceConfig
from napari_labelreg.core import io, metrics
from napari_labelreg.core.phantom import make_phantom
from napari_labelreg.nn.fit import control_shape
from napari_labelreg.pipeline.stages import Estimate, Fit
import torch


def test_control_points_cover_the_grid_every_control_spacing():
    assert control_shape((24, 28, 20), (2.0, 2.0, 2.0), 8.0) == (7, 8, 6)
    assert control_shape((3, 3, 3), (1.0, 1.0, 1.0), 8.0) == (2, 2, 2)


def test_the_fit_recovers_a_known_deformation_on_the_gland_surface_without_folding():
    phantom = make_phantom(3, translation_mm=4.0, amplitude_mm=3.0)
    pair = phantom.pair
    start = replace(Estimate.start(pair.moving, pair.fixed, "centred", None),
                    glands=(pair.moving_labels[0], pair.fixed_labels[0]))
    fitted = Fit().apply(pair.moving, pair.fixed, start, InferenceConfig())
    ddf = fitted.ddf_mm(pair.fixed.grid)
    gland = pair.fixed_labels[0]
    surface = gland & ~binary_erosion(gland)
    before = np.linalg.norm(phantom.ddf_mm, axis=-1)[surface].mean()
    after = np.linalg.norm(ddf - phantom.ddf_mm, axis=-1)[surface].mean()
    print(f"\ngland surface: truth DDF {before:.2f} mm from the start, the fit's within {after:.2f} mm")
    assert before > 4.0 and after < 1.5  # 2 mm voxels: within 3/4 of a voxel of the truth on the surface (1.1 mm)
    assert (metrics.jacobian_determinant(ddf, pair.fixed.grid) > 0).all()


@pytest.fixture(scope="module")
def glands(tmp_path_factory):
    """A phantom pair's gland masks as 3-D files beside its images."""
    from conftest import write_phantom_folder

    data = write_phantom_folder(tmp_path_factory.mktemp("fit") / "data", count=1)
    for side in ("moving", "fixed"):
        stack = io.load_labels(data / f"{side}_labels" / "obs000.nii.gz")
        grid = io.load_volume(data / f"{side}_images" / "obs000.nii.gz").grid
        io.save_volume(data / f"{side}_gland.nii.gz", stack[0].astype(np.uint8), grid)
    return data


def register(trained_run, data, out, moving_gland, fixed_gland):
    return main(["register", "--model", str(trained_run), "--moving", str(data / "moving_images/obs000.nii.gz"),
                 "--fixed", str(data / "fixed_images/obs000.nii.gz"), "--moving-gland", str(moving_gland),
                 "--fixed-gland", str(fixed_gland), "--moving-labels", str(data / "moving_gland.nii.gz"),
                 "--out", str(out)])


def test_register_with_both_glands_fits_them_and_records_them(trained_run, glands, tmp_path):
    out = tmp_path / "out"
    assert register(trained_run, glands, out, glands / "moving_gland.nii.gz", glands / "fixed_gland.nii.gz") == 0
    record = json.loads((out / "registration.json").read_text())
    assert record["moving_gland"] == str((glands / "moving_gland.nii.gz").resolve())
    assert record["fixed_gland"] == str((glands / "fixed_gland.nii.gz").resolve())
    warped = io.load_labels(out / "warped_labels.nii.gz")[0]
    fixed = io.load_labels(glands / "fixed_gland.nii.gz")[0]
    assert metrics.dice(warped, fixed) > 0.9


@pytest.mark.parametrize("how,words", [
    ("wrong grid", "--moving-gland"),
    ("empty", "mask is empty"),
    ("not binary", "mask is not binary"),
    ("one side", "this run has no gland segmenters"),
    ("moved", "its header places it elsewhere than the moving image (first voxel 30 mm away)"),
    ("resized", "its header places it elsewhere than the moving image (voxel size (1, 1, 1) mm against (2, 2, 2))"),
])
def test_a_bad_gland_is_refused_in_one_line(trained_run, glands, tmp_path, how, words, capsys):
    moving = glands / "moving_gland.nii.gz"
    fixed = glands / "fixed_gland.nii.gz"
    grid = io.load_volume(glands / "moving_images/obs000.nii.gz").grid
    bad = tmp_path / "bad.nii.gz"
    if how == "wrong grid":
        moving = fixed  # the TRUS gland given as the MR's
    elif how == "empty":
        io.save_volume(bad, np.zeros(grid.shape, np.uint8), grid)
        moving = bad
    elif how == "not binary":
        io.save_volume(bad, io.load_labels(moving)[0].astype(np.uint8) * 2, grid)
        moving = bad
    elif how in ("moved", "resized"):  # the right shape, another place: a mask of another series
        from napari_labelreg.core.geometry import Grid

        affine = grid.affine.copy()
        if how == "moved":
            affine[:3, 3] += [30.0, 0.0, 0.0]
        else:
            affine[:3, :3] /= 2.0
        io.save_volume(bad, io.load_labels(moving)[0].astype(np.uint8), Grid(grid.shape, affine))
        moving = bad
    args = ["register", "--model", str(trained_run), "--moving", str(glands / "moving_images/obs000.nii.gz"),
            "--fixed", str(glands / "fixed_images/obs000.nii.gz"), "--moving-gland", str(moving),
            "--out", str(tmp_path / "out")]
    if how != "one side":
        args[-2:-2] = ["--fixed-gland", str(fixed)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
    if how != "one side":
        assert err[0].startswith("napari-labelreg register: error: --moving-gland ") and "label 0" not in err[0], err
    if how == "wrong grid":
        assert "differs from its image's" in err[0]
    assert not (tmp_path / "out").exists()


def test_evaluate_with_given_glands_fits_each_pair_to_its_own(trained_run, tmp_path, capsys):
    from conftest import write_phantom_folder

    data = write_phantom_folder(tmp_path / "data", count=2)
    for glands in ("none", "given"):
        assert main(["evaluate", "--model", str(trained_run), "--data", str(data), "--glands", glands,
                     "--out", str(tmp_path / f"{glands}.csv")]) == 0
    import pandas as pd

    none, given = (pd.read_csv(tmp_path / f"{g}.csv") for g in ("none", "given"))
    assert (given.dice > 0.9).all() and (given.dice > none.dice).all()


# ---- glands predicted by a run's segmenters -------------------------------------------------------------------

def test_a_segmented_gland_is_the_locators_logits_interpolated_on_the_image_grid():
    """A locator whose logits are a sphere's signed distance on its 3 mm grid gives that sphere on the image's
    1.5 mm grid: smoother than the 3 mm voxels, within half a fine voxel of the truth."""
    from napari_labelreg.core.geometry import Grid, apply_affine
    from napari_labelreg.nn.locator import GlandLocator, on_locator_grid
    from napari_labelreg.nn.warp import base_grid

    grid = Grid.from_spacing((40, 44, 36), (1.5, 1.5, 1.5))
    centre, radius = apply_affine(grid.affine, grid.centre) + np.array([2.0, -3.0, 1.0]), 17.0
    world = apply_affine(grid.affine, np.indices(grid.shape).reshape(3, -1).T).reshape(*grid.shape, 3)
    truth = np.linalg.norm(world - centre, axis=-1) < radius
    volume = io.Volume(np.random.default_rng(0).normal(size=grid.shape).astype(np.float32), grid)
    locator = GlandLocator(width=4)
    _, to_volume = on_locator_grid(volume, locator.spacing_mm, cut=locator.cut)
    at = apply_affine(grid.affine @ to_volume, base_grid(_.shape[1:]).reshape(-1, 3).numpy())
    distance = radius - np.linalg.norm(at - centre, axis=-1).reshape(_.shape[1:])
    locator.forward = lambda image, side: torch.as_tensor(distance, dtype=torch.float32)[None, None]
    mask = locator.segment(volume, "fixed", precision="fp32")
    assert mask.shape == grid.shape and mask.dtype == bool
    assert metrics.dice(mask, truth) > 0.97
    print(f"\nsegmented on the image grid: Dice {metrics.dice(mask, truth):.3f} with the sphere")
    assert np.abs(metrics.centroid_mm(mask, grid) - centre).max() < 0.75


def _key(volume):
    return hashlib.md5(np.ascontiguousarray(volume.data, np.float32).tobytes()).hexdigest()


@pytest.fixture
def oracle(monkeypatch):
    """Segmenters that find each phantom's true gland (a two-step run's find nothing useful): what is
    tested is what the pipeline does with what they find.  Returns the sides asked, in order."""
    from napari_labelreg.nn.locator import GlandLocator

    truth = {}
    for seed in range(2):
        pair = make_phantom(seed).pair
        truth[_key(pair.moving)], truth[_key(pair.fixed)] = pair.moving_labels[0], pair.fixed_labels[0]
    asked = []

    def segment(self, volume, side, precision="bf16"):
        asked.append(side)
        return truth[_key(volume)]

    monkeypatch.setattr(GlandLocator, "segment", segment)
    return asked


def test_a_gland_not_given_is_predicted_and_recorded(located_run, glands, oracle, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["register", "--model", str(located_run), "--moving", str(glands / "moving_images/obs000.nii.gz"),
                 "--fixed", str(glands / "fixed_images/obs000.nii.gz"), "--moving-gland",
                 str(glands / "moving_gland.nii.gz"), "--out", str(out)]) == 0
    assert oracle == ["fixed"]  # the MR gland was given: only the TRUS gland is segmented
    said = capsys.readouterr().out
    assert "gland fit: MR gland given, TRUS gland predicted; gland Dice " in said
    assert "(with the predicted gland: how well the fit followed it, not how accurate it is; check it)" in said
    record = json.loads((out / "registration.json").read_text())
    assert record["glands"]["moving"] == "given" and record["glands"]["fixed"] == "predicted"
    assert record["glands"]["dice_after_fit"] > 0.9 and record["glands"]["dice_after_fit"] > record["glands"][
        "dice_before_fit"]
    assert record["fixed_gland"] is None
    fixed = io.load_labels(glands / "fixed_gland.nii.gz")[0]
    assert (io.load_labels(out / "fixed_gland.nii.gz")[0] == fixed).all()  # the gland it fitted to, to check
    assert (io.load_labels(out / "moving_gland.nii.gz")[0] == io.load_labels(glands / "moving_gland.nii.gz")[0]).all()


def test_glands_predicted_on_both_sides(located_run, glands, oracle, tmp_path):
    out = tmp_path / "out"
    assert main(["register", "--model", str(located_run), "--moving", str(glands / "moving_images/obs000.nii.gz"),
                 "--fixed", str(glands / "fixed_images/obs000.nii.gz"), "--glands", "predicted",
                 "--out", str(out)]) == 0
    assert oracle == ["moving", "fixed"]
    record = json.loads((out / "registration.json").read_text())["glands"]
    assert (record["moving"], record["fixed"]) == ("predicted", "predicted") and record["dice_after_fit"] > 0.9


def test_a_segmenter_that_finds_nothing_is_refused_in_one_line(located_run, glands, monkeypatch, tmp_path, capsys):
    from napari_labelreg.nn.locator import GlandLocator

    monkeypatch.setattr(GlandLocator, "segment", lambda self, volume, side, precision="bf16": np.zeros(
        volume.grid.shape, bool))
    moving = glands / "moving_images/obs000.nii.gz"
    assert main(["register", "--model", str(located_run), "--moving", str(moving), "--fixed",
                 str(glands / "fixed_images/obs000.nii.gz"), "--moving-gland", str(glands / "moving_gland.nii.gz"),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fixed gland segmenter found no gland there; give the fixed gland" in err[0], err
    assert "fixed_images/obs000.nii.gz" in err[0]


def test_evaluate_with_predicted_glands(located_run, oracle, tmp_path):
    """With segmenters that find the true glands, predicted is given; moving-given segments the TRUS alone."""
    from conftest import write_phantom_folder
    import pandas as pd

    data = write_phantom_folder(tmp_path / "data", count=2)
    for glands in ("none", "given", "predicted", "moving-given"):
        assert main(["evaluate", "--model", str(located_run), "--data", str(data), "--glands", glands,
                     "--out", str(tmp_path / f"{glands}.csv")]) == 0
    none, given, predicted, mixed = (pd.read_csv(tmp_path / f"{g}.csv") for g in (
        "none", "given", "predicted", "moving-given"))
    assert oracle == ["moving", "fixed"] * 2 + ["fixed"] * 2
    assert (given.dice > none.dice).all() and (given.dice > 0.9).all()
    np.testing.assert_allclose(predicted.tre_mm, given.tre_mm, atol=1e-4)
    np.testing.assert_allclose(mixed.tre_mm, given.tre_mm, atol=1e-4)
