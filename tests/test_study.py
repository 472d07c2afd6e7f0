"""Cross-validation folds, statistics, inspection layers and classical baselines (no GUI)."""

import json

import numpy as np
import pandas as pd
import pytest

from napari_labelreg.cli import main
from napari_labelreg.pipeline.registrator import Registration
from napari_labelreg.app.inspection import inspection_layers
from napari_labelreg.core.phantom import make_phantom
from napari_labelreg.evaluation.statistics import paired_wilcoxon, summary_table
from napari_labelreg.evaluation.crossval import load_or_make_splits, make_folds


def test_folds_keep_subjects_whole_and_are_reproducible(tmp_path):
    subjects = {f"p{i:02d}": f"s{i // 3}" for i in range(20)}  # 7 subjects, up to 3 pairs each
    folds = make_folds(subjects, 4, seed=3)
    assert sorted(p for f in folds for p in f) == sorted(subjects)
    for fold in folds:
        for other in folds:
            if other is not fold:
                assert not {subjects[p] for p in fold} & {subjects[p] for p in other}
    assert make_folds(subjects, 4, seed=3) == folds
    saved = load_or_make_splits(tmp_path, subjects, 4, seed=3)
    again = load_or_make_splits(tmp_path, subjects, 4, seed=99)  # reused, not redrawn
    assert saved == again == folds
    assert json.loads((tmp_path / "splits.json").read_text())["seed"] == 3
    with pytest.raises(ValueError, match="do not match"):
        load_or_make_splits(tmp_path, subjects, 5, seed=3)


def test_paired_wilcoxon_and_table_exact_cases():
    a = pd.DataFrame({"pair": list("abcdefghij"), "tre_mm": np.arange(10.0) + 1, "dice": np.linspace(0.5, 0.9, 10)})
    b = a.assign(tre_mm=a.tre_mm + 1.0)
    t = paired_wilcoxon(a, b, "tre_mm")
    assert t["median_difference"] == -1.0 and t["ci_low"] == t["ci_high"] == -1.0
    assert t["p_value"] < 0.01 and t["pairs"] == 10
    assert paired_wilcoxon(a, a, "dice")["p_value"] == 1.0
    table = summary_table({"A": a})
    assert table.loc["A", ("tre_mm", "median")] == 5.5


def test_inspection_layers_of_the_true_deformation():
    phantom = make_phantom(4)
    pair = phantom.pair
    from napari_labelreg.core.geometry import fixed_to_moving, warp

    matrix = fixed_to_moving(pair.fixed.grid, pair.moving.grid, "centred")
    truth = Registration(phantom.ddf_mm, pair.fixed.grid, pair.moving.grid, matrix,
                         warp(pair.moving.data, pair.fixed.grid, pair.moving.grid, matrix, phantom.ddf_mm))
    layers = {kw["name"]: (data, kw, kind) for data, kw, kind in inspection_layers(truth, pair)}
    assert {"TRUS image (fixed)", "warped MR (moving on fixed)", "displacement magnitude (mm)",
            "Jacobian determinant", "displacement gradient norm", "DDF (fixed -> moving, mm)",
            "landmark centroids (warped MR)", "TRUS labels (fixed)"} <= set(layers)
    meta = layers["TRUS image (fixed)"][1]["metadata"]
    assert meta["tre_all_mm"] < 1.5 and meta["dice"] > 0.9 and meta["folding_voxels"] == 0
    assert "folding voxels (det <= 0): 0" in layers
    magnitude = np.linalg.norm(phantom.ddf_mm, axis=-1).transpose(2, 1, 0)  # napari's arrays are (k, j, i)
    np.testing.assert_allclose(layers["displacement magnitude (mm)"][0], magnitude)
    det_limits = layers["Jacobian determinant"][1]["contrast_limits"]
    assert det_limits[0] + det_limits[1] == pytest.approx(2.0)  # centred on 1
    errors = layers["landmark centroids (warped MR)"][1]["features"]["error_mm"]
    assert len(errors) == pair.num_labels and np.all(errors < 2.0)  # within one 2 mm voxel
    vectors = layers["DDF (fixed -> moving, mm)"][0]
    assert vectors.shape[1:] == (2, 3)


def test_crossval_compare_and_baselines_from_the_cli(phantom_folder, tmp_path, capsys):
    from conftest import write_phantom_folder

    data = write_phantom_folder(tmp_path / "four", count=4)
    study = tmp_path / "cv"
    tiny = ["--width", "4", "--iterations", "2", "--geometry", "centred"]
    assert main(["crossval", "--data", str(data), "--folds", "2", "--out", str(study), "--fold", "0", *tiny]) == 0
    assert (study / "splits.json").is_file() and (study / "fold0" / "results.csv").is_file()
    assert not (study / "fold1").exists()  # one fold per job
    assert main(["crossval", "--data", str(data), "--folds", "2", "--out", str(study), *tiny]) == 0
    results = pd.read_csv(study / "results.csv")
    assert sorted(results.pair) == ["obs000", "obs001", "obs002", "obs003"] and set(results.fold) == {0, 1}
    assert (study / "summary.csv").is_file() and (study / "boxplots.png").stat().st_size > 1000
    base = tmp_path / "centroid"
    assert main(["baseline", "--method", "centroid", "--data", str(data), "--out", str(base)]) == 0
    capsys.readouterr()
    assert main(["compare", str(study), str(base), "--plot", str(tmp_path / "cmp.png")]) == 0
    out = capsys.readouterr().out
    assert "Wilcoxon p =" in out and "gland DSC" in out
    fitted = tmp_path / "cv_glands"  # the same folds, each registration fitted to the pair's own glands
    assert main(["crossval", "--data", str(data), "--folds", "2", "--out", str(fitted), "--glands", "given",
                 *tiny]) == 0
    with_glands = pd.read_csv(fitted / "results.csv").sort_values("pair")
    assert (with_glands.dice.to_numpy() > results.sort_values("pair").dice.to_numpy()).all()


def test_centroid_baseline_improves_and_ffd_runs_on_a_phantom():
    pytest.importorskip("SimpleITK")
    from napari_labelreg.evaluation.baselines import run_baseline
    from napari_labelreg.evaluation.scoring import score
    from napari_labelreg.pipeline.registrator import identity_registration

    pair = make_phantom(6, translation_mm=5.0).pair
    before = score(identity_registration(pair.moving, pair.fixed, "centred"), pair)
    cent = score(run_baseline("centroid", pair), pair)
    assert cent["dice"] > before["dice"]
    reg = run_baseline("ffd-ncc", pair)
    assert reg.ddf_mm.shape == (*pair.fixed.grid.shape, 3)
    assert np.isfinite(score(reg, pair)["tre_all_mm"])


def test_ffd_frame_without_optimisation_is_the_centroid_start(monkeypatch):
    """The SimpleITK set-up (image frames, initial translation, field conversion) is exact: with the
    optimiser skipped, the FFD's DDF equals the gland-centroid alignment's."""
    sitk = pytest.importorskip("SimpleITK")
    from napari_labelreg.evaluation import baselines

    monkeypatch.setattr(sitk.ImageRegistrationMethod, "Execute", lambda self, fixed, moving: None)
    pair = make_phantom(7, translation_mm=5.0).pair
    np.testing.assert_allclose(baselines.ffd(pair, "ncc").ddf_mm, baselines.centroid(pair).ddf_mm, atol=1e-4)
