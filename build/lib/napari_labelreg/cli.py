"""``napari-labelreg``: headless commands (train, register, evaluate, demo).

Heavy modules (torch, napari) are imported inside the commands, so ``--help``
is instant and ``train`` never touches Qt.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from .config import LABEL_SAMPLING, PRESETS, REGULARISERS, SCHEDULES, SIMILARITIES, VARIANTS, AugmentConfig
from .database.schema import LABEL_TYPES
from .geometry import CONVENTIONS
from .io import DataError, atomic_write


def _preset_value(name: str, path: str):
    value = PRESETS[name]
    for part in path.split("."):
        value = getattr(value, part)
    return value


def _default(path: str) -> str:
    """The defaults the presets give a setting, read from them (so ``--help`` cannot drift from the code)."""
    values = {name: _preset_value(name, path) for name in ("cpu", "paper")}
    shown = {name: "none" if v is None else f"{v:g}" if isinstance(v, float) else str(v) for name, v in values.items()}
    if shown["cpu"] == shown["paper"]:
        return f"default {shown['cpu']}"
    return f"default {shown['cpu']} in the cpu preset, {shown['paper']} in the paper one"


# option dest -> the TrainConfig setting it replaces
TRAINING_SETTINGS = {
    "variant": "model.variant", "width": "model.width", "loss": "loss.similarity", "regulariser": "loss.regulariser",
    "weight": "loss.weight", "folding": "loss.folding", "prefilter": "loss.prefilter",
    "translation": "augment.translation_mm", "iterations": "iterations",
    "minutes": "minutes", "batch_size": "batch_size", "lr": "learning_rate", "schedule": "schedule",
    "label_sampling": "label_sampling", "cross_subject": "cross_subject", "locator": "locator", "prior": "prior",
    "network_weight": "network_weight", "spacing": "spacing_mm", "precision": "precision",
    "seed": "seed", "checkpoint_every": "checkpoint_every",
}


def _training_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (each default is the preset's; an option replaces it)")
    g.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="starting settings: 'paper' (Hu et al. 2018) or 'cpu' (fast on a CPU; default)")

    def option(flag, help, **kwargs):
        dest = flag.lstrip("-").replace("-", "_")
        g.add_argument(flag, help=f"{help} ({_default(TRAINING_SETTINGS[dest])})", **kwargs)

    option("--variant", "network: the paper's variants", choices=VARIANTS)
    option("--width", "first-level channels n0", type=int)
    option("--loss", "label similarity", choices=SIMILARITIES)
    option("--regulariser", "deformation regulariser", choices=REGULARISERS)
    option("--weight", "regulariser weight alpha", type=float)
    option("--folding", "weight of a penalty on the DDF's folding (negative Jacobian determinants)", type=float,
           metavar="W")
    option("--prefilter", "filter the labels once at every scale, then warp them (the paper's preFilt variant)",
           action=argparse.BooleanOptionalAction)
    g.add_argument("--no-augment", action="store_true", help="no random affine augmentation")
    option("--translation", "augmentation: translation range in mm, per image and axis", type=float)
    option("--iterations", "budget in registration steps (the locator and prior add their shares of it)", type=int)
    option("--minutes", "budget in wall-clock minutes (all parts together)", type=float)
    option("--batch-size", "image pairs per minibatch (per process under torchrun)", type=int)
    option("--lr", "Adam learning rate", type=float)
    option("--schedule", "learning rate over the budget", choices=SCHEDULES)
    option("--label-sampling", "per image pair, train on one random label pair (the paper) or all of them averaged",
           choices=LABEL_SAMPLING)
    option("--cross-subject", "fraction of minibatch entries pairing two subjects' images by their glands",
           type=float, metavar="FRACTION")
    option("--locator", "share of the budget for a gland locator that starts registration from the located glands",
           type=float, metavar="SHARE")
    option("--prior", "share of the budget for a gland prior, the training pairs' mean deformation about the gland, "
           "to which the network's DDF is added (needs --locator)", type=float, metavar="SHARE")
    option("--network-weight", "registration: weight of the network's DDF on top of the located glands and prior, "
           "recorded with the run", type=float, metavar="W")
    option("--spacing", "network grid voxel size in mm (0: the fixed grid)", type=float)
    option("--precision", "arithmetic of training and registration", choices=("bf16", "fp32"))
    option("--seed", "random seed of weights, sampling and augmentation", type=int)
    g.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1... "
                   "(default auto)")
    g.add_argument("--geometry", choices=CONVENTIONS, default="world",
                   help="initial correspondence (default world; centred suits the mrus_prostate data)")
    option("--checkpoint-every", "registration steps between checkpoints", type=int)


def config_from_args(args) -> "TrainConfig":  # noqa: F821
    base = PRESETS[args.preset]
    model = replace(base.model, **_given(variant=args.variant, width=args.width))
    loss = replace(base.loss, **_given(similarity=args.loss, regulariser=args.regulariser, weight=args.weight,
                                            folding=args.folding))
    if args.prefilter is not None:
        loss = replace(loss, prefilter=args.prefilter)
    augment = replace(base.augment, **_given(translation_mm=args.translation))
    if args.no_augment:
        augment = AugmentConfig(enabled=False)
    lr = args.lr
    if lr is None and args.preset == "paper" and model.variant in ("global", "composite"):
        lr = 1e-6  # the paper's rate for the affine networks (section 3.2.2)
    budget = {}
    if args.iterations is not None or args.minutes is not None:
        budget = {"iterations": args.iterations, "minutes": args.minutes}
    spacing = {} if args.spacing is None else {"spacing_mm": args.spacing or None}
    return replace(base, model=model, loss=loss, augment=augment, geometry=args.geometry, **budget, **spacing,
                   **_given(learning_rate=lr, schedule=args.schedule, label_sampling=args.label_sampling,
                            cross_subject=args.cross_subject, locator=args.locator, prior=args.prior,
                            network_weight=args.network_weight,
                            batch_size=args.batch_size, precision=args.precision, seed=args.seed,
                            checkpoint_every=args.checkpoint_every))


def _given(**kwargs):
    return {k: v for k, v in kwargs.items() if v is not None}


def cmd_train(args) -> None:
    from .nn.checkpoint import load_checkpoint
    from .training.loop import CHECKPOINT, train

    config = config_from_args(args)
    out = Path(args.out)
    if args.resume and (out / CHECKPOINT).exists():
        saved = load_checkpoint(out / CHECKPOINT)["config"]
        budget = _given(iterations=args.iterations, minutes=args.minutes)
        config = replace(saved, **budget)
    elif (out / CHECKPOINT).exists():
        raise DataError(f"{out}: holds a run already; pass --resume to continue it or choose another --out")
    pairs = training_pairs(args)
    print(f"training {config.model.variant} (n0={config.model.width}) on {len(pairs)} pairs -> {out}")
    reports = train(pairs, config, out, resume=args.resume, device=args.device)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 alone writes and reports
        for _ in reports:
            pass
        return
    listing = {p.name: list(p.label_names) or p.num_labels for p in pairs}
    atomic_write(out / "training_set.json", lambda tmp: Path(tmp).write_text(json.dumps(listing, indent=1)))
    steps = _drive(reports, config.iterations)
    parts = ", ".join(f"{name} {steps[phase]} steps" for phase, name in
                      (("locator", "gland locator"), ("prior", "gland prior"), ("registration", "registration network"))
                      if phase in steps)
    source = f"--data {args.data}" if args.data else f"--db {args.db}"
    print(f"run in {out}: geometry {config.geometry}; {parts or 'no steps'}; network weight {config.network_weight:g}.\n"
          f"next: napari-labelreg evaluate --model {out} {source} --out {out / 'results.csv'}  "
          f"(held-out pairs; this run trained on {len(pairs)}), or napari-labelreg register --model {out} ...")


def training_pairs(args):
    """The pairs ``train`` reads: a folder, or a database through its filters."""
    if args.data:
        from .data import folder_pairs

        return folder_pairs(args.data)
    from .cli_db import _open

    with _open(args.db) as db:
        pairs = db.training_pairs(types=args.types, statuses=args.statuses, annotators=args.annotators)
    if not pairs:
        raise DataError(f"{args.db}: no complete label pairs pass the filters")
    return pairs


def _drive(reports, total) -> dict[str, int]:
    """Progress bars over ``reports``; returns the last step of each phase."""
    from tqdm import tqdm

    bar, phase, steps = None, None, {}
    for r in reports:
        steps[r.phase] = r.step
        if r.phase != phase:  # the gland locator's and prior's steps come first, each with its own bar
            if bar is not None:
                bar.close()
            phase = r.phase
            bar = tqdm(total=r.total if r.phase != "registration" else total, unit="step", desc=phase,
                       dynamic_ncols=True)
        bar.n = r.step
        bar.set_postfix(loss=f"{r.loss:.4f}", sim=f"{r.similarity:.4f}", reg=f"{r.regulariser:.4f}", refresh=False)
        bar.refresh()
    if bar is not None:
        bar.close()
    return steps


def cmd_register(args) -> None:
    from . import io
    from .inference import Registrator

    reg = Registrator.from_run(args.model, device=args.device, network_weight=args.network_weight)
    pair = io.load_pair(args.moving, args.fixed, name="input")
    result = reg.register(pair.moving, pair.fixed, geometry=args.geometry)
    out = Path(args.out)
    io.save_ddf(out / "ddf.nii.gz", result.ddf_mm, result.fixed)
    io.save_volume(out / "warped.nii.gz", result.warped.astype("float32"), result.fixed)
    written = ["ddf.nii.gz", "warped.nii.gz"]
    if args.moving_labels:
        labels = io.load_labels(args.moving_labels, pair.moving.grid)
        warped = (result.warp_labels(labels) >= 0.5).astype("uint8")
        io.save_volume(out / "warped_labels.nii.gz", warped[0] if len(warped) == 1 else warped.transpose(1, 2, 3, 0),
                       result.fixed)
        written.append("warped_labels.nii.gz")
    print(f"wrote {', '.join(written)} to {out}")


def cmd_evaluate(args) -> None:
    from tqdm import tqdm

    from .evaluation import evaluate, summary
    from .inference import Registrator, identity_registration

    names, load = _evaluation_pairs(args)
    if args.model:
        reg = Registrator.from_run(args.model, device=args.device, network_weight=args.network_weight)
        register = lambda p: reg.register_pair(p, geometry=args.geometry)  # noqa: E731
        _warn_if_trained_on(Path(args.model), names)
    else:
        register = lambda p: identity_registration(p.moving, p.fixed, args.geometry or "world")  # noqa: E731
    with tqdm(total=len(names), unit="pair") as bar:
        results = evaluate(register, (load(name) for name in names), progress=lambda _: bar.update())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda tmp: results.to_csv(tmp, index=False))
    print(summary(results).round(3).to_string())
    print(f"per-pair results: {args.out}")


def _evaluation_pairs(args):
    """(pair names, name -> Pair) of a folder or of a database through train's filters, cut to ``--pairs``."""
    if args.data:
        from .io import list_folder_pairs, load_folder_pair

        names = list_folder_pairs(args.data)
        load = lambda name: load_folder_pair(args.data, name)  # noqa: E731
    else:
        from .cli_db import _open

        with _open(args.db) as db:
            pairs = {p.name: p for p in db.training_pairs(types=args.types, statuses=args.statuses,
                                                           annotators=args.annotators)}
        if not pairs:
            raise DataError(f"{args.db}: no complete label pairs pass the filters")
        names, load = list(pairs), pairs.__getitem__
    if args.pairs:
        unknown = [n for n in args.pairs if n not in names]
        if unknown:
            raise DataError(f"{args.data or args.db}: no pair named {', '.join(unknown)} (with these filters)")
        names = [n for n in names if n in args.pairs]
    return names, load


def _warn_if_trained_on(run: Path, names: list[str]) -> None:
    """Say so when pairs being scored were among the run's training pairs (its training_set.json)."""
    listing = run / "training_set.json" if run.is_dir() else run.parent / "training_set.json"
    if not listing.is_file():
        return
    seen = sorted(set(names) & set(json.loads(listing.read_text())))
    if seen:
        shown = ", ".join(seen[:5]) + (", ..." if len(seen) > 5 else "")
        print(f"napari-labelreg evaluate: warning: {len(seen)} of the {len(names)} pairs scored were used to train "
              f"{run} ({shown}): their figures are not held out", file=sys.stderr)


def cmd_annotate(args) -> None:
    import napari
    from qtpy.QtCore import QTimer

    from ._widgets.annotate import launch

    viewer = napari.Viewer(title="napari-labelreg: annotate")
    launch(viewer, args.db, args.pair, args.annotator)
    if args.quit_after is not None:
        QTimer.singleShot(int(1000 * args.quit_after), viewer.close)
    napari.run()


def cmd_demo(args) -> None:
    from .demo import run_demo

    run_demo(Path(args.out), iterations=args.iterations, device=args.device)


def _pair_source(p: argparse.ArgumentParser) -> None:
    """--data or --db, with the database's filters: train and evaluate read pairs alike."""
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="folder with moving_images/, fixed_images/, *_labels/")
    source.add_argument("--db", help="label database (file or SQLAlchemy URL)")
    p.add_argument("--types", nargs="+", choices=LABEL_TYPES, metavar="TYPE",
                   help=f"with --db: only these label types ({', '.join(LABEL_TYPES)})")
    p.add_argument("--statuses", nargs="+", choices=("complete", "verified"),
                   help="with --db: only label pairs of these statuses (default both)")
    p.add_argument("--annotators", nargs="+", help="with --db: only these annotators' label pairs (default all)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-labelreg",
                                     description="Weakly-supervised MR-to-TRUS registration (Hu et al. 2018).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a registration network (headless)")
    _pair_source(p)
    p.add_argument("--out", required=True, help="run folder (checkpoint, config, log)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    _training_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("register", help="register a moving image to a fixed image with a trained model")
    p.add_argument("--model", required=True, help="run folder or checkpoint file")
    p.add_argument("--moving", required=True)
    p.add_argument("--fixed", required=True)
    p.add_argument("--moving-labels", help="3-D mask or 4-D label stack on the moving image to warp too")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--geometry", choices=CONVENTIONS, help="initial correspondence (default: the run's)")
    p.add_argument("--network-weight", type=float, metavar="W",
                   help="weight of the network's DDF on top of the located glands and gland prior (default: the "
                        "run's; 0: without the network)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("evaluate", help="TRE and gland Dice of a model (or of no model) on labelled pairs")
    p.add_argument("--model", help="run folder; omitted: the initial correspondence alone")
    _pair_source(p)
    p.add_argument("--pairs", nargs="+", metavar="NAME", help="only these pairs (default: all that pass the filters)")
    p.add_argument("--out", required=True, help="per-pair CSV")
    p.add_argument("--geometry", choices=CONVENTIONS, help="initial correspondence (default: the run's)")
    p.add_argument("--network-weight", type=float, metavar="W",
                   help="weight of the network's DDF on top of the located glands and gland prior (default: the "
                        "run's; 0: without the network)")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_evaluate)

    from .cli_db import add_db_commands
    from .cli_study import add_baseline_command, add_study_commands

    add_db_commands(sub)
    add_study_commands(sub, _training_options)
    add_baseline_command(sub)

    p = sub.add_parser("annotate", help="open napari to paint label pairs into a database")
    p.add_argument("--db", help="label database (default: a phantom database in your user folder)")
    p.add_argument("--pair", type=int, help="image pair id to open")
    p.add_argument("--annotator", help="your name (remembered)")
    p.add_argument("--quit-after", type=float, help=argparse.SUPPRESS)  # seconds; for tests
    p.set_defaults(func=cmd_annotate)

    p = sub.add_parser("demo", help="train briefly on synthetic phantoms and register one (no data needed)")
    p.add_argument("--out", default="labelreg-demo", help="output folder (default ./labelreg-demo)")
    p.add_argument("--iterations", type=int, default=400)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (DataError, ValueError, FileNotFoundError) as exc:
        print(f"napari-labelreg {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
