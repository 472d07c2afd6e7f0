"""The napari reader and writer (world coordinates, RAS) and the Inspect widget's MR targets.

The grids are oblique, anisotropic and far from the origin, so that a reader or writer that drops the
rotation, the voxel size or the origin, or mixes up LPS and RAS, puts things in the wrong place.
"""

import csv

import numpy as np
import pytest

pytest.importorskip("napari")
# napari warns whenever it slices an oblique volume in 2-D (see napari_labelreg/_io.py)
pytestmark = [pytest.mark.gui, pytest.mark.filterwarnings("ignore:Non-orthogonal slicing:UserWarning")]

from napari_labelreg.app.placement import NAPARI_FROM_RAS, REVERSED, to_napari  # noqa: E402
from napari_labelreg.core import io  # noqa: E402
from test_transforms import oblique, rotation  # noqa: E402  (the oblique grids' makers)
from napari_labelreg.core.geometry import Grid, apply_affine, fixed_to_moving, voxel_coordinates, warp  # noqa: E402

PLUGIN = "napari-labelreg"
LPS = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture(autouse=True)
def private_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


FIXED = oblique((18, 20, 16), (1.2, 1.0, 1.5), (1, 1, 0), 25, (-10.0, 5.0, 30.0))  # the TRUS
MOVING = oblique((22, 18, 24), (0.9, 1.1, 1.0), (0, 1, 2), -35, (40.0, -20.0, 10.0))  # the MR


def sharing(grid: Grid, voxel, point) -> Grid:
    """``grid`` moved so that ``voxel`` lies at world ``point``."""
    affine = grid.affine.copy()
    affine[:3, 3] = point - affine[:3, :3] @ np.asarray(voxel, float)
    return Grid(grid.shape, affine)


def bump(points_mm):
    """A known smooth deformation (mm) at fixed world points."""
    centre = apply_affine(FIXED.affine, FIXED.centre)
    d = points_mm - centre
    weight = np.exp(-(d ** 2).sum(-1, keepdims=True) / (2 * 8.0 ** 2))
    return 4.0 * weight * np.stack([np.sin(d[..., 1] / 6), np.cos(d[..., 2] / 7), np.sin(d[..., 0] / 5)], -1) \
        + np.array([3.0, -2.0, 1.0])


def smooth_image(shape, seed):
    from scipy.ndimage import gaussian_filter

    return (100 * gaussian_filter(np.random.default_rng(seed).normal(size=shape), 2.0)).astype(np.float32)


def registered(geometry="centred"):
    from napari_labelreg.pipeline.registrator import Registration

    matrix = fixed_to_moving(FIXED, MOVING, geometry)
    ddf = bump(apply_affine(FIXED.affine, voxel_coordinates(FIXED.shape))).astype(np.float32)
    moving = smooth_image(MOVING.shape, 0)
    return Registration(ddf, FIXED, MOVING, matrix, warp(moving, FIXED, MOVING, matrix, ddf)), moving


def write_sitk(path, data, grid: Grid):
    """An image written by SimpleITK straight from the RAS grid (LPS direction and origin), not by our writer."""
    sitk = pytest.importorskip("SimpleITK")
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0)))
    spacing = grid.spacing
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(v) for v in LPS @ grid.affine[:3, 3]])
    img.SetDirection([float(v) for v in (LPS @ grid.affine[:3, :3] / spacing).ravel()])
    sitk.WriteImage(img, str(path))


# --- (a), (b): images where they are in the world ------------------------------------------------------------


def test_an_oblique_nifti_opens_with_its_voxels_where_the_header_puts_them(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    data = np.zeros(FIXED.shape, np.float32)
    voxel = (3, 14, 9)
    data[voxel] = 100.0
    path = tmp_path / "trus.nii.gz"
    io.save_volume(path, data, FIXED)
    (layer,) = viewer.open(path, plugin=PLUGIN)
    assert layer.name == "trus" and type(layer).__name__ == "Image"
    np.testing.assert_array_equal(layer.data, data.transpose(2, 1, 0))  # napari's (k, j, i), as ITK's arrays
    marked = tuple(np.argwhere(layer.data == layer.data.max())[0])
    ras = apply_affine(FIXED.affine, np.array(voxel, float))
    np.testing.assert_allclose(layer.data_to_world(marked), to_napari(ras), atol=1e-6)
    np.testing.assert_allclose(layer.data_to_world(marked), [ras[2], -ras[1], -ras[0]], atol=1e-6)  # S, P, L
    np.testing.assert_allclose(layer.world_to_data(to_napari(ras)), voxel[::-1], atol=1e-6)
    np.testing.assert_allclose(layer.metadata["affine"], FIXED.affine)
    assert layer.metadata["source"] == str(path)
    assert tuple(layer.axis_labels) == ("S", "P", "L")


@pytest.mark.parametrize("trus_suffix", [".nii.gz", ".nrrd", ".mha"])
def test_an_mr_and_a_trus_of_different_geometries_overlay_at_a_shared_point(make_napari_viewer, tmp_path,
                                                                            trus_suffix):
    viewer = make_napari_viewer()
    point = np.array([12.5, -40.0, 63.0])  # world RAS mm, the same tissue seen by both
    mr_voxel, trus_voxel = (15, 4, 20), (2, 17, 6)
    mr_grid, trus_grid = sharing(MOVING, mr_voxel, point), sharing(FIXED, trus_voxel, point)
    mr, trus = np.zeros(mr_grid.shape, np.float32), np.zeros(trus_grid.shape, np.float32)
    mr[mr_voxel], trus[trus_voxel] = 50.0, 80.0
    io.save_volume(tmp_path / "mr.nii.gz", mr, mr_grid)
    write_sitk(tmp_path / f"trus{trus_suffix}", trus, trus_grid)  # the scanner's LPS geometry
    (mr_layer,) = viewer.open(tmp_path / "mr.nii.gz", plugin=PLUGIN)
    (trus_layer,) = viewer.open(tmp_path / f"trus{trus_suffix}", plugin=PLUGIN)
    for layer in (mr_layer, trus_layer):
        bright = tuple(np.argwhere(layer.data == layer.data.max())[0])
        np.testing.assert_allclose(layer.data_to_world(bright), to_napari(point), atol=1e-4)
    np.testing.assert_allclose(trus_layer.metadata["affine"], trus_grid.affine, atol=1e-5)


def test_a_label_map_named_so_opens_as_labels_and_an_integer_image_does_not(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    labels = np.zeros(FIXED.shape, np.uint8)
    labels[4:8, 5:9, 3:6] = 2
    io.save_volume(tmp_path / "case1_seg.nii.gz", labels, FIXED)
    io.save_volume(tmp_path / "case1.nii.gz", labels, FIXED)  # integer voxels, but its name says image
    io.save_volume(tmp_path / "mask_soft.nii.gz", labels * 0.3, FIXED)  # named labels, but not integer
    (seg,) = viewer.open(tmp_path / "case1_seg.nii.gz", plugin=PLUGIN)
    (image,) = viewer.open(tmp_path / "case1.nii.gz", plugin=PLUGIN)
    (soft,) = viewer.open(tmp_path / "mask_soft.nii.gz", plugin=PLUGIN)
    assert type(seg).__name__ == "Labels" and np.issubdtype(seg.data.dtype, np.integer)
    np.testing.assert_array_equal(seg.data, labels.transpose(2, 1, 0))
    assert type(image).__name__ == "Image" and type(soft).__name__ == "Image"
    # a 4-D stack of masks (the mrus_prostate layout) opens as one label map, value k + 1 for mask k
    stack = np.zeros((*FIXED.shape, 2), np.uint8)
    stack[2:5, 2:5, 2:5, 0] = 1
    stack[10:12, 10:12, 10:12, 1] = 1
    io.save_volume(tmp_path / "fixed_labels.nii.gz", stack, FIXED)
    (stacked,) = viewer.open(tmp_path / "fixed_labels.nii.gz", plugin=PLUGIN)
    assert type(stacked).__name__ == "Labels" and set(np.unique(stacked.data)) == {0, 1, 2}
    np.testing.assert_allclose(stacked.metadata["affine"], FIXED.affine, atol=1e-5)


# --- (c): a register output folder ------------------------------------------------------------------------


def export_folder(tmp_path, *, with_labels=True):
    from napari_labelreg.app.results import export_registration

    registration, moving = registered()
    trus = smooth_image(FIXED.shape, 1)
    io.save_volume(tmp_path / "trus.nii.gz", trus, FIXED)
    io.save_volume(tmp_path / "mr.nii.gz", moving, MOVING)
    labels = None
    if with_labels:
        labels = np.zeros((1, *MOVING.shape), bool)
        labels[0, 6:16, 5:13, 7:17] = True
    folder = tmp_path / "result"
    export_registration(registration, folder, labels,
                        sources={"fixed": tmp_path / "trus.nii.gz", "moving": tmp_path / "mr.nii.gz"})
    return folder, registration, trus


def test_a_register_output_folder_opens_as_the_inspection_layers_in_world(make_napari_viewer, tmp_path):
    folder, registration, trus = export_folder(tmp_path)
    viewer = make_napari_viewer()
    layers = viewer.open(folder, plugin=PLUGIN)
    names = [layer.name.split(": ", 1)[1] for layer in layers]
    assert all(layer.name.startswith("result: ") for layer in layers)
    assert names[:4] == ["TRUS image (fixed)", "warped MR (moving on fixed)", "displacement magnitude (mm)",
                         "Jacobian determinant"]
    assert {"displacement gradient norm", "DDF (fixed -> moving, mm)", "warped MR labels"} <= set(names)
    assert any(n.startswith("folding voxels (det <= 0): ") for n in names)
    by_name = {n: layer for n, layer in zip(names, layers)}
    jacobian = by_name["Jacobian determinant"]
    assert jacobian.data.shape == FIXED.shape[::-1]
    assert np.all(jacobian.data > 0)  # the known bump folds nowhere
    np.testing.assert_allclose(jacobian.affine.affine_matrix, NAPARI_FROM_RAS @ FIXED.affine @ REVERSED, atol=1e-5)
    np.testing.assert_allclose(by_name["TRUS image (fixed)"].data, trus.transpose(2, 1, 0), atol=1e-5)
    assert by_name["TRUS image (fixed)"].metadata["folding_voxels"] == 0
    warped_labels = by_name["warped MR labels"]
    assert type(warped_labels).__name__ == "Labels" and warped_labels.data.any()

    # the TRUS file opened on its own overlays the folder's layers: a voxel is at the same world point
    (trus_layer,) = viewer.open(tmp_path / "trus.nii.gz", plugin=PLUGIN)
    for voxel in [(0, 0, 0), (5, 11, 3), (17, 19, 15)]:
        np.testing.assert_allclose(trus_layer.data_to_world(voxel), jacobian.data_to_world(voxel), atol=1e-4)
    # the vectors start at world voxel centres and are the DDF in world mm
    vectors = by_name["DDF (fixed -> moving, mm)"].data
    starts = vectors[:, 0]
    voxels = np.round(apply_affine(np.linalg.inv(NAPARI_FROM_RAS @ FIXED.affine), starts)).astype(int)
    np.testing.assert_allclose(to_napari(apply_affine(FIXED.affine, voxels.astype(float))), starts, atol=1e-4)
    np.testing.assert_allclose(vectors[:, 1], to_napari(registration.ddf_mm[tuple(voxels.T)]), atol=1e-3)


def test_a_folder_whose_trus_file_is_gone_opens_without_it(make_napari_viewer, tmp_path):
    folder, _, _ = export_folder(tmp_path, with_labels=False)
    (tmp_path / "trus.nii.gz").unlink()
    viewer = make_napari_viewer()
    with pytest.warns(UserWarning, match="trus.nii.gz: not found"):
        layers = viewer.open(folder, plugin=PLUGIN)
    names = [layer.name.split(": ", 1)[1] for layer in layers]
    assert names[0] == "warped MR (moving on fixed)" and "TRUS image (fixed)" not in names
    assert "warped MR labels" not in names
    assert layers[0].metadata["folding_voxels"] == 0  # the metrics go with the first layer


# --- (d): writing labels on their image's grid ----------------------------------------------------------


def check_written(path, labels, grid: Grid, *, itk=True):
    """nibabel reads the array and the affine back; SimpleITK (``itk``) the array and the LPS geometry."""
    import nibabel as nib

    sitk = pytest.importorskip("SimpleITK")
    if str(path).endswith(io.NIFTI_SUFFIXES):
        img = nib.load(str(path))
        np.testing.assert_array_equal(np.asarray(img.dataobj), labels)
        np.testing.assert_allclose(img.affine, grid.affine, atol=1e-4)
    if not itk:
        return
    img = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(img).transpose(2, 1, 0), labels)
    spacing = grid.spacing
    np.testing.assert_allclose(img.GetSpacing(), spacing, atol=1e-5)
    np.testing.assert_allclose(img.GetOrigin(), LPS @ grid.affine[:3, 3], atol=1e-4)
    np.testing.assert_allclose(np.reshape(img.GetDirection(), (3, 3)), LPS @ grid.affine[:3, :3] / spacing, atol=1e-5)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_labels_painted_on_an_opened_image_save_on_its_grid(make_napari_viewer, tmp_path, suffix):
    viewer = make_napari_viewer()
    io.save_volume(tmp_path / "trus.nii.gz", smooth_image(FIXED.shape, 2), FIXED)
    (image,) = viewer.open(tmp_path / "trus.nii.gz", plugin=PLUGIN)
    painted = np.zeros(FIXED.shape, np.uint8)
    painted[3:9, 4:12, 2:7] = 1
    painted[10:13, 2:5, 8:14] = 3
    # as napari's New Labels button makes it over the selected image: its transform, not its metadata
    labels = viewer.add_labels(painted.transpose(2, 1, 0), affine=image.affine, units=image.units,
                               axis_labels=image.axis_labels, name="gland labels")
    assert "affine" not in labels.metadata
    viewer.layers.selection = {labels}
    path = tmp_path / f"gland_labels{suffix}"  # named so that it opens as Labels again
    assert viewer.layers.save(str(path), selected=True, plugin=PLUGIN) == [str(path)]
    check_written(path, painted, FIXED)
    # and back through the reader: a Labels layer where it was painted
    (back,) = viewer.open(path, plugin=PLUGIN)
    assert type(back).__name__ == "Labels"
    np.testing.assert_array_equal(back.data, painted.transpose(2, 1, 0))
    np.testing.assert_allclose(back.affine.affine_matrix, NAPARI_FROM_RAS @ FIXED.affine @ REVERSED, atol=1e-4)


def test_the_writer_takes_the_stored_affine_first_and_composes_napari_transforms_otherwise(tmp_path):
    from napari.layers import Labels

    from napari_labelreg._io import NotWritten, layer_affine, write_labels

    painted = np.zeros((6, 7, 8), np.uint16)
    painted[1:3, 2:5, 3:6] = 300
    # scale, translate, rotate and shear, with no stored affine: napari's own data -> world
    layer = Labels(painted, scale=(1.2, 0.8, 2.0), translate=(5.0, -3.0, 7.0), rotate=rotation((1, 2, 3), 20),
                   shear=(0.1, 0.0, 0.2))
    _, meta, _ = layer.as_layer_data_tuple()
    affine = layer_affine(meta)
    for voxel in [(0, 0, 0), (5, 6, 7), (2, 3, 1)]:  # napari's array order is the file's reversed
        np.testing.assert_allclose(to_napari(apply_affine(affine, np.array(voxel[::-1], float))),
                                   layer.data_to_world(voxel), atol=1e-6)
    in_file = painted.transpose(2, 1, 0)
    written = write_labels(str(tmp_path / "composed.nii.gz"), painted, meta)
    check_written(written[0], in_file, Grid(in_file.shape, affine), itk=False)  # ITK directions hold no shear
    unsheared = Labels(painted, scale=(1.2, 0.8, 2.0), translate=(5.0, -3.0, 7.0), rotate=rotation((1, 2, 3), 20))
    _, meta, _ = unsheared.as_layer_data_tuple()
    written = write_labels(str(tmp_path / "rotated.nii.gz"), painted, meta)
    check_written(written[0], in_file, Grid(in_file.shape, layer_affine(meta)))
    # the stored affine of the image read wins
    stored = {**meta, "metadata": {"affine": FIXED.affine.tolist()}}
    np.testing.assert_allclose(layer_affine(stored), FIXED.affine)
    with pytest.raises(NotWritten, match=r"3-D label maps; layer .* is 4-D \(2, 6, 7, 8\)"):
        write_labels(str(tmp_path / "stack.nii.gz"), np.zeros((2, *painted.shape), np.uint8), meta)


def test_saving_a_2d_labels_layer_is_refused_with_the_reason(make_napari_viewer, tmp_path):
    from napari_labelreg._io import NotWritten

    viewer = make_napari_viewer()
    labels = viewer.add_labels(np.zeros((5, 6), np.uint8), name="flat")
    viewer.layers.selection = {labels}
    with pytest.raises(NotWritten, match="writes 3-D label maps; layer 'flat' is 2-D"):
        viewer.layers.save(str(tmp_path / "flat.nii.gz"), selected=True, plugin=PLUGIN)
    assert not (tmp_path / "flat.nii.gz").exists()


# --- (e): what the reader does not claim, and corrupt files it does -------------------------------------


def test_a_corrupt_file_gives_one_line_and_foreign_paths_are_not_claimed(make_napari_viewer, tmp_path):
    from napari.plugins import _npe2

    from napari_labelreg._io import get_reader

    viewer = make_napari_viewer()
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"\x1f\x8b not a gzip stream at all" * 10)
    assert get_reader(str(bad)) is not None  # ours by its name
    with pytest.raises(io.DataError) as caught:
        viewer.open(bad, plugin=PLUGIN)
    message = str(caught.value)
    assert "\n" not in message and str(bad) in message
    assert len(viewer.layers) == 0

    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    plain = tmp_path / "plain_folder"
    plain.mkdir()
    (plain / "readme.md").write_text("nothing medical")
    for path in (text, plain, tmp_path / "missing.nii.gz", tmp_path / "broken.nii.gz.bak"):
        assert get_reader(str(path)) is None, path
    assert get_reader([str(bad), str(bad)]) is None  # a stack: not ours
    assert PLUGIN not in _npe2.get_readers(str(text))


def write_dicom_series(folder, data, grid: Grid, suffix=".dcm"):
    """One file a slice (int16), as SimpleITK's "DICOM series from array" example writes them."""
    sitk = pytest.importorskip("SimpleITK")
    folder.mkdir(parents=True)
    img = sitk.GetImageFromArray(np.ascontiguousarray(data.astype(np.int16).transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in grid.spacing])
    img.SetOrigin([float(v) for v in LPS @ grid.affine[:3, 3]])
    direction = LPS @ grid.affine[:3, :3] / grid.spacing
    img.SetDirection([float(v) for v in direction.ravel()])
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(img.GetDepth()):
        piece = img[:, :, k]
        for tag, value in (
            ("0008|0060", "US"),
            ("0020|000e", "1.2.826.0.1.3680043.2.1125.9.1"),
            ("0020|000d", "1.2.826.0.1.3680043.2.1125.9"),
            ("0020|0037", "\\".join(f"{v:.10f}" for v in (*direction[:, 0], *direction[:, 1]))),
            ("0020|0032", "\\".join(f"{v:.6f}" for v in img.TransformIndexToPhysicalPoint((0, 0, k)))),
            ("0020|0013", str(k + 1)),
            ("0028|0030", f"{img.GetSpacing()[1]}\\{img.GetSpacing()[0]}"),
            ("0018|0050", str(img.GetSpacing()[2])),
        ):
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"IM{k:04d}.dcm"))
        writer.Execute(piece)
        (folder / f"IM{k:04d}.dcm").rename(folder / f"IM{k:04d}{suffix}")
    return folder


@pytest.mark.parametrize("suffix", [".dcm", ""])  # files with no suffix are known by their DICM magic
def test_a_dicom_series_directory_opens_in_world(make_napari_viewer, tmp_path, suffix):
    from napari_labelreg._io import get_reader

    grid = Grid(FIXED.shape, FIXED.affine.copy())
    grid.affine[:3, :3] = rotation((0, 0, 1), 15) @ np.diag([0.8, 0.8, 1.5])  # slices stack along their normal
    data = np.zeros(grid.shape, np.float32)
    voxel = (4, 13, 9)
    data[voxel] = 900
    series = write_dicom_series(tmp_path / "series", data, grid, suffix)
    assert get_reader(str(series)) is not None
    viewer = make_napari_viewer()
    (layer,) = viewer.open(series, plugin=PLUGIN)
    bright = tuple(np.argwhere(layer.data == layer.data.max())[0])
    np.testing.assert_allclose(layer.data_to_world(bright),
                               to_napari(apply_affine(grid.affine, np.array(voxel, float))), atol=1e-3)


# --- (f): MR targets mapped onto the TRUS in the Inspect widget -------------------------------------------


def test_mr_targets_map_onto_the_trus_and_points_outside_are_refused(make_napari_viewer, qtbot, tmp_path,
                                                                     monkeypatch):
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    from napari_labelreg._widgets import _common
    from napari_labelreg._widgets.inspect import TARGETS_LAYER, InspectWidget
    from napari_labelreg.app.inspection import inspection_layers

    registration, moving = registered("centred")
    pair = io.Pair("case7", io.Volume(moving, MOVING), io.Volume(smooth_image(FIXED.shape, 3), FIXED))
    viewer = make_napari_viewer()
    w = InspectWidget(viewer)
    viewer.window.add_dock_widget(w)
    assert not w.targets_btn.isEnabled()  # nothing to map through yet
    w.show_result((registration, pair, inspection_layers(registration, pair)))
    assert w.targets_btn.isEnabled()

    # targets planned on the MR: where known TRUS points truly lie in the MR file's world
    rng = np.random.default_rng(5)
    on_trus = apply_affine(FIXED.affine, rng.uniform(3, np.asarray(FIXED.shape) - 4, (4, 3)))
    on_mr = apply_affine(registration.initial, on_trus + bump(on_trus))
    targets = tmp_path / "targets.csv"
    with open(targets, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["label", "x", "y", "z"])
        for k, p in enumerate(on_mr):
            out.writerow([f"target {k + 1}", *p])
    monkeypatch.setattr(w, "ask_points_file", lambda: str(targets))
    QTest.mouseClick(w.targets_btn, Qt.MouseButton.LeftButton)
    layer = viewer.layers[TARGETS_LAYER]
    # in the plugin's world (S, P, L), where the reader puts the TRUS file too
    np.testing.assert_allclose(layer.data, to_napari(on_trus), atol=0.1)  # trilinear sampling of a smooth field
    trus = viewer.layers["case7: TRUS image (fixed)"]
    np.testing.assert_allclose([trus.world_to_data(p) for p in layer.data],
                               apply_affine(np.linalg.inv(FIXED.affine), on_trus)[:, ::-1], atol=0.1)
    assert list(layer.features["label"]) == [f"target {k + 1}" for k in range(4)]
    assert np.all(layer.features["residual_mm"] < 1e-3)
    assert list(layer.text.values) == [f"target {k + 1}" for k in range(4)]

    # a target the registration does not reach: refused in one line, the earlier targets kept
    shown = []
    monkeypatch.setattr(_common, "show_error", shown.append)
    far = tmp_path / "far.csv"
    far.write_text("label,x,y,z\n" + "".join(f"t{k},{p[0]},{p[1]},{p[2]}\n" for k, p in enumerate(on_mr))
                   + "apex,400,400,400\n")
    monkeypatch.setattr(w, "ask_points_file", lambda: str(far))
    QTest.mouseClick(w.targets_btn, Qt.MouseButton.LeftButton)
    assert len(shown) == 1 and "\n" not in shown[0], shown
    assert shown[0].startswith(f"{far}: 'apex' (point 5): outside the fixed image once mapped"), shown
    assert shown[0].endswith("none shown"), shown
    assert w.summary.text() == shown[0]  # stays after the notification fades
    assert [la.name for la in viewer.layers].count(TARGETS_LAYER) == 1
    assert list(viewer.layers[TARGETS_LAYER].features["label"])[0] == "target 1"


def test_a_register_output_folder_opens_in_the_inspect_widget_and_maps_targets(make_napari_viewer, qtbot, tmp_path,
                                                                                monkeypatch):
    """Your own MR and TRUS, registered from the command line: the widget shows the folder and maps through it."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    from napari_labelreg._widgets.inspect import TARGETS_LAYER, InspectWidget

    folder, registration, trus = export_folder(tmp_path)
    viewer = make_napari_viewer()
    w = InspectWidget(viewer)
    viewer.window.add_dock_widget(w)
    monkeypatch.setattr(w, "ask_result_folder", lambda: str(folder))
    open_btn = next(b for b in w.findChildren(type(w.targets_btn)) if b.text().startswith("Open a register"))
    QTest.mouseClick(open_btn, Qt.MouseButton.LeftButton)
    np.testing.assert_allclose(viewer.layers["result: TRUS image (fixed)"].data, trus.transpose(2, 1, 0), atol=1e-5)
    assert "result: Jacobian determinant" in viewer.layers and w.summary.text().startswith("result: folding voxels 0")
    assert w.targets_btn.isEnabled()
    on_trus = apply_affine(FIXED.affine, np.array([[8.0, 9, 7], [6, 12, 9]]))
    on_mr = apply_affine(registration.initial, on_trus + bump(on_trus))
    (tmp_path / "t.csv").write_text("label,x,y,z\n" + "".join(f"t{k},{p[0]},{p[1]},{p[2]}\n"
                                                              for k, p in enumerate(on_mr)))
    w.map_targets(str(tmp_path / "t.csv"))
    np.testing.assert_allclose(viewer.layers[TARGETS_LAYER].data, to_napari(on_trus), atol=0.1)
    # and they land on the TRUS file opened with the reader, at the voxels they truly are
    (trus_file,) = viewer.open(tmp_path / "trus.nii.gz", plugin=PLUGIN)
    np.testing.assert_allclose([trus_file.world_to_data(p) for p in viewer.layers[TARGETS_LAYER].data],
                               np.array([[8.0, 9, 7], [6, 12, 9]])[:, ::-1], atol=0.1)
