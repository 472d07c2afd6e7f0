"""The scripting API: arrays with voxel sizes in, DDF in mm out; labels and points follow it."""

import numpy as np
import pytest

from napari_labelreg import api
from napari_labelreg.config import AugmentConfig, ModelConfig, TrainConfig
from napari_labelreg.core.phantom import make_phantom
from napari_labelreg.pipeline.train import train


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    run = tmp_path_factory.mktemp("api")
    cfg = TrainConfig(model=ModelConfig(width=4), geometry="centred", iterations=2, learning_rate=1e-3,
                      augment=AugmentConfig(enabled=False))
    list(train([make_phantom(0).pair], cfg, run))
    return api.load_model(run, precision="fp32")


def test_register_arrays_with_spacing(model):
    pair = make_phantom(1).pair
    res = api.register(model, pair.moving.data, pair.fixed.data, moving_spacing=(2.0,) * 3,
                       fixed_spacing=(2.0,) * 3, geometry="centred")
    assert res.ddf_mm.shape == (*pair.fixed.data.shape, 3) and res.warped.shape == pair.fixed.data.shape
    soft = res.warp_labels(pair.moving_labels)
    assert soft.shape == pair.fixed_labels.shape and 0 <= soft.min() and soft.max() <= 1


def test_map_points_agrees_with_warping(model):
    """A moving label's centroid maps to where the warped label's centroid lands (within a voxel)."""
    pair = make_phantom(2).pair
    res = api.register(model, pair.moving, pair.fixed, geometry="centred")
    res = type(res)(np.full_like(res.ddf_mm, 0.0) + np.array([2.0, -1.0, 3.0], np.float32), res.fixed,
                    res.moving, res.matrix, res.warped)  # a known translation, fixed -> moving
    from napari_labelreg.core.metrics import centroid_mm

    warped = res.warp(pair.moving_labels[0]) >= 0.5
    c_fixed = centroid_mm(warped, pair.fixed.grid)
    c_moving = centroid_mm(pair.moving_labels[0], pair.moving.grid)
    np.testing.assert_allclose(res.map_points(c_fixed[None]).points[0], c_moving, atol=2.0)


def test_bad_arrays_are_refused(model):
    with pytest.raises(ValueError, match="3-D"):
        api.register(model, np.zeros((4, 4)), np.zeros((4, 4, 4)))
    bad = np.zeros((4, 4, 4))
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        api.register(model, bad, np.zeros((4, 4, 4)))


def test_ddf_file_reads_as_an_itk_vector_image(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    from napari_labelreg.core import io
    from napari_labelreg.core.geometry import Grid

    grid = Grid.from_spacing((5, 6, 7), (1.5, 2.0, 2.5))
    ddf = np.random.default_rng(0).normal(size=(5, 6, 7, 3)).astype(np.float32)
    io.save_ddf(tmp_path / "ddf.nii.gz", ddf, grid)
    img = sitk.ReadImage(str(tmp_path / "ddf.nii.gz"))
    assert img.GetNumberOfComponentsPerPixel() == 3 and img.GetSize() == (5, 6, 7)
    np.testing.assert_allclose(img.GetSpacing(), (1.5, 2.0, 2.5))
    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0, 3)  # ITK (z, y, x, c) -> (i, j, k, c)
    np.testing.assert_allclose(arr, ddf * np.array([-1, -1, 1]), atol=1e-6)  # RAS read as LPS: x, y negated
    back, _ = io.load_ddf(tmp_path / "ddf.nii.gz")
    np.testing.assert_array_equal(back, ddf)
