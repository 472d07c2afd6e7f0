"""Bad files end in one line that names the file, a non-zero exit and no traceback; nothing is run or allocated
that should not be.  Each case goes through ``napari-labelreg register`` as a user would meet it."""

import gzip
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_labelreg.cli import main
from napari_labelreg.core import io
from napari_labelreg.core.phantom import make_phantom

TINY = ["--width", "4", "--iterations", "2", "--geometry", "centred", "--spacing", "0"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from conftest import write_phantom_folder

    root = tmp_path_factory.mktemp("bad")
    data = write_phantom_folder(root / "data", count=2)
    assert main(["train", "--data", str(data), "--out", str(root / "run"), *TINY]) == 0
    return data / "moving_images/obs000.nii.gz", data / "fixed_images/obs000.nii.gz", root / "run"


def register(setup, tmp_path, capsys, *, moving=None, fixed=None, model=None):
    good_moving, good_fixed, run = setup
    code = main(["register", "--model", str(model or run), "--moving", str(moving or good_moving),
                 "--fixed", str(fixed or good_fixed), "--out", str(tmp_path / "out")])
    return code, capsys.readouterr().err.strip()


def nifti(path, array, affine=np.eye(4)):
    nib.save(nib.Nifti1Image(array, affine), path)
    return path


def assert_one_line(code, err, path, words):
    assert code != 0
    assert len(err.splitlines()) == 1, err
    assert path.name in err and words in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("case,words", [
    ("2d", "expected a 3-D image"), ("4d", "expected a 3-D image"), ("nan", "NaN or infinite"),
    ("inf", "NaN or infinite"), ("truncated", "cannot read"), ("text", "cannot read"),
])
def test_a_bad_image_is_refused_in_one_line(setup, tmp_path, capsys, case, words):
    path = tmp_path / f"{case}.nii.gz"
    volume = np.random.default_rng(0).normal(size=(8, 9, 10)).astype(np.float32)
    if case == "2d":
        nifti(path, volume[..., 0])
    elif case == "4d":
        nifti(path, np.stack([volume] * 2, -1))
    elif case in ("nan", "inf"):
        volume[2, 3, 4] = np.nan if case == "nan" else np.inf
        nifti(path, volume)
    elif case == "truncated":
        nifti(path, volume)
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    else:
        path.write_text("not an image\n")
    code, err = register(setup, tmp_path, capsys, moving=path)
    assert_one_line(code, err, path, words)


def test_a_header_claiming_more_than_memory_is_refused_before_allocating(setup, tmp_path, capsys):
    header = nib.Nifti2Header()  # NIfTI-1 counts voxels in int16; NIfTI-2 can claim 100000^3
    header.set_data_shape((100_000, 100_000, 100_000))
    header.set_data_dtype(np.float32)
    path = tmp_path / "huge.nii.gz"
    with gzip.open(path, "wb") as fh:  # a header alone (and a few bytes): the claim, not the data
        fh.write(header.binaryblock + b"\0" * 4 + b"\0" * 64)
    code, err = register(setup, tmp_path, capsys, fixed=path)  # the header's claim, refused before allocating
    assert_one_line(code, err, path, "memory")


def test_a_corrupted_checkpoint_is_refused_in_one_line(setup, tmp_path, capsys):
    bad = tmp_path / "checkpoint.pt"
    good = (setup[2] / "checkpoint.pt").read_bytes()
    bad.write_bytes(good[: len(good) // 3])
    code, err = register(setup, tmp_path, capsys, model=bad)
    assert_one_line(code, err, bad, "cannot read checkpoint")


class _Payload:
    """Unpickling this would run a shell command that leaves a marker file."""

    marker = ""

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_carrying_pickled_code_is_refused_and_never_run(setup, tmp_path, capsys):
    marker = tmp_path / "the-code-ran"
    _Payload.marker = str(marker)
    evil = tmp_path / "evil.pt"
    torch.save({"format": 3, "config": {}, "payload": _Payload()}, evil)
    code, err = register(setup, tmp_path, capsys, model=evil)
    assert_one_line(code, err, evil, "pickled code")
    assert not marker.exists()
    # and from the shell, as a user meets it
    out = subprocess.run([sys.executable, "-m", "napari_labelreg", "register", "--model", str(evil), "--moving",
                          str(setup[0]), "--fixed", str(setup[1]), "--out", str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and not marker.exists(), out.stderr


@pytest.mark.parametrize("which", ["moving", "fixed"])
def test_a_constant_image_is_refused_in_one_line(setup, tmp_path, capsys, which):
    grid = make_phantom(0).pair.moving.grid if which == "moving" else make_phantom(0).pair.fixed.grid
    path = tmp_path / "constant.nii.gz"
    io.save_volume(path, np.full(grid.shape, 7.0, np.float32), grid)
    code, err = register(setup, tmp_path, capsys, **{which: path})
    assert_one_line(code, err, path, "every voxel is 7, a constant image has nothing to register")
    assert not (tmp_path / "out").exists()
