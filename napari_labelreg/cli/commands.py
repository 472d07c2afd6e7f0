"""``train``, ``register``, ``evaluate`` and ``demo``: the headless commands.

Heavy modules (torch) are imported inside the commands, so ``--help`` is instant and ``train``
never touches Qt.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from ..core.io import DataError, atomic_write
from .options import (chosen_geometry, config_from_args, drive, given, open_db, say_geometry, training_pairs,
                      use_from_args)


def cmd_train(args) -> None:
    from ..app.jobs import budget_warning
    from ..pipeline.checkpoint import CHECKPOINT, load_checkpoint
    from ..pipeline.train import TRAINING_SET, Trainer
    from ..nn.device import launched_rank

    config, use = config_from_args(args), use_from_args(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: is a file; --out names the run's folder")
    if args.resume and not (out / CHECKPOINT).exists():
        print(f"nothing to resume in {out}: starting a new run", file=sys.stderr)
        args.resume = False
    first = launched_rank() == 0  # under torchrun, rank 0 alone writes and reports
    if args.resume:
        saved = load_checkpoint(out / CHECKPOINT)
        budget = given(iterations=args.iterations, minutes=args.minutes)
        config, use = replace(saved["config"], **budget), saved["use"]
        if first:
            print(f"resuming {out} with its own settings (a {config.model.variant} network of width "
                  f"{config.model.width}, precision {config.precision}); only --iterations and --minutes change")
            if budget and _budget_text(config) != _budget_text(saved["config"]):
                print(f"the run's budget goes from {_budget_text(saved['config'])} to {_budget_text(config)}: "
                      "each stage not yet done trains to its share of the new one")
    elif (out / CHECKPOINT).exists():
        raise DataError(f"{out}: holds a run already; pass --resume to continue it or choose another --out")
    pairs = training_pairs(args)
    chosen = (config.geometry, "the run's") if args.resume else chosen_geometry(args, [p.name for p in pairs])
    config = replace(config, geometry=chosen[0])
    trainer = Trainer(pairs, config, out, use=use, resume=args.resume, device=args.device)
    reports = iter(trainer)
    if first:
        print(f"training {_shares(config)} (a {config.model.variant} network of width "
              f"{config.model.width}) on {len(pairs)} pairs, geometry {config.geometry} ({chosen[1]}) -> {out}")
        ranks = f", {trainer.world} processes" if trainer.world > 1 else ""
        note = f" ({trainer.precision_note})" if trainer.precision_note else ""
        print(f"on {trainer.device}{ranks}, precision {trainer.config.precision}{note}")
    if not first:
        for _ in reports:
            pass
        return
    steps = drive(reports, config)
    if trainer.world > 1:
        print(f"{trainer.world} processes: the weights are "
              f"{'identical on every rank' if trainer.ranks_agree else 'NOT the same on every rank (a bug: report it)'}")
    if not steps:
        print(f"{out}: the run had used its whole budget ({_budget_text(config)}); give a larger --iterations or "
              "--minutes with --resume to train further")
        return
    parts = ", ".join(f"{stage} {t['steps']} step{'s' * (t['steps'] != 1)} in {_duration(t['seconds'])}"
                      for stage, t in trainer.trained.items() if t["steps"])
    print(f"run in {out}: geometry {config.geometry}; stages {parts}; network weight {use.network_weight:g}.\n"
          f"next: napari-labelreg evaluate --model {out} --data|--db PAIRS_IT_DID_NOT_TRAIN_ON --out results.csv "
          f"(it trained on {len(pairs)}: {out / TRAINING_SET}), or napari-labelreg register --model {out} ...")
    warning = budget_warning(out)
    if warning:
        print(f"napari-labelreg train: warning: {warning}", file=sys.stderr)


def _budget_text(config) -> str:
    """``3 min``, ``400 steps`` or ``400 steps or 3 min``: a run's whole budget."""
    parts = [f"{config.iterations} steps"] if config.iterations else []
    return " or ".join(parts + ([f"{config.minutes:g} min"] if config.minutes else []))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _shares(config) -> str:
    """The stages with their shares of the budget: ``locate 1 step, prior 0 steps (skipped), refine 3 steps``."""
    parts = []
    for name, (steps, seconds) in config.stage_budgets().items():
        share = [f"{steps} step{'s' * (steps != 1)}"] if steps is not None else []
        share += [f"{seconds / 60:.3g} min"] if seconds is not None else []
        parts.append(f"{name} {' or '.join(share)}{' (skipped)' if steps == 0 or seconds == 0 else ''}")
    return ", ".join(parts)


def cmd_register(args) -> None:
    from ..app.results import export_registration
    from ..core.io import load_labels

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise DataError(f"{args.out}: is a file; --out names the folder to write the results to")
    result, pair = _register(args)
    labels = load_labels(args.moving_labels, pair.moving.grid) if args.moving_labels else None
    written = export_registration(result, args.out, labels, inverse=args.inverse,
                                  sources={"moving": args.moving, "fixed": args.fixed, "model": args.model,
                                           "moving_gland": args.moving_gland, "fixed_gland": args.fixed_gland})
    if result.glands is not None:
        print(result.glands.said())
    print(f"wrote {', '.join(p.name for p in written)} to {args.out}")


def _register(args):
    from ..core import io
    from ..pipeline.registrator import Registrator

    reg = Registrator.from_run(args.model, device=args.device, network_weight=args.network_weight)
    pair = io.load_pair(args.moving, args.fixed, name="input")
    glands = _given_glands(args, pair)
    geometry = say_geometry(args.command, chosen_geometry(args, run_geometry=reg.config.geometry))
    return reg.register(pair.moving, pair.fixed, geometry=geometry, glands=glands), pair


def _given_glands(args, pair):
    """The glands to fit to: ``--moving-gland`` and ``--fixed-gland`` read on their images' grids, a side not
    given None (the run segments it); None when neither is given and ``--glands`` is none (no fit)."""
    from ..core.io import load_labels

    given = getattr(args, "moving_gland", None), getattr(args, "fixed_gland", None)
    if given == (None, None) and getattr(args, "glands", "none") == "none":
        return None
    masks = []
    for path, volume, option in zip(given, (pair.moving, pair.fixed), ("--moving-gland", "--fixed-gland")):
        if path is None:
            masks.append(None)
            continue
        stack = load_labels(path, volume.grid, what=option)  # refuses another shape, a non-binary mask, an empty one
        if len(stack) != 1:
            raise DataError(f"{option} {path}: holds {len(stack)} labels; give the gland alone, as a 3-D mask "
                            "(in this tool's label stacks, the gland is label 0)")
        _same_place(path, option, volume)
        masks.append(stack[0])
    return tuple(masks)


def _same_place(path, option: str, volume) -> None:
    """Refuse a mask whose header puts its voxels elsewhere than its image's (another series of the same size)."""
    import numpy as np

    from ..core.io import load_volume

    grid = load_volume(path).grid
    if np.allclose(grid.affine, volume.grid.affine, atol=1e-3):
        return
    side = "moving" if option == "--moving-gland" else "fixed"
    moved = float(np.linalg.norm(grid.affine[:3, 3] - volume.grid.affine[:3, 3]))
    spacing = ", ".join(f"{s:g}" for s in grid.spacing), ", ".join(f"{s:g}" for s in volume.grid.spacing)
    differs = (f"voxel size ({spacing[0]}) mm against ({spacing[1]})" if spacing[0] != spacing[1] else
               f"first voxel {moved:.3g} mm away" if moved > 1e-3 else "axes in other directions")
    raise DataError(f"{option} {path}: its header places it elsewhere than the {side} image ({differs}); a gland "
                    "is given on its own image's grid")


def cmd_map_points(args) -> None:
    import numpy as np

    from ..core.points import read_points, refusal, write_points
    from ..core.transform import OutsideField

    if args.registration and (args.model or args.moving or args.fixed):
        raise DataError("give either --registration FOLDER or --model, --moving and --fixed, not both")
    if args.registration:
        from ..app.results import read_registration

        registration = read_registration(args.registration)[0]
    elif args.model and args.moving and args.fixed:
        registration = _register(args)[0]
        if registration.glands is not None:
            print(registration.glands.said())
    else:
        raise DataError("map-points needs --model, --moving and --fixed (or a register output --registration)")
    notes: list[str] = []
    labels, points = read_points(args.points, notes)
    for note in notes:
        print(f"napari-labelreg map-points: note: {note}", file=sys.stderr)
    try:
        mapped = registration.map_points(points, to=args.to)
    except OutsideField as exc:
        raise DataError(refusal(args.points, labels, exc.rows, exc.reason)) from None
    write_points(args.out, labels, mapped.points, residual_mm=mapped.residual_mm)
    source = "moving" if args.to == "fixed" else "fixed"
    print(f"mapped {len(points)} point{'s' * (len(points) != 1)} from the {source} image's world to the {args.to} "
          f"image's (largest residual {np.max(mapped.residual_mm):.2g} mm) -> {args.out}")


def cmd_evaluate(args) -> None:
    from tqdm import tqdm

    from ..evaluation.scoring import evaluate, summary
    from ..pipeline.registrator import Registrator, identity_registration

    if Path(args.out).is_dir():
        raise DataError(f"{args.out}: is a folder; --out names the CSV file to write")
    names, load = _evaluation_pairs(args)
    if args.model:
        reg = Registrator.from_run(args.model, device=args.device, network_weight=args.network_weight)
        geometry = say_geometry("evaluate", chosen_geometry(args, names, reg.config.geometry))
        register = lambda p: reg.register_pair(p, geometry=geometry, glands=args.glands)  # noqa: E731
        _warn_if_trained_on(Path(args.model), names)
    else:
        if args.glands != "none":
            raise DataError(f"--glands {args.glands} fits a model's registration to the glands: give --model too")
        geometry = say_geometry("evaluate", chosen_geometry(args, names))
        register = lambda p: identity_registration(p.moving, p.fixed, geometry)  # noqa: E731
    with tqdm(total=len(names), unit="pair") as bar:
        results = evaluate(register, (load(name) for name in names), progress=lambda _: bar.update())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, lambda tmp: results.to_csv(tmp, index=False))
    print(summary(results).round(3).to_string())
    print(f"per-pair results: {args.out}")


def _evaluation_pairs(args):
    """(pair names, name -> Pair) of a folder or of a database through train's filters, cut to ``--pairs``."""
    if args.data:
        from ..core.io import list_folder_pairs, load_folder_pair

        names = list_folder_pairs(args.data)
        load = lambda name: load_folder_pair(args.data, name)  # noqa: E731
    else:

        with open_db(args.db) as db:
            pairs = {p.name: p for p in db.training_pairs(types=args.types, statuses=args.statuses,
                                                           annotators=args.annotators, consensus=args.consensus)}
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
    """Say so when pairs being scored were among the run's training pairs (its TRAINING_SET record)."""
    from ..pipeline.train import TRAINING_SET

    listing = run / TRAINING_SET if run.is_dir() else run.parent / TRAINING_SET
    if not listing.is_file():
        return
    seen = sorted(set(names) & set(json.loads(listing.read_text())))
    if seen:
        shown = ", ".join(seen[:5]) + (", ..." if len(seen) > 5 else "")
        print(f"napari-labelreg evaluate: warning: {len(seen)} of the {len(names)} pairs scored were used to train "
              f"{run} ({shown}): their figures are not held out", file=sys.stderr)


def cmd_demo(args) -> None:
    from ..app.demo import run_demo

    run_demo(Path(args.out), iterations=args.iterations, device=args.device)
