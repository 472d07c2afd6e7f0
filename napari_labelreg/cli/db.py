"""``napari-labelreg db ...``: import, export, summary and check of a label database."""

from __future__ import annotations

import json

from ..core.geometry import CONVENTIONS
from .options import open_db, say_geometry


def add_db_commands(sub) -> None:
    db = sub.add_parser("db", help="the label database: import, export, summary, agreement, history, restore, check")
    dsub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")

    p = dsub.add_parser("import", help="import a folder in the mrus_prostate layout")
    p.add_argument("folder")
    p.add_argument("--db", required=True, help="database file (created if new) or SQLAlchemy URL")
    p.add_argument("--subjects", help="CSV with columns pair,subject (default: one subject per pair)")
    p.add_argument("--geometry", "--convention", dest="convention", choices=CONVENTIONS,
                   help="initial correspondence recorded for the pairs: the word in the folder's geometry.txt, "
                        "else centred where the headers hold no scanner positions, else world (--convention is "
                        "the same option)")
    p.add_argument("--skip-existing", action="store_true",
                   help="leave pairs the database holds already (by name) as they are: import a grown folder's new "
                        "pairs")
    p.set_defaults(func=cmd_import)

    p = dsub.add_parser("export", help="export to the folder layout (or one NIfTI per label)")
    p.add_argument("folder")
    p.add_argument("--db", required=True)
    p.add_argument("--per-label", action="store_true", help="one NIfTI per mask instead of 4-D stacks")
    p.set_defaults(func=cmd_export)

    p = dsub.add_parser("summary", help="counts of subjects, image pairs and label pairs by type")
    p.add_argument("--db", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_summary)

    p = dsub.add_parser("agreement", help="where annotators labelled the same landmark: centroid distance (mm) "
                        "and Dice, per label type and overall (the noise floor of a TRE)")
    p.add_argument("--db", required=True, help="database file or URL")
    p.add_argument("--out", help="CSV of every comparison (pair, landmark, annotators, side)")
    p.add_argument("--plot", help="figure of the centroid distances by label type (.png, .pdf)")
    p.set_defaults(func=cmd_agreement)

    p = dsub.add_parser("history", help="every revision of a label pair (who, when, what), or the deleted ones")
    p.add_argument("--db", required=True, help="database file or URL")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--label-pair", type=int, metavar="ID", help="the label pair whose revisions to list")
    what.add_argument("--deleted", action="store_true", help="list the deleted label pairs (restorable)")
    p.set_defaults(func=cmd_history)

    p = dsub.add_parser("restore", help="make an earlier revision of a label pair its newest, or undo its deletion")
    p.add_argument("--db", required=True, help="database file or URL")
    p.add_argument("--label-pair", type=int, metavar="ID", required=True)
    p.add_argument("--revision", type=int, metavar="N", help="the revision to restore (default: undo the deletion)")
    p.add_argument("--annotator", required=True, help="who restores it (recorded in the history)")
    p.set_defaults(func=cmd_restore)

    p = dsub.add_parser("check", help="verify hashes, shapes, missing and orphaned data; changes nothing")
    p.add_argument("--db", required=True)
    p.set_defaults(func=cmd_check)


def cmd_history(args) -> None:
    from ..database.store import when

    with open_db(args.db) as db:
        if args.deleted:
            deleted = db.label_pairs(deleted=True)
            names = {p.id: p.name for p in db.image_pairs()} if deleted else {}
            for lp in deleted:
                print(f"label pair {lp.id}  {names[lp.image_pair_id]}  {lp.type} · {lp.name or '-'}  deleted by "
                      f"{lp.modified_by or '-'} at {when(lp.modified)} (revision {lp.revision})")
            print(f"{len(deleted)} deleted label pairs" + (": db restore --label-pair ID brings one back" if deleted
                                                            else ""))
            return
        record = db.label_pair(args.label_pair)
        pair = db.image_pair(record.image_pair_id).name
        print(f"label pair {record.id} of {pair}: {record.type} · {record.name or '-'}"
              f"{' (deleted)' if record.deleted else ''}")
        for r in db.revisions(args.label_pair):
            masks = "  ".join(f"{side} {sha[:12] if sha else '-':12s}" for side, sha in (("moving", r.moving_sha256),
                                                                                          ("fixed", r.fixed_sha256)))
            print(f"{r.number:4d}  {when(r.at)}  {r.author or '-':12s}  {r.action:18s} {r.status:10s}  {masks}")


def cmd_restore(args) -> None:
    with open_db(args.db) as db:
        number = db.restore(args.label_pair, args.revision, author=args.annotator)
    if args.revision is None:
        print(f"label pair {args.label_pair} undeleted (its revision {number})")
    else:
        print(f"label pair {args.label_pair}: revision {args.revision} restored as its revision {number}")


def cmd_import(args) -> None:
    from tqdm import tqdm

    from ..database.transfer import import_folder
    from ..core.io import list_folder_pairs
    from ..core.pairs import folder_geometry

    total = len(list_folder_pairs(args.folder))
    convention = args.convention or say_geometry("db import", folder_geometry(args.folder))
    with open_db(args.db, must_exist=False) as db, tqdm(total=total, unit="pair", delay=1) as bar:
        n = import_folder(db, args.folder, subjects=args.subjects, convention=convention,
                          skip_existing=args.skip_existing, progress=lambda _: bar.update())
    skipped = f" ({total - n} there already, left as they were)" if args.skip_existing and total > n else ""
    print(f"imported {n} image pairs into {args.db}{skipped}")


def cmd_export(args) -> None:
    from ..database.transfer import export_folder, export_per_label

    with open_db(args.db) as db:
        n = export_per_label(db, args.folder) if args.per_label else export_folder(db, args.folder)
    print(f"exported {n} {'masks' if args.per_label else 'image pairs'} to {args.folder}")


def cmd_summary(args) -> None:
    from ..database.views import summary

    with open_db(args.db) as db:
        info = summary(db)
    if args.json:
        print(json.dumps(info))
        return
    print(f"subjects     {info['subjects']}")
    print(f"image pairs  {info['image_pairs']}")
    print(f"label pairs  {info['label_pairs']}")
    for kind, n in sorted(info["by_type"].items()):
        print(f"  {kind:16s} {n}")
    for status, n in sorted(info["by_status"].items()):
        print(f"  [{status}]{'':{max(0, 14 - len(status))}s} {n}")


def cmd_agreement(args) -> None:
    from ..core.io import atomic_write
    from ..database.views import agreement, agreement_summary

    with open_db(args.db) as db:
        pairs = agreement(db)
    if pairs.empty:
        print(f"{args.db}: no landmark was labelled by two annotators (same image pair, type and name)")
        return
    print(agreement_summary(pairs).round(3).to_string())
    if args.out:
        atomic_write(args.out, lambda tmp: pairs.to_csv(tmp, index=False))
        print(f"every comparison: {args.out}")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        kinds = sorted(pairs.type.unique())
        fig, ax = plt.subplots(figsize=(2.0 + 0.9 * len(kinds), 3.4))
        ax.boxplot([pairs.centroid_distance_mm[pairs.type == k] for k in kinds], showfliers=True)
        ax.set_xticks(range(1, len(kinds) + 1), kinds, rotation=30, ha="right")
        ax.set_ylabel("between annotators:\ncentroid distance (mm)")
        ax.set_title(f"{len(pairs)} comparisons", fontsize=9)
        fig.tight_layout()
        atomic_write(args.plot, lambda tmp: fig.savefig(tmp, dpi=150))
        plt.close(fig)
        print(f"figure: {args.plot}")


def cmd_check(args) -> None:
    from ..database.check import check

    with open_db(args.db) as db:
        problems = check(db)
    for p in problems:
        print(p)
    print(f"{len(problems)} problem{'s' * (len(problems) != 1)} found" if problems else "no problems found")
    if problems:
        raise SystemExit(1)
