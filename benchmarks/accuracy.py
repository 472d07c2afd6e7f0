"""Accuracy on ../shared/data/mrus_prostate under a fixed wall-clock budget.

Trains on a fixed split (every 4th pair held out: 22 test, 66 train) and
prints held-out landmark TRE (labels 1..) and gland Dice medians next to the
initial correspondence (``centred``) and gland-centroid alignment (which uses
the test labels, so it is a reference, not a method).

    python benchmarks/accuracy.py --minutes 30            # the CPU preset
    python benchmarks/accuracy.py --preset paper --minutes 30
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path


from napari_labelreg.baselines import centroid
from napari_labelreg.config import AugmentConfig, preset
from napari_labelreg.data import folder_pairs
from napari_labelreg.evaluation import evaluate
from napari_labelreg.inference import Registrator, identity_registration
from napari_labelreg.io import list_folder_pairs
from napari_labelreg.training.loop import train

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mrus_prostate"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--out", default="runs/accuracy")
    p.add_argument("--preset", default="cpu")
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument("--variant")
    p.add_argument("--width", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--spacing", type=float)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--translation", type=float, help="augmentation translation range, mm per side")
    p.add_argument("--rotation", type=float, help="augmentation rotation range, degrees")
    p.add_argument("--schedule", choices=("constant", "cosine"))
    p.add_argument("--label-sampling", choices=("one", "all"))
    p.add_argument("--prefilter", action=argparse.BooleanOptionalAction, default=None)
    args = p.parse_args()

    names = list_folder_pairs(args.data)
    test_names = names[::4]
    train_names = [n for n in names if n not in test_names]
    config = preset(args.preset, geometry="centred", iterations=None, minutes=args.minutes, checkpoint_every=500)
    model = replace(config.model, **{k: v for k, v in dict(variant=args.variant, width=args.width).items() if v})
    config = replace(config, model=model)
    if args.lr:
        config = replace(config, learning_rate=args.lr)
    if args.spacing is not None:
        config = replace(config, spacing_mm=args.spacing or None)
    if args.no_augment:
        config = replace(config, augment=AugmentConfig(enabled=False))
    for name, value in (("translation_mm", args.translation), ("rotation_deg", args.rotation)):
        if value is not None:
            config = replace(config, augment=replace(config.augment, **{name: value}))
    if args.schedule:
        config = replace(config, schedule=args.schedule)
    if args.label_sampling:
        config = replace(config, label_sampling=args.label_sampling)
    if args.prefilter is not None:
        config = replace(config, loss=replace(config.loss, prefilter=args.prefilter))
    print(json.dumps(config.to_dict()))
    t0 = time.time()
    last = None
    for last in train(folder_pairs(args.data, train_names), config, args.out):
        if last.step % 100 == 0:
            print(f"step {last.step} loss {last.loss:.4f} ({last.elapsed_s / 60:.1f} min)", flush=True)
    print(f"trained {last.step} iterations in {(time.time() - t0) / 60:.1f} min")

    test = folder_pairs(args.data, test_names)
    reg = Registrator.from_run(args.out)
    rows = {
        "identity (centred)": evaluate(lambda q: identity_registration(q.moving, q.fixed, "centred"), test),
        "gland centroids (test labels)": evaluate(lambda q: centroid(q, "centred"), test),
        f"network ({args.preset})": evaluate(reg.register_pair, test),
    }
    print(f"held-out pairs: {len(test)}")
    print(f"{'method':34s} {'TRE median':>10s} {'TRE all':>8s} {'Dice':>6s} {'folds':>6s}")
    for name, df in rows.items():
        print(f"{name:34s} {df.tre_mm.median():10.2f} {df.tre_all_mm.median():8.2f} {df.dice.median():6.3f} "
              f"{int(df.folding_voxels.sum()):6d}")
    rows[f"network ({args.preset})"].to_csv(Path(args.out) / "heldout.csv", index=False)


if __name__ == "__main__":
    main()
