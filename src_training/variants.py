"""The networks and losses that the paper's Table 1 compares, as named settings.

Each entry is the list of ``napari-labelreg train``/``crossval`` options that
turns a preset into that row.  Every row states ``--prefilter`` or
``--no-prefilter`` and its network and loss explicitly, so a row means the same
thing whichever preset it starts from (the ``cpu`` preset pre-filters by
default; the paper's Baseline does not).

    python src_training/variants.py                       # list the rows and their settings
    python src_training/variants.py --preset paper        # ... resolved against the paper preset
"""

from __future__ import annotations

import argparse

from napari_labelreg.cli import build_parser, config_from_args

BASE = ["--variant", "baseline", "--loss", "msdice", "--regulariser", "bending", "--no-prefilter"]

TABLE1: dict[str, list[str]] = {
    "Baseline": BASE,
    "Baseline-msCE": BASE + ["--loss", "msce"],
    "Baseline-L2": BASE + ["--regulariser", "l2"],
    "Baseline-preFilt": BASE + ["--prefilter"],
    "Baseline-delta0": BASE + ["--variant", "delta0"],
    "Baseline-delta1-4": BASE + ["--variant", "delta1-4"],
    "Global-Net": BASE + ["--variant", "global"],
    "Composite-Net": BASE + ["--variant", "composite"],
}

# The paper's medians on its private data (108 pairs), for the study's printout.
PAPER = {
    "Baseline": (3.6, 0.87), "Baseline-msCE": (6.1, 0.88), "Baseline-L2": (4.8, 0.82),
    "Baseline-preFilt": (3.9, 0.86), "Baseline-delta0": (4.5, 0.84), "Baseline-delta1-4": (4.2, 0.86),
    "Global-Net": (5.8, 0.77), "Composite-Net": (4.7, 0.82),
}


def config(name: str, preset: str = "cpu", extra: list[str] | None = None):
    """The :class:`~napari_labelreg.config.TrainConfig` of one row (later options win)."""
    if name not in TABLE1:
        raise KeyError(f"unknown variant {name!r}; choose from {', '.join(TABLE1)}")
    argv = ["train", "--data", "-", "--out", "-", "--preset", preset, *TABLE1[name], *(extra or [])]
    return config_from_args(build_parser().parse_args(argv))


def main() -> None:
    p = argparse.ArgumentParser(description="List the paper's Table 1 rows and their settings.")
    p.add_argument("--preset", default="cpu", choices=("cpu", "paper"))
    args = p.parse_args()
    for name, options in TABLE1.items():
        c = config(name, args.preset)
        print(f"{name:18s} {' '.join(options[len(BASE):]) or '(base)':24s} variant={c.model.variant} "
              f"n0={c.model.width} loss={c.loss.similarity} reg={c.loss.regulariser} prefilter={c.loss.prefilter} "
              f"lr={c.learning_rate:g} spacing={c.spacing_mm} precision={c.precision}")


if __name__ == "__main__":
    main()
