"""Exact values of the losses and regularisers, and cross-checks against scipy and MONAI."""

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter, gaussian_filter1d

from napari_labelreg.nn.losses import (
    BendingEnergy,
    GradientL2,
    MultiScaleCrossEntropy,
    MultiScaleDice,
    MultiScaleFilter,
    folding,
    gaussian_matrix,
)

SHAPE = (9, 12, 7)


def field(fn):
    """DDF (1, 3, *SHAPE) whose components fn(i, j, k) returns."""
    i, j, k = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in SHAPE], indexing="ij")
    return torch.as_tensor(np.stack(fn(i, j, k))[None], dtype=torch.float64)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5, 7.0])
def test_gaussian_matrix_is_scipy_zero_padded_filter(rng, sigma):
    x = rng.normal(size=13)
    expected = gaussian_filter1d(x, sigma, mode="constant", truncate=3.0)
    assert int(3 * sigma + 0.5) == int(np.ceil(3 * sigma))  # scipy's kernel radius equals ours for these sigmas
    np.testing.assert_allclose(gaussian_matrix(13, sigma).double().numpy() @ x, expected, atol=1e-6)


def test_multiscale_filter_uses_mm(rng):
    spacing = (1.0, 2.0, 0.5)
    x = rng.random(SHAPE).astype(np.float32)
    out = MultiScaleFilter(SHAPE, spacing, (0, 2))(torch.as_tensor(x)[None, None])
    np.testing.assert_allclose(out[0, 0].numpy(), x, atol=1e-6)
    sig = [2 / h for h in spacing]
    want = x
    for axis, s in enumerate(sig):
        want = gaussian_filter1d(want, s, axis=axis, mode="constant", truncate=3.0)
    np.testing.assert_allclose(out[0, 1].numpy(), want, atol=1e-5)


def test_dice_exact_values():
    loss = MultiScaleDice(MultiScaleFilter(SHAPE, (1, 1, 1), (0,)))
    a = torch.zeros(1, 1, *SHAPE)
    b = torch.zeros(1, 1, *SHAPE)
    a[0, 0, 2, 3, 4] = 1
    b[0, 0, 2, 3, 4] = 1
    b[0, 0, 5, 5, 5] = 1
    assert loss(a, a).item() == pytest.approx(0.0, abs=1e-6)  # Dice(x, x) = 1
    assert loss(a, b).item() == pytest.approx(1 - 2 / 3, abs=1e-6)
    assert loss(a, torch.roll(a, 3, dims=2)).item() == pytest.approx(1.0)


def test_dice_accepts_prefiltered_target(rng):
    filt = MultiScaleFilter(SHAPE, (1, 1, 1), (0, 1, 4))
    loss = MultiScaleDice(filt)
    a = torch.as_tensor(rng.random((2, 1, *SHAPE)), dtype=torch.float32)
    b = torch.as_tensor(rng.random((2, 1, *SHAPE)) > 0.5, dtype=torch.float32)
    torch.testing.assert_close(loss(a, b), loss(a, filt(b)))
    with pytest.raises(ValueError, match=r"\(2, 2, 9, 12, 7\)"):
        loss(a, b.repeat(1, 2, 1, 1, 1))


def test_multiscale_dice_matches_monai(rng):
    monai = pytest.importorskip("monai.losses")
    scales = (0, 1, 2, 4)
    ours = MultiScaleDice(MultiScaleFilter(SHAPE, (1, 1, 1), scales))
    theirs = monai.MultiScaleLoss(monai.DiceLoss(smooth_nr=0, smooth_dr=1e-12), scales=list(scales), kernel="gaussian")
    a = torch.as_tensor(gaussian_filter(rng.random((2, 1, *SHAPE)), 1.0), dtype=torch.float32)
    b = torch.as_tensor(rng.random((2, 1, *SHAPE)) > 0.6, dtype=torch.float32)
    assert ours(a, b).mean().item() == pytest.approx(theirs(a, b).item(), abs=2e-3)


def test_cross_entropy_is_zero_only_for_a_perfect_binary_match():
    loss = MultiScaleCrossEntropy(MultiScaleFilter(SHAPE, (1, 1, 1), (0,)))
    a = torch.zeros(1, 1, *SHAPE)
    a[0, 0, 2:5, 3:6, 2:4] = 1
    assert loss(a, a).item() == pytest.approx(0.0, abs=1e-5)
    half = torch.full_like(a, 0.5)
    assert loss(half, a).item() == pytest.approx(np.log(2), rel=1e-5)


@pytest.mark.parametrize("lin", [np.eye(3), np.array([[0.1, -0.3, 0.2], [0.05, 0, 1], [2, 0.3, -0.4]])])
def test_bending_energy_of_an_affine_field_is_zero(lin):
    ddf = field(lambda i, j, k: [lin[c, 0] * i + lin[c, 1] * j + lin[c, 2] * k + c for c in range(3)])
    assert BendingEnergy()(ddf).item() == pytest.approx(0.0, abs=1e-12)


def test_bending_energy_exact_values():
    # u_0 = a i^2: d2/di2 = 2a, mean over 3 components -> (2a)^2 / 3
    a = 0.7
    quad = field(lambda i, j, k: [a * i**2, 0 * i, 0 * i])
    assert BendingEnergy()(quad).item() == pytest.approx((2 * a) ** 2 / 3)
    # u_1 = b i j: d2/didj = b, weighted twice -> 2 b^2 / 3
    b = 0.3
    mixed = field(lambda i, j, k: [0 * i, b * i * j, 0 * i])
    assert BendingEnergy()(mixed).item() == pytest.approx(2 * b**2 / 3)


def test_bending_energy_matches_monai_on_quadratic_fields():
    """Both stencils are exact for quadratics, so the two implementations must agree exactly there.

    (On general fields they differ: MONAI uses compact second differences, this
    package the authors' central differences applied twice; see README.)
    """
    monai = pytest.importorskip("monai.losses")
    ddf = field(lambda i, j, k: [0.2 * i**2 + 0.1 * j * k, 0.4 * k**2, -0.3 * i * k])
    theirs = monai.BendingEnergyLoss(normalize=False)(ddf)
    assert BendingEnergy()(ddf).item() == pytest.approx(theirs.item(), rel=1e-6)


def test_gradient_l2_exact_value():
    c = 0.4
    lin = field(lambda i, j, k: [c * i, 0 * i, 0 * i])
    assert GradientL2()(lin).item() == pytest.approx(c**2 / 3)


def test_folding_exact_values():
    # positive Jacobian determinants everywhere: no penalty, however large the field
    assert folding(field(lambda i, j, k: [3 * i + 0.5 * j, -0.5 * j, 0.2 * k + 7])).item() == 0.0  # det 4 * 0.5 * 1.2
    # x -> -x along axis 0: det -1; x -> -2x: det -2
    assert folding(field(lambda i, j, k: [-2 * i, 0 * i, 0 * i])).item() == pytest.approx(1.0)
    assert folding(field(lambda i, j, k: [-3 * i, 0 * i, 0 * i])).item() == pytest.approx(2.0)
    # mirrored where k >= 4 only: det -1 on 2 of the 5 interior slices (k = 1..5), +1 elsewhere
    assert folding(field(lambda i, j, k: [-2 * i * (k >= 4), 0 * i, 0 * i])).item() == pytest.approx(0.4)
    # per minibatch entry
    both = torch.cat([field(lambda i, j, k: [0 * i] * 3), field(lambda i, j, k: [-2 * i, 0 * i, 0 * i])])
    np.testing.assert_allclose(folding(both).numpy(), [0.0, 1.0])


def test_folding_is_what_the_evaluation_counts_as_folding(rng):
    """The training penalty against metrics.jacobian_determinant (numpy, world mm) on an anisotropic grid."""
    from scipy.ndimage import gaussian_filter

    from napari_labelreg.core.geometry import Grid
    from napari_labelreg.core.metrics import jacobian_determinant

    grid = Grid.from_spacing(SHAPE, (1.5, 2.0, 3.0))
    # a smooth random field (voxels) strong enough to fold part of the grid
    vox = np.stack([gaussian_filter(rng.normal(size=SHAPE), 1.5) * 12 for _ in range(3)])
    det = jacobian_determinant(np.moveaxis(vox, 0, -1) * np.array([1.5, 2.0, 3.0]), grid)[1:-1, 1:-1, 1:-1]
    assert 0.05 < (det < 0).mean() < 0.95
    expected = np.maximum(-det, 0).mean()
    assert folding(torch.as_tensor(vox[None])).item() == pytest.approx(expected, rel=1e-6)


def test_folding_penalises_the_mirror_that_bending_energy_cannot_see():
    mirror = field(lambda i, j, k: [-2 * i, 0 * i, 0 * i]).requires_grad_()
    BendingEnergy()(mirror).sum().backward()
    assert mirror.grad.abs().max().item() == 0.0  # an affine field: bending energy is flat there
    ddf = mirror.detach().clone().requires_grad_()
    optimizer = torch.optim.SGD([ddf], lr=100.0)  # the mean over voxels scales each gradient by 1 / voxels
    for _ in range(50):
        optimizer.zero_grad()
        folding(ddf).sum().backward()
        optimizer.step()
    assert folding(ddf).item() < 0.01  # descent on the penalty unfolds it


def test_regularisers_refuse_wrong_shapes():
    with pytest.raises(ValueError, match=r"\(1, 2, 9, 12, 7\)"):
        BendingEnergy()(torch.zeros(1, 2, *SHAPE))
    with pytest.raises(ValueError, match="expected labels"):
        MultiScaleFilter(SHAPE, (1, 1, 1), (0,))(torch.zeros(1, 1, 3, 3, 3))
