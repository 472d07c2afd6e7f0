"""The experiment definitions in src_training/: Table 1 rows and the study script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src_training"))

import variants  # noqa: E402


@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_each_table1_row_is_what_it_names_under_either_preset(preset):
    configs = {name: variants.config(name, preset) for name in variants.TABLE1}
    base = configs["Baseline"]
    assert (base.model.variant, base.loss.similarity, base.loss.regulariser, base.loss.prefilter) == \
        ("baseline", "msdice", "bending", False)
    expected = {
        "Baseline-msCE": ("loss", "similarity", "msce"), "Baseline-L2": ("loss", "regulariser", "l2"),
        "Baseline-preFilt": ("loss", "prefilter", True), "Baseline-delta0": ("model", "variant", "delta0"),
        "Baseline-delta1-4": ("model", "variant", "delta1-4"), "Global-Net": ("model", "variant", "global"),
        "Composite-Net": ("model", "variant", "composite"),
    }
    for name, (part, field, value) in expected.items():
        assert getattr(getattr(configs[name], part), field) == value
        # exactly that one setting differs from Baseline (the paper's lr for the affine nets aside)
        assert getattr(configs[name], part) != getattr(base, part)
        other = "loss" if part == "model" else "model"
        assert getattr(configs[name], other) == getattr(base, other)
    if preset == "paper":
        assert base.learning_rate == 1e-5 and base.model.width == 32
        assert configs["Global-Net"].learning_rate == 1e-6
    with pytest.raises(KeyError, match="unknown variant"):
        variants.config("Baseline-nope")


def test_table1_study_runs_rows_on_shared_folds(tmp_path):
    from conftest import write_phantom_folder

    data = write_phantom_folder(tmp_path / "data", count=4)
    study = tmp_path / "study"
    cmd = [sys.executable, str(ROOT / "src_training" / "table1.py"), "--data", str(data), "--out", str(study),
           "--variants", "Baseline", "Baseline-L2", "--folds", "2", "--iterations", "2",
           "--", "--width", "4"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    splits = [json.loads((study / n / "splits.json").read_text()) for n in ("Baseline", "Baseline-L2")]
    assert splits[0] == splits[1] == json.loads((study / "splits.json").read_text())
    table = pd.read_csv(study / "table1.csv", header=[0, 1], index_col=0)
    assert list(table.index) == ["Baseline", "Baseline-L2"]
    assert table.loc["Baseline-L2", ("paper", "tre_mm")] == 4.8
    assert 0 <= table.loc["Baseline-L2", ("vs Baseline", "dice p")] <= 1
    assert (table[("pairs", "n")] == 4).all()
    with open(study / "Baseline-L2" / "fold0" / "config.json") as f:
        assert json.load(f)["loss"]["regulariser"] == "l2"
