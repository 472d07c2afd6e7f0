"""Training, inspection and model-assisted annotation from napari (virtual display)."""

import re
from dataclasses import replace

import numpy as np

import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui



@pytest.fixture(autouse=True)
def private_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


@pytest.fixture(scope="module")
def tiny_db(tmp_path_factory):
    from conftest import write_phantom_folder

    from napari_labelreg.database import LabelDB
    from napari_labelreg.database.transfer import import_folder

    root = tmp_path_factory.mktemp("tinydb")
    data = write_phantom_folder(root / "data", count=4, fixed_shape=(16, 20, 12), moving_shape=(18, 18, 16),
                                spacing=2.5)
    with LabelDB.open(root / "labels.db") as db:
        import_folder(db, data)
    return root / "labels.db"


def tiny_form(widget, db, out, iterations):
    widget.db_path.setText(str(db))
    widget.out_dir.setText(str(out))
    widget.iterations.setValue(iterations)
    widget.validation.setValue(0.25)


def test_train_cancel_resume_and_stay_responsive(make_napari_viewer, qtbot, tiny_db, tmp_path):
    from qtpy.QtCore import QTimer

    from napari_labelreg._widgets.train import PROGRESS_STEPS, TrainWidget
    from napari_labelreg.pipeline.checkpoint import load_checkpoint

    viewer = make_napari_viewer(show=True)  # shown: its canvas draws
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    out = tmp_path / "run"
    w.preset.setCurrentText("paper")  # registration from the first step: no locator phase to wait through
    tiny_form(w, tiny_db, out, 400)
    viewer.add_image(np.random.default_rng(0).random((16, 64, 64), np.float32))  # something to draw
    canvas = viewer.window._qt_viewer.canvas._scene_canvas
    draws = []  # frames the canvas drew, asked for one every 20 ms
    canvas.events.draw.connect(lambda event: draws.append(1))
    ticks = []  # the event loop's answers to a 20 ms timer while training runs in its worker
    ticker = QTimer()
    ticker.timeout.connect(lambda: (ticks.append(1), canvas.update()))
    ticker.start(20)
    qtbot.wait(2000)
    idle = len(draws) / 2
    w.start()
    # generous limits only guard against a hang; nothing below depends on the machine's speed
    qtbot.waitUntil(lambda: w.last_progress is not None and w.last_progress.step >= 3, timeout=600_000)
    before, drawn = len(ticks), len(draws)
    qtbot.wait(2000)
    answered, drawn = len(ticks) - before, len(draws) - drawn
    w.cancel()
    qtbot.waitUntil(lambda: w.worker is None, timeout=600_000)
    ticker.stop()
    print(f"\nGUI while training: {answered} of 100 timer ticks answered in 2 s, {drawn / 2:.0f} frames/s drawn "
          f"({idle:.0f} before training)")
    assert answered >= 10 and drawn >= 10  # a GUI thread blocked by training answers and draws none
    stopped = load_checkpoint(out / "checkpoint.pt")["stages"]["refine"]["step"]
    assert 3 <= stopped < 400
    assert w.outcome == "cancelled" and "Resume" in w.status.text()
    assert w.plot.series["registration network loss"] and 0 < w.progress.value() < PROGRESS_STEPS

    tiny_form(w, tiny_db, out, stopped + 2)
    w.start(resume=True)
    qtbot.waitUntil(lambda: w.worker is None, timeout=600_000)
    assert load_checkpoint(out / "checkpoint.pt")["stages"]["refine"]["step"] == stopped + 2
    assert w.outcome == "finished" and w.progress.value() == PROGRESS_STEPS
    assert "finished" in w.status.text()


def test_a_filter_matching_nothing_fails_without_claiming_a_checkpoint(make_napari_viewer, qtbot, tiny_db,
                                                                       tmp_path, monkeypatch):
    from napari_labelreg._widgets import train as train_widget

    shown = []
    monkeypatch.setattr(train_widget, "show_error", shown.append)
    viewer = make_napari_viewer()
    w = train_widget.TrainWidget(viewer)
    tiny_form(w, tiny_db, tmp_path / "run", 5)
    w.types.setText("urethra")  # no label pair of this type
    w.start()
    qtbot.waitUntil(lambda: w.worker is None, timeout=600_000)
    assert len(shown) == 1 and "no complete label pairs" in shown[0]
    assert w.outcome.startswith("failed") and "checkpoint" not in w.status.text()
    assert not (tmp_path / "run").exists()


def test_the_train_tab_refuses_what_the_cli_refuses_and_touches_nothing(make_napari_viewer, qtbot, tiny_db,
                                                                          tmp_path, monkeypatch):
    from napari_labelreg._widgets import train as train_widget

    shown = []
    monkeypatch.setattr(train_widget, "show_error", shown.append)
    w = train_widget.TrainWidget(make_napari_viewer())
    held = tmp_path / "held"
    held.mkdir()
    (held / "checkpoint.pt").write_bytes(b"someone's run")
    for db, out, resume, words in ((tmp_path / "missing.db", tmp_path / "a", False, "database not found"),
                                   (tiny_db, tmp_path / "empty", True, "no run to resume"),
                                   (tiny_db, held, False, "holds a run already; Resume continues it")):
        tiny_form(w, db, out, 5)
        w.start(resume=resume)
        qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
        assert words in shown[-1] and w.outcome.startswith("failed"), shown
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "empty").exists()
    assert (held / "checkpoint.pt").read_bytes() == b"someone's run"


def test_whole_budget_progress_counts_the_locator_and_prior():
    from napari_labelreg.config import PRESETS
    from napari_labelreg.app.jobs import overall_fraction
    from napari_labelreg.pipeline.stages import Progress

    cfg = replace(PRESETS["cpu"], iterations=1000, minutes=None)  # locator 0.3, prior 0.05: 300 + 50 + 650 steps
    assert cfg.stage_budgets() == {"locate": (300, None), "prior": (50, None), "refine": (650, None)}
    at = lambda stage, step: overall_fraction(Progress(step, None, 0, 0, 0, 0, 0, stage=stage), cfg)  # noqa: E731
    assert at("locate", 150) == pytest.approx(0.15)
    assert at("prior", 50) == pytest.approx(0.35)
    assert at("refine", 325) == pytest.approx(0.675) and at("refine", 650) == pytest.approx(1.0)
    timed = replace(cfg, iterations=None, minutes=10)  # shares of the minutes, as of the steps
    prog = lambda stage, s: overall_fraction(Progress(1, None, 0, 0, 0, s, 0, stage=stage), timed)  # noqa: E731
    assert prog("locate", 90) == pytest.approx(0.15)
    assert prog("refine", 300) == pytest.approx(0.35 + 0.5)
    # both budgets: the run ends with the first to run out, and the bar follows whichever is further on
    both = replace(cfg, iterations=100_000, minutes=10)
    assert overall_fraction(Progress(2, None, 0, 0, 0, 90, 0, stage="locate"), both) == pytest.approx(0.15)
    assert overall_fraction(Progress(55_000, None, 0, 0, 0, 1, 0, stage="refine"), both) == pytest.approx(0.9)


def test_the_train_form_describes_the_preset_with_its_budget(qtbot):
    from napari_labelreg._widgets.train import TrainWidget

    w = TrainWidget(None)
    qtbot.addWidget(w)
    w.iterations.setValue(30)
    assert w.config().iterations == 30 and w.config().locator == 0.3  # the cpu preset's gland locator
    w.preset.setCurrentText("paper")
    assert w.config().learning_rate == 1e-5 and w.config().locator == 0.0 and w.config().iterations == 30
    # a time limit is asked for, not a spin box's special value: off, the minutes field is disabled and unused
    assert w.config().minutes is None and not w.minutes.isEnabled()
    w.time_limit.setChecked(True)
    w.minutes.setValue(12.5)
    assert w.minutes.isEnabled() and w.config().minutes == 12.5 and w.config().iterations == 30


def test_inspect_widget_adds_the_layers(make_napari_viewer, qtbot, trained_run):
    from napari_labelreg._widgets.inspect import InspectWidget
    from napari_labelreg.app.inspection import register_for_inspection

    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    viewer = make_napari_viewer()
    w = InspectWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model_dir.setText(str(trained_run))
    QTest.mouseClick(w.register_btn, Qt.MouseButton.LeftButton)  # as a user does: the button, not the method
    qtbot.waitUntil(lambda: "phantom1000: Jacobian determinant" in viewer.layers, timeout=60_000)
    names = {layer.name.split(": ", 1)[1] for layer in viewer.layers}
    assert {"TRUS image (fixed)", "warped MR (moving on fixed)", "displacement magnitude (mm)",
            "displacement gradient norm", "DDF (fixed -> moving, mm)", "landmark centroids (warped MR)"} <= names
    fixed_shape = viewer.layers["phantom1000: TRUS image (fixed)"].data.shape
    assert viewer.layers["phantom1000: Jacobian determinant"].data.shape == fixed_shape
    assert "landmark TRE" in w.summary.text() and w.errors.count() > 0
    # the network weight: the run's unless set; 0 asks for the located glands alone, which this run has not
    assert w.weight() is None and not w.network_weight.isEnabled()
    w.runs_weight.setChecked(False)
    w.network_weight.setValue(0.0)
    assert w.weight() == 0.0
    with pytest.raises(ValueError, match="no gland locator"):
        register_for_inspection(str(trained_run), None, 0, w.weight())


def test_inspect_fits_the_glands_and_shows_them_with_the_dice_before_and_after(make_napari_viewer, qtbot, trained_run):
    """Gland fit "given": the pair's gland labels are fitted to; the glands show as outlines on the TRUS and the
    summary gives the gland Dice before and after the fit."""
    from qtpy.QtCore import Qt
    from qtpy.QtTest import QTest

    from napari_labelreg._widgets.inspect import InspectWidget

    viewer = make_napari_viewer()
    w = InspectWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model_dir.setText(str(trained_run))
    w.glands.setCurrentText("given")
    QTest.mouseClick(w.register_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "phantom1000: TRUS gland fitted to (given)" in viewer.layers, timeout=60_000)
    assert "phantom1000: warped MR gland (given)" in viewer.layers
    line = w.summary.text().splitlines()[-1]
    assert line.startswith("gland fit: MR gland given, TRUS gland given; gland Dice "), line
    before, after = (float(x) for x in re.findall(r"(\d\.\d{3}) (?:before|after)", line))
    assert after > 0.9 and after > before
    fitted = viewer.layers["phantom1000: TRUS gland fitted to (given)"]
    assert fitted.data.shape == viewer.layers["phantom1000: TRUS image (fixed)"].data.shape and fitted.contour == 1
    w.glands.setCurrentText("predicted")  # this run has no segmenters: said in the summary, nothing changes
    QTest.mouseClick(w.register_btn, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "no gland segmenters" in w.summary.text(), timeout=60_000)
    assert "phantom1000: TRUS gland fitted to (given)" in viewer.layers
