"""Comparing registration methods the way the paper does (numpy, scipy, pandas).

Per-pair result tables have at least the columns ``pair``, ``tre_mm`` and
``dice`` (what :func:`napari_labelreg.evaluation.scoring.score` writes).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import wilcoxon

from ..core.metrics import percentiles

METRICS = {"tre_mm": "landmark TRE (mm)", "dice": "gland DSC"}


def summary_table(results: dict[str, pd.DataFrame], metrics=tuple(METRICS)) -> pd.DataFrame:
    """The paper's Table 1: per method, median and 10/25/75/90th percentiles of each metric."""
    rows = {}
    for name, frame in results.items():
        row = {}
        for metric in metrics:
            for key, value in percentiles(frame[metric]).items():
                row[(metric, key)] = value
        row[("pairs", "n")] = len(frame)
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.columns = pd.MultiIndex.from_tuples(table.columns)
    return table


def paired_wilcoxon(a: pd.DataFrame, b: pd.DataFrame, metric: str, *, alpha: float = 0.05, seed: int = 0,
                    bootstrap: int = 5000) -> dict:
    """Two-sided paired Wilcoxon signed-rank test of ``metric`` between two runs, matched by pair.

    Returns the p-value, the median paired difference (a - b) and its
    ``1 - alpha`` bootstrap confidence interval.
    """
    joined = a[["pair", metric]].merge(b[["pair", metric]], on="pair", suffixes=("_a", "_b")).dropna()
    diff = (joined[f"{metric}_a"] - joined[f"{metric}_b"]).to_numpy()
    if diff.size < 2:
        raise ValueError(f"need at least two pairs in common to compare {metric}, found {diff.size}")
    p = float(wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    rng = np.random.default_rng(seed)
    boots = np.median(rng.choice(diff, size=(bootstrap, diff.size), replace=True), axis=1)
    low, high = np.percentile(boots, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return {"metric": metric, "pairs": int(diff.size), "median_difference": float(np.median(diff)),
            "ci_low": float(low), "ci_high": float(high), "p_value": p, "significant": p < alpha}


def box_plots(results: dict[str, pd.DataFrame], path, metrics=tuple(METRICS)) -> None:
    """Tukey box plots of each metric per method, side by side, written as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 4), squeeze=False)
    names = list(results)
    for ax, metric in zip(axes[0], metrics):
        data = [results[n][metric].dropna().to_numpy() for n in names]
        ax.boxplot(data, whis=1.5)
        ax.set_xticks(range(1, len(names) + 1), names, rotation=20, ha="right")
        ax.set_title(METRICS.get(metric, metric))
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
