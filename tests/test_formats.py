"""Scanner formats in: NIfTI, NRRD, MetaImage and DICOM series read to the same arrays and world positions.

The test volume has a geometry nothing trivial hides behind: direction cosines rotated about a
non-axis, anisotropic spacing, an origin off zero and a non-cubic shape.  The files are written with
SimpleITK and nibabel directly (not with the code under test), and the expected world positions come
from SimpleITK's own TransformIndexToPhysicalPoint, LPS turned to RAS.
"""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_labelreg.core import io
from napari_labelreg.core.geometry import Grid, apply_affine
from napari_labelreg.database import LabelDB
from napari_labelreg.database.transfer import export_folder, import_folder

sitk = pytest.importorskip("SimpleITK")

SHAPE = (7, 9, 11)  # (i, j, k)
SPACING = (0.7, 1.3, 2.1)
ORIGIN = (-12.5, 30.25, 4.0)  # LPS mm
MARKS = [(0, 0, 0), (6, 8, 10), (3, 1, 7), (5, 4, 2)]
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def rotation(axis, angle):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


DIRECTION = rotation((1, 2, 3), 0.4)  # LPS direction cosines, columns = i, j, k axes


def volume_ijk():
    """Integer-valued (DICOM stores int16) with the marked voxels set apart."""
    data = (np.arange(np.prod(SHAPE)).reshape(SHAPE) % 50).astype(np.int16)
    for n, m in enumerate(MARKS):
        data[m] = 1000 + n
    return data


def sitk_volume(data_ijk=None, components=False):
    data_ijk = volume_ijk() if data_ijk is None else data_ijk
    arr = np.ascontiguousarray(data_ijk.transpose(2, 1, 0, *range(3, data_ijk.ndim)))
    img = sitk.GetImageFromArray(arr, isVector=components)
    img.SetDirection(DIRECTION.ravel().tolist())
    img.SetSpacing(SPACING)
    img.SetOrigin(ORIGIN)
    return img


def expected_ras(index):
    """Where SimpleITK itself puts the voxel, in RAS."""
    return LPS_TO_RAS @ np.asarray(sitk_volume().TransformIndexToPhysicalPoint([int(x) for x in index]))


def write_nifti(path, data_ijk):
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ DIRECTION @ np.diag(SPACING)
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(ORIGIN)
    img = nib.Nifti1Image(data_ijk, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    nib.save(img, str(path))
    return path


def write_dicom_series(folder, img, series_uid="1.2.826.0.1.3680043.2.1125.7.1", prefix="slice"):
    """One file a slice, as SimpleITK's "DICOM series from array" example writes them."""
    folder.mkdir(parents=True, exist_ok=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    direction = np.asarray(img.GetDirection()).reshape(3, 3)
    for k in range(img.GetDepth()):
        piece = img[:, :, k]
        position = img.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (
            ("0008|0060", "MR"),
            ("0020|000e", series_uid),
            ("0020|000d", "1.2.826.0.1.3680043.2.1125.7"),
            ("0020|0037", "\\".join(f"{v:.10f}" for v in (*direction[:, 0], *direction[:, 1]))),
            ("0020|0032", "\\".join(f"{v:.6f}" for v in position)),
            ("0020|0013", str(k + 1)),
            ("0028|0030", f"{img.GetSpacing()[1]}\\{img.GetSpacing()[0]}"),  # row spacing (j), column spacing (i)
            ("0018|0050", str(img.GetSpacing()[2])),
        ):
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{prefix}{k:03d}.dcm"))
        writer.Execute(piece)
    return folder


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    img = sitk_volume()
    files = {"nifti": write_nifti(root / "vol.nii.gz", volume_ijk())}
    for name, suffix in (("nrrd", ".nrrd"), ("nhdr", ".nhdr"), ("mha", ".mha"), ("mhd", ".mhd")):
        files[name] = root / f"{name}{suffix}"  # .mhd and .nhdr: a separate data file each
        sitk.WriteImage(img, str(files[name]))
    files["dicom"] = write_dicom_series(root / "dicom", img)
    return files


def test_every_format_reads_the_same_voxels_at_the_same_world_positions(written):
    expected_world = np.array([expected_ras(m) for m in MARKS])
    worlds = {}
    for name, path in written.items():
        vol = io.load_volume(path)
        assert vol.grid.shape == SHAPE, name
        np.testing.assert_array_equal(vol.data, volume_ijk().astype(np.float32), err_msg=name)
        found = [tuple(np.argwhere(vol.data == 1000 + n)[0]) for n in range(len(MARKS))]
        assert found == MARKS, name
        worlds[name] = apply_affine(vol.grid.affine, np.array(MARKS, float))
        np.testing.assert_allclose(worlds[name], expected_world, atol=1e-3, err_msg=name)
        np.testing.assert_allclose(vol.grid.spacing, SPACING, atol=1e-4, err_msg=name)
    for name in worlds:
        np.testing.assert_allclose(worlds[name], worlds["nifti"], atol=1e-3, err_msg=name)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_save_volume_round_trips_the_oblique_grid(written, tmp_path, suffix):
    vol = io.load_volume(written["nrrd"])
    io.save_volume(tmp_path / f"out{suffix}", vol.data, vol.grid)
    back = io.load_volume(tmp_path / f"out{suffix}")
    np.testing.assert_array_equal(back.data, vol.data)
    atol = 1e-4 if suffix == ".nii.gz" else 1e-9  # NIfTI keeps its affine in float32
    np.testing.assert_allclose(back.grid.affine, vol.grid.affine, atol=atol)
    assert not list(tmp_path.glob(".*")), "temporary file left behind"


def test_mhd_and_nhdr_are_not_written(tmp_path):
    grid = Grid.from_spacing((3, 3, 3))
    for name in ("x.mhd", "x.nhdr"):
        with pytest.raises(io.DataError, match=name):
            io.save_volume(tmp_path / name, np.zeros((3, 3, 3), np.float32), grid)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_labels_round_trip_as_masks_and_stacks(written, tmp_path, suffix):
    grid = io.load_volume(written["nifti"]).grid
    stack = np.zeros((*SHAPE, 2), bool)
    stack[1:4, 2:5, 3:9, 0] = True
    stack[4:6, 0:3, 0:2, 1] = True
    io.save_volume(tmp_path / f"stack{suffix}", stack.astype(np.uint8), grid)
    np.testing.assert_array_equal(io.load_labels(tmp_path / f"stack{suffix}", grid), np.moveaxis(stack, -1, 0))
    io.save_volume(tmp_path / f"mask{suffix}", stack[..., 0], grid)  # bool: written as uint8
    np.testing.assert_array_equal(io.load_labels(tmp_path / f"mask{suffix}", grid), stack[None, ..., 0])
    # a mask written by SimpleITK itself, and a multi-component one
    sitk.WriteImage(sitk_volume(stack[..., 1].astype(np.uint8)), str(tmp_path / f"itk{suffix}"))
    np.testing.assert_array_equal(io.load_labels(tmp_path / f"itk{suffix}", grid)[0], stack[..., 1])
    sitk.WriteImage(sitk_volume(stack.astype(np.uint8), components=True), str(tmp_path / f"itk4{suffix}"))
    np.testing.assert_array_equal(io.load_labels(tmp_path / f"itk4{suffix}", grid), np.moveaxis(stack, -1, 0))
    masks = [sitk_volume(stack[..., m].astype(np.uint8)) for m in range(2)]
    sitk.WriteImage(sitk.JoinSeries(masks), str(tmp_path / f"itk4d{suffix}"))  # a 4-D scalar image, as a NIfTI stack
    np.testing.assert_array_equal(io.load_labels(tmp_path / f"itk4d{suffix}", grid), np.moveaxis(stack, -1, 0))


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_an_itk_ddf_reads_back_as_the_ras_vector(tmp_path, suffix):
    lps = np.array([1.5, -2.0, 3.25], np.float32)
    field = sitk_volume(np.broadcast_to(lps, (*SHAPE, 3)).astype(np.float32), components=True)
    sitk.WriteImage(field, str(tmp_path / f"ddf{suffix}"))
    ddf, grid = io.load_ddf(tmp_path / f"ddf{suffix}")
    assert ddf.shape == (*SHAPE, 3)
    np.testing.assert_array_equal(ddf, np.broadcast_to(LPS_TO_RAS @ lps, ddf.shape))
    np.testing.assert_allclose(apply_affine(grid.affine, np.array(MARKS, float)),
                               [expected_ras(m) for m in MARKS], atol=1e-6)
    # and save_ddf writes what ITK reads as that LPS vector
    io.save_ddf(tmp_path / f"ours{suffix}", ddf, grid)
    itk = sitk.ReadImage(str(tmp_path / f"ours{suffix}"))
    np.testing.assert_allclose(sitk.GetArrayFromImage(itk)[0, 0, 0], lps)
    np.testing.assert_allclose(itk.GetDirection(), DIRECTION.ravel(), atol=1e-12)


def test_a_ddf_in_a_ras_space_nrrd_keeps_its_ras_components(tmp_path):
    # ITK turns a RAS-space NRRD's geometry to LPS but leaves the stored vectors alone
    path = tmp_path / "ras.nrrd"
    data = np.zeros((2, 2, 2, 3), np.float32) + np.array([1.0, 2.0, 3.0], np.float32)  # (k, j, i, c)
    header = ("NRRD0004\ntype: float\ndimension: 4\nspace: right-anterior-superior\nsizes: 3 2 2 2\n"
              "space directions: none (2,0,0) (0,3,0) (0,0,4)\nkinds: vector domain domain domain\n"
              "endian: little\nencoding: raw\nspace origin: (10,20,30)\n\n")
    path.write_bytes(header.encode() + data.tobytes())
    ddf, grid = io.load_ddf(path)
    np.testing.assert_array_equal(ddf[0, 0, 0], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(grid.affine, [[2, 0, 0, 10], [0, 3, 0, 20], [0, 0, 4, 30], [0, 0, 0, 1]])
    path.write_bytes(header.replace("\n\n", "\nmeasurement frame: (0,1,0) (1,0,0) (0,0,1)\n\n").encode()
                     + data.tobytes())
    with pytest.raises(io.DataError, match="ras.nrrd: NRRD measurement frame"):
        io.load_ddf(path)


# --- refusals: one line, naming the file -----------------------------------------------------------------------


def refused(path, reader=io.load_volume, *args):
    with pytest.raises(io.DataError) as info:
        reader(path, *args)
    message = str(info.value)
    assert str(path) in message and "\n" not in message, message
    assert "Traceback" not in message and "SimpleITK" not in message, message
    return message


def test_a_2d_image_is_refused(tmp_path):
    for suffix in (".nrrd", ".mha"):
        sitk.WriteImage(sitk.GetImageFromArray(np.ones((5, 6), np.float32)), str(tmp_path / f"flat{suffix}"))
        assert "expected a 3-D image, got shape (6, 5)" in refused(tmp_path / f"flat{suffix}")


def test_a_4d_image_is_refused_as_a_volume(tmp_path):
    volumes = [sitk.GetImageFromArray(np.ones((4, 5, 6), np.float32)) for _ in range(2)]
    sitk.WriteImage(sitk.JoinSeries(volumes), str(tmp_path / "four.mha"))  # a 4-D scalar image
    assert "expected a 3-D image, got shape (6, 5, 4, 2)" in refused(tmp_path / "four.mha")
    sitk.WriteImage(sitk_volume(np.ones((*SHAPE, 3), np.float32), components=True), str(tmp_path / "vec.nrrd"))
    assert "expected a 3-D image, got shape (7, 9, 11, 3)" in refused(tmp_path / "vec.nrrd")


def test_a_nan_voxel_is_refused(tmp_path):
    data = volume_ijk().astype(np.float32)
    data[2, 3, 4] = np.nan
    sitk.WriteImage(sitk_volume(data), str(tmp_path / "nan.mha"))
    assert "NaN" in refused(tmp_path / "nan.mha")


def test_a_text_file_named_nrrd_is_refused(tmp_path, capfd):
    path = tmp_path / "notes.nrrd"
    path.write_text("hello\nthis is not an image\n")
    assert "cannot read as NRRD" in refused(path)
    assert capfd.readouterr().err == ""  # nothing of ITK's on the terminal


@pytest.mark.parametrize("suffix,fmt", [(".mha", "MetaImage"), (".nrrd", "NRRD")])
def test_a_truncated_file_is_refused(written, tmp_path, capfd, suffix, fmt):
    raw = written["mha" if suffix == ".mha" else "nrrd"].read_bytes()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(raw[: len(raw) - 200])
    assert f"cannot read as {fmt}" in refused(path)
    assert capfd.readouterr().err == ""  # MetaIO's own complaints are folded into the one line


def test_a_missing_file_and_a_dangling_link_are_named(tmp_path):
    assert "file not found" in refused(tmp_path / "gone.nrrd")
    (tmp_path / "link.mha").symlink_to(tmp_path / "nowhere.mha")
    assert "dangling symbolic link" in refused(tmp_path / "link.mha")


def huge_nifti(path):
    """A NIfTI-2 header claiming 100000^3 float32 voxels, followed by a few bytes of data."""
    header = nib.Nifti2Header()
    header.set_data_shape((100000, 100000, 100000))
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 544
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 64)
    return path


def huge_mha(path):
    path.write_text("ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 100000\n"
                    "ElementType = MET_FLOAT\nElementDataFile = LOCAL\n")
    with open(path, "ab") as fh:
        fh.write(b"\0" * 64)
    return path


@pytest.mark.parametrize("make", [huge_nifti, huge_mha], ids=["nifti", "mha"])
def test_a_header_larger_than_memory_is_refused_before_allocating(tmp_path, make):
    path = make(tmp_path / ("huge.nii" if make is huge_nifti else "huge.mha"))
    for reader in (io.load_volume, io.load_labels):  # the header's claim is refused: nothing was allocated
        message = refused(path, reader)
        assert "header claims a 100000x100000x100000 image (4,000,000 GB), more than the" in message, message
        assert "GB of memory available" in message


def test_a_dicom_directory_with_two_series_is_refused_naming_them(tmp_path):
    img = sitk_volume()
    write_dicom_series(tmp_path / "two", img[:, :, :4], series_uid="1.2.3.4.1")
    write_dicom_series(tmp_path / "two", img[:, :, 5:], series_uid="1.2.3.4.2", prefix="other")
    message = refused(tmp_path / "two")
    assert "2 DICOM series" in message and "1.2.3.4.1" in message and "1.2.3.4.2" in message


def test_an_empty_directory_is_refused(tmp_path, capfd):
    (tmp_path / "empty").mkdir()
    assert "no DICOM series" in refused(tmp_path / "empty")
    assert capfd.readouterr().err == ""


def test_a_dicom_series_with_a_missing_slice_is_refused(tmp_path, capfd):
    folder = write_dicom_series(tmp_path / "gap", sitk_volume())
    (folder / "slice005.dcm").unlink()
    assert "unevenly spaced (steps 2.1 to 4.2 mm)" in refused(folder)  # ITK would read it, spacing 2.1
    assert capfd.readouterr().err == ""


# --- the mrus_prostate folder layout ------------------------------------------------------------------------


def test_a_folder_pair_saved_as_nrrd_and_mha_is_listed_and_read(written, tmp_path):
    vol = io.load_volume(written["nifti"])
    mask = np.zeros(SHAPE, np.uint8)
    mask[2:5, 3:6, 4:8] = 1
    root = tmp_path / "data"
    for name, suffix in (("case1", ".nrrd"), ("case2", ".mha")):
        for folder in ("moving_images", "fixed_images"):
            io.save_volume(root / folder / f"{name}{suffix}", vol.data, vol.grid)
        for folder in ("moving_labels", "fixed_labels"):
            io.save_volume(root / folder / f"{name}.nii.gz" if folder == "fixed_labels" else
                           root / folder / f"{name}{suffix}", mask, vol.grid)
    assert io.list_folder_pairs(root) == ["case1", "case2"]
    pair = io.load_folder_pair(root, "case1")
    np.testing.assert_array_equal(pair.moving.data, vol.data)
    np.testing.assert_allclose(pair.fixed.grid.affine, vol.grid.affine, atol=1e-4)
    assert pair.num_labels == 1 and pair.fixed_labels[0].sum() == mask.sum()
    (root / "fixed_images" / "case2.mha").unlink()
    with pytest.raises(io.DataError, match=r"fixed_images/case2\.mha: missing partner file for pair case2"):
        io.list_folder_pairs(root)
    io.save_volume(root / "fixed_images" / "case2.mha", vol.data, vol.grid)
    # db import takes them, and db export writes a folder that reads back the same
    db = LabelDB.open(tmp_path / "labels.db")
    try:
        assert import_folder(db, root) == 2
        got = db.load_pair(db.image_pairs()[0].id)
        np.testing.assert_array_equal(got.moving_labels, pair.moving_labels)
        export_folder(db, tmp_path / "export")
        assert io.list_folder_pairs(tmp_path / "export") == ["case1", "case2"]
        again = io.load_folder_pair(tmp_path / "export", "case1")
        np.testing.assert_array_equal(again.fixed.data, pair.fixed.data)
        np.testing.assert_array_equal(again.fixed_labels, pair.fixed_labels)
    finally:
        db.close()
    io.save_volume(root / "fixed_images" / "case2.nii.gz", vol.data, vol.grid)
    with pytest.raises(io.DataError, match="second file for pair case2"):
        io.list_folder_pairs(root)


def test_the_database_refuses_an_image_of_several_files_in_one_line(written, tmp_path):
    """It hashes and copies one file per image: a .mhd (with its .raw) or a DICOM folder is refused, by name."""
    db = LabelDB.open(tmp_path / "labels.db")
    try:
        for several in (written["mhd"], written["dicom"]):
            with pytest.raises(io.DataError, match="several files") as refused:
                db.add_image_pair(several, written["nifti"], subject="s")
            assert Path(several).name in str(refused.value) and len(str(refused.value).splitlines()) == 1
        assert db.image_pairs() == []
    finally:
        db.close()
