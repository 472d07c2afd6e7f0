"""Network shapes, initial state, summation of displacement summands, composition."""

import numpy as np
import pytest
import torch

from napari_labelreg.config import VARIANTS, ModelConfig
from napari_labelreg.nn.networks import LocalNet, affine_ddf, build_model, voxel_linear

ODD = (13, 18, 11)  # not a multiple of 16, non-cubic


@pytest.mark.parametrize("variant", VARIANTS)
def test_any_size_and_zero_initial_ddf(variant):
    model = build_model(ModelConfig(variant, width=4))
    ddf = model(torch.randn(2, 2, *ODD))
    assert ddf.shape == (2, 3, *ODD)
    assert torch.count_nonzero(ddf) == 0


def test_summands_are_summed_not_averaged():
    model = LocalNet(width=4).eval()
    with torch.no_grad():
        for level, head in model.heads.items():
            head.bias.copy_(torch.tensor([1.0, 2.0, 3.0]) * (int(level) + 1))
    ddf = model(torch.randn(1, 2, *ODD))
    # bias-only summands are constant fields; trilinear up-sampling keeps them: 1+2+3+4+5 = 15
    expected = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1, 1) * 15
    torch.testing.assert_close(ddf, expected.expand_as(ddf))


@pytest.mark.parametrize("variant,levels",
                         [("baseline", (0, 1, 2, 3, 4)), ("delta0", (0,)), ("delta1-4", (1, 2, 3, 4))])
def test_variant_levels(variant, levels):
    assert build_model(ModelConfig(variant, width=4)).levels == levels


def test_first_conv_is_7x7x7_and_width_doubles():
    model = LocalNet(width=4)
    first = model.encoder.downs[0].conv[0]
    assert first.kernel_size == (7, 7, 7)
    assert model.encoder.channels == [4, 8, 16, 32, 64]


def test_eval_mode_output_does_not_depend_on_the_batch():
    model = LocalNet(width=4)
    with torch.no_grad():
        for head in model.heads.values():
            head.weight.normal_(0, 0.1)
        model.train()
        model(torch.randn(4, 2, *ODD))  # move the running statistics
    model.eval()
    x = torch.randn(3, 2, *ODD)
    with torch.no_grad():
        torch.testing.assert_close(model(x[:1]), model(x)[:1], atol=1e-5, rtol=1e-4)


def test_affine_ddf_matches_its_voxel_linear_part():
    theta = torch.tensor([[[1.1, 0.05, 0.0, 0.1], [0.0, 0.9, 0.1, -0.2], [0.02, 0.0, 1.0, 0.05]]])
    ddf = affine_ddf(theta, ODD)[0].permute(1, 2, 3, 0)  # (*ODD, 3)
    lin = voxel_linear(theta, ODD)[0]
    step = ddf[3, 5, 2] - ddf[1, 2, 7]
    p = torch.tensor([3.0, 5.0, 2.0]) - torch.tensor([1.0, 2.0, 7.0])
    torch.testing.assert_close(step, (lin - torch.eye(3)) @ p, atol=1e-5, rtol=1e-5)


def test_identity_global_net_gives_zero_affine_ddf():
    theta = torch.eye(3, 4)[None]
    assert torch.allclose(affine_ddf(theta, ODD), torch.zeros(1, 3, *ODD), atol=1e-6)
    np.testing.assert_allclose(voxel_linear(theta, ODD)[0].numpy(), np.eye(3), atol=1e-7)


def test_bf16_training_gradients_match_fp32_at_the_bottleneck():
    """The bottleneck convolution's weight gradient under CPU bf16 autocast is fp32's within bf16 rounding.

    A 32-voxel grid reaches the bottleneck at depth 2, where oneDNN's bf16 weight gradient is wrong on CPUs
    with AVX512-BF16 and no AMX (relative errors of 1 and more, some NaN, in most draws).
    """
    torch.manual_seed(0)
    conv = LocalNet(width=8).encoder.bottleneck[0].to(memory_format=torch.channels_last_3d)
    for _ in range(20):
        x = torch.relu(torch.randn(4, conv.in_channels, 2, 2, 2)).to(memory_format=torch.channels_last_3d)
        g = torch.randn(4, conv.out_channels, 2, 2, 2)
        grads = []
        for precision in ("bf16", "fp32"):
            conv.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                out = conv(x)
            (out.float() * g).sum().backward()
            grads.append(conv.weight.grad.clone())
        bf16, fp32 = grads
        assert torch.isfinite(bf16).all()
        assert (bf16 - fp32).abs().max() <= 0.02 * fp32.abs().max()
