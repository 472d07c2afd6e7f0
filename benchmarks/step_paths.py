"""The training step against the one it replaced, alternated in one process on the same batches.

The product's step (fused Adam, the finiteness flag computed on the device, figures read afterwards) against
the step before 9e73b75 (Adam's default implementation, the figures read before backward): what the
device-side bookkeeping costs on this machine.

    python benchmarks/step_paths.py [--width 32] [--pairs 12]

speed.py's step timing moves by ±8 % between runs; alternating the two steps here pairs them against the
machine's drift.  Same grid and batch as speed.py (fixed 48x64x48, batch 4, bf16 on a CPU that runs it).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

import numpy as np
import torch

from napari_labelreg.config import ModelConfig, TrainConfig
from napari_labelreg.core.phantom import make_phantom
from napari_labelreg.nn.device import fast_layout, pick_precision
from napari_labelreg.nn.networks import build_model
from napari_labelreg.training.data import prepare_pairs
from napari_labelreg.training.refine import Batcher, build_losses, compute_loss, network_optimizer, train_step

FIXED, MOVING, SPACING = (48, 64, 48), (69, 69, 64), 1.5


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=32, help="network width n0 (default 32, as speed.py)")
    p.add_argument("--pairs", type=int, default=12, help="alternated step pairs timed (after one warm-up each)")
    args = p.parse_args()
    cpu = torch.device("cpu")
    precision = pick_precision(cpu, "bf16")[0]
    pairs = [make_phantom(i, fixed_shape=FIXED, moving_shape=MOVING, spacing=SPACING).pair for i in range(4)]
    cfg = TrainConfig(model=ModelConfig(width=args.width), geometry="centred", learning_rate=1e-5,
                      precision=precision)
    prepared = prepare_pairs(pairs, "centred", None)
    batcher = Batcher(prepared, cfg, cpu)
    similarity, regulariser = build_losses(cfg, prepared[0].grid)
    new_net = fast_layout(build_model(cfg.model), precision)
    old_net = copy.deepcopy(new_net)
    new_opt = network_optimizer(new_net, cfg)
    old_opt = torch.optim.Adam(old_net.parameters(), lr=cfg.learning_rate)

    def new_step(batch):
        train_step(new_net, new_opt, batch, similarity, regulariser, cfg, cpu).tolist()

    def old_step(batch):
        loss, sim, reg = compute_loss(old_net, batch, similarity, regulariser, cfg.loss.weight, cpu, precision)
        value = torch.stack([loss, sim, reg]).detach().tolist()[0]
        if not math.isfinite(value):
            raise FloatingPointError(value)
        old_opt.zero_grad(set_to_none=True)
        loss.backward()
        old_opt.step()

    times = {"old": [], "new": []}
    for i in range(args.pairs + 1):
        batch = batcher(i)
        for name, step in (("old", old_step), ("new", new_step))[:: 1 if i % 2 else -1]:  # alternate who goes first
            t0 = time.perf_counter()
            step(batch)
            if i:  # the first pair warms up
                times[name].append(time.perf_counter() - t0)
    old, new = np.array(times["old"]), np.array(times["new"])
    result = {"threads": torch.get_num_threads(), "precision": precision, "pairs": args.pairs,
              "old_step_median_s": float(np.median(old)), "new_step_median_s": float(np.median(new)),
              "median_paired_ratio_new_over_old": float(np.median(new / old)),
              "new_faster_in": f"{int((new < old).sum())} of {args.pairs}"}
    for key, value in result.items():
        print(f"{key:34s} {value:.4g}" if isinstance(value, float) else f"{key:34s} {value}")
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}))


if __name__ == "__main__":
    main()
