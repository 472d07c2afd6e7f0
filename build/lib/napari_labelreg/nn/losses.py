"""Label similarity and deformation regularisers as ``nn.Module``s.

Shapes: labels ``(B, 1, D, H, W)`` with values in [0, 1]; DDFs
``(B, 3, D, H, W)`` in voxel units of the grid they live on.  Every loss
returns one value per batch element, ``(B,)``; the caller averages.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def gaussian_matrix(size: int, sigma: float, *, truncate: float = 3.0) -> torch.Tensor:
    """1-D Gaussian filtering along an axis of ``size`` as a ``(size, size)`` matrix.

    Row ``i`` holds the sampled kernel centred on ``i``, cut at ``truncate``
    sigma and normalised over the kernel's own support, so the result equals a
    zero-padded convolution with that kernel (scipy's and MONAI's convention).
    ``sigma = 0`` gives the identity.  As a matrix the filter costs ``size``
    multiply-adds per voxel whatever sigma is, so large scales stay cheap.
    """
    if sigma == 0:
        return torch.eye(size)
    radius = max(1, int(math.ceil(truncate * sigma)))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    offsets = torch.arange(size)[None, :] - torch.arange(size)[:, None]
    inside = offsets.abs() <= radius
    values = kernel[(offsets + radius).clamp(0, 2 * radius)]
    return torch.where(inside, values, torch.zeros(())).float()


class MultiScaleFilter(nn.Module):
    """Separable Gaussian filtering at several scales given in millimetres.

    ``forward`` maps ``(B, 1, D, H, W)`` to ``(B, S, D, H, W)``, one channel per
    scale, by three 1-D matrix products per scale (sigma in voxels is
    ``sigma_mm / spacing`` along each axis).
    """

    def __init__(self, shape, spacing_mm, scales_mm) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.scales_mm = tuple(float(s) for s in scales_mm)
        for axis, (n, h) in enumerate(zip(self.shape, spacing_mm)):
            mats = torch.stack([gaussian_matrix(n, s / float(h)) for s in self.scales_mm])
            self.register_buffer(f"axis{axis}", mats, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != 1 or tuple(x.shape[2:]) != self.shape:
            raise ValueError(f"expected labels (B, 1, *{self.shape}), got {tuple(x.shape)}")
        x = x.float()[:, 0]
        x = torch.einsum("sad,bdhw->bsahw", self.axis0, x)
        x = torch.einsum("sbh,nsahw->nsabw", self.axis1, x)
        return torch.einsum("scw,nsabw->nsabc", self.axis2, x)


def soft_dice(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Soft Dice over the spatial axes: ``(B, C, ...)`` -> ``(B, C)``."""
    dims = tuple(range(2, a.dim()))
    return 2 * (a * b).sum(dims) / (a.sum(dims) + b.sum(dims)).clamp_min(eps)


class MultiScaleDice(nn.Module):
    """``1 - J``: one minus the mean soft Dice over Gaussian scales (paper Eq. 5).

    ``target`` is ``(B, 1, ...)`` labels, or ``(B, S, ...)`` labels already
    filtered by the same :class:`MultiScaleFilter` (fixed labels never change,
    so callers may filter them once).  ``prediction`` likewise.
    """

    def __init__(self, filter_: MultiScaleFilter) -> None:
        super().__init__()
        self.filter = filter_

    def _scales(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5:
            raise ValueError(f"expected (B, C, D, H, W) labels, got {tuple(x.shape)}")
        if x.shape[1] == 1:
            return self.filter(x)
        if x.shape[1] != len(self.filter.scales_mm):
            raise ValueError(f"expected 1 or {len(self.filter.scales_mm)} channels, got {tuple(x.shape)}")
        return x.float()

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 1.0 - soft_dice(self._scales(prediction), self._scales(target)).mean(dim=1)


class MultiScaleCrossEntropy(MultiScaleDice):
    """The "msCE" variant: clipped binary cross-entropy averaged over scales."""

    def __init__(self, filter_: MultiScaleFilter, clip: float = 1e-6) -> None:
        super().__init__(filter_)
        self.clip = clip

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = self._scales(prediction).clamp(self.clip, 1 - self.clip)
        t = self._scales(target)
        ce = -(t * torch.log(p) + (1 - t) * torch.log1p(-p))
        return ce.mean(dim=(2, 3, 4)).mean(dim=1)


def _check_ddf(ddf: torch.Tensor) -> None:
    if ddf.dim() != 5 or ddf.shape[1] != 3 or min(ddf.shape[2:]) < 5:
        raise ValueError(f"expected a DDF (B, 3, D, H, W) with every axis >= 5, got {tuple(ddf.shape)}")


def central_difference(x: torch.Tensor, axis: int) -> torch.Tensor:
    """(x[i+1] - x[i-1]) / 2 along spatial ``axis`` (0..2), interior only on that axis."""
    dim = axis + 2
    n = x.shape[dim]
    return (x.narrow(dim, 2, n - 2) - x.narrow(dim, 0, n - 2)) / 2


def _crop_to(x: torch.Tensor, shape) -> torch.Tensor:
    for axis, n in enumerate(shape):
        extra = x.shape[axis + 2] - n
        x = x.narrow(axis + 2, extra // 2, n)
    return x


class BendingEnergy(nn.Module):
    """Mean over voxels and components of xx² + yy² + zz² + 2(xy² + xz² + yz²).

    Second derivatives are central differences applied twice (the authors'
    label-reg stencil, for which the paper's alpha = 0.5 was set), in voxel
    units of the grid the DDF lives on; evaluated on the interior where every
    term is defined.  Exactly zero for any affine field.
    """

    def forward(self, ddf: torch.Tensor) -> torch.Tensor:
        _check_ddf(ddf)
        ddf = ddf.float()
        first = [central_difference(ddf, a) for a in range(3)]
        terms = []
        for a in range(3):
            for b in range(a, 3):
                weight = 1.0 if a == b else 2.0
                terms.append((weight, central_difference(first[a], b)))
        shape = [n - 4 for n in ddf.shape[2:]]
        energy = sum(w * _crop_to(t, shape) ** 2 for w, t in terms)
        return energy.mean(dim=(1, 2, 3, 4))


class GradientL2(nn.Module):
    """The "L2" variant: mean over voxels and components of squared first derivatives."""

    def forward(self, ddf: torch.Tensor) -> torch.Tensor:
        _check_ddf(ddf)
        ddf = ddf.float()
        shape = [n - 2 for n in ddf.shape[2:]]
        energy = sum(_crop_to(central_difference(ddf, a), shape) ** 2 for a in range(3))
        return energy.mean(dim=(1, 2, 3, 4))


def folding(ddf: torch.Tensor) -> torch.Tensor:
    """Per-entry mean over interior voxels of max(0, -det(I + grad u)): how far the DDF folds space.

    Zero for every field whose Jacobian determinant is positive everywhere (any
    smooth enough deformation, any affine map with a positive determinant), 1
    for a mirror.  Bending energy is zero for every affine field, mirrors and
    large rotations among them; this term is what keeps a network out of them.
    Central differences in the grid's voxel units (the determinant does not
    depend on the units).
    """
    _check_ddf(ddf)
    ddf = ddf.float()
    shape = [n - 2 for n in ddf.shape[2:]]
    # jac[..., i, j] = d(x_i + u_i) / d x_j
    grads = torch.stack([_crop_to(central_difference(ddf, a), shape) for a in range(3)], dim=-1)  # (B, 3, ..., 3)
    jac = grads.movedim(1, -2) + torch.eye(3, device=ddf.device)
    return torch.relu(-torch.linalg.det(jac)).mean(dim=(1, 2, 3))
