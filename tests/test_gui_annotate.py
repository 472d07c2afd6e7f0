"""The annotation plugin under a virtual display (pytest-qt, napari's viewer fixture)."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui
sys.path.insert(0, str(Path(__file__).parent))

from napari_labelreg.app.annotation import AnnotationSession, phantom_database  # noqa: E402
from napari_labelreg.database import LabelDB  # noqa: E402


@pytest.fixture(autouse=True)
def private_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))


@pytest.fixture
def db_path(tmp_path):
    return phantom_database(tmp_path / "db", count=2)


@pytest.fixture
def saving_errors(monkeypatch):
    """The notifications of writes that failed, in order (instead of napari's pop-ups)."""
    from napari_labelreg._widgets import annotate

    shown = []
    monkeypatch.setattr(annotate, "show_error", shown.append)
    return shown


def make_widget(viewer, db_path, qtbot, annotator="alice"):
    from gui_user import User

    from napari_labelreg._widgets.annotate import AnnotateWidget

    widget = AnnotateWidget(viewer, AnnotationSession.open(db_path, annotator))
    viewer.window.add_dock_widget(widget)
    user = User(viewer, widget, qtbot)
    user.wait_loaded()
    return widget, user


def around(point, step=1.5, n=3):
    """A short stroke through the display point ``point`` along the last displayed axis."""
    point = np.asarray(point, float)
    return [point + np.array([0, 0, step * k]) for k in range(n)]


def masks_of(db_path, image_pair_id):
    with LabelDB.open(db_path) as db:
        return {lp.id: db.masks(lp.id) for lp in db.label_pairs(image_pair_id)}


def same_masks(a, b):
    return a.keys() == b.keys() and all(
        all((x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
            for x, y in zip(a[k], b[k])) for k in a)


def test_paint_next_previous_twenty_times_keeps_every_stroke_on_its_pair(make_napari_viewer, db_path, qtbot):
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer(show=True)
    w, user = make_widget(viewer, db_path, qtbot)
    layers = list(viewer.layers)
    first, second = [p.id for p in w.session.pairs]
    untouched = masks_of(db_path, second)
    user.key(Qt.Key.Key_N)  # a new label pair on the first image pair
    pid = w.session.selected
    painted = w.workspace.layers["moving", "selected"]
    counts, base = [], np.asarray(viewer.dims.point, float)
    for i in range(20):
        centre = base + np.array([0, -19 + 2.0 * i, -3])  # strokes 2 mm apart: each one adds voxels
        user.stroke("moving", around(centre))
        user.saved()
        saved = w.session.db.masks(pid)[0]
        np.testing.assert_array_equal(saved, painted.data > 0)  # the database holds what was painted
        counts.append(int(saved.sum()))
        user.key(Qt.Key.Key_PageDown)
        user.wait_loaded()
        assert w.session.pair.id == second and painted.metadata["image_pair_id"] == second
        user.key(Qt.Key.Key_PageUp)
        user.wait_loaded()
        assert (w.session.pair.id, w.session.selected) == (first, pid)  # back on the label pair we were on
        np.testing.assert_array_equal(painted.data > 0, saved)
    print(f"\nvoxels saved after each of 20 strokes: {counts}")
    assert all(b > a for a, b in zip(counts, counts[1:]))  # every stroke added voxels, none was lost
    assert list(viewer.layers) == layers  # updated in place: never removed and re-added
    assert same_masks(masks_of(db_path, second), untouched)  # nothing crossed to the other image pair
    assert w.session.db.masks(pid)[1] is None


def test_a_landmark_pair_takes_one_key_and_two_strokes(make_napari_viewer, db_path, qtbot):
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer(show=True)
    w, user = make_widget(viewer, db_path, qtbot)
    before = {lp.id for lp in w.session.label_pairs()}
    user.key(Qt.Key.Key_N)  # new label pair of the type shown (kept from the last one)
    point = np.asarray(viewer.dims.point, float)
    user.stroke("moving", around(point + [0, -4, -2]))  # the panel under the brush picks the MR layer ...
    user.stroke("fixed", around(point + [0, 4, -2]))  # ... and the TRUS layer
    user.saved()
    print(f"\nuser actions per landmark pair: {user.actions} plus {user.strokes} strokes")
    assert user.actions <= 4 and user.strokes == 2
    (new,) = [lp for lp in w.session.label_pairs() if lp.id not in before]
    assert new.status == "complete" and new.annotator == "alice"
    moving, fixed = w.session.db.masks(new.id)
    for side, mask, world in (("moving", moving, point + [0, -4, -2]), ("fixed", fixed, point + [0, 4, -2])):
        layer = w.workspace.layers[side, "selected"]
        voxel = np.round(layer.world_to_data(world)).astype(int)
        assert mask[tuple(voxel)], f"the {side} stroke is not where it was painted"
        assert mask.shape == layer.data.shape


def test_undo_stays_within_its_label_pair(make_napari_viewer, db_path, qtbot):
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer(show=True)
    w, user = make_widget(viewer, db_path, qtbot)
    user.key(Qt.Key.Key_N)
    pid = w.session.selected
    user.stroke("moving", around(np.asarray(viewer.dims.point) + [0, 2, -2]))
    user.saved()
    assert w.session.db.masks(pid)[0] is not None
    user.key(Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: w.session.db.masks(pid)[0] is None, timeout=5000)
    user.stroke("moving", around(np.asarray(viewer.dims.point) + [0, -2, -2]))
    user.saved()
    kept = w.session.db.masks(pid)[0]
    user.key(Qt.Key.Key_Period)  # the next label pair (cyclic: the gland)
    other = w.session.selected
    assert other != pid
    before = w.session.db.masks(other)
    user.key(Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)  # nothing of pid's strokes to undo here
    user.key(Qt.Key.Key_Comma)
    assert w.session.selected == pid
    user.saved()
    np.testing.assert_array_equal(w.session.db.masks(pid)[0], kept)
    assert same_masks({0: w.session.db.masks(other)}, {0: before})


def test_verify_and_delete_from_keys_and_buttons(make_napari_viewer, db_path, qtbot, monkeypatch):
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QMessageBox

    viewer = make_napari_viewer(show=True)
    w, user = make_widget(viewer, db_path, qtbot)
    assert w.session.selected is None  # a pair not visited yet: nothing to paint into by mistake
    user.key(Qt.Key.Key_Period)
    pid = w.session.selected
    w.verifier.setText("bob")
    user.key(Qt.Key.Key_K)
    record = [lp for lp in w.session.label_pairs() if lp.id == pid][0]
    assert record.status == "verified" and record.verifier == "bob"
    user.stroke("moving", around(np.asarray(viewer.dims.point) + [0, 15, 12]))  # an edit withdraws the verification
    user.saved()
    assert [lp.status for lp in w.session.label_pairs() if lp.id == pid] == ["complete"]
    assert "withdrew its verification" in w.status.text()
    user.key(Qt.Key.Key_K)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Yes)
    count = len(w.session.label_pairs())
    user.press("Delete…")
    assert len(w.session.label_pairs()) == count - 1 and pid not in [lp.id for lp in w.session.label_pairs()]
    assert w.labels.count() == count - 1


def test_errors_become_one_notification_and_a_status_line(make_napari_viewer, db_path, qtbot, monkeypatch):
    from qtpy.QtCore import Qt

    from napari_labelreg._widgets import _common

    shown = []
    monkeypatch.setattr(_common, "show_error", shown.append)
    viewer = make_napari_viewer(show=True)
    w, user = make_widget(viewer, db_path, qtbot)
    user.key(Qt.Key.Key_K)  # no label pair selected yet
    assert len(shown) == 1 and "no label pair selected" in shown[0] and w.status.text() == shown[0]
    w.annotator.setText("")
    w.annotator.editingFinished.emit()
    user.key(Qt.Key.Key_N)  # who drew it must be known
    assert len(shown) == 2 and "type your name in Annotator" in shown[1]
    w.annotator.setText("alice")
    w.annotator.editingFinished.emit()
    user.key(Qt.Key.Key_Period)
    user.key(Qt.Key.Key_K)  # no verifier named yet
    assert len(shown) == 3 and "verifier's name" in shown[2]
    shown.clear()
    w.verifier.setText("bob")
    user.key(Qt.Key.Key_N)  # nothing painted yet: cannot be verified
    user.key(Qt.Key.Key_K)
    assert len(shown) == 1 and "incomplete" in shown[0]
    w.model_dir.setText(str(db_path.parent / "no such run"))
    user.stroke("moving", around(viewer.dims.point))
    user.press("Propose TRUS")
    qtbot.waitUntil(lambda: not w.workers, timeout=20_000)
    assert len(shown) == 2 and "the proposal failed" in shown[1] and "no such run" in w.status.text()


def test_propose_accept_and_reject(make_napari_viewer, db_path, qtbot, trained_run):
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer(show=True)
    w, user = make_widget(viewer, db_path, qtbot)
    user.key(Qt.Key.Key_N)
    pid = w.session.selected
    user.stroke("moving", around(np.asarray(viewer.dims.point), n=4))
    w.model_dir.setText(str(trained_run))
    user.press("Propose TRUS")
    proposal = w.workspace.layers["fixed", "proposal"]
    qtbot.waitUntil(lambda: proposal.visible, timeout=60_000)
    shown = proposal.data > 0
    assert shown.any() and w.session.db.masks(pid)[1] is None  # not saved until accepted
    user.press("Reject")
    assert not proposal.visible and w.session.db.masks(pid)[1] is None
    user.press("Propose TRUS")
    qtbot.waitUntil(lambda: proposal.visible, timeout=60_000)
    user.press("Accept proposal")
    user.saved()
    np.testing.assert_array_equal(w.session.db.masks(pid)[1], shown)
    assert [lp.status for lp in w.session.label_pairs() if lp.id == pid] == ["complete"]


def test_propose_the_gland_on_both_sides_then_accept(make_napari_viewer, db_path, qtbot, located_run, monkeypatch):
    """G proposes the gland on both panels from the run's segmenters, into a gland label pair only; nothing is
    saved until Accept, which saves both sides."""
    from qtpy.QtCore import Qt

    from napari_labelreg.nn.locator import GlandLocator

    def segment(self, volume, side, precision="bf16"):  # a box, shifted per side: what was found is shown
        mask = np.zeros(volume.grid.shape, bool)
        c = np.array(mask.shape) // 2 + (1 if side == "fixed" else -1)
        mask[tuple(slice(x - 3, x + 3) for x in c)] = True
        return mask

    monkeypatch.setattr(GlandLocator, "segment", segment)
    viewer = make_napari_viewer(show=True)
    w, user = make_widget(viewer, db_path, qtbot)
    w.model_dir.setText(str(located_run))
    w.new_type.setCurrentText("landmark")
    user.key(Qt.Key.Key_N)
    user.key(Qt.Key.Key_G)  # a landmark is selected: refused, nothing proposed
    assert "select the gland label pair first" in w.status.text()
    assert not any(w.workspace.layers[side, "proposal"].visible for side in ("moving", "fixed"))
    w.new_type.setCurrentText("gland")
    user.key(Qt.Key.Key_N)
    pid = w.session.selected
    user.key(Qt.Key.Key_G)
    proposals = [w.workspace.layers[side, "proposal"] for side in ("moving", "fixed")]
    qtbot.waitUntil(lambda: all(layer.visible for layer in proposals), timeout=60_000)
    moving, fixed = w.session.images()
    expected = [segment(None, volume, side) for volume, side in ((moving, "moving"), (fixed, "fixed"))]
    for layer, mask in zip(proposals, expected):
        np.testing.assert_array_equal(layer.data > 0, mask)
    assert w.session.db.masks(pid) == (None, None)  # not saved until accepted
    user.press("Accept proposal")
    user.saved()
    for saved, mask in zip(w.session.db.masks(pid), expected):
        np.testing.assert_array_equal(saved, mask)
    assert not any(layer.visible for layer in proposals)
    assert [lp.status for lp in w.session.label_pairs() if lp.id == pid] == ["complete"]


def test_close_and_reopen_shows_exactly_what_was_saved(make_napari_viewer, db_path, qtbot):
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer(show=True)
    w, user = make_widget(viewer, db_path, qtbot)
    user.key(Qt.Key.Key_N)
    pid = w.session.selected
    user.stroke("moving", around(viewer.dims.point))
    user.stroke("fixed", around(viewer.dims.point))
    viewer.close()  # within the save delay of the last stroke: closing saves it
    fresh = make_napari_viewer(show=True)
    w2, _ = make_widget(fresh, db_path, qtbot, annotator="bob")
    w2.select_label_pair(pid)
    saved_m, saved_f = w2.session.db.masks(pid)
    np.testing.assert_array_equal(w2.workspace.layers["moving", "selected"].data > 0, saved_m)
    np.testing.assert_array_equal(w2.workspace.layers["fixed", "selected"].data > 0, saved_f)
    assert saved_m.any() and saved_f.any()


def test_the_workspace_shows_corresponding_titled_colour_matched_panels(make_napari_viewer, db_path, qtbot):
    from qtpy.QtCore import Qt

    from napari_labelreg._widgets.workspace import SIDES

    viewer = make_napari_viewer(show=True)
    w, user = make_widget(viewer, db_path, qtbot)
    user.key(Qt.Key.Key_Period)
    ws = w.workspace
    for side in SIDES:
        image = ws.layers[side, "image"]
        assert image.name_overlay.visible and image.bounding_box.visible
    # corresponding anatomy at one display position: the gland centroids of both sides nearly coincide
    gland = w.session.label_pairs()[0].id
    assert np.linalg.norm(ws.centroid(gland, "moving") - ws.centroid(gland, "fixed")) < 8.0
    # every other label pair in the 'all' layers, one value (colour) per pair, the same on both sides
    others = [lp for lp in w.session.label_pairs() if lp.id != w.session.selected]
    for side in SIDES:
        values = set(np.unique(ws.layers[side, "all"].data)) - {0}
        assert values == {lp.position + 1 for lp in others}
    # every painted pair has a landmark marker on both sides, the selected one larger
    for side in SIDES:
        marks = ws.layers[side, "landmarks"]
        assert len(marks.data) == len(w.session.label_pairs())
        assert marks.size.max() > marks.size.min()
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


def test_the_three_widgets_dock_as_tabs_that_fit_a_laptop_screen(make_napari_viewer, db_path, qtbot):
    from qtpy.QtWidgets import QTabBar

    from napari_labelreg._widgets.annotate import launch

    viewer = make_napari_viewer(show=True)
    w = launch(viewer, str(db_path))
    User = __import__("gui_user").User
    User(viewer, w, qtbot).wait_loaded()
    window = viewer.window._qt_window
    window.resize(1366, 768)
    qtbot.wait(50)
    hint = window.minimumSizeHint()
    assert hint.width() <= 1366 and hint.height() <= 768, hint
    assert window.width() <= 1366 and window.height() <= 768
    tabs = [bar.tabText(i) for bar in window.findChildren(QTabBar) for i in range(bar.count())]
    assert {"Label pairs", "Train", "Inspect"} <= set(tabs)
    train = viewer.window.dock_widgets["Train"]
    assert train.db_path.text() == w.session.db.location  # Train starts from the database being annotated


def test_screenshots_of_a_labelling_session(make_napari_viewer, db_path, qtbot, trained_run, tmp_path):
    """A short session whose screenshots the README shows (scripts/screenshots.sh writes them to docs/images)."""
    import os

    from qtpy.QtCore import Qt
    from skimage.io import imsave

    from napari_labelreg._widgets.annotate import launch

    out = Path(os.environ.get("LABELREG_SCREENSHOTS", tmp_path))
    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1366, 768)
    w = launch(viewer, str(db_path))
    user = __import__("gui_user").User(viewer, w, qtbot)
    user.wait_loaded()
    qtbot.wait(100)  # the annotation tab comes to the front after the event loop ran once
    user.key(Qt.Key.Key_Period)  # a landmark pair: it and its partner are found on their slice
    user.key(Qt.Key.Key_Period)
    viewer.scene.camera.zoom *= 1.3
    qtbot.wait(200)
    shot = viewer.screenshot(canvas_only=False, flash=False)
    imsave(out / "annotate.png", shot, check_contrast=False)
    marks = w.workspace.layers["fixed", "landmarks"]
    assert len(marks.data) == len(w.session.label_pairs()) >= 3
    assert shot[..., :3].std() > 5

    inspect = viewer.window.dock_widgets["Inspect"]  # its tab, in the same window
    inspect.model_dir.setText(str(trained_run))
    inspect.register()
    qtbot.waitUntil(lambda: w.workspace.registered is not None, timeout=60_000)
    qtbot.wait(200)
    imsave(out / "inspect.png", viewer.screenshot(canvas_only=False, flash=False), check_contrast=False)
    assert inspect.errors.item(0).text().startswith("label 0: ")  # landmark errors by the name the list shows


@pytest.mark.data
def test_pair_switch_on_the_public_pairs(make_napari_viewer, qtbot, tmp_path):
    """Next through eight public MR-TRUS pairs by key; prints the time from key press to the pair shown.

    The figure is printed, not asserted: a test must not depend on the machine's speed.
    """
    import statistics
    import time

    from conftest import DATA
    from qtpy.QtCore import Qt

    from napari_labelreg.database.transfer import import_folder
    from napari_labelreg.core.io import FOLDERS, list_folder_pairs

    names = list_folder_pairs(DATA)[:8]
    for folder in FOLDERS:
        (tmp_path / "data" / folder).mkdir(parents=True)
        for name in names:
            (tmp_path / "data" / folder / f"{name}.nii.gz").symlink_to(DATA / folder / f"{name}.nii.gz")
    with LabelDB.open(tmp_path / "labels.db") as db:
        import_folder(db, tmp_path / "data", convention="centred")
    viewer = make_napari_viewer(show=True)
    w, user = make_widget(viewer, tmp_path / "labels.db", qtbot)
    times = []
    for k in range(1, 2 * len(names)):
        t0 = time.perf_counter()
        user.key(Qt.Key.Key_PageDown)
        user.wait_loaded()
        times.append(1000 * (time.perf_counter() - t0))
        assert w.session.pair.name == names[k % len(names)] and w.workspace.view.record.name == names[k % len(names)]
        assert w.workspace.layers["fixed", "all"].data.max() > 0  # its label pairs are shown
        gland = next(lp.id for lp in w.workspace.view.label_pairs if lp.type == "gland")
        extent = (np.ptp(np.argwhere(w.workspace.masks[gland][1]), 0) + 1) * np.abs(
            w.workspace.layers["fixed", "image"].scale)
        cell = np.asarray(viewer.canvas.viewbox_size(viewer.layers), float)
        spans = extent[list(viewer.dims.displayed)] * viewer.scene.camera.zoom / cell
        assert 0.3 <= spans.max() <= 0.6, spans  # each pair opens framed on its gland
    print(f"\npair switch on the public pairs: median {statistics.median(times):.0f} ms, "
          f"max {max(times):.0f} ms over {len(times)} switches")


def test_unlinked_slicing_moves_only_the_painted_panel_and_relinking_restores(make_napari_viewer, db_path, qtbot):
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer(show=True)
    w, user = make_widget(viewer, db_path, qtbot)
    image = {side: w.workspace.layers[side, "image"] for side in ("moving", "fixed")}
    axis = [a for a in range(3) if a not in viewer.dims.displayed][0]
    slice_of = lambda side: image[side].world_to_data(viewer.dims.point)[axis]  # noqa: E731
    user.hover("moving", viewer.dims.point)  # painting the MR panel
    user.key(Qt.Key.Key_Right)  # onto the slider's own steps
    start = {side: slice_of(side) for side in image}
    w.linked.setChecked(False)
    for _ in range(3):
        user.key(Qt.Key.Key_Right)  # napari's next-slice key
    assert slice_of("moving") == pytest.approx(start["moving"] + 3)
    assert slice_of("fixed") == pytest.approx(start["fixed"])  # the TRUS panel stayed
    w.linked.setChecked(True)
    assert slice_of("fixed") == pytest.approx(start["fixed"] + 3)  # back to the correspondence
    user.key(Qt.Key.Key_Left)
    assert slice_of("moving") == pytest.approx(start["moving"] + 2)
    assert slice_of("fixed") == pytest.approx(start["fixed"] + 2)


def test_point_mode_click_places_a_sphere_of_the_set_radius(make_napari_viewer, db_path, qtbot):
    from qtpy.QtCore import Qt

    from napari_labelreg.app.annotation import ball

    viewer = make_napari_viewer(show=True)
    w, user = make_widget(viewer, db_path, qtbot)
    user.key(Qt.Key.Key_N)
    user.key(Qt.Key.Key_O)  # point mode
    w.point_radius.setValue(3.0)
    target = np.asarray(viewer.dims.point, float) + [0, 3, -3]
    user.click("fixed", target)
    user.saved()
    layer = w.workspace.layers["fixed", "selected"]
    centre = np.asarray(layer.world_to_data(user.canvas._map_canvas2world(
        np.array([user.pixel("fixed", target).x(), user.pixel("fixed", target).y()]), user.canvas.grid_views[1])))
    saved = w.session.db.masks(w.session.selected)[1]
    inner, outer = np.zeros(layer.data.shape, bool), np.zeros(layer.data.shape, bool)
    inner[ball(layer.data.shape, np.abs(layer.scale), centre, 2.5)] = True
    outer[ball(layer.data.shape, np.abs(layer.scale), centre, 3.5)] = True
    assert saved[inner].all() and not saved[~outer].any()  # a 3-mm sphere, to the half-pixel the click has
    assert w.session.db.masks(w.session.selected)[0] is None and user.actions == 3


def test_a_failed_write_is_reported_once_and_the_next_stroke_writes_everything(make_napari_viewer, db_path, qtbot,
                                                                               monkeypatch, saving_errors):
    from qtpy.QtCore import Qt

    shown = saving_errors
    viewer = make_napari_viewer(show=True)
    w, user = make_widget(viewer, db_path, qtbot)
    user.key(Qt.Key.Key_N)
    pid = w.session.selected
    real = w.session.db.set_mask

    def locked(*args, **kwargs):
        raise OSError("database is locked")

    monkeypatch.setattr(w.session.db, "set_mask", locked)
    user.stroke("moving", around(np.asarray(viewer.dims.point) + [0, -3, -2]))
    user.saved()
    assert len(shown) == 1 and "was not saved: database is locked" in shown[0] and "not saved" in w.status.text()
    assert w.session.db.masks(pid)[0] is None
    monkeypatch.setattr(w.session.db, "set_mask", real)
    user.stroke("moving", around(np.asarray(viewer.dims.point) + [0, 3, -2]))
    user.saved()
    layer = w.workspace.layers["moving", "selected"]
    np.testing.assert_array_equal(w.session.db.masks(pid)[0], layer.data > 0)  # both strokes, none lost
    assert len(shown) == 1


def test_a_label_pairs_colour_is_the_same_in_the_layers_the_markers_and_the_list():
    from napari.utils.colormaps.standardize_color import transform_color

    from napari_labelreg._widgets.workspace import colour_of, colour_value, label_colormap

    colormap = label_colormap()
    for position in range(40):  # past the palette's length: the cycle must stay in step
        drawn = colormap.map(np.array([colour_value(position)]))[0]
        np.testing.assert_allclose(drawn[:3], transform_color(colour_of(position))[0][:3], atol=0.01)
        assert drawn[3] > 0.99  # never the transparent background


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_strokes_save_into_a_postgresql_database(make_napari_viewer, qtbot, tmp_path, database_url):
    """The annotation workspace on a database server: what is painted is what the server holds."""
    from qtpy.QtCore import Qt

    location = phantom_database(tmp_path / "images", count=2, database=database_url)
    viewer = make_napari_viewer(show=True)
    w, user = make_widget(viewer, location, qtbot)
    user.key(Qt.Key.Key_N)
    pid = w.session.selected
    user.stroke("moving", around(viewer.dims.point))
    user.stroke("fixed", around(viewer.dims.point))
    user.saved()
    painted = [w.workspace.layers[side, "selected"].data > 0 for side in ("moving", "fixed")]
    with LabelDB.open(database_url) as db:  # a second connection, as a colleague's machine would open it
        held = db.masks(pid)
        assert [lp.id for lp in db.label_pairs(w.session.pair.id)][-1] == pid
    for side in range(2):
        assert painted[side].any()
        np.testing.assert_array_equal(held[side], painted[side])


def test_a_stroke_over_a_colleagues_newer_change_is_refused_then_kept_or_dropped(make_napari_viewer, db_path, qtbot,
                                                                                 saving_errors):
    """Alice paints; bob, on another machine, repaints her label pair; alice's next stroke is refused with his name,
    nothing of his is overwritten; Shift+R saves hers over his (his stays in the history), R takes his."""
    from qtpy.QtCore import Qt

    shown = saving_errors
    viewer = make_napari_viewer(show=True)
    w, user = make_widget(viewer, db_path, qtbot)
    user.key(Qt.Key.Key_N)
    pid = w.session.selected
    user.stroke("moving", around(viewer.dims.point))
    user.saved()
    with LabelDB.open(db_path) as db:  # bob's machine
        bobs = np.zeros(w.session.pair.moving_shape, bool)
        bobs[2:5, 2:5, 2:5] = True
        db.set_mask(pid, "moving", bobs, author="bob")
    user.stroke("moving", around(np.asarray(viewer.dims.point) + [0, 3, 0]))
    user.saved()
    assert len(shown) == 1 and shown[0].startswith("conflict, not saved: ") and "was changed by bob at" in shown[0]
    assert "Shift+R saves yours" in w.status.text()
    with LabelDB.open(db_path) as db:
        np.testing.assert_array_equal(db.masks(pid)[0], bobs)  # his work stands
    user.key(Qt.Key.Key_R, Qt.KeyboardModifier.ShiftModifier)  # keep mine
    user.saved()
    alices = w.workspace.layers["moving", "selected"].data > 0
    with LabelDB.open(db_path) as db:
        np.testing.assert_array_equal(db.masks(pid)[0], alices)
        assert [r.author for r in db.revisions(pid)] == ["alice", "alice", "bob", "alice"]  # created, 3 strokes
        db.set_mask(pid, "moving", bobs, author="bob")  # bob again
    user.stroke("moving", around(np.asarray(viewer.dims.point) + [0, -3, 0]))
    user.saved()
    assert len(shown) == 2 and "was changed by bob" in shown[1]
    user.key(Qt.Key.Key_R)  # take his
    user.wait_loaded()
    np.testing.assert_array_equal(w.workspace.layers["moving", "selected"].data > 0, bobs)
    assert "last changed by bob" in w.labels.currentItem().toolTip()
    assert w.labels.currentItem().text().endswith(" · changed by bob")
    user.stroke("moving", around(np.asarray(viewer.dims.point) + [0, 0, 2]))  # and paints on from his
    user.saved()
    with LabelDB.open(db_path) as db:
        assert db.revisions(pid)[-1].author == "alice" and (db.masks(pid)[0] & bobs).sum() == bobs.sum()
    assert len(shown) == 2


def test_reloading_right_after_a_stroke_saves_it_first(make_napari_viewer, db_path, qtbot):
    """R while a stroke waits for its save timer: the stroke is written, then the pair shown as the database
    holds it (only after a conflict are unsaved strokes dropped)."""
    from qtpy.QtCore import Qt

    viewer = make_napari_viewer(show=True)
    w, user = make_widget(viewer, db_path, qtbot)
    user.key(Qt.Key.Key_N)
    pid = w.session.selected
    user.stroke("moving", around(viewer.dims.point))
    assert w._timers["moving"].isActive()  # not saved yet
    painted = w.workspace.layers["moving", "selected"].data > 0
    user.key(Qt.Key.Key_R)
    user.wait_loaded()
    assert painted.any()
    with LabelDB.open(db_path) as db:
        np.testing.assert_array_equal(db.masks(pid)[0], painted)
    np.testing.assert_array_equal(w.workspace.layers["moving", "selected"].data > 0, painted)
