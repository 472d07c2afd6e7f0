"""``napari-labelreg``: the command line, one sub-command per job."""

from __future__ import annotations

import argparse
import difflib
import gc
import sys

from ..core.geometry import CONVENTIONS
from ..core.io import DataError
from .annotate import cmd_annotate
from .commands import cmd_demo, cmd_evaluate, cmd_map_points, cmd_register, cmd_train
from .db import add_db_commands
from ..config import GLAND_CHOICES
from .options import GLANDS_HELP, pair_source, training_options
from .study import add_baseline_command, add_study_commands


def _registration_options(p: argparse.ArgumentParser) -> None:
    """What register and evaluate ask of a trained run."""
    p.add_argument("--geometry", choices=CONVENTIONS, help="initial correspondence (default: the run's)")
    p.add_argument("--network-weight", type=float, metavar="W",
                   help="weight of the network's DDF on top of the located glands and gland prior (default: the "
                        "run's; 0: without the network)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda... (default auto)")


def _gland_options(p: argparse.ArgumentParser) -> None:
    """register's and map-points's: glands to fit the registration to, given or predicted."""
    p.add_argument("--moving-gland", metavar="MASK", help="the MR gland, a mask on the moving image's grid: the "
                   "registration ends by fitting the warped MR gland to the TRUS one (without --fixed-gland, the run "
                   "segments the TRUS gland)")
    p.add_argument("--fixed-gland", metavar="MASK", help="the TRUS gland, a mask on the fixed image's grid (without "
                   "--moving-gland, the run segments the MR gland)")
    p.add_argument("--glands", choices=("none", "predicted"), default="none",
                   help="predicted: fit to the glands the run segments on both images, where no mask is given "
                        "(default none: no fit unless a gland is given)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari-labelreg",
                                     description="Weakly-supervised MR-to-TRUS registration (Hu et al. 2018).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("train", help="train a registration network (headless)")
    pair_source(p)
    p.add_argument("--out", required=True, help="run folder (checkpoint, config, log)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    training_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("register", help="register a moving image to a fixed image with a trained model")
    p.add_argument("--model", required=True, help="run folder or checkpoint file")
    p.add_argument("--moving", required=True)
    p.add_argument("--fixed", required=True)
    p.add_argument("--moving-labels", help="3-D mask or 4-D label stack on the moving image to warp too")
    _gland_options(p)
    p.add_argument("--inverse", action="store_true",
                   help="also write inverse_ddf.nii.gz: moving world -> fixed world, on the moving grid")
    p.add_argument("--out", required=True, help="output folder (ddf.nii.gz maps fixed world points to the moving "
                   "file's world: ITK and 3D Slicer apply it to the moving file as it is)")
    _registration_options(p)
    p.set_defaults(func=cmd_register)

    p = sub.add_parser("map-points", help="map points (e.g. MR targets onto the ultrasound) through a registration")
    p.add_argument("--model", help="run folder or checkpoint file (with --moving and --fixed)")
    p.add_argument("--moving", help="moving image (MR)")
    p.add_argument("--fixed", help="fixed image (TRUS)")
    p.add_argument("--registration", metavar="FOLDER", help="instead of --model/--moving/--fixed: a register output "
                   "folder")
    p.add_argument("--points", required=True, help="CSV (a header naming columns x,y,z or r,a,s in RAS mm, or l,p,s "
                   "in LPS mm; a label column kept) or 3D Slicer markups .mrk.json, in world mm of the image they are "
                   "on; a point the registration does not cover refuses the file, by label")
    _gland_options(p)
    p.add_argument("--to", required=True, choices=("fixed", "moving"),
                   help="fixed: points on the moving image (MR targets) onto the fixed one; moving: the other way")
    p.add_argument("--out", required=True, help="CSV (label, x, y, z RAS mm, residual_mm) or .mrk.json (LPS)")
    _registration_options(p)
    p.set_defaults(func=cmd_map_points)

    p = sub.add_parser("evaluate", help="TRE and gland Dice of a model (or of no model) on labelled pairs")
    p.add_argument("--model", help="run folder; omitted: the initial correspondence alone")
    pair_source(p)
    p.add_argument("--pairs", nargs="+", metavar="NAME", help="only these pairs (default: all that pass the filters)")
    p.add_argument("--glands", choices=GLAND_CHOICES, default="none", help=GLANDS_HELP)
    p.add_argument("--out", required=True, help="per-pair CSV")
    _registration_options(p)
    p.set_defaults(func=cmd_evaluate)

    add_db_commands(sub)
    add_study_commands(sub, training_options)
    add_baseline_command(sub)

    p = sub.add_parser("annotate", help="open napari to paint label pairs into a database")
    p.add_argument("--db", help="label database (default: a phantom database in your user folder)")
    p.add_argument("--pair", type=int, help="image pair id to open")
    p.add_argument("--annotator", help="your name (remembered)")
    p.add_argument("--quit-after", type=float, help=argparse.SUPPRESS)  # seconds; for tests
    p.set_defaults(func=cmd_annotate)

    p = sub.add_parser("demo", help="train briefly on synthetic phantoms and register one (no data needed)")
    p.add_argument("--out", default="labelreg-demo", help="output folder (default ./labelreg-demo)")
    p.add_argument("--iterations", type=int, default=400, help="training steps (default 400: a few CPU minutes)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU), cpu, cuda... (default auto)")
    p.set_defaults(func=cmd_demo)
    return parser


def _leave_process_group() -> None:
    """End the process group a run under torchrun started, while the interpreter is whole: left to its exit,
    gloo's threads can abort the process ("terminate called without an active exception") once its work is
    done.  What still holds the group's work (a DDP wrapper in a reference cycle) is collected first."""
    dist = sys.modules.get("torch.distributed")  # never imported: nothing to end (and torch is not loaded)
    if dist is not None and dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def _innermost(parser: argparse.ArgumentParser, args) -> argparse.ArgumentParser:
    """The sub-command's own parser (``db import``'s, not the top level's) that ``args`` were parsed by."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices.get(getattr(args, action.dest, None))
            if chosen is not None:
                return _innermost(chosen, args)
    return parser


def _parse(argv) -> argparse.Namespace:
    """Parse ``argv``; an option the sub-command does not know is refused by that sub-command, with the
    nearest one it has (argparse's top level would show its own usage and no suggestion)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        sub = _innermost(parser, args)
        flags = [flag for action in sub._actions for flag in action.option_strings]
        near = difflib.get_close_matches(unknown[0].split("=")[0], flags, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        sub.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
    return args


def main(argv=None) -> int:
    try:
        args = _parse(argv)  # imports torch for some commands' choices: Ctrl+C may come here
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    try:
        return _run(args)
    finally:
        _leave_process_group()


def _run(args) -> int:
    try:
        args.func(args)
    except (DataError, ValueError, OSError, FloatingPointError) as exc:  # OSError: an --out that is a file, ...
        print(f"napari-labelreg {_command(args)}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if not type(exc).__module__.startswith("sqlalchemy"):
            raise
        # a damaged database, or a server gone mid-command: the driver's first line, not a traceback
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        print(f"napari-labelreg {_command(args)}: error: {getattr(args, 'db', '')}: database error ({first})",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    return 0


def _command(args) -> str:
    """``train``, or ``db import`` for a group's action: what an error line names."""
    return " ".join(filter(None, (args.command, getattr(args, "db_command", None))))


def _resume_hint(args) -> str:
    """What an interrupted ``train`` left: a checkpoint to resume, or (stopped before its first step) none."""
    if args.command != "train":
        return ""
    from pathlib import Path

    if (Path(args.out) / "checkpoint.pt").is_file():
        return " (the checkpoint is written: add --resume to continue)"
    return " before the first step: nothing to resume; run the same command again"
