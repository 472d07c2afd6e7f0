"""The one displacement convention, the three initial correspondences, warping."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_labelreg.core import geometry, metrics
from napari_labelreg.core.geometry import Grid
from napari_labelreg.nn.warp import sample as torch_sample

SHAPE = (7, 11, 5)  # non-cubic: an axis mix-up fails loudly


def rotated_grid(shape, spacing, angle=0.3, origin=(10.0, -4.0, 2.0)):
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = origin
    return Grid(shape, affine)


@given(st.lists(st.floats(-3, 15), min_size=3, max_size=3))
def test_grid_sample_round_trip(point):
    p = np.array(point)
    back = geometry.from_grid_sample(geometry.to_grid_sample(p, SHAPE), SHAPE)
    np.testing.assert_allclose(back, p, atol=1e-9)


def test_grid_sample_order_hits_voxels_exactly():
    volume = np.arange(np.prod(SHAPE), dtype=np.float32).reshape(SHAPE)
    coords = geometry.voxel_coordinates(SHAPE)
    out = torch_sample(torch.as_tensor(volume)[None, None], torch.as_tensor(coords, dtype=torch.float32)[None])
    np.testing.assert_allclose(out[0, 0].numpy(), volume, atol=1e-4)  # float32 rounding only


def test_torch_and_scipy_warps_agree(rng):
    volume = rng.normal(size=SHAPE).astype(np.float32)
    coords = rng.uniform(-1, 12, size=(4, 6, 3, 3))
    expected = geometry.sample(volume, coords)
    got = torch_sample(torch.as_tensor(volume)[None, None], torch.as_tensor(coords, dtype=torch.float32)[None])
    np.testing.assert_allclose(got[0, 0].numpy(), expected, atol=1e-5)


def test_zero_ddf_is_identity(rng):
    grid = rotated_grid(SHAPE, (0.8, 1.3, 2.1))
    volume = rng.normal(size=SHAPE).astype(np.float32)
    out = geometry.warp(volume, grid, grid, "world", np.zeros((*SHAPE, 3)))
    np.testing.assert_allclose(out, volume, atol=1e-5)


def test_constant_ddf_in_mm_shifts_by_voxels(rng):
    grid = rotated_grid(SHAPE, (0.8, 1.3, 2.1))
    volume = rng.normal(size=SHAPE).astype(np.float32)
    shift_vox = np.array([1.0, 2.0, -1.0])
    ddf_mm = np.broadcast_to(grid.affine[:3, :3] @ shift_vox, (*SHAPE, 3))
    out = geometry.warp(volume, grid, grid, "world", ddf_mm)
    np.testing.assert_allclose(out[:-1, :-2, 1:], volume[1:, 2:, :-1], atol=1e-5)


def test_mm_voxel_round_trip_anisotropic(rng):
    grid = rotated_grid(SHAPE, (0.8, 1.3, 2.1))
    ddf = rng.normal(size=(*SHAPE, 3))
    back = geometry.ddf_voxels_to_mm(geometry.ddf_mm_to_voxels(ddf, grid), grid)
    np.testing.assert_allclose(back, ddf, atol=1e-12)
    # a one-voxel step along axis j is 1.3 mm long
    step = geometry.ddf_voxels_to_mm(np.array([0.0, 1.0, 0.0]), grid)
    assert np.linalg.norm(step) == pytest.approx(1.3)


def test_centred_aligns_centres_with_header_spacing():
    fixed = Grid((10, 20, 8), np.diag([2.0, 1.0, 3.0, 1.0]))
    moving = rotated_grid((30, 12, 9), (1.0, 2.0, 1.5), origin=(100, 100, 100))
    m = geometry.fixed_to_moving(fixed, moving, "centred")
    np.testing.assert_allclose(geometry.apply_affine(m, fixed.centre), moving.centre)
    # one fixed voxel along i is 2 mm: two moving voxels of 1 mm
    np.testing.assert_allclose(m[:3, :3], np.diag([2.0, 0.5, 2.0]))


def test_fov_aligns_voxel_edges():
    fixed, moving = Grid.from_spacing((10, 20, 8)), Grid.from_spacing((30, 12, 9))
    m = geometry.fixed_to_moving(fixed, moving, "fov")
    np.testing.assert_allclose(geometry.apply_affine(m, np.array([-0.5, -0.5, -0.5])), [-0.5, -0.5, -0.5])
    np.testing.assert_allclose(geometry.apply_affine(m, np.array([9.5, 19.5, 7.5])), [29.5, 11.5, 8.5])


def test_world_uses_both_affines():
    fixed = rotated_grid((10, 20, 8), (1.0, 1.0, 2.0))
    moving = rotated_grid((30, 12, 9), (0.5, 2.0, 1.0), angle=-0.2, origin=(3, 4, 5))
    m = geometry.fixed_to_moving(fixed, moving, "world")
    p = np.array([3.0, 7.0, 2.0])
    np.testing.assert_allclose(geometry.apply_affine(moving.affine @ m, p), geometry.apply_affine(fixed.affine, p))


def test_regrid_keeps_field_of_view():
    grid = rotated_grid((10, 21, 8), (1.5, 1.5, 2.0))
    coarse, to_fine = geometry.regrid(grid, (5, 7, 4))
    corner = geometry.apply_affine(to_fine, np.array([-0.5, -0.5, -0.5]))
    np.testing.assert_allclose(corner, [-0.5, -0.5, -0.5])
    np.testing.assert_allclose(coarse.spacing, [3.0, 4.5, 4.0])


def test_bad_grids_refused():
    with pytest.raises(ValueError, match="at least 2"):
        Grid((1, 4, 4), np.eye(4))
    with pytest.raises(ValueError, match="invertible"):
        Grid((3, 4, 4), np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="unknown convention"):
        geometry.fixed_to_moving(Grid.from_spacing(SHAPE), Grid.from_spacing(SHAPE), "corner")


@settings(max_examples=20, deadline=None)
@given(st.floats(-0.2, 0.2), st.floats(-0.2, 0.2))
def test_affine_ddf_has_constant_jacobian(a, b):
    grid = rotated_grid(SHAPE, (0.8, 1.3, 2.1))
    lin = np.array([[a, b, 0.0], [0.0, a, 0.0], [b, 0.0, -a]])
    pts = geometry.apply_affine(grid.affine, geometry.voxel_coordinates(SHAPE))
    ddf = pts @ lin.T
    det = metrics.jacobian_determinant(ddf, grid)
    np.testing.assert_allclose(det, np.linalg.det(np.eye(3) + lin), rtol=1e-9)


@pytest.mark.data
def test_identity_figures_of_the_shared_data():
    """The data README's identity TRE / Dice per convention (88 pairs)."""
    from conftest import DATA

    from napari_labelreg.core.pairs import iter_folder_pairs

    expected = {"centred": (12.1, 0.62), "fov": (11.9, 0.48), "world": (21.8, 0.29)}
    scores = {c: [] for c in expected}
    for pair in iter_folder_pairs(DATA):
        for c in expected:
            warped = np.stack([geometry.warp(lab, pair.fixed.grid, pair.moving.grid, c)
                               for lab in pair.moving_labels.astype(np.float32)]) >= 0.5
            tre = metrics.rms(metrics.centroid_errors(warped[1:], pair.fixed_labels[1:], pair.fixed.grid))
            scores[c].append((tre, metrics.dice(warped[0], pair.fixed_labels[0])))
    for c, (tre, dsc) in expected.items():
        got = np.median(np.array(scores[c]), axis=0)
        assert got[0] == pytest.approx(tre, abs=0.05), c
        assert got[1] == pytest.approx(dsc, abs=0.005), c
