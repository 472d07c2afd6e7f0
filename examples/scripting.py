"""Scripting napari-labelreg: train on phantoms, then register arrays with the Python API.

Runs anywhere in a few minutes on 2 CPU cores, no data needed:

    python examples/scripting.py --out /tmp/labelreg-example

1. make MR/TRUS phantom pairs whose true deformation is known;
2. train a small network on them (the same generator the CLI and napari drive);
3. load the run with ``api.load_model`` and register an unseen pair given as
   plain numpy arrays with voxel sizes;
4. warp the MR labels and map TRUS points into the MR, and check both against
   the ground truth.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_labelreg import api
from napari_labelreg.core import metrics
from napari_labelreg.app.demo import DEMO_CONFIG, PHANTOM
from napari_labelreg.core.phantom import make_phantom
from napari_labelreg.pipeline.train import train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="labelreg-example")
    p.add_argument("--iterations", type=int, default=300)
    args = p.parse_args()
    run = Path(args.out) / "run"

    # 1-2. phantoms and training; each report is one step (loss, timing, checkpoint path)
    pairs = [make_phantom(seed, **PHANTOM).pair for seed in range(32)]
    config = replace(DEMO_CONFIG, iterations=args.iterations)
    losses = []
    for report in train(pairs, config, run, resume=(run / "checkpoint.pt").exists()):
        losses.append(report.loss)  # one random minibatch each: noisy step to step, falling on average
        if report.step % 50 == 0:
            print(f"step {report.step}: mean loss of the last 50 steps {np.mean(losses[-50:]):.3f}")

    # 3. an unseen pair, as arrays plus voxel sizes (what you have after reading DICOM, say)
    test = make_phantom(1000, **PHANTOM)
    mr, us = test.pair.moving, test.pair.fixed
    model = api.load_model(run)
    result = api.register(model, mr.data, us.data, moving_spacing=mr.grid.spacing, fixed_spacing=us.grid.spacing,
                          geometry="centred")
    print(f"DDF {result.ddf_mm.shape} in mm on the TRUS grid; warped MR {result.warped.shape}")

    # 4a. labels: MR gland warped onto the TRUS grid, thresholded at 0.5
    gland = result.warp_labels(test.pair.moving_labels[:1])[0] >= 0.5
    print(f"gland Dice: {metrics.dice(gland, test.pair.fixed_labels[0]):.3f}")

    # 4b. points: MR landmark centroids (the targets one plans on the MR, mm) carried onto the TRUS, where the
    #     matching TRUS landmarks truly are; the mapping inverts the DDF and reports its residual
    targets = np.array([metrics.centroid_mm(lab, mr.grid) for lab in test.pair.moving_labels[1:]])
    truth = np.array([metrics.centroid_mm(lab, us.grid) for lab in test.pair.fixed_labels[1:]])
    on_us = result.map_points(targets, to="fixed")
    unregistered = replace(result, ddf_mm=np.zeros_like(result.ddf_mm)).map_points(targets, to="fixed").points
    for q, m, t, u, r in zip(targets, on_us.points, truth, unregistered, on_us.residual_mm):
        print(f"MR target {np.round(q, 1)} -> TRUS {np.round(m, 1)} (landmark at {np.round(t, 1)}): "
              f"{np.linalg.norm(m - t):.2f} mm off, {np.linalg.norm(u - t):.2f} mm before registration "
              f"(inversion residual {r:.1g} mm)")

if __name__ == "__main__":
    main()
