"""Training, inspection and model-assisted annotation from napari (virtual display)."""

import time

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from napari_labelreg.config import AugmentConfig, ModelConfig, TrainConfig  # noqa: E402


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
    from qtpy.QtCore import QElapsedTimer, QTimer

    from napari_labelreg._widgets.train import TrainWidget
    from napari_labelreg.nn.checkpoint import load_checkpoint

    viewer = make_napari_viewer()
    w = TrainWidget(viewer)
    viewer.window.add_dock_widget(w)
    out = tmp_path / "run"
    tiny_form(w, tiny_db, out, 400)
    # the event loop's answer time while training: a 20 ms timer's largest gap
    clock, gaps = QElapsedTimer(), []
    ticker = QTimer()
    ticker.timeout.connect(lambda: (gaps.append(clock.restart())))
    clock.start()
    ticker.start(20)
    w.start()
    qtbot.waitUntil(lambda: w.last_progress is not None and w.last_progress.step >= 3, timeout=120_000)
    t0 = time.perf_counter()
    qtbot.wait(2000)
    busy = [g for g in gaps[-int(2000 / 20 * 0.5):]]
    w.cancel()
    qtbot.waitUntil(lambda: w.worker is None, timeout=60_000)
    ticker.stop()
    worst_ms = max(busy) if busy else 0
    seconds = time.perf_counter() - t0
    print(f"\nGUI responsiveness while training: worst event-loop gap {worst_ms} ms over {seconds:.1f} s")
    assert worst_ms < 500
    stopped = load_checkpoint(out / "checkpoint.pt")["step"]
    assert 3 <= stopped < 400
    assert w.plot.series["loss"]

    tiny_form(w, tiny_db, out, stopped + 2)
    w.start(resume=True)
    qtbot.waitUntil(lambda: w.worker is None, timeout=120_000)
    assert load_checkpoint(out / "checkpoint.pt")["step"] == stopped + 2


def test_the_train_form_sets_how_many_networks_are_averaged(qtbot):
    from napari_labelreg._widgets.train import TrainWidget

    w = TrainWidget(None)
    qtbot.addWidget(w)
    assert w.config().members == 1
    w.members.setValue(3)
    w.iterations.setValue(30)
    assert w.config().members == 3 and w.config().iterations == 30
    w.preset.setCurrentText("paper")  # a preset brings its own count back
    assert w.members.value() == 1 and w.config().learning_rate == 1e-5


def test_inspect_widget_adds_the_layers(make_napari_viewer, qtbot, trained_run):
    from napari_labelreg._widgets.inspect import InspectWidget, register_for_inspection

    viewer = make_napari_viewer()
    w = InspectWidget(viewer)
    w.model_dir.setText(str(trained_run))
    worker = w.register()
    qtbot.waitUntil(lambda: "phantom1000: Jacobian determinant" in viewer.layers, timeout=60_000)
    names = {layer.name.split(": ", 1)[1] for layer in viewer.layers}
    assert {"TRUS image (fixed)", "warped MR (moving on fixed)", "displacement magnitude (mm)",
            "displacement gradient norm", "DDF (fixed -> moving, mm)", "landmark centroids (warped MR)"} <= names
    fixed_shape = viewer.layers["phantom1000: TRUS image (fixed)"].data.shape
    assert viewer.layers["phantom1000: Jacobian determinant"].data.shape == fixed_shape
    assert "landmark TRE" in w.summary.text() and w.errors.count() > 0
    del worker
    # the network weight: the run's unless set; 0 asks for the located glands alone, which this run has not
    assert w.weight() is None
    w.network_weight.setValue(0.0)
    assert w.weight() == 0.0
    with pytest.raises(ValueError, match="no gland locator"):
        register_for_inspection(str(trained_run), None, 0, w.weight())


def test_model_assisted_annotation_proposes_accepts(make_napari_viewer, qtbot, trained_run, tmp_path):
    from napari_labelreg._widgets.annotate import LABEL_LAYERS, PROPOSAL_LAYER, AnnotateWidget
    from napari_labelreg.annotation import AnnotationSession, phantom_database
    from napari_labelreg.inference import Registrator

    viewer = make_napari_viewer()
    w = AnnotateWidget(viewer, AnnotationSession.open(phantom_database(tmp_path / "db", count=1), "alice"))
    pid = w.add_label_pair("calcification")
    moving = viewer.layers[LABEL_LAYERS["moving"]]
    moving.data_setitem(tuple(np.array(v) for v in ([20, 20, 21, 21], [24, 25, 24, 25], [20, 20, 20, 20])), 1)
    w.flush()
    w.propose(Registrator.from_run(trained_run, precision="fp32"))
    assert PROPOSAL_LAYER in viewer.layers
    proposal = viewer.layers[PROPOSAL_LAYER].data > 0
    assert proposal.any()
    w.accept_proposal()
    saved_fixed = w.session.db.masks(pid)[1]
    np.testing.assert_array_equal(saved_fixed, proposal)
    assert [lp.status for lp in w.session.label_pairs() if lp.id == pid] == ["complete"]
