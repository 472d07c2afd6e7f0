"""Accuracy on ../shared/data/mrus_prostate under a fixed wall-clock budget.

Trains on a fixed split (every 4th pair held out: 22 test, 66 train;
``--test-offset`` holds out another quarter) and prints held-out landmark
TRE (labels 1..) and gland Dice medians next to the initial correspondence
(``centred``) and gland-centroid alignment (which uses the test labels, so it
is a reference, not a method).

    python benchmarks/accuracy.py --minutes 30            # the CPU preset
    python benchmarks/accuracy.py --preset paper --minutes 30
    # DDP (on this 2-core CPU no faster than one process):
    OMP_NUM_THREADS=1 torchrun --nproc_per_node 2 benchmarks/accuracy.py --batch-size 2
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from napari_labelreg.evaluation.baselines import centroid
from napari_labelreg.cli import build_parser, config_from_args, use_from_args
from napari_labelreg.core.pairs import folder_pairs
from napari_labelreg.evaluation.scoring import evaluate
from napari_labelreg.pipeline.registrator import Registrator, identity_registration
from napari_labelreg.core.io import list_folder_pairs
from napari_labelreg.evaluation.statistics import paired_wilcoxon
from napari_labelreg.pipeline.train import train
from napari_labelreg.nn.device import launched_rank


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mrus_prostate"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                epilog="Any other option is a `napari-labelreg train` option (--preset, --lr, "
                                       "--variant, --schedule, --label-sampling, ...).")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--out", default="runs/accuracy")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--test-offset", type=int, default=0, choices=range(4),
                   help="hold out every 4th pair from this one (default 0: the split of every figure so far)")
    args, training = p.parse_known_args()

    names = list_folder_pairs(args.data)
    test_names = names[args.test_offset::4]
    train_names = [n for n in names if n not in test_names]
    # the training settings come from the CLI's own parser: the same options mean the same here
    cli = build_parser().parse_args(["train", "--data", args.data, "--out", args.out, "--geometry", "centred",
                                     "--minutes", str(args.minutes), "--checkpoint-every", "500", *training])
    # the geometry is chosen apart from the other settings (cli.options.chosen_geometry): this data's is centred
    config, use = replace(config_from_args(cli), geometry="centred"), use_from_args(cli)
    rank = launched_rank()  # under torchrun, rank 0 alone reports and evaluates
    print(json.dumps(config.to_dict()))
    t0 = time.time()
    last = None
    steps = {}
    for last in train(folder_pairs(args.data, train_names), config, args.out, use=use):
        steps[last.stage] = last.step
        if last.step % 100 == 0 and rank == 0:
            print(f"{last.stage} step {last.step} loss {last.loss:.4f} ({last.elapsed_s / 60:.1f} min)", flush=True)
    if rank != 0:
        return
    print(f"trained {', '.join(f'{k} {n} steps' for k, n in steps.items())} in {(time.time() - t0) / 60:.1f} min")
    # minutes buy steps by the machine: a learning curve's point says which (learning_curve.py reads it)
    (Path(args.out) / "machine.json").write_text(json.dumps({"cpu": cpu_model(), "torch_capability":
                                                             torch.backends.cpu.get_cpu_capability(),
                                                             "threads": torch.get_num_threads(), "steps": steps}))

    test = folder_pairs(args.data, test_names)
    reg = Registrator.from_run(args.out)
    rows = {
        "identity (centred)": evaluate(lambda q: identity_registration(q.moving, q.fixed, "centred"), test),
        "gland centroids (test labels)": evaluate(lambda q: centroid(q, "centred"), test),
    }
    # what each stage adds: the stages before it alone (without the network: its weight 0)
    if reg.locator is not None:
        alone = Registrator(reg.stages[:1], config, replace(reg.use, network_weight=0.0))
        rows["located glands alone"] = evaluate(alone.register_pair, test)
    if reg.prior is not None:
        alone = Registrator.from_run(args.out, network_weight=0.0)
        rows["located glands + prior alone"] = evaluate(alone.register_pair, test)
    if reg.use.network_weight != 1.0:  # the network's DDF in full, as trained
        rows["network, weight 1"] = evaluate(Registrator.from_run(args.out, network_weight=1.0).register_pair, test)
    rows[f"network ({cli.preset})"] = evaluate(reg.register_pair, test)
    print(f"held-out pairs: {len(test)}")
    print(f"{'method':34s} {'TRE median':>10s} {'TRE mean':>8s} {'TRE all':>8s} {'Dice':>6s} {'folds':>6s}")
    for name, df in rows.items():
        print(f"{name:34s} {df.tre_mm.median():10.2f} {df.tre_mm.mean():8.2f} {df.tre_all_mm.median():8.2f} "
              f"{df.dice.median():6.3f} {int(df.folding_voxels.sum()):6d}")
    # 22 pairs: a single run's median moves by a millimetre with the seed, so say whether it differs at all
    reference = rows["gland centroids (test labels)"]
    for name, frame in list(rows.items())[2:]:
        for metric, sign in (("tre_mm", -1), ("dice", 1)):
            t = paired_wilcoxon(frame, reference, metric)
            better = int((sign * (frame[metric].to_numpy() - reference[metric].to_numpy()) > 0).sum())
            print(f"{name} - gland centroids, {metric}: better on {better} of {len(test)} pairs, median paired "
                  f"difference {t['median_difference']:+.3f} [{t['ci_low']:+.3f}, {t['ci_high']:+.3f}], "
                  f"Wilcoxon p = {t['p_value']:.3f}")
    rows[f"network ({cli.preset})"].to_csv(Path(args.out) / "heldout.csv", index=False)


if __name__ == "__main__":
    main()
