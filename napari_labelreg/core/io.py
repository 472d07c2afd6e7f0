"""Reading and writing volumes, label stacks and DDFs.

Formats: NIfTI (``.nii``, ``.nii.gz``; nibabel, and so any other suffix nibabel
reads), and through SimpleITK NRRD (``.nrrd``, ``.nhdr``), MetaImage (``.mha``,
``.mhd``) and a DICOM series given as its directory.  Whatever the format, arrays
are indexed ``(i, j, k)`` as nibabel returns them and the grid's affine maps them
to world mm in the NIfTI RAS frame (see :func:`_sitk_affine` for the conversion
from ITK's LPS geometry).

Every reader checks what it reads and raises :class:`DataError` with a one-line
message that names the file, before reading the voxels where the header already
tells (too large for memory, wrong dimensionality).  Nothing here imports torch.
"""

from __future__ import annotations

import math
import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from .geometry import Grid

NIFTI_SUFFIXES = (".nii.gz", ".nii")
SITK_SUFFIXES = {".nrrd": "NRRD", ".nhdr": "NRRD", ".mha": "MetaImage", ".mhd": "MetaImage"}
IMAGE_SUFFIXES = NIFTI_SUFFIXES + tuple(SITK_SUFFIXES)  # the files of a folder in the mrus_prostate layout
WRITE_SUFFIXES = NIFTI_SUFFIXES + (".nrrd", ".mha")  # single-file formats: written atomically
_SITK_IO = {"NRRD": "NrrdImageIO", "MetaImage": "MetaImageIO"}
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])  # ITK's world frame (LPS) <-> NIfTI's (RAS); its own inverse
FOLDERS = ("moving_images", "fixed_images", "moving_labels", "fixed_labels")


class DataError(ValueError):
    """Input data that cannot be used, with a message naming the file."""


@dataclass(frozen=True)
class Volume:
    """A 3-D image: ``data`` (float32, shape = grid.shape) on ``grid``."""

    data: np.ndarray
    grid: Grid
    source: str = ""


@dataclass(frozen=True)
class Pair:
    """One moving/fixed image pair with ``M`` corresponding label pairs.

    ``moving_labels`` has shape ``(M, *moving.grid.shape)`` and
    ``fixed_labels`` ``(M, *fixed.grid.shape)``, both boolean; label ``m`` of
    one side corresponds to label ``m`` of the other.  ``M`` may be 0.
    """

    name: str
    moving: Volume
    fixed: Volume
    moving_labels: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 2, 2), bool))
    fixed_labels: np.ndarray = field(default_factory=lambda: np.zeros((0, 2, 2, 2), bool))
    label_names: tuple[str, ...] = ()

    @property
    def num_labels(self) -> int:
        return int(self.moving_labels.shape[0])

    @property
    def gland_index(self) -> int:
        """Which label is the gland: the one typed ``gland`` when types are known, else label 0."""
        for k, name in enumerate(self.label_names):
            if name == "gland" or name.endswith(":gland"):
                return k
        return 0


def _checked_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise DataError(f"{path}: dangling symbolic link (to {os.readlink(path)})")
    if not path.exists():
        raise DataError(f"{path}: file not found")
    return path


def _format(path: Path) -> str:
    """``DICOM`` for a directory, ``NRRD`` or ``MetaImage`` by suffix, else ``NIfTI`` (nibabel, as before)."""
    if path.is_dir():
        return "DICOM"
    name = path.name.lower()
    for suffix, fmt in SITK_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return "NIfTI"


def available_memory() -> int | None:
    """Bytes this process may still allocate: ``MemAvailable``, capped by a cgroup limit; None if unknown."""
    avail = None
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            return None
    v1 = "/sys/fs/cgroup/memory/memory."
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         (v1 + "limit_in_bytes", v1 + "usage_in_bytes")):
        try:
            with open(limit) as a, open(usage) as b:
                avail = min(avail, max(int(a.read().strip()) - int(b.read().strip()), 0))
            break
        except (OSError, ValueError):  # no such cgroup file, or "max" (no limit)
            continue
    return avail


def _gb(n: int) -> str:
    return f"{n / 1e9:.2g}" if n < 1e11 else f"{n / 1e9:,.0f}"


def _refuse_if_too_large(path, shape: tuple[int, ...]) -> None:
    """Refuse, before anything is allocated, an image whose float32 copy would not fit in memory."""
    needed = 4 * math.prod(int(s) for s in shape)
    avail = available_memory()
    if avail is not None and needed > avail:
        raise DataError(f"{path}: header claims a {'x'.join(str(int(s)) for s in shape)} image ({_gb(needed)} GB), "
                        f"more than the {_gb(avail)} GB of memory available")


def _load(path: str | os.PathLike, check=None) -> nib.Nifti1Image:
    """A NIfTI image, read in full; ``check(shape)`` and the memory check run on the header first."""
    path = _checked_path(path)
    try:
        img = nib.load(str(path))  # the header only: nibabel reads the voxels lazily
        shape = tuple(img.shape)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise DataError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from None
    if check is not None:
        check(shape)
    _refuse_if_too_large(path, shape)
    try:
        img.get_fdata(dtype=np.float32)  # force a full read: truncated gzip fails here
    except Exception as exc:
        raise DataError(f"{path}: cannot read as NIfTI ({type(exc).__name__}: {exc})") from None
    return img


def _grid_of(img: nib.Nifti1Image, path) -> Grid:
    return _grid(tuple(img.shape[:3]), img.affine, path)


def _grid(shape, affine, path) -> Grid:
    try:
        return Grid(shape, affine)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None


# --- NRRD, MetaImage and DICOM through SimpleITK -------------------------------------------------------------


def _sitk():
    import SimpleITK as sitk  # imported on first use: NIfTI work never pays for it

    return sitk


_STDERR_LOCK = threading.Lock()  # one redirection at a time: interleaved ones would lose stderr for good


@contextmanager
def _native_stderr(captured: list[str]):
    """Collect what C++ code writes to file descriptor 2 (MetaIO and ITK print there, bypassing Python),
    so that a bad file makes one line of error, not a screenful.  Serialises SimpleITK reads and writes."""
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError, AttributeError):  # no stderr to redirect
            yield
            return
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                tmp.seek(0)
                captured.append(tmp.read().decode("utf-8", "replace"))


def _sitk_call(path, fmt: str, call, check=None):
    """``call()`` with SimpleITK's RuntimeError and its C++ chatter folded into one DataError line; ``check(result)``
    may refuse the result first, in place of the warning ITK printed about it."""
    captured: list[str] = []
    try:
        with _native_stderr(captured):
            result = call()
    except RuntimeError as exc:
        raise DataError(f"{path}: cannot read as {fmt} ({_sitk_reason(str(exc), ''.join(captured))})") from None
    if check is not None:
        check(result)
    _pass_on(captured)
    return result


def _pass_on(captured: list[str]) -> None:
    """Write out what was collected after all: a successful read's warnings, or another thread's output."""
    if "".join(captured).strip():
        sys.stderr.write("".join(captured))


def _sitk_reason(message: str, chatter: str) -> str:
    """The informative part of a SimpleITK exception, on one line."""
    lines = [ln.strip() for ln in message.splitlines()
             if ln.strip() and not ln.startswith("Exception thrown in SimpleITK")] or ["unknown error"]
    reason = re.sub(r"^(itk::)?(ITK )?ERROR: \w+\(0x[0-9a-fA-F]+\):\s*", "", lines[0])
    if lines[-1].startswith("[nrrd]"):  # NRRD: the last "[nrrd] ..." line says what was wrong
        reason = re.sub(r"^\[nrrd\] \w+:\s*", "", lines[-1])
    reason = re.sub(r"File cannot be read: .* for reading\.?", "file cannot be read", reason)
    reason = " ".join(reason.replace("Reason: Success", "").split())
    first = next((ln.strip() for ln in chatter.splitlines() if ln.strip()), "")  # e.g. MetaIO's own complaint
    if first and first not in reason:
        reason = f"{reason}; {first}" if reason else first
    return reason[:300]


def _dicom_files(path: Path) -> list[str]:
    sitk = _sitk()
    captured: list[str] = []
    with _native_stderr(captured):  # GDCM warns "No Series were found" on its own
        ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
    if not ids:
        raise DataError(f"{path}: no DICOM series in this directory")
    _pass_on(captured)
    if len(ids) > 1:
        raise DataError(f"{path}: {len(ids)} DICOM series in this directory ({', '.join(ids)}); "
                        "give the directory of one series")
    files = _sitk_call(path, "DICOM", lambda: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), ids[0]))
    if not files:
        raise DataError(f"{path}: DICOM series {ids[0]} has no readable files")
    return list(files)


def _sitk_open(path: Path, fmt: str):
    """Header only: ``(reader, dims, components, shape)``, with ``shape`` as nibabel would give it:
    the image axes ``(i, j, k[, t])`` then the components when there are more than one.
    Refuses an image too large for memory before anything is read."""
    sitk = _sitk()
    if fmt == "DICOM":
        files = _dicom_files(path)
        head = sitk.ImageFileReader()
        head.SetFileName(files[0])
        _sitk_call(path, fmt, head.ReadImageInformation)
        size = list(head.GetSize()) + [1] * (3 - head.GetDimension())
        size = [size[0], size[1], size[2] * len(files), *size[3:]]
        comps = head.GetNumberOfComponents()
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        reader.MetaDataDictionaryArrayUpdateOn()
    else:
        reader = sitk.ImageFileReader()
        reader.SetImageIO(_SITK_IO[fmt])  # a text file renamed .nrrd is not tried as anything else
        reader.SetFileName(str(path))
        _sitk_call(path, fmt, reader.ReadImageInformation)
        size, comps = list(reader.GetSize()), reader.GetNumberOfComponents()
    shape = tuple(int(s) for s in size) + ((int(comps),) if comps > 1 else ())
    return reader, len(size), int(comps), shape


def _sitk_read(path: Path, fmt: str, reader):
    if fmt != "DICOM":
        return _sitk_call(path, fmt, reader.Execute)
    # one line where ITK warns of "non uniform sampling"
    return _sitk_call(path, fmt, reader.Execute, check=lambda img: _check_dicom_slices(path, reader, img))


def _check_dicom_slices(path: Path, reader, img) -> None:
    """Refuse a series whose slices change orientation or are unevenly spaced (a missing slice):
    ITK reads one with a warning and the spacing of its first two slices."""
    n = len(reader.GetFileNames())
    if n < 2 or img.GetSize()[2] != n:
        return
    try:
        ipp = np.array([[float(v) for v in reader.GetMetaData(s, "0020|0032").split("\\")] for s in range(n)])
        iop = np.array([[float(v) for v in reader.GetMetaData(s, "0020|0037").split("\\")] for s in range(n)])
    except (RuntimeError, ValueError):  # tags absent or malformed: ITK's own geometry stands
        return
    if ipp.shape != (n, 3) or iop.shape != (n, 6):
        return
    if np.abs(iop - iop[0]).max() > 1e-4:
        raise DataError(f"{path}: DICOM series mixes slice orientations (ImageOrientationPatient differs)")
    steps = np.diff(ipp @ np.cross(iop[0, :3], iop[0, 3:]))
    if np.ptp(steps) > max(1e-3, 1e-3 * abs(float(np.median(steps)))):
        raise DataError(f"{path}: DICOM slices are unevenly spaced (steps {steps.min():.4g} to {steps.max():.4g} mm); "
                        "a slice missing?")


def _sitk_affine(img) -> np.ndarray:
    """Our RAS affine of a SimpleITK image's first three axes, exactly.

    ITK: LPS point = origin + Direction @ diag(spacing) @ (i, j, k); RAS = diag(-1, -1, 1) @ LPS.
    """
    n = img.GetDimension()
    direction = np.asarray(img.GetDirection(), dtype=np.float64).reshape(n, n)[:3, :3]
    spacing = np.asarray(img.GetSpacing(), dtype=np.float64)[:3]
    affine = np.eye(4)
    affine[:3, :3] = LPS_TO_RAS @ direction @ np.diag(spacing)
    affine[:3, 3] = LPS_TO_RAS @ np.asarray(img.GetOrigin(), dtype=np.float64)[:3]
    return affine


def _sitk_geometry(grid: Grid) -> tuple[list[float], list[float], list[float]]:
    """Inverse of :func:`_sitk_affine`: ITK ``(origin, spacing, direction)`` of ``grid``."""
    lps = LPS_TO_RAS @ grid.affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    direction = lps / spacing
    origin = LPS_TO_RAS @ grid.affine[:3, 3]
    return origin.tolist(), spacing.tolist(), direction.ravel().tolist()


def _sitk_array(img) -> np.ndarray:
    """Voxels indexed ``(i, j, k[, t][, component])``: SimpleITK's arrays are ``(k, j, i)``, nibabel's reversed."""
    arr = _sitk().GetArrayFromImage(img)
    n = img.GetDimension()
    return arr.transpose(*range(n - 1, -1, -1), *range(n, arr.ndim))


def _load_sitk(path: Path, fmt: str, check):
    """``(array (i, j, k, ...), image)``, after ``check(dims, components, shape)`` and the memory check."""
    reader, dims, comps, shape = _sitk_open(path, fmt)
    check(dims, comps, shape)
    _refuse_if_too_large(path, shape)
    img = _sitk_read(path, fmt, reader)
    return _sitk_array(img), img


# --- the readers ----------------------------------------------------------------------------------------------


def load_volume(path: str | os.PathLike) -> Volume:
    """Read a 3-D scalar image in any supported format; refuses other shapes and non-finite values."""
    def check(shape, comps=1):
        if len(shape) != 3 or comps != 1:
            raise DataError(f"{path}: expected a 3-D image, got shape {shape}")

    fmt = _format(_checked_path(path))
    if fmt == "NIfTI":
        img = _load(path, check)
        data, grid = np.asarray(img.get_fdata(dtype=np.float32)), _grid_of(img, path)
    else:
        raw, img = _load_sitk(Path(path), fmt, lambda dims, comps, shape: check(shape, comps))
        data, grid = raw.astype(np.float32, copy=False), _grid(raw.shape, _sitk_affine(img), path)
    if not np.all(np.isfinite(data)):
        raise DataError(f"{path}: image holds NaN or infinite values")
    return Volume(data, grid, str(path))


def check_mask(mask: np.ndarray, what: str) -> np.ndarray:
    """Return ``mask`` as bool after checking it is finite, binary and non-empty."""
    mask = np.asarray(mask)
    if mask.dtype != bool:
        if not np.all(np.isfinite(mask)):
            raise DataError(f"{what}: mask holds NaN or infinite values")
        values = np.unique(mask)
        if not np.all(np.isin(values, (0, 1))):
            shown = ", ".join(f"{v:g}" for v in values[:5])
            raise DataError(f"{what}: mask is not binary (values {shown}...)")
        mask = mask.astype(bool)
    if not mask.any():
        raise DataError(f"{what}: mask is empty")
    return mask


def load_labels(path: str | os.PathLike, grid: Grid | None = None, what: str | None = None) -> np.ndarray:
    """Read a 3-D mask or a stack of masks as bool ``(M, I, J, K)``.

    A stack is a 4-D NIfTI, NRRD or MetaImage ``(I, J, K, M)``, or an ``M``-component NRRD or
    MetaImage (what :func:`save_volume` writes for a 4-D array); label ``m`` is its last index ``m``.
    ``what``: what the file is to the user (an option, say), named before it in errors.
    """
    name = f"{what} {path}" if what else str(path)

    def check(shape):
        if len(shape) not in (3, 4):
            raise DataError(f"{name}: expected a 3-D mask or a 4-D label stack, got shape {shape}")

    fmt = _format(_checked_path(path))
    if fmt == "NIfTI":
        data = np.asarray(_load(path, check).dataobj)
    else:
        data = _load_sitk(Path(path), fmt, lambda dims, comps, shape: check(shape))[0]
    stack = data[None] if data.ndim == 3 else np.moveaxis(data, -1, 0)
    if grid is not None and stack.shape[1:] != grid.shape:
        raise DataError(f"{name}: label shape {stack.shape[1:]} differs from its image's {grid.shape}")
    if data.ndim == 3:
        return check_mask(stack[0], name)[None]
    return np.stack([check_mask(m, f"{name} label {i}") for i, m in enumerate(stack)])


def load_pair(
    moving: str | os.PathLike,
    fixed: str | os.PathLike,
    moving_labels: str | os.PathLike | None = None,
    fixed_labels: str | os.PathLike | None = None,
    *,
    name: str | None = None,
) -> Pair:
    """Read an image pair and, optionally, its corresponding label stacks."""
    mov, fix = load_volume(moving), load_volume(fixed)
    if (moving_labels is None) != (fixed_labels is None):
        missing = "fixed" if fixed_labels is None else "moving"
        raise DataError(f"{name or moving}: {missing} labels missing; labels come in pairs")
    if moving_labels is None:
        return Pair(name or image_stem(moving), mov, fix,
                    np.zeros((0, *mov.grid.shape), bool), np.zeros((0, *fix.grid.shape), bool))
    ml, fl = load_labels(moving_labels, mov.grid), load_labels(fixed_labels, fix.grid)
    if ml.shape[0] != fl.shape[0]:
        raise DataError(
            f"{moving_labels}: {ml.shape[0]} moving labels but {fixed_labels} has {fl.shape[0]}"
        )
    return Pair(name or image_stem(moving), mov, fix, ml, fl)


def image_suffix(name: str) -> str | None:
    """The image suffix ``name`` ends with (any case), or None."""
    low = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if low.endswith(suffix) and len(name) > len(suffix):
            return name[-len(suffix):]
    return None


def image_stem(path) -> str:
    """A file's name without its image suffix: ``case1`` of ``case1.nii.gz`` or ``case1.NRRD``."""
    name = Path(path).name
    suffix = image_suffix(name)
    return name[: -len(suffix)] if suffix else name


def _folder_images(folder: Path) -> list[Path]:
    """Image files of one layout folder (hidden files, .raw/.zraw data files and directories left out)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if not p.name.startswith(".") and image_suffix(p.name) and not p.is_dir())


def list_folder_pairs(root: str | os.PathLike) -> list[str]:
    """Pair names of a folder in the mrus_prostate layout, checked for partners.

    A pair's files are named ``<pair><suffix>`` with any of :data:`IMAGE_SUFFIXES` (``.nii.gz``,
    ``.nrrd``, ``.mha``...), not necessarily the same suffix in every folder; two files of one pair
    in a folder are refused.
    """
    root = Path(root)
    for folder in FOLDERS[:2]:
        if not (root / folder).is_dir():
            raise DataError(f"{root / folder}: folder not found (expected {', '.join(FOLDERS)})")
    names: dict[str, dict[str, Path]] = {f: {} for f in FOLDERS}
    for f in FOLDERS:
        for p in _folder_images(root / f):
            other = names[f].setdefault(image_stem(p), p)
            if other != p:
                raise DataError(f"{p}: a second file for pair {image_stem(p)} in {root / f} (with {other.name}); "
                                "keep one")
    pairs = sorted(set(names["moving_images"]) | set(names["fixed_images"]))
    has_labels = any(names["moving_labels"].values()) or any(names["fixed_labels"].values())
    needed = FOLDERS if has_labels else FOLDERS[:2]
    for n in pairs:
        suffix = next(image_suffix(names[f][n].name) for f in FOLDERS if n in names[f])
        for folder in needed:
            if n not in names[folder]:
                raise DataError(f"{root / folder / (n + suffix)}: missing partner file for pair {n}")
    if not pairs:
        raise DataError(f"{root}: no image pairs found ({', '.join(IMAGE_SUFFIXES)})")
    return pairs


def folder_pair_paths(root: str | os.PathLike, name: str) -> dict[str, Path | None]:
    """The files of pair ``name`` in each layout folder (None where absent); NIfTI first if there are several."""
    root = Path(root)
    out: dict[str, Path | None] = {}
    for folder in FOLDERS:
        candidates = [root / folder / (name + s) for s in IMAGE_SUFFIXES]
        hits = [c for c in candidates if c.exists() or c.is_symlink()]  # a dangling link is named when read
        if not hits:  # a suffix in capitals (.NRRD)
            hits = [p for p in _folder_images(root / folder) if image_stem(p) == name]
        out[folder] = hits[0] if hits else None
    return out


def load_folder_pair(root: str | os.PathLike, name: str) -> Pair:
    """Read one named pair from a folder in the mrus_prostate layout."""
    p = folder_pair_paths(root, name)
    return load_pair(p["moving_images"], p["fixed_images"], p["moving_labels"], p["fixed_labels"], name=name)


def _process_umask() -> int:
    mask = os.umask(0o022)  # read it the only way POSIX offers, once, at import (single-threaded then)
    os.umask(mask)
    return mask


UMASK = _process_umask()


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` then move the file into place atomically.

    The file gets the permissions the user's umask gives a new file (``mkstemp`` alone would
    leave it ``-rw-------``, unreadable to colleagues on a shared server).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~UMASK)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_format(path) -> str | None:
    """``NRRD`` or ``MetaImage`` for the SimpleITK suffixes we write, None for NIfTI (nibabel, by suffix)."""
    name = Path(path).name.lower()
    if name.endswith((".mhd", ".nhdr")):
        raise DataError(f"{path}: cannot write a detached header (.mhd, .nhdr) atomically with its data file; "
                        "write .mha or .nrrd, one file")
    if name.endswith(".nrrd"):
        return "NRRD"
    if name.endswith(".mha"):
        return "MetaImage"
    return None


def _sitk_image(data: np.ndarray, grid: Grid):
    """A SimpleITK image of ``data`` ``(I, J, K[, C])`` on ``grid`` (the exact inverse of reading it)."""
    sitk = _sitk()
    data = np.asarray(data)
    if data.shape[:3] != grid.shape or data.ndim not in (3, 4):
        raise ValueError(f"array shape {data.shape} does not match grid {grid.shape} (+ one axis for a stack)")
    if data.dtype == bool:
        data = data.astype(np.uint8)
    elif data.dtype == np.float16:
        data = data.astype(np.float32)
    arr = np.ascontiguousarray(data.transpose(2, 1, 0, *range(3, data.ndim)))  # (i, j, k) -> ITK's (k, j, i)
    img = sitk.GetImageFromArray(arr, isVector=data.ndim == 4)  # a 4th axis: the components
    origin, spacing, direction = _sitk_geometry(grid)
    img.SetOrigin(origin)
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    return img


def _sitk_write(img, tmp: str, fmt: str) -> None:
    sitk = _sitk()
    writer = sitk.ImageFileWriter()
    writer.SetImageIO(_SITK_IO[fmt])  # the format is the final file's, whatever the temporary name
    writer.SetFileName(tmp)
    writer.UseCompressionOn()
    captured: list[str] = []
    try:
        with _native_stderr(captured):
            writer.Execute(img)
    except RuntimeError as exc:  # an OSError, as a full disk or a read-only folder is with nibabel
        raise OSError(f"{tmp}: cannot write {fmt} ({_sitk_reason(str(exc), ''.join(captured))})") from None


def save_volume(path, data: np.ndarray, grid: Grid) -> None:
    """Write a 3-D array (or a 4-D stack ``(I, J, K, M)``) on ``grid``, in the format of the suffix.

    ``.nii``/``.nii.gz`` (and anything else nibabel writes) with nibabel; ``.nrrd`` and ``.mha`` with
    SimpleITK, geometry converted to ITK's LPS frame exactly, a stack as an ``M``-component image (which
    :func:`load_labels` reads back as the stack), bool as uint8.  ``.mhd`` and ``.nhdr`` are refused: their
    data sit in a second file, which cannot be moved into place atomically with the header.
    """
    fmt = _write_format(path)
    if fmt is not None:
        img = _sitk_image(data, grid)
        atomic_write(path, lambda tmp: _sitk_write(img, tmp, fmt))
        return
    img = nib.Nifti1Image(np.asarray(data), grid.affine)
    img.set_qform(grid.affine, code=1)
    img.set_sform(grid.affine, code=1)
    atomic_write(path, lambda tmp: nib.save(img, tmp))


def save_ddf(path, ddf_mm: np.ndarray, grid: Grid, *, name: str = "DDF mm fixed->moving") -> None:
    """Write a DDF ``(I, J, K, 3)`` in mm as a NIfTI, NRRD or MetaImage vector image (by suffix).

    NIfTI: the file is 5-D ``(I, J, K, 1, 3)`` with intent ``NIFTI_INTENT_DISPVECT``
    (1006), the layout ITK and SimpleITK read as a displacement field.
    Components are millimetres along the fixed image's NIfTI world axes (RAS);
    ITK converts them to its LPS frame on reading because of that intent, and
    its displacement-field transforms use the same direction (fixed -> moving).

    ``.nrrd``/``.mha``: a 3-component float32 image with the components in ITK's LPS frame (x and y
    negated), as ITK writes a displacement field and reads it back with no conversion.  ``name``: the
    NIfTI intent name (16 characters), saying which way the field points.
    """
    if ddf_mm.shape != (*grid.shape, 3):
        raise ValueError(f"DDF shape {ddf_mm.shape} does not match grid {grid.shape} + (3,)")
    fmt = _write_format(path)
    if fmt is not None:
        lps = np.asarray(ddf_mm, dtype=np.float32) * np.diag(LPS_TO_RAS).astype(np.float32)  # x, y negated
        img = _sitk_image(lps, grid)
        atomic_write(path, lambda tmp: _sitk_write(img, tmp, fmt))
        return
    img = nib.Nifti1Image(ddf_mm[:, :, :, None, :].astype(np.float32), grid.affine)
    img.header.set_intent("displacement vector", (), name=name[:16])
    img.header.set_xyzt_units("mm")
    img.set_qform(grid.affine, code=1)
    img.set_sform(grid.affine, code=1)
    atomic_write(path, lambda tmp: nib.save(img, tmp))


def _nrrd_fields(path: Path) -> dict[str, str]:
    """The ``field: value`` lines of a NRRD header (lower-case keys)."""
    with open(path, "rb") as fh:
        text = fh.read(1 << 16).decode("latin-1").replace("\r\n", "\n")
    if not path.name.lower().endswith(".nhdr"):
        text = text.split("\n\n", 1)[0]  # an attached header ends at the first blank line
    fields = {}
    for line in text.split("\n")[1:]:
        key, sep, value = line.partition(": ")
        if sep and not line.startswith("#"):
            fields[key.strip().lower()] = value.strip()
    return fields


def _nrrd_vector_frame(path: Path) -> np.ndarray:
    """Diagonal taking a NRRD file's vector components to LPS, as ITK takes its geometry.

    ITK converts the ``space directions`` and ``space origin`` of a ``right-anterior-superior`` or
    ``left-anterior-superior`` file to LPS but leaves the voxel values, vectors included, as stored:
    a displacement field written in RAS space has RAS components.  It ignores ``measurement frame``,
    so one that is not the identity is refused rather than misread.
    """
    try:
        fields = _nrrd_fields(path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read as NRRD ({exc.strerror or exc})") from None
    frame = fields.get("measurement frame", "")
    numbers = [float(x) for x in re.findall(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?", frame)]
    if frame and frame.lower() != "none" and (len(numbers) != 9 or not np.allclose(numbers, np.eye(3).ravel())):
        raise DataError(f"{path}: NRRD measurement frame {frame} is not the identity; not supported for a DDF")
    space = fields.get("space", "").lower()
    if space in ("right-anterior-superior", "ras"):
        return np.diag([-1.0, -1.0, 1.0])
    if space in ("left-anterior-superior", "las"):
        return np.diag([1.0, -1.0, 1.0])
    return np.eye(3)


def load_ddf(path) -> tuple[np.ndarray, Grid]:
    """Read a DDF: ``(I, J, K, 3)`` mm along the grid's RAS world axes, and its grid.

    Components are taken as ITK takes them.  NIfTI with intent ``NIFTI_INTENT_DISPVECT`` (1006), as
    :func:`save_ddf` writes it: RAS.  Any other NIfTI vector image (ITK, 3D Slicer and ANTs write
    intent 1007, "vector"): LPS, converted to RAS.  NRRD and MetaImage: a 3-component image as ITK writes
    a displacement field, components in LPS (in the file's space for a NRRD in RAS or LAS space),
    converted to RAS.
    """
    def check(shape):
        if not (len(shape) == 4 and shape[-1] == 3 or len(shape) == 5 and shape[3:] == (1, 3)):
            raise DataError(f"{path}: expected a 3-component vector image, got shape {shape}")

    fmt = _format(_checked_path(path))
    if fmt == "NIfTI":
        img = _load(path, check)
        data = np.asarray(img.get_fdata(dtype=np.float32))
        if data.ndim == 5:
            data = data[:, :, :, 0, :]
        if img.header.get_intent("code")[0] != 1006:  # ITK converts only a DISPVECT field from RAS
            data = data * np.diag(LPS_TO_RAS).astype(np.float32)
        return data, _grid_of(img, path)

    def check_sitk(dims, comps, shape):
        if dims != 3 or comps != 3:
            raise DataError(f"{path}: expected a 3-component vector image, got shape {shape}")

    to_lps = _nrrd_vector_frame(Path(path)) if fmt == "NRRD" else np.eye(3)
    raw, img = _load_sitk(Path(path), fmt, check_sitk)
    data = raw.astype(np.float32) * np.diag(LPS_TO_RAS @ to_lps).astype(np.float32)  # both diagonal
    return data, _grid(raw.shape[:3], _sitk_affine(img), path)
