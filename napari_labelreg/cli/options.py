"""What the commands share: the training options (with the presets' defaults), where pairs come
from, the database's opening and the progress bars of a training run."""

from __future__ import annotations

import argparse
from dataclasses import replace

from ..config import (LABEL_SAMPLING, PRESETS, REGULARISERS, SCHEDULES, SIMILARITIES, USE, VARIANTS, AugmentConfig,
                      InferenceConfig, TrainConfig)
from ..database.schema import LABEL_TYPES
from ..core.geometry import CONVENTIONS
from ..core.io import DataError

GLANDS_HELP = ("fit each registration to the glands at the end: given, each pair's own gland labels, as a "
               "clinician's contours would be (the TRE is then of the other labels only, and the gland Dice of the "
               "glands the fit was given); predicted, the run's segmented glands; moving-given, the MR gland label "
               "and the segmented TRUS gland; default none")


def preset_value(name: str, path: str):
    """A preset's setting by its path: ``"model.width"`` of its TrainConfig, ``"use.network_weight"`` of its use."""
    value = PRESETS[name]
    if path.startswith("use."):
        value, path = USE[name], path[len("use."):]
    for part in path.split("."):
        value = getattr(value, part)
    return value


def default_text(path: str) -> str:
    """The defaults the presets give a setting, read from them (so ``--help`` cannot drift from the code)."""
    values = {name: preset_value(name, path) for name in ("cpu", "paper")}
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
    "label_sampling": "label_sampling", "locator": "locator", "prior": "prior",
    "network_weight": "use.network_weight", "spacing": "spacing_mm", "precision": "precision",
    "seed": "seed", "checkpoint_every": "checkpoint_every",
}


def training_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training (each default is the preset's; an option replaces it)")
    g.add_argument("--preset", choices=sorted(PRESETS), default="cpu",
                   help="starting settings: 'paper' (Hu et al. 2018) or 'cpu' (fast on a CPU; default)")

    def option(flag, help, **kwargs):
        dest = flag.lstrip("-").replace("-", "_")
        g.add_argument(flag, help=f"{help} ({default_text(TRAINING_SETTINGS[dest])})", **kwargs)

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
    option("--iterations", "budget in steps, all stages together (each takes its share, the network the rest)",
           type=int)
    option("--minutes", "budget in wall-clock minutes, all stages together (shared as the steps)", type=float)
    option("--batch-size", "image pairs per minibatch (per process under torchrun)", type=int)
    option("--lr", "the network's Adam learning rate (the gland locator's and prior's are fixed)", type=float)
    option("--schedule", "learning rate over the budget", choices=SCHEDULES)
    option("--label-sampling", "per image pair, train on one random label pair (the paper) or all of them averaged",
           choices=LABEL_SAMPLING)
    option("--locator", "share of the budget for a gland locator that starts registration from the located glands",
           type=float, metavar="SHARE")
    option("--prior", "share of the budget for a gland prior, the training pairs' mean deformation about the gland, "
           "to which the network's DDF is added (needs --locator)", type=float, metavar="SHARE")
    option("--network-weight", "registration: weight of the network's DDF on top of the located glands and prior, "
           "recorded with the run", type=float, metavar="W")
    option("--spacing", "network grid voxel size in mm (0: the fixed grid)", type=float)
    option("--precision", "arithmetic of training and registration (bf16 only where the device runs it natively, "
           "else fp32, said at the start)", choices=("bf16", "fp32"))
    option("--seed", "random seed of weights, sampling and augmentation", type=int)
    g.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1... "
                   "(default auto)")
    g.add_argument("--geometry", choices=CONVENTIONS, help=GEOMETRY_HELP)
    option("--checkpoint-every", "steps between checkpoints, in every stage (and one after each stage)", type=int)


GEOMETRY_HELP = ("initial correspondence (default: with --db, the one its pairs were imported with; with --data, "
                 "the word in the folder's geometry.txt, else centred where the headers hold no scanner positions, "
                 "else world)")


def config_from_args(args) -> TrainConfig:
    """The settings the options give, the geometry aside (:func:`chosen_geometry`); a budget that is not
    positive is refused before anything is read or written."""
    for flag, value in (("--iterations", args.iterations), ("--minutes", args.minutes)):
        if value is not None and not 0 < value < float("inf"):
            raise DataError(f"{flag} {value:g}: a budget must be positive and finite (nothing was written)")
    base = PRESETS[args.preset]
    model = replace(base.model, **given(variant=args.variant, width=args.width))
    loss = replace(base.loss, **given(similarity=args.loss, regulariser=args.regulariser, weight=args.weight,
                                            folding=args.folding))
    if args.prefilter is not None:
        loss = replace(loss, prefilter=args.prefilter)
    augment = replace(base.augment, **given(translation_mm=args.translation))
    if args.no_augment:
        augment = AugmentConfig(enabled=False)
    lr = args.lr
    if lr is None and args.preset == "paper" and model.variant in ("global", "composite"):
        lr = 1e-6  # the paper's rate for the affine networks (section 3.2.2)
    budget = {}
    if args.iterations is not None or args.minutes is not None:
        budget = {"iterations": args.iterations, "minutes": args.minutes}
    spacing = {} if args.spacing is None else {"spacing_mm": args.spacing or None}
    return replace(base, model=model, loss=loss, augment=augment, **budget, **spacing,
                   **given(learning_rate=lr, schedule=args.schedule, label_sampling=args.label_sampling,
                            locator=args.locator, prior=args.prior,
                            batch_size=args.batch_size, precision=args.precision, seed=args.seed,
                            checkpoint_every=args.checkpoint_every))


def use_from_args(args) -> InferenceConfig:
    """What the run records it is to be registered with: the preset's, with ``--network-weight``."""
    return replace(USE[args.preset], **given(network_weight=args.network_weight))


def given(**kwargs):
    return {k: v for k, v in kwargs.items() if v is not None}


def pair_source(p: argparse.ArgumentParser) -> None:
    """--data or --db, with the database's filters: train and evaluate read pairs alike."""
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="folder with moving_images/, fixed_images/, *_labels/")
    source.add_argument("--db", help="label database (file or SQLAlchemy URL)")
    p.add_argument("--types", nargs="+", choices=LABEL_TYPES, metavar="TYPE",
                   help=f"with --db: only these label types ({', '.join(LABEL_TYPES)})")
    p.add_argument("--statuses", nargs="+", choices=("complete", "verified"),
                   help="with --db: only label pairs of these statuses (default both)")
    p.add_argument("--annotators", nargs="+", help="with --db: only these annotators' label pairs (default all)")
    consensus_option(p)


def consensus_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--consensus", action="store_true",
                   help="with --db: one label pair per landmark (type and name) where several annotators labelled "
                        "it: the voxels at least half of them marked")


def training_pairs(args):
    """The pairs ``train`` reads: a folder, or a database through its filters."""
    if args.data:
        from ..core.pairs import folder_pairs

        return folder_pairs(args.data)
    with open_db(args.db) as db:
        pairs = db.training_pairs(types=args.types, statuses=args.statuses, annotators=args.annotators,
                                  consensus=args.consensus)
    if not pairs:
        raise DataError(f"{args.db}: no complete label pairs pass the filters")
    return pairs


def chosen_geometry(args, names=(), run_geometry: str | None = None) -> tuple[str, str]:
    """The initial correspondence a command uses, and where that choice came from, by one rule for every
    command: ``--geometry``; else a trained run's own; else what a database records for the pairs ``names``;
    else a folder's (:func:`~napari_labelreg.core.pairs.folder_geometry`)."""
    if getattr(args, "geometry", None):
        return args.geometry, "--geometry"
    if run_geometry:
        return run_geometry, "the run's, as it trained"
    if getattr(args, "db", None):
        with open_db(args.db) as db:
            return db.recorded_geometry(list(names)), f"as {args.db} records its pairs"
    from ..core.pairs import folder_geometry

    return folder_geometry(args.data)


def say_geometry(command: str, chosen: tuple[str, str]) -> str:
    """Print which geometry ``command`` uses and why; returns it."""
    print(f"napari-labelreg {command}: geometry {chosen[0]} ({chosen[1]})")
    return chosen[0]


def open_db(path, must_exist: bool = True):
    from pathlib import Path

    from ..database import LabelDB

    if must_exist and "://" not in str(path) and not Path(path).is_file():
        raise DataError(f"{path}: database not found")
    if must_exist and "://" not in str(path) and not Path(path).stat().st_size:
        raise DataError(f"{path}: an empty file, not a label database (db import makes one)")
    return LabelDB.open(path)


def drive(reports, config: TrainConfig) -> dict[str, int]:
    """One progress bar over the whole budget, all stages; returns the last step of each stage."""
    from tqdm import tqdm

    from ..app.jobs import overall_fraction

    steps: dict[str, int] = {}
    unit, total = ("step", config.iterations) if config.iterations else ("s", round(60 * config.minutes))
    with tqdm(total=total, unit=unit, dynamic_ncols=True) as bar:
        for r in reports:
            steps[r.stage] = r.step
            bar.set_description(r.stage, refresh=False)
            bar.n = max(bar.n, round(overall_fraction(r, config) * total))  # a stage past its share: held
            bar.set_postfix(loss=f"{r.loss:.4f}", sim=f"{r.similarity:.4f}", reg=f"{r.regulariser:.4f}", refresh=False)
            bar.refresh()
    return steps
