"""The annotation session and the workspace's geometry, without a viewer."""

import numpy as np
import pytest

from napari_labelreg.app.annotation import AnnotationSession, ball, phantom_database, window
from napari_labelreg.core.geometry import Grid, apply_affine, display_affines, fixed_to_moving


@pytest.mark.parametrize("convention", ["world", "centred", "fov"])
def test_display_affines_put_corresponding_points_at_one_display_position(convention, rng):
    fixed = Grid(
        (20, 24, 18), np.array([[1.5, 0, 0, -10], [0, 1.2, 0, 5], [0, 0, 2.0, 30], [0, 0, 0, 1]], float))
    moving = Grid((30, 28, 26), np.array([[0.8, 0, 0, 4], [0, 1.1, 0, -7], [0, 0, 1.4, 11], [0, 0, 0, 1]], float))
    fixed_affine, moving_affine, exact = display_affines(fixed, moving, convention)
    assert exact
    fixed_voxels = rng.uniform(0, 17, size=(10, 3))
    moving_voxels = apply_affine(fixed_to_moving(fixed, moving, convention), fixed_voxels)
    np.testing.assert_allclose(apply_affine(moving_affine, moving_voxels), apply_affine(fixed_affine, fixed_voxels),
                               atol=1e-9)
    np.testing.assert_allclose(np.diag(fixed_affine)[:3], fixed.spacing)  # TRUS on its own voxel size


def test_a_rotated_correspondence_is_flagged_and_keeps_centres_together():
    fixed = Grid.from_spacing((20, 20, 20), (1.0, 1.0, 1.0))
    c, s_ = np.cos(0.3), np.sin(0.3)
    rotated = np.array([[c, -s_, 0, 0], [s_, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]) @ np.diag([2.0, 2.0, 2.0, 1.0])
    moving = Grid((10, 10, 10), rotated)
    fixed_affine, moving_affine, exact = display_affines(fixed, moving, "world")
    assert not exact
    assert np.count_nonzero(moving_affine[:3, :3] - np.diag(np.diag(moving_affine[:3, :3]))) == 0
    np.testing.assert_allclose(np.diag(moving_affine)[:3], [2.0, 2.0, 2.0])
    centre_moving_in_fixed = apply_affine(np.linalg.inv(fixed_to_moving(fixed, moving, "world")), moving.centre[None])
    np.testing.assert_allclose(apply_affine(moving_affine, moving.centre[None]),
                               apply_affine(fixed_affine, centre_moving_in_fixed), atol=1e-9)


def test_ball_is_a_sphere_in_millimetres_on_anisotropic_voxels():
    where = ball((20, 20, 20), (1.0, 1.0, 2.5), (10, 10, 10), 3.0)
    points = np.stack(where, -1)
    distance = np.linalg.norm((points - 10) * [1.0, 1.0, 2.5], axis=1)
    assert distance.max() <= 3.0 and len(points) > 1
    assert set(points[:, 2]) == {9, 10, 11}  # 2.5-mm voxels: one either side within 3 mm
    assert len(np.stack(ball((20, 20, 20), (1, 1, 1), (0.2, 19.4, 5), 0.1), -1)) >= 1  # at least the nearest voxel
    with pytest.raises(ValueError, match="outside the volume"):
        ball((20, 20, 20), (1, 1, 1), (40, 10, 10), 2.0)


def test_window_clips_percentiles_and_survives_constant_and_nan_images():
    data = np.arange(1000, dtype=np.float32)
    low, high, least, most = window(data, (1.0, 99.0))
    assert low == pytest.approx(9.99) and high == pytest.approx(989.01) and (least, most) == (0.0, 999.0)
    assert window(np.full(10, np.nan, np.float32), (1, 99)) == (0.0, 1.0, 0.0, 1.0)
    low, high, _, most = window(np.ones(10, np.float32), (1, 99))
    assert high > low and most > low


def test_the_session_remembers_the_label_pair_of_each_image_pair_and_steps_cyclically(tmp_path):
    session = AnnotationSession.open(phantom_database(tmp_path, count=2), "alice")
    session.select_pair(0)
    ids = [lp.id for lp in session.label_pairs()]
    session.select_label_pair(ids[2])
    session.step_label_pair(+1)
    assert session.selected == ids[3]
    session.step_label_pair(+1)
    assert session.selected == ids[0]  # cyclic
    session.step_label_pair(-1)
    session.next_pair()
    assert session.selected is None  # not visited yet: nothing selected, so no stray stroke edits its gland
    session.previous_pair()
    assert session.selected == ids[3]  # back where we were
    view = session.view(session.pair.id)
    assert set(view.masks) == set(ids) and view.exact
    assert all(m.shape == view.moving.grid.shape and f.shape == view.fixed.grid.shape for m, f in view.masks.values())


def test_the_palette_keeps_neighbouring_label_pairs_apart_and_readable():
    """Any two label pairs within three numbers of each other differ by CIEDE2000 >= 25 (a just-noticeable
    difference is about 2), none is darker than CIELAB L* 60, and none within 15 of the warped MR's magenta."""
    pytest.importorskip("napari")
    from skimage.color import deltaE_ciede2000, rgb2lab

    from napari_labelreg._widgets.workspace import PALETTE

    rgb = np.array([[int(c[i:i + 2], 16) / 255 for i in (1, 3, 5)] for c in PALETTE])
    lab = rgb2lab(rgb[None])[0]
    n = len(PALETTE)
    near = [deltaE_ciede2000(lab[i], lab[(i + k) % n]) for i in range(n) for k in range(1, 4)]
    assert min(near) >= 25
    assert lab[:, 0].min() >= 60
    magenta = rgb2lab(np.array([[[1.0, 0.0, 1.0]]]))[0, 0]
    assert min(deltaE_ciede2000(c, magenta) for c in lab) >= 15


def test_label_pairs_are_named_after_their_type_and_number_unique_and_renamable(tmp_path):
    session = AnnotationSession.open(phantom_database(tmp_path / "db", count=1), "alice")
    session.select_pair(0)
    from napari_labelreg.app.annotation import number, shown_name

    existing = session.label_pairs()
    a = session.create_label_pair("other")
    b = session.create_label_pair("apex")
    records = {lp.id: lp for lp in session.label_pairs()}
    assert records[a].name == f"other {len(existing) + 1}" == shown_name(records[a])
    assert records[b].name == f"apex {len(existing) + 2}" and number(records[b]) == len(existing) + 2
    with pytest.raises(ValueError, match="already has a label pair named 'apex"):
        session.create_label_pair("other", f"apex {len(existing) + 2}")
    session.select_label_pair(a)
    session.rename(type="calcification", name="calcification left")
    with pytest.raises(ValueError, match="already has a label pair named"):
        session.rename(name=records[b].name)
    with pytest.raises(ValueError, match="cannot be empty"):
        session.rename(name="  ")
    reopened = AnnotationSession.open(session.db.location, "bob")
    reopened.select_pair(0)
    renamed = {lp.id: lp for lp in reopened.label_pairs()}[a]
    assert (renamed.name, renamed.type) == ("calcification left", "calcification")
    unnamed = [lp for lp in existing if not lp.name]  # made before names were given
    assert all(shown_name(lp) == f"{lp.type} {lp.position + 1}" for lp in unnamed)
