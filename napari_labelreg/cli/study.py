"""``crossval``, ``compare`` and ``baseline``: the paper's evaluation protocol from the command line."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from pathlib import Path

from ..core.geometry import CONVENTIONS
from ..core.io import DataError
from ..config import GLAND_CHOICES
from .options import GEOMETRY_HELP, GLANDS_HELP, consensus_option


def add_study_commands(sub, training_options) -> None:
    p = sub.add_parser("crossval", help="patient-level k-fold cross-validation (folds saved in splits.json)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--db", help="label database")
    source.add_argument("--data", help="folder in the mrus_prostate layout (one subject per pair)")
    p.add_argument("--folds", type=int, default=12, help="number of folds (default 12, as the paper)")
    p.add_argument("--fold", type=int, action="append", help="run only this fold (repeatable): one job per fold")
    p.add_argument("--out", required=True, help="study folder: splits.json, fold*/, results.csv, summary")
    p.add_argument("--name", help="method name in the summary (default: 'network, VARIANT variant')")
    p.add_argument("--types", nargs="+", help="with --db: only these label types for training")
    p.add_argument("--statuses", nargs="+", choices=("complete", "verified"))
    p.add_argument("--annotators", nargs="+")
    consensus_option(p)
    p.add_argument("--glands", choices=GLAND_CHOICES, default="none", help=GLANDS_HELP)
    training_options(p)
    p.set_defaults(func=cmd_crossval)

    p = sub.add_parser("compare", help="paired Wilcoxon signed-rank tests between two studies' per-pair results")
    p.add_argument("run_a", help="study folder (or its results.csv)")
    p.add_argument("run_b")
    p.add_argument("--alpha", type=float, default=0.05)
    p.add_argument("--plot", help="also write box plots of both to this PNG")
    p.set_defaults(func=cmd_compare)


def _pairs_and_subjects(args):
    if args.data:
        from ..core.pairs import folder_pairs

        pairs = folder_pairs(args.data)
        return pairs, {p.name: p.name for p in pairs}
    from .options import open_db

    with open_db(args.db) as db:
        subjects = {r.name: r.subject for r in db.image_pairs()}
        ids = {r.name: r.id for r in db.image_pairs()}
        pairs = [db.load_pair(ids[name], types=args.types, statuses=args.statuses, annotators=args.annotators,
                              consensus=args.consensus) for name in subjects]
    pairs = [p for p in pairs if p.num_labels]
    return pairs, {p.name: subjects[p.name] for p in pairs}


def cmd_crossval(args) -> None:
    from .options import chosen_geometry, config_from_args, drive, say_geometry, use_from_args
    from ..evaluation.scoring import evaluate_run
    from ..evaluation.statistics import box_plots, summary_table
    from ..evaluation.crossval import collect, load_or_make_splits, run_fold

    config = config_from_args(args)
    pairs, subjects = _pairs_and_subjects(args)
    config = replace(config, geometry=say_geometry("crossval", chosen_geometry(args, [p.name for p in pairs])))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folds = load_or_make_splits(out, subjects, args.folds, config.seed)
    chosen = args.fold if args.fold else range(len(folds))
    for k in chosen:
        if not 0 <= k < len(folds):
            raise DataError(f"--fold {k}: folds are numbered 0..{len(folds) - 1}")
        print(f"fold {k}: {len(folds[k])} test pairs, {len(pairs) - len(folds[k])} training pairs")
        evaluate = partial(evaluate_run, glands=args.glands)
        drive(run_fold(pairs, folds, k, config, out, use=use_from_args(args), evaluate=evaluate,
                       device=args.device), config)
    results = collect(out)
    name = args.name or f"network, {config.model.variant} variant"
    table = summary_table({name: results})
    table.to_csv(out / "summary.csv")
    box_plots({name: results}, out / "boxplots.png")
    done = sorted(results.fold.unique())
    print(f"folds finished: {len(done)}/{len(folds)}; per-pair results: {out / 'results.csv'}")
    print(table.round(3).to_string())


def _results(path):
    import pandas as pd

    path = Path(path)
    csv = path / "results.csv" if path.is_dir() else path
    if not csv.is_file():
        raise DataError(f"{path}: no results.csv (run crossval, evaluate or baseline first)")
    return csv, pd.read_csv(csv)


def cmd_compare(args) -> None:
    from ..evaluation.statistics import METRICS, box_plots, paired_wilcoxon, summary_table

    (csv_a, a), (csv_b, b) = _results(args.run_a), _results(args.run_b)
    label_a, label_b = csv_a.parent.name, csv_b.parent.name
    print(summary_table({label_a: a, label_b: b}).round(3).to_string())
    print()
    for metric in METRICS:
        t = paired_wilcoxon(a, b, metric, alpha=args.alpha)
        ci = f"{100 * (1 - args.alpha):.0f}% CI [{t['ci_low']:.3f}, {t['ci_high']:.3f}]"
        verdict = "significant" if t["significant"] else "not significant"
        print(f"{METRICS[metric]}: median difference ({label_a} - {label_b}) {t['median_difference']:.3f}, {ci}, "
              f"Wilcoxon p = {t['p_value']:.4g} over {t['pairs']} pairs ({verdict} at alpha = {args.alpha})")
    if args.plot:
        box_plots({label_a: a, label_b: b}, args.plot)
        print(f"box plots: {args.plot}")


def add_baseline_command(sub) -> None:
    from ..evaluation.baselines import METHODS

    p = sub.add_parser("baseline", help="classical baselines (gland centroids, B-spline FFD) scored like the network")
    p.add_argument("--method", choices=METHODS, required=True)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--db")
    source.add_argument("--data")
    p.add_argument("--out", required=True, help="folder for results.csv (use with compare)")
    p.add_argument("--geometry", choices=CONVENTIONS, help=GEOMETRY_HELP)
    p.add_argument("--limit", type=int, help="only the first N pairs")
    p.set_defaults(func=cmd_baseline, types=None, statuses=None, annotators=None, consensus=False)


def cmd_baseline(args) -> None:
    import time

    from tqdm import tqdm

    from ..evaluation.baselines import run_baseline
    from ..evaluation.scoring import score
    from ..core.io import atomic_write
    from ..evaluation.statistics import summary_table

    from .options import chosen_geometry, say_geometry

    pairs, _ = _pairs_and_subjects(args)
    pairs = pairs[: args.limit] if args.limit else pairs
    geometry = say_geometry("baseline", chosen_geometry(args, [p.name for p in pairs]))
    rows = []
    for pair in tqdm(pairs, unit="pair"):
        t0 = time.perf_counter()
        row = score(run_baseline(args.method, pair, geometry), pair)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    import pandas as pd

    frame = pd.DataFrame(rows)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.csv", lambda tmp: frame.to_csv(tmp, index=False))
    print(summary_table({args.method: frame}).round(3).to_string())
    print(f"median {frame.seconds.median():.1f} s per pair; per-pair results: {out / 'results.csv'}")
