"""Classical baselines beside the network, as the paper's Table 2 does.

``centroid``: translate so the gland centroids coincide (it uses the test
labels, so it is a reference, not a registration method).  ``ffd-nmi``,
``ffd-ncc``, ``ffd-ssd``: a B-spline free-form deformation optimised on each
pair's intensities (SimpleITK), started from the centroid alignment.
SimpleITK's registration framework has no bending-energy term; the FFD is
regularised by its control-point spacing instead (``grid_mm``, 20 mm).
All return a :class:`Registration`, scored with the same metrics as the network.
"""

from __future__ import annotations

import numpy as np

from ..core import metrics
from ..core.geometry import fixed_to_moving, warp
from ..pipeline.registrator import Registration
from ..core.io import Pair

METHODS = ("centroid", "ffd-nmi", "ffd-ncc", "ffd-ssd")


def _registration(pair: Pair, matrix: np.ndarray, ddf_mm: np.ndarray) -> Registration:
    warped = warp(pair.moving.data, pair.fixed.grid, pair.moving.grid, matrix, ddf_mm)
    return Registration(ddf_mm.astype(np.float32), pair.fixed.grid, pair.moving.grid, matrix, warped)


def centroid_shift_mm(pair: Pair, matrix: np.ndarray) -> np.ndarray:
    """World displacement (mm) that brings the moving gland centroid onto the fixed one."""
    g = pair.gland_index
    moved = warp(pair.moving_labels[g].astype(np.float32), pair.fixed.grid, pair.moving.grid, matrix) >= 0.5
    return metrics.centroid_mm(moved, pair.fixed.grid) - metrics.centroid_mm(pair.fixed_labels[g], pair.fixed.grid)


def centroid(pair: Pair, geometry: str = "centred") -> Registration:
    matrix = fixed_to_moving(pair.fixed.grid, pair.moving.grid, geometry)
    shift = centroid_shift_mm(pair, matrix)
    return _registration(pair, matrix, np.broadcast_to(shift, (*pair.fixed.grid.shape, 3)).copy())


def ffd(pair: Pair, metric: str, geometry: str = "centred", *, grid_mm: float = 20.0, iterations: int = 100,
        seed: int = 0, volumes: tuple[np.ndarray, np.ndarray] | None = None) -> Registration:
    """B-spline FFD on intensities with SimpleITK, from the gland-centroid alignment.

    ``volumes``: (moving, fixed) arrays on the images' grids to register instead of the images (the glands,
    say); the warped image is still the moving image's.
    """
    import SimpleITK as sitk

    matrix = fixed_to_moving(pair.fixed.grid, pair.moving.grid, geometry)
    lin = matrix[:3, :3]
    if not np.allclose(lin, np.diag(np.diag(lin))):
        raise ValueError(f"the FFD baselines support axis-aligned correspondences (centred, fov), not {geometry!r}")
    sf = pair.fixed.grid.spacing
    scale, shift = np.diag(lin), matrix[:3, 3]

    def image(data, spacing, origin):  # array axes (i, j, k) become ITK's (x, y, z)
        img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(data, np.float32).transpose(2, 1, 0)))
        img.SetSpacing([float(s) for s in spacing])
        img.SetOrigin([float(o) for o in origin])
        return img

    moving_data, fixed_data = volumes if volumes is not None else (pair.moving.data, pair.fixed.data)
    fixed = image(fixed_data, sf, (0, 0, 0))
    # fixed voxel p sits at sf * p; moving voxel q = scale * p + shift sits at the same point
    moving = image(moving_data, sf / scale, -sf * shift / scale)
    start = centroid_shift_mm(pair, matrix)
    start_axes = np.linalg.solve(pair.fixed.grid.affine[:3, :3], start) * sf  # mm along the array axes
    initial = sitk.TranslationTransform(3, [float(v) for v in start_axes])
    mesh = [max(1, int(round(n * s / grid_mm))) for n, s in zip(pair.fixed.grid.shape, sf)]
    bspline = sitk.BSplineTransformInitializer(fixed, mesh)
    reg = sitk.ImageRegistrationMethod()
    {"nmi": lambda: reg.SetMetricAsMattesMutualInformation(32), "ncc": reg.SetMetricAsCorrelation,
     "ssd": reg.SetMetricAsMeanSquares}[metric]()
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, seed)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=iterations)
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.0, 0.0])
    reg.SetMovingInitialTransform(initial)
    reg.SetInitialTransform(bspline, inPlace=True)
    reg.Execute(sitk.Normalize(fixed), sitk.Normalize(moving))
    total = sitk.CompositeTransform([initial, bspline])  # bspline first, then the translation
    field = sitk.TransformToDisplacementField(total, sitk.sitkVectorFloat64, fixed.GetSize(), fixed.GetOrigin(),
                                              fixed.GetSpacing(), fixed.GetDirection())
    u_axes = sitk.GetArrayFromImage(field).transpose(2, 1, 0, 3)  # (i, j, k, 3), mm along the array axes
    ddf_mm = (u_axes / sf) @ pair.fixed.grid.affine[:3, :3].T
    return _registration(pair, matrix, ddf_mm)


def run_baseline(method: str, pair: Pair, geometry: str = "centred") -> Registration:
    if method == "centroid":
        return centroid(pair, geometry)
    if method in METHODS:
        return ffd(pair, method.split("-")[1], geometry)
    raise ValueError(f"unknown baseline {method!r}; choose one of {METHODS}")
