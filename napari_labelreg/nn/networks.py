"""The registration networks of Hu et al. 2018 (LocalNet and its variants).

Every network maps ``(B, 2, D, H, W)`` (moving resampled onto the fixed grid,
then fixed; both normalised) to a DDF ``(B, 3, D, H, W)`` in voxel units of
that grid, for any D, H, W >= 2: inputs are zero-padded to a multiple of 16
and the DDF cropped back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig
from .device import to_device
from .warp import base_grid, sample

LEVELS = 4  # down-sampling blocks
MULTIPLE = 2**LEVELS


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that trains in fp32 under CPU autocast where its input is smaller than its kernel.

    On CPUs with AVX512-BF16 but no AMX (an AMD EPYC, torch 2.13's oneDNN), the bf16 weight gradient of a
    3x3x3 convolution over an input of depth 2 comes out wrong (relative errors from 1 to 1e38, some NaN),
    though its output and input gradient are right.  Such inputs are the networks' bottleneck (a
    32-voxel grid down-sampled four times) and cost next to nothing in fp32.  Inference keeps bf16.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu")
                and min(x.shape[2:]) < max(self.kernel_size)):
            with torch.autocast("cpu", enabled=False):
                return super().forward(x.float())
        return super().forward(x)


def conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        Conv3d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm3d(cout),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    """``ReLU(BN(conv(conv_bn_relu(h))) + h + extra)``: two conv-BN layers and a shortcut."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.first = conv_bn_relu(ch, ch)
        self.conv = Conv3d(ch, ch, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm3d(ch)

    def forward(self, h: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        out = self.bn(self.conv(self.first(h))) + h
        return F.relu(out if extra is None else out + extra)


class Down(nn.Module):
    """conv-BN-ReLU, residual unit, max-pool; also returns the skip (first conv's output)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = conv_bn_relu(cin, cout, kernel)
        self.res = Residual(cout)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.conv(x)
        return F.max_pool3d(self.res(skip), 2), skip


def additive_upsample(x: torch.Tensor) -> torch.Tensor:
    """Trilinear x2 resize, then the two channel halves summed (halves channels).

    Resizing is linear, so the halves are summed first and the resize runs on
    half the channels: the same result at half the cost.
    """
    half = x.shape[1] // 2
    return F.interpolate(x[:, :half] + x[:, half:], scale_factor=2, mode="trilinear", align_corners=False)


class Up(nn.Module):
    """h = deconv-BN-ReLU(x) + additive_up(x); out = ReLU(BN(conv(cbr(h))) + h + skip)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.deconv = nn.Sequential(
            nn.ConvTranspose3d(cin, cout, 2, stride=2, bias=False), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)
        )
        self.res = Residual(cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        h = self.deconv(x) + additive_upsample(x)
        return self.res(h, extra=skip)


class Encoder(nn.Module):
    """Four down-sampling blocks (7x7x7 first conv) and a 16*n0 bottleneck."""

    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        ch = [width * 2**i for i in range(LEVELS + 1)]
        self.channels = ch
        self.downs = nn.ModuleList(
            [Down(cin if i == 0 else ch[i - 1], ch[i], 7 if i == 0 else 3) for i in range(LEVELS)]
        )
        self.bottleneck = conv_bn_relu(ch[LEVELS - 1], ch[LEVELS])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for down in self.downs:
            x, skip = down(x)
            skips.append(skip)
        return self.bottleneck(x), skips


def _pad_to_multiple(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    shape = tuple(x.shape[2:])
    pads = [(-n) % MULTIPLE for n in shape]
    padding = []
    for p in reversed(pads):
        padding += [p // 2, p - p // 2]
    return F.pad(x, padding), shape


def _crop_centre(x: torch.Tensor, shape) -> torch.Tensor:
    for axis, n in enumerate(shape):
        x = x.narrow(axis + 2, (x.shape[axis + 2] - n) // 2, n)
    return x


def _init_xavier(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class LocalNet(nn.Module):
    """The paper's "Baseline": DDF = sum of summands predicted at ``levels``.

    Level 0 is full resolution, level 4 the bottleneck; ``levels=(0,1,2,3,4)``
    is Baseline, ``(0,)`` Baseline-δ0, ``(1,2,3,4)`` Baseline-δ1-4.  Each
    summand is a 3x3x3 conv with bias, zero-initialised, trilinearly
    up-sampled to the output size; the summands are summed, not averaged.
    """

    def __init__(self, width: int = 32, levels=(0, 1, 2, 3, 4), in_channels: int = 2, out_channels: int = 3) -> None:
        super().__init__()
        self.levels = tuple(sorted(levels))
        self.encoder = Encoder(in_channels, width)
        ch = self.encoder.channels
        # up-sampling blocks down to the finest level a head reads, no further: a block nothing reads gets no
        # gradient, which DistributedDataParallel refuses (delta1-4 never reads full resolution)
        self.ups = nn.ModuleList([Up(ch[i + 1], ch[i]) for i in reversed(range(self.levels[0], LEVELS))])
        self.heads = nn.ModuleDict({str(s): Conv3d(ch[s], out_channels, 3, padding=1) for s in self.levels})
        _init_xavier(self)
        for head in self.heads.values():
            nn.init.zeros_(head.weight)
            nn.init.zeros_(head.bias)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # runs made before stop 20 also built the blocks below the finest level read: their weights never
        # reached the output, and are dropped
        unread = [k for k in state_dict if k.startswith(f"{prefix}ups.")
                  and int(k[len(prefix) + 4:].split(".", 1)[0]) >= len(self.ups)]
        for key in unread:
            del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, shape = _pad_to_multiple(x)
        h, skips = self.encoder(x)
        features = {LEVELS: h}
        for level, up in zip(reversed(range(LEVELS)), self.ups):
            h = up(h, skips[level])
            features[level] = h
        ddf = 0
        for level in self.levels:
            # summands are computed in float32: they are the output, and small
            with torch.autocast(x.device.type, enabled=False):
                summand = self.heads[str(level)](features[level].float())
                if level:
                    summand = F.interpolate(summand, size=x.shape[2:], mode="trilinear", align_corners=False)
            ddf = ddf + summand
        return _crop_centre(ddf, shape)


def normalised_grid(shape, device=None) -> torch.Tensor:
    """Voxel centres in [-1, 1] per axis, ``(*shape, 3)`` in (i, j, k) order."""
    axes = [torch.linspace(-1, 1, n, device=device) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


class GlobalNet(nn.Module):
    """Encoder + fully connected layer predicting a 12-parameter affine.

    The affine acts on coordinates normalised to [-1, 1] per axis and starts at
    the identity (zero weights, identity bias).  To accept any input size the
    bottleneck is average-pooled to 2x2x2 before the fully connected layer (the
    paper's flattening fixes the input size).
    """

    POOL = 2

    def __init__(self, width: int = 32, in_channels: int = 2) -> None:
        super().__init__()
        self.encoder = Encoder(in_channels, width)
        self.fc = nn.Linear(self.encoder.channels[-1] * self.POOL**3, 12)
        _init_xavier(self)
        nn.init.zeros_(self.fc.weight)
        with torch.no_grad():
            self.fc.bias.copy_(torch.eye(3, 4).flatten())

    def affine(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 4)`` affine on normalised coordinates."""
        x, _ = _pad_to_multiple(x)
        h, _ = self.encoder(x)
        h = F.adaptive_avg_pool3d(h, self.POOL).flatten(1)
        with torch.autocast(x.device.type, enabled=False):
            return self.fc(h.float()).view(-1, 3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return affine_ddf(self.affine(x), x.shape[2:])


def affine_ddf(theta: torch.Tensor, shape) -> torch.Tensor:
    """DDF in voxel units ``(B, 3, *shape)`` of a normalised-coordinate affine (in fp32 under autocast too:
    bf16 would round the affine)."""
    with torch.autocast(theta.device.type, enabled=False):
        theta = theta.float()
        q = normalised_grid(shape, theta.device)
        moved = torch.einsum("bij,dhwj->bdhwi", theta[:, :, :3], q) + theta[:, None, None, None, :, 3]
        return ((moved - q) * _half_extent(shape, theta.device)).permute(0, 4, 1, 2, 3)


def voxel_linear(theta: torch.Tensor, shape) -> torch.Tensor:
    """Linear part ``(B, 3, 3)`` of a normalised-coordinate affine in voxel units."""
    half = _half_extent(shape, theta.device)
    return half[None, :, None] * theta[:, :, :3].float() / half[None, None, :]


def _half_extent(shape, device: torch.device) -> torch.Tensor:
    """``(n - 1) / 2`` per axis: voxels per unit of normalised coordinates."""
    return to_device(torch.tensor([(n - 1) / 2 for n in shape]), device)


class CompositeNet(nn.Module):
    """Global-Net, then a δ0 LocalNet on the affinely warped moving image.

    The two are composed exactly: sampling the moving image at
    ``p + d_g(p + d_l(p))`` with ``d_g`` affine gives the DDF
    ``d_g(p) + (A - I) d_l(p) + d_l(p)``.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.global_net = GlobalNet(width)
        self.local_net = LocalNet(width, levels=(0,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape[2:]
        theta = self.global_net.affine(x)
        d_global = affine_ddf(theta, shape)
        points = base_grid(shape, x.device)[None] + d_global.permute(0, 2, 3, 4, 1)
        moved = sample(x[:, :1], points)
        d_local = self.local_net(torch.cat([moved.to(x.dtype), x[:, 1:]], dim=1)).float()
        with torch.autocast(x.device.type, enabled=False):  # the composition in fp32, as the affine
            return d_global + torch.einsum("bij,bjdhw->bidhw", voxel_linear(theta, shape), d_local)


def build_model(config: ModelConfig) -> nn.Module:
    """The network a :class:`ModelConfig` names, freshly initialised."""
    levels = {"baseline": (0, 1, 2, 3, 4), "delta0": (0,), "delta1-4": (1, 2, 3, 4)}
    if config.variant in levels:
        return LocalNet(config.width, levels[config.variant])
    if config.variant == "global":
        return GlobalNet(config.width)
    return CompositeNet(config.width)
