"""Speed against MONAI's components, as ratios measured in one run.

At equal width and input size (default n0 = 32, fixed grid 48x64x48, moving
69x69x64, batch 4): inference per registration (ours: the default bf16 +
channels-last path, resampling included; MONAI: LocalNet forward in fp32),
one training step (network, warp, multiscale Dice, bending energy, backward,
Adam) and the multiscale Dice forward + backward against MultiScaleLoss with
the same sigmas (the paper's, in mm, given to
MONAI in voxels of 1.5 mm).  Also FLOPs per registration, the fraction of a
measured bf16 matmul peak reached, and the bf16 DDF's deviation from fp32.
The last line is one JSON object.

    python benchmarks/speed.py [--width 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from napari_labelreg.config import InferenceConfig, ModelConfig, TrainConfig
from napari_labelreg.pipeline.registrator import Registrator
from napari_labelreg.pipeline.stages import Estimate, Refine
from napari_labelreg.nn.device import fast_layout
from napari_labelreg.nn.losses import MultiScaleDice, MultiScaleFilter
from napari_labelreg.nn.networks import build_model
from napari_labelreg.core.phantom import make_phantom
from napari_labelreg.training.data import prepare_pairs
from napari_labelreg.training.refine import Batcher, build_losses, network_optimizer, train_step

FIXED, MOVING, SPACING = (48, 64, 48), (69, 69, 64), 1.5
SCALES_MM = (0, 1, 2, 4, 8, 16, 32)  # the paper's; MONAI takes them in voxels
SCALES_VOX = [s / SPACING for s in SCALES_MM]


def timed(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bf16_peak() -> float:
    a = torch.randn(2048, 2048, dtype=torch.bfloat16)
    seconds = timed(lambda: a @ a, 5)
    return 2 * 2048**3 / seconds


def monai_parts(width: int):
    from monai.losses import BendingEnergyLoss, DiceLoss, MultiScaleLoss
    from monai.networks.blocks import Warp
    from monai.networks.nets import LocalNet

    net = LocalNet(spatial_dims=3, in_channels=2, out_channels=3, num_channel_initial=width,
                   extract_levels=[0, 1, 2, 3], out_activation=None)
    return net, Warp(), MultiScaleLoss(DiceLoss(), scales=SCALES_VOX, kernel="gaussian"), BendingEnergyLoss()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.manual_seed(0)
    result: dict[str, float] = {"threads": torch.get_num_threads(), "width": args.width}

    # --- inference -------------------------------------------------------
    phantom = make_phantom(0, fixed_shape=FIXED, moving_shape=MOVING, spacing=SPACING)
    model = build_model(ModelConfig(width=args.width))
    with torch.no_grad():  # non-zero output heads, so the DDF comparison means something
        for head in model.heads.values():
            head.weight.normal_(0, 1e-3)
    model.eval()
    config = TrainConfig(model=ModelConfig(width=args.width), geometry="centred")
    reference = build_model(config.model).eval()
    reference.load_state_dict(model.state_dict())
    fast = Registrator([Refine(model=model)], config, InferenceConfig(precision="bf16", device="cpu"))
    ref = Registrator([Refine(model=reference)], config, InferenceConfig(precision="fp32", device="cpu"))
    pair = phantom.pair
    ddf_fast = fast.register_pair(pair).ddf_mm
    ddf_ref = ref.register_pair(pair).ddf_mm
    result["ddf_max_abs_diff_mm_bf16_vs_fp32"] = float(np.abs(ddf_fast - ddf_ref).max())
    result["ddf_max_abs_mm"] = float(np.abs(ddf_ref).max())
    start = Estimate.start(pair.moving, pair.fixed, "centred", None)
    ours_infer = timed(lambda: fast.stages[-1].apply(pair.moving, pair.fixed, start, fast.use), args.repeats)
    m_net, m_warp, m_msloss, m_bending = monai_parts(args.width)
    m_net.eval()
    x = torch.randn(1, 2, *FIXED)
    with torch.inference_mode():
        monai_infer = timed(lambda: m_net(x), args.repeats)
    with FlopCounterMode(display=False) as counter:
        with torch.no_grad():
            model(x)
    flops = counter.get_total_flops()
    peak = bf16_peak()
    result.update(infer_s=ours_infer, monai_infer_s=monai_infer, infer_speedup_vs_monai=monai_infer / ours_infer,
                  gflop_per_registration=flops / 1e9, bf16_peak_gflops=peak / 1e9,
                  fraction_of_bf16_peak=flops / ours_infer / peak)

    # --- multiscale Dice, forward + backward -------------------------------
    shape = FIXED
    pred = torch.rand(4, 1, *shape, requires_grad=True)
    target = (torch.rand(4, 1, *shape) > 0.7).float()
    ours_loss = MultiScaleDice(MultiScaleFilter(shape, (SPACING,) * 3, SCALES_MM))
    target_filtered = ours_loss.filter(target)  # fixed labels are filtered once

    def ours_msdice():
        ours_loss(pred, target_filtered).mean().backward()

    def monai_msdice():
        m_msloss(pred, target).backward()

    result["msdice_s"] = timed(ours_msdice, args.repeats)
    result["monai_msdice_s"] = timed(monai_msdice, args.repeats)
    result["msdice_speedup_vs_monai"] = result["monai_msdice_s"] / result["msdice_s"]

    # --- one training step, batch 4 ----------------------------------------
    pairs = [make_phantom(i, fixed_shape=FIXED, moving_shape=MOVING, spacing=SPACING).pair for i in range(4)]
    cfg = TrainConfig(model=ModelConfig(width=args.width), geometry="centred", loss=config.loss)
    prepared = prepare_pairs(pairs, "centred", None)
    batcher = Batcher(prepared, cfg, torch.device("cpu"))
    similarity, regulariser = build_losses(cfg, prepared[0].grid)
    net = fast_layout(build_model(cfg.model), "bf16")
    step_config = replace(cfg, learning_rate=1e-5, precision="bf16", loss=replace(cfg.loss, weight=0.5))
    opt = network_optimizer(net, step_config)
    step = iter(range(10**6))

    def ours_step():  # the product's training step (the host reads its figures: a CPU step is done by then)
        train_step(net, opt, batcher(next(step)), similarity, regulariser, step_config, torch.device("cpu")).tolist()

    m_net.train()
    m_opt = torch.optim.Adam(m_net.parameters(), lr=1e-5)
    mx = torch.randn(4, 2, *shape)
    m_moving_label = (torch.rand(4, 1, *shape) > 0.7).float()

    def monai_step():
        ddf = m_net(mx)
        loss = m_msloss(m_warp(m_moving_label, ddf), target) + 0.5 * m_bending(ddf)
        m_opt.zero_grad()
        loss.backward()
        m_opt.step()

    result["train_step_s"] = timed(ours_step, args.repeats)
    result["monai_train_step_s"] = timed(monai_step, max(1, args.repeats - 2))  # slow: fewer repeats
    result["train_step_speedup_vs_monai"] = result["monai_train_step_s"] / result["train_step_s"]

    for key, value in result.items():
        print(f"{key:36s} {value:.4g}" if isinstance(value, float) else f"{key:36s} {value}")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
