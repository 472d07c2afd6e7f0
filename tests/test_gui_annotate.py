"""The annotation plugin under a virtual display (pytest-qt, napari's viewer fixture)."""

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui

from napari_labelreg.annotation import AnnotationSession, phantom_database  # noqa: E402
from napari_labelreg.database import LabelDB  # noqa: E402


@pytest.fixture(autouse=True)
def private_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))


@pytest.fixture
def db_path(tmp_path):
    return phantom_database(tmp_path / "db", count=2)


def make_widget(viewer, db_path, annotator="alice"):
    from napari_labelreg._widgets.annotate import AnnotateWidget

    widget = AnnotateWidget(viewer, AnnotationSession.open(db_path, annotator))
    viewer.window.add_dock_widget(widget)
    return widget


def test_paint_switch_reopen_reads_identical_masks(make_napari_viewer, db_path, qtbot):
    from napari_labelreg._widgets.annotate import LABEL_LAYERS

    viewer = make_napari_viewer()
    w = make_widget(viewer, db_path)
    assert [layer.name for layer in viewer.layers] == [
        "MR image (moving)", "MR label (moving)", "TRUS image (fixed)", "TRUS label (fixed)"]
    np.testing.assert_allclose(viewer.layers["MR image (moving)"].scale, [1.5, 1.5, 1.5])
    pid = w.add_label_pair("calcification", "c1")
    moving, fixed = viewer.layers[LABEL_LAYERS["moving"]], viewer.layers[LABEL_LAYERS["fixed"]]
    moving.data_setitem((np.array([10, 10, 11]), np.array([12, 13, 12]), np.array([9, 9, 9])), 1)
    fixed.data_setitem((np.array([20, 21]), np.array([5, 5]), np.array([7, 7])), 1)
    qtbot.waitUntil(lambda: all(s is not None for s in w.session.db.masks(pid)), timeout=3000)
    saved_m, saved_f = w.session.db.masks(pid)
    assert saved_m.sum() == 3 and saved_f.sum() == 2
    status = [lp.status for lp in w.session.label_pairs() if lp.id == pid]
    assert status == ["complete"]

    w.go_to_pair(1)
    assert w.session.pair.name == "phantom001"
    w.go_to_pair(0)
    w.select_label_pair(pid)
    np.testing.assert_array_equal(moving.data > 0, saved_m)

    fresh = make_napari_viewer()
    w2 = make_widget(fresh, db_path, "bob")
    w2.select_label_pair(pid)
    np.testing.assert_array_equal(fresh.layers[LABEL_LAYERS["moving"]].data > 0, saved_m)
    np.testing.assert_array_equal(fresh.layers[LABEL_LAYERS["fixed"]].data > 0, saved_f)


def test_one_side_only_is_incomplete_then_undo_and_delete(make_napari_viewer, db_path, qtbot):
    from napari_labelreg._widgets.annotate import LABEL_LAYERS

    viewer = make_napari_viewer()
    w = make_widget(viewer, db_path)
    pid = w.add_label_pair("cyst")
    moving = viewer.layers[LABEL_LAYERS["moving"]]
    moving.paint((10, 12, 9), 1)
    qtbot.waitUntil(lambda: w.session.db.masks(pid)[0] is not None, timeout=3000)
    record = [lp for lp in w.session.label_pairs() if lp.id == pid][0]
    assert record.status == "incomplete" and "paint the fixed side" in w.labels.currentItem().text()
    with LabelDB.open(db_path) as db:
        assert db.load_pair(w.session.pair.id).num_labels == 4  # not used for training
    moving.undo()
    qtbot.waitUntil(lambda: w.session.db.masks(pid)[0] is None, timeout=3000)
    before = len(w.session.label_pairs())
    w.delete_selected()
    assert len(w.session.label_pairs()) == before - 1 and pid not in [lp.id for lp in w.session.label_pairs()]


def test_errors_become_notifications(make_napari_viewer, db_path, monkeypatch):
    from napari_labelreg._widgets import _common

    shown = []
    monkeypatch.setattr(_common, "show_error", shown.append)
    viewer = make_napari_viewer()
    w = make_widget(viewer, db_path)
    w.add_label_pair("apex")  # nothing painted yet: cannot be verified
    w.verifier.setText("bob")
    w._verify()
    assert shown and "incomplete" in shown[0]


def test_screenshot_shows_both_images_and_the_widget(make_napari_viewer, db_path):
    viewer = make_napari_viewer(show=True)
    make_widget(viewer, db_path)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    assert shot.ndim == 3 and shot[..., :3].std() > 5
    canvas = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    left, right = np.array_split(canvas, 2, axis=1)
    assert left.std() > 5 and right.std() > 5  # both grid cells drew an image


def test_manifest_and_plugin_menu(make_napari_viewer):
    import npe2

    pm = npe2.PluginManager.instance()
    manifest = pm.get_manifest("napari-labelreg")
    assert [w.display_name for w in manifest.contributions.widgets] == [
        "Annotate label pairs", "Train a registration network", "Inspect a registration"]
    out = subprocess.run([sys.executable, "-m", "npe2", "validate", "napari-labelreg"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    viewer = make_napari_viewer()
    dock, widget = viewer.window.add_plugin_dock_widget("napari-labelreg", "Annotate label pairs")
    assert widget.__class__.__name__ == "AnnotateWidget"
    viewer.open_sample("napari-labelreg", "phantom")
    assert {"MR image (moving)", "TRUS image (fixed)", "MR labels (moving)"} <= {layer.name for layer in viewer.layers}


def test_annotate_command_opens_the_phantom_pair_and_closes(tmp_path):
    import os

    env = dict(os.environ, XDG_CONFIG_HOME=str(tmp_path / "c"), XDG_DATA_HOME=str(tmp_path / "d"))
    help_out = subprocess.run([sys.executable, "-m", "napari_labelreg", "annotate", "--help"],
                              capture_output=True, text=True, env=env, timeout=60)
    assert help_out.returncode == 0 and "--annotator" in help_out.stdout
    out = subprocess.run([sys.executable, "-m", "napari_labelreg", "annotate", "--quit-after", "2"],
                         capture_output=True, text=True, env=env, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "phantom database" in out.stdout
    assert (tmp_path / "d" / "napari-labelreg" / "phantom" / "labels.db").is_file()
