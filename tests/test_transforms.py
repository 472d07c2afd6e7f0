"""Complete transforms: files other tools apply, points both ways, the inverse DDF.

The registrations here are built by hand on oblique, anisotropic grids with different origins, so that
the initial correspondence of every geometry is far from the identity, and carry a known smooth
deformation of several millimetres on top.
"""

import numpy as np
import pytest

from napari_labelreg.app.results import DDF_FILE, INVERSE_FILE, WARPED_FILE, export_registration, read_registration
from napari_labelreg.core import io, transform
from napari_labelreg.core.geometry import CONVENTIONS, Grid, apply_affine, fixed_to_moving, voxel_coordinates, warp
from napari_labelreg.pipeline.registrator import Registration

LPS = np.diag([-1.0, -1.0, 1.0])


def rotation(axis, degrees):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def oblique(shape, spacing, axis, degrees, origin) -> Grid:
    affine = np.eye(4)
    affine[:3, :3] = rotation(axis, degrees) @ np.diag(spacing)
    affine[:3, 3] = origin
    return Grid(shape, affine)


FIXED = oblique((18, 20, 16), (1.2, 1.0, 1.5), (1, 1, 0), 25, (-10.0, 5.0, 30.0))
_TILTED = oblique((22, 18, 24), (0.9, 1.1, 1.0), (0, 1, 2), -35, (0.0, 0.0, 0.0))
# its centre 8 mm from the fixed one's in the world, so the two fields of view overlap in every geometry
_ORIGIN = apply_affine(FIXED.affine, FIXED.centre) + (6.0, -4.0, 3.0) - apply_affine(_TILTED.affine, _TILTED.centre)
MOVING = oblique((22, 18, 24), (0.9, 1.1, 1.0), (0, 1, 2), -35, _ORIGIN)


def bump(points_mm: np.ndarray) -> np.ndarray:
    """A known smooth deformation (mm) at fixed world points: a 4 mm Gaussian swirl plus a 3 mm shift."""
    centre = apply_affine(FIXED.affine, FIXED.centre)
    d = points_mm - centre
    weight = np.exp(-(d ** 2).sum(-1, keepdims=True) / (2 * 8.0 ** 2))
    return 4.0 * weight * np.stack([np.sin(d[..., 1] / 6), np.cos(d[..., 2] / 7), np.sin(d[..., 0] / 5)], -1) \
        + np.array([3.0, -2.0, 1.0])


def moving_image(seed=0) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return (100 * gaussian_filter(np.random.default_rng(seed).normal(size=MOVING.shape), 2.0)).astype(np.float32)


def registration(geometry: str, image=None) -> Registration:
    matrix = fixed_to_moving(FIXED, MOVING, geometry)
    ddf = bump(apply_affine(FIXED.affine, voxel_coordinates(FIXED.shape))).astype(np.float32)
    image = moving_image() if image is None else image
    return Registration(ddf, FIXED, MOVING, matrix, warp(image, FIXED, MOVING, matrix, ddf))


def inside_points(n, seed=1, margin=3):
    rng = np.random.default_rng(seed)
    vox = rng.uniform(margin, np.asarray(FIXED.shape) - 1 - margin, (n, 3))
    return apply_affine(FIXED.affine, vox)


def test_the_grids_make_every_geometry_far_from_the_identity():
    for geometry in CONVENTIONS:
        initial = registration(geometry).initial
        x = inside_points(5)
        assert np.linalg.norm(apply_affine(initial, x) - x, axis=-1).max() > 10 or geometry == "world"
    assert np.allclose(registration("world").initial, np.eye(4))


@pytest.mark.parametrize("geometry", CONVENTIONS)
def test_points_both_ways_recover_the_known_deformation(geometry):
    reg = registration(geometry)
    x = inside_points(200)
    truth = apply_affine(reg.initial, x + bump(x))  # where each fixed point truly lies in the moving file's world
    forward = reg.map_points(x, to="moving")
    assert np.abs(forward.points - truth).max() < 0.1  # trilinear sampling of a smooth field on 1-1.5 mm voxels
    back = reg.map_points(truth, to="fixed")
    assert np.abs(back.points - x).max() < 0.1
    assert back.residual_mm.max() < transform.INVERSE_TOLERANCE_MM
    composed = reg.map_points(reg.map_points(back.points, to="moving").points, to="fixed").points
    assert np.abs(composed - back.points).max() < 1e-3


def test_points_outside_the_field_are_refused():
    reg = registration("centred")
    far = apply_affine(FIXED.affine, np.array([[-5.0, 2, 2]]))
    with pytest.raises(transform.OutsideField, match="point 0 .*outside the fixed image"):
        reg.map_points(far, to="moving")
    beyond = apply_affine(MOVING.affine, np.array([[-30.0, -30, -30], [5, 5, 5]]))
    with pytest.raises(transform.OutsideField, match="point 0 "):
        reg.map_points(beyond, to="fixed")
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        reg.map_points(np.array([[np.nan, 0, 0]]), to="fixed")


def test_a_folding_field_is_not_inverted_where_it_folds():
    reg = registration("world")
    x = apply_affine(FIXED.affine, voxel_coordinates(FIXED.shape))
    centre = apply_affine(FIXED.affine, FIXED.centre)
    fold = -2.5 * (x - centre) * np.exp(-((x - centre) ** 2).sum(-1, keepdims=True) / (2 * 4.0 ** 2))
    folded = Registration(fold.astype(np.float32), FIXED, MOVING, reg.matrix, reg.warped)
    with pytest.raises(transform.OutsideField, match="folds") as refused:
        folded.map_points(apply_affine(FIXED.affine, FIXED.centre + np.array([[6.5, 0, 0], [0.5, 0.3, 0.2]])),
                          to="fixed")
    assert refused.value.rows == [1]


@pytest.mark.parametrize("geometry", CONVENTIONS)
def test_inverse_ddf_undoes_the_forward_map(geometry):
    reg = registration(geometry)
    field, residual = reg.inverse_ddf()
    y = apply_affine(MOVING.affine, voxel_coordinates(MOVING.shape)).reshape(-1, 3)
    x = y + field.reshape(-1, 3)
    hit = transform.inside(FIXED, x) & (residual.reshape(-1) < transform.INVERSE_TOLERANCE_MM)
    assert hit.sum() > 100  # the two fields of view overlap
    again = apply_affine(reg.initial, x[hit] + transform.sample_field(reg.ddf_mm, FIXED, x[hit]))
    assert np.abs(again - y[hit]).max() < 0.1  # forward after inverse is the identity within 0.1 mm


def test_complete_and_relative_ddfs_are_inverse_to_each_other():
    reg = registration("fov")
    complete = reg.complete_ddf()
    assert np.abs(complete - reg.ddf_mm).max() > 10  # the initial correspondence is in it
    np.testing.assert_allclose(transform.relative_ddf(complete, FIXED, reg.initial), reg.ddf_mm, atol=1e-4)


def write_pair(tmp_path, image):
    io.save_volume(tmp_path / "moving.nii.gz", image, MOVING)
    io.save_volume(tmp_path / "fixed.nii.gz", np.zeros(FIXED.shape, np.float32), FIXED)
    return tmp_path / "moving.nii.gz", tmp_path / "fixed.nii.gz"


@pytest.mark.parametrize("geometry", CONVENTIONS)
def test_simpleitk_resampling_with_the_written_ddf_reproduces_the_warped_image(tmp_path, geometry):
    """What ITK (and 3D Slicer, on ITK) does with ddf.nii.gz and the moving file, knowing nothing of this tool."""
    sitk = pytest.importorskip("SimpleITK")
    image = moving_image(3)
    reg = registration(geometry, image)
    moving_path, fixed_path = write_pair(tmp_path, image)
    export_registration(reg, tmp_path / "out", sources={"moving": moving_path, "fixed": fixed_path})

    field = sitk.ReadImage(str(tmp_path / "out" / DDF_FILE), sitk.sitkVectorFloat64)
    resampled = sitk.Resample(sitk.ReadImage(str(moving_path)), sitk.ReadImage(str(fixed_path)),
                              sitk.DisplacementFieldTransform(field), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    theirs = sitk.GetArrayFromImage(resampled).transpose(2, 1, 0)
    ours = io.load_volume(tmp_path / "out" / WARPED_FILE).data
    # compare where the sampled moving point lies a voxel inside the moving grid: edges are padded differently
    points = apply_affine(np.linalg.inv(MOVING.affine), reg.map_points(
        apply_affine(FIXED.affine, voxel_coordinates(FIXED.shape)).reshape(-1, 3)).points).reshape(*FIXED.shape, 3)
    interior = np.all((points >= 1) & (points <= np.asarray(MOVING.shape) - 2), -1)
    assert interior.sum() > 500
    assert np.abs(theirs - ours)[interior].max() < 1e-3 * np.abs(ours).max()


def test_itk_transforms_points_as_map_points_does(tmp_path):
    """Ours -> ITK: ITK reads ddf.nii.gz (RAS, intent 1006) into its LPS frame and maps points as we do."""
    sitk = pytest.importorskip("SimpleITK")
    reg = registration("centred")
    export_registration(reg, tmp_path)
    tx = sitk.DisplacementFieldTransform(sitk.ReadImage(str(tmp_path / DDF_FILE), sitk.sitkVectorFloat64))
    x = inside_points(20)
    ours = reg.map_points(x).points
    theirs = np.array([tx.TransformPoint(tuple(map(float, LPS @ p))) for p in x]) @ LPS
    np.testing.assert_allclose(theirs, ours, atol=1e-3)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_a_field_written_by_itk_reads_as_itk_means_it(tmp_path, suffix):
    """ITK -> ours: a displacement field made in ITK's LPS frame on an oblique grid, saved as 3D Slicer and
    ANTs do, maps points through load_ddf as ITK's transform maps them."""
    sitk = pytest.importorskip("SimpleITK")
    rng = np.random.default_rng(5)
    values = rng.normal(0, 2, (*FIXED.shape[::-1], 3))  # ITK arrays are (k, j, i, component), LPS mm
    image = sitk.GetImageFromArray(values, isVector=True)
    image.SetSpacing(tuple(float(s) for s in FIXED.spacing))
    image.SetOrigin(tuple(float(v) for v in LPS @ FIXED.affine[:3, 3]))
    image.SetDirection(tuple((LPS @ FIXED.affine[:3, :3] / FIXED.spacing).flatten()))
    sitk.WriteImage(image, str(tmp_path / f"field{suffix}"))
    ddf, grid = io.load_ddf(tmp_path / f"field{suffix}")
    np.testing.assert_allclose(grid.affine, FIXED.affine, atol=1e-4)
    tx = sitk.DisplacementFieldTransform(sitk.Cast(image, sitk.sitkVectorFloat64))
    x = apply_affine(FIXED.affine, np.array([[3.0, 4, 5], [10, 2, 7]]))  # voxel centres: no interpolation
    theirs = np.array([tx.TransformPoint(tuple(map(float, LPS @ p))) for p in x]) @ LPS
    np.testing.assert_allclose(x + transform.sample_field(ddf, grid, x), theirs, atol=1e-4)


def test_result_folder_reads_back_as_the_registration(tmp_path):
    image = moving_image(4)
    reg = registration("fov", image)
    moving_path, fixed_path = write_pair(tmp_path, image)
    written = export_registration(reg, tmp_path / "out", inverse=True,
                                  sources={"moving": moving_path, "fixed": fixed_path})
    assert {p.name for p in written} >= {DDF_FILE, WARPED_FILE, INVERSE_FILE, "registration.json"}
    back, fixed, record = read_registration(tmp_path / "out")
    np.testing.assert_allclose(back.ddf_mm, reg.ddf_mm, atol=1e-3)
    np.testing.assert_allclose(back.matrix, reg.matrix, atol=1e-6)
    np.testing.assert_allclose(back.warped, reg.warped, atol=1e-4)
    assert fixed is not None and fixed.grid.shape == FIXED.shape and record["moving"] == str(moving_path.resolve())
    inverse, grid = io.load_ddf(tmp_path / "out" / INVERSE_FILE)
    assert grid.shape == MOVING.shape and np.allclose(grid.affine, MOVING.affine, atol=1e-4)
