"""The gland fit: a smooth field on top of a registration that brings the warped MR gland onto the TRUS gland."""

import json

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from napari_labelreg.cli import main
from napari_labelreg.config import InferenceConfig
from napari_labelreg.core import io, metrics
from napari_labelreg.core.phantom import make_phantom
from napari_labelreg.nn.fit import control_shape
from napari_labelreg.pipeline.stages import Estimate, Fit


def test_control_points_cover_the_grid_every_control_spacing():
    assert control_shape((24, 28, 20), (2.0, 2.0, 2.0), 8.0) == (7, 8, 6)
    assert control_shape((3, 3, 3), (1.0, 1.0, 1.0), 8.0) == (2, 2, 2)


def test_the_fit_recovers_a_known_deformation_on_the_gland_surface_without_folding():
    phantom = make_phantom(3, translation_mm=4.0, amplitude_mm=3.0)
    pair = phantom.pair
    start = Estimate.start(pair.moving, pair.fixed, "centred", None)
    fitted = Fit(pair.moving_labels[0], pair.fixed_labels[0]).apply(pair.moving, pair.fixed, start,
                                                                     InferenceConfig())
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
    ("wrong grid", "differs from its image's"),
    ("empty", "mask is empty"),
    ("not binary", "mask is not binary"),
    ("one side", "--fixed-gland is missing"),
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
    args = ["register", "--model", str(trained_run), "--moving", str(glands / "moving_images/obs000.nii.gz"),
            "--fixed", str(glands / "fixed_images/obs000.nii.gz"), "--moving-gland", str(moving),
            "--out", str(tmp_path / "out")]
    if how != "one side":
        args[-2:-2] = ["--fixed-gland", str(fixed)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0], err
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
