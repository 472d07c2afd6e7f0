"""One window for a labelling day: inspection in the workspace's own cell, replayed with real events (Xvfb)."""

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari")
pytestmark = pytest.mark.gui
sys.path.insert(0, str(Path(__file__).parent))

from napari_labelreg.app.annotation import phantom_database  # noqa: E402
from napari_labelreg.database import LabelDB  # noqa: E402


@pytest.fixture(autouse=True)
def private_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "share"))


@pytest.fixture
def db_path(tmp_path):
    return phantom_database(tmp_path / "db", count=2)


def open_day(make_napari_viewer, db_path, qtbot, size=(1366, 768)):
    """``napari-labelreg annotate``'s window: the workspace with its Train and Inspect tabs."""
    from gui_user import User

    from napari_labelreg._widgets.annotate import launch

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(*size)
    widget = launch(viewer, str(db_path), annotator="alice")
    window = viewer.window._qt_window
    window.activateWindow()  # keys go where the focus is, as on a desktop: the window must be the active one
    qtbot.waitUntil(window.isActiveWindow, timeout=5_000)
    user = User(viewer, widget, qtbot)
    user.wait_loaded()
    return viewer, widget, user, viewer.window.dock_widgets["Inspect"]


def small_landmark(widget, user):
    """Select the image pair's second label pair (a small landmark: a stroke beside it adds voxels)."""
    from qtpy.QtCore import Qt

    user.key(Qt.Key.Key_Period)
    user.key(Qt.Key.Key_Period)
    return widget.session.selected


def beside(viewer, widget, side="fixed"):
    """A short stroke's points just beside the selected label pair's centroid on ``side``."""
    centre = widget.workspace.centroid(widget.session.selected, side)
    shown = list(viewer.dims.displayed)
    start = np.asarray(viewer.dims.point, float)
    start[shown] = centre[shown] + [2.0, -2.0]
    return [start + np.eye(3)[shown[1]] * 1.5 * k for k in range(3)]


def click_register(inspect, qtbot):
    from qtpy.QtCore import QPoint, Qt

    qtbot.mouseClick(inspect.register_btn, Qt.MouseButton.LeftButton, pos=QPoint(5, 5))


def painted_layers(widget):
    return {key: layer for key, layer in widget.workspace.layers.items()}


def cell_pixels(viewer, cell: int, cells: int = 3) -> np.ndarray:
    """The screenshot's pixels of grid cell ``cell`` of ``cells`` (one row)."""
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(float)
    width = shot.shape[1] // cells
    return shot[:, cell * width:(cell + 1) * width]


def test_ten_registrations_beside_the_workspace_keep_one_window_drawn(make_napari_viewer, db_path, qtbot, trained_run,
                                                                       caplog):
    """The Inspect tab registers the workspace's pairs into its third cell ten times in a row, alternating pairs:
    no second viewer, no GL error, the workspace's cells drawn (not blank) after each, its layers the same."""
    import napari

    caplog.set_level(logging.WARNING)
    viewer, widget, user, inspect = open_day(make_napari_viewer, db_path, qtbot)
    layers = painted_layers(widget)
    viewers_before = len(napari.Viewer._instances) if hasattr(napari.Viewer, "_instances") else None
    inspect.model_dir.setText(str(trained_run))
    assert inspect.db_path.text() == widget.session.db.location  # taken from the workspace
    assert inspect.pair_index.value() == 1  # the workspace's "1/2"
    seen = None
    for k in range(10):
        inspect.pair_index.setValue(1 + k % 2)
        click_register(inspect, qtbot)
        qtbot.waitUntil(lambda: widget.workspace.registered is not None and widget.workspace.registered is not seen,
                        timeout=60_000)
        seen = widget.workspace.registered
        user.wait_loaded()
        qtbot.wait(50)
        assert widget.session.pair_index == k % 2  # the pair registered is the pair shown
        assert seen.pair_id == widget.session.pair.id
        for cell in (0, 1, 2):  # MR, TRUS, registration: each drawn, none black
            pixels = cell_pixels(viewer, cell)
            assert pixels.std() > 10 and pixels.mean() > 5, (k, cell, pixels.mean(), pixels.std())
        assert painted_layers(widget) == layers and all(layer in viewer.layers for layer in layers.values())
    gl = [r.getMessage() for r in caplog.records if "GL" in r.getMessage() or "gl" in r.name]
    assert not gl, gl[:3]
    if viewers_before is not None:
        assert len(napari.Viewer._instances) == viewers_before  # no second viewer
    assert len(viewer.layers) == 18  # the workspace's twelve and the cell's six, updated in place
    assert viewer.canvas.grid.shape == (1, 3)
    assert "before (initial correspondence)" in inspect.summary.text() and inspect.errors.count() > 0


def test_registering_another_pair_opens_it_first_and_strokes_still_save_to_the_pair_shown(
        make_napari_viewer, db_path, qtbot, trained_run):
    from qtpy.QtCore import Qt

    viewer, widget, user, inspect = open_day(make_napari_viewer, db_path, qtbot)
    first, second = [p.id for p in widget.session.pairs]
    with LabelDB.open(db_path) as db:
        before = {lp.id: db.masks(lp.id) for lp in db.label_pairs(first)}
    inspect.model_dir.setText(str(trained_run))
    inspect.pair_index.setValue(2)
    click_register(inspect, qtbot)
    qtbot.waitUntil(lambda: widget.workspace.registered is not None, timeout=60_000)
    user.wait_loaded()
    assert widget.session.pair.id == second and widget.workspace.registered.pair_id == second
    cell = widget.workspace.cell
    assert cell["image"].visible and cell["warped"].visible and not cell["map"].visible
    np.testing.assert_allclose(cell["image"].scale, widget.workspace.layers["fixed", "image"].scale)
    np.testing.assert_allclose(cell["image"].translate, widget.workspace.layers["fixed", "image"].translate)
    for shown, visible in (("jacobian", "map"), ("displacement", "map"), ("overlay", "warped")):
        inspect.shown.setCurrentText(shown)
        assert cell[visible].visible
    # a stroke on the TRUS still lands in the workspace's selected pair of the pair shown
    selected = small_landmark(widget, user)
    was = widget.session.db.masks(selected)[1].sum()
    user.stroke("fixed", beside(viewer, widget))
    user.saved()
    assert widget.session.db.masks(selected)[1].sum() > was
    with LabelDB.open(db_path) as db:
        after = {lp.id: db.masks(lp.id) for lp in db.label_pairs(first)}
    assert before.keys() == after.keys()
    assert all(np.array_equal(a, b) for k in before for a, b in zip(before[k], after[k]))
    # switching pairs hides the other pair's registration: the grid is the workspace's two cells again
    user.key(Qt.Key.Key_PageDown)
    user.wait_loaded()
    assert widget.workspace.registered is None and viewer.canvas.grid.shape == (1, 2)
    assert inspect.pair_index.value() == 1  # the number follows the workspace


def test_a_register_output_folder_is_refused_beside_the_workspace_in_one_line(make_napari_viewer, db_path, qtbot,
                                                                              tmp_path, monkeypatch):
    from napari_labelreg._widgets import _common

    viewer, widget, user, inspect = open_day(make_napari_viewer, db_path, qtbot)
    shown = []
    monkeypatch.setattr(_common, "show_error", shown.append)
    inspect.open_result(str(tmp_path))
    assert len(shown) == 1 and "\n" not in shown[0] and "its own cell" in shown[0], shown
    assert len(viewer.layers) == 12


def test_a_name_typed_then_n_over_the_canvas_makes_a_named_pair_and_return_does_too(make_napari_viewer, db_path,
                                                                                   qtbot):
    from qtpy.QtCore import Qt

    viewer, widget, user, _ = open_day(make_napari_viewer, db_path, qtbot)
    widget.new_type.setCurrentText("calcification")
    user.type_text(widget.new_name, "calcification A")
    user.hover("fixed", np.asarray(viewer.dims.point))  # the pointer back over the canvas takes the keys
    user.type_key(Qt.Key.Key_N)
    names = [lp.name for lp in widget.session.label_pairs()]
    assert "calcification A" in names and widget.new_name.text() == ""
    user.type_text(widget.new_name, "cyst 1")
    user.type_key(Qt.Key.Key_Return)  # Return in the field adds it too
    assert [lp.name for lp in widget.session.label_pairs()][-1] == "cyst 1"
    n = len(widget.session.label_pairs())
    user.hover("moving", np.asarray(viewer.dims.point))
    user.type_key(Qt.Key.Key_N)  # no name typed: named after its type and number
    last = widget.session.label_pairs()[-1]
    assert len(widget.session.label_pairs()) == n + 1 and last.name == f"calcification {last.position + 1}"
    assert widget.status.text().startswith(f"painting #{last.position + 1} {last.name} ")
    assert widget.workspace.layers["moving", "selected"].selected_label == last.position + 1  # napari's box


def test_a_click_in_the_list_then_pagedown_moves_the_image_pair(make_napari_viewer, db_path, qtbot):
    from qtpy.QtCore import Qt

    viewer, widget, user, _ = open_day(make_napari_viewer, db_path, qtbot)
    row = widget.labels.visualItemRect(widget.labels.item(0)).center()
    qtbot.mouseClick(widget.labels.viewport(), Qt.MouseButton.LeftButton, pos=row)
    assert widget.labels.hasFocus()
    user.type_key(Qt.Key.Key_PageDown)
    user.wait_loaded()
    assert widget.session.pair_index == 1 and widget.pair_label.text().endswith("2/2")


def test_selecting_the_image_layer_pauses_painting_out_loud_and_p_resumes(make_napari_viewer, db_path, qtbot):
    from qtpy.QtCore import Qt

    viewer, widget, user, _ = open_day(make_napari_viewer, db_path, qtbot)
    selected = small_landmark(widget, user)
    stroke = beside(viewer, widget)
    viewer.layers.selection.active = widget.workspace.layers["fixed", "image"]  # as a click in the layer list
    assert widget.status.text().startswith("painting paused: ") and "press P" in widget.status.text()
    widget.set_window("fixed", 10.0, 120.0)  # the dock's window slider: contrast without the image layer
    assert tuple(widget.workspace.layers["fixed", "image"].contrast_limits) == (10.0, 120.0)
    user.hover("fixed", stroke[0])
    user.type_key(Qt.Key.Key_P)
    assert viewer.layers.selection.active is widget.workspace.layers["fixed", "selected"]
    was = widget.session.db.masks(selected)[1].sum()
    user.stroke("fixed", stroke)
    user.saved()
    assert widget.session.db.masks(selected)[1].sum() > was


def test_rename_and_retype_from_f2_then_reopen_reads_the_new_name(make_napari_viewer, db_path, qtbot):
    from qtpy.QtCore import Qt

    from napari_labelreg.app.annotation import AnnotationSession

    viewer, widget, user, _ = open_day(make_napari_viewer, db_path, qtbot)
    user.key(Qt.Key.Key_Period)
    selected = widget.session.selected
    user.key(Qt.Key.Key_F2)
    dialog = widget.rename_dialog
    qtbot.waitUntil(dialog.isVisible, timeout=5_000)
    dialog.name.selectAll()
    qtbot.keyClicks(dialog.name, "apex left")
    dialog.type.setCurrentText("apex")
    qtbot.keyClick(dialog.name, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not dialog.isVisible(), timeout=5_000)
    texts = [widget.labels.item(i).text() for i in range(widget.labels.count())]
    assert any(" apex left · apex · " in t for t in texts), texts
    widget.close()
    reopened = AnnotationSession.open(db_path, "bob")
    record = next(lp for lp in reopened.db.label_pairs() if lp.id == selected)
    assert (record.name, record.type) == ("apex left", "apex")


def test_after_propose_the_slice_shown_holds_the_proposal_and_the_status_follows(make_napari_viewer, db_path, qtbot,
                                                                                 trained_run):
    from qtpy.QtCore import Qt

    viewer, widget, user, _ = open_day(make_napari_viewer, db_path, qtbot)
    user.key(Qt.Key.Key_N)
    user.stroke("moving", [np.asarray(viewer.dims.point) + [0, 0, 1.5 * k] for k in range(4)])
    user.saved()
    dims = viewer.dims
    axis = [a for a in range(3) if a not in dims.displayed][0]
    dims.set_point(axis, dims.point[axis] + 12.0)  # the annotator looks elsewhere meanwhile
    widget.model_dir.setText(str(trained_run))
    user.press("Propose TRUS")
    proposal = widget.workspace.layers["fixed", "proposal"]
    qtbot.waitUntil(lambda: proposal.visible, timeout=60_000)
    index = int(round(proposal.world_to_data(dims.point)[axis]))
    on_slice = np.take(np.asarray(proposal.data), index, axis=axis)
    assert on_slice.any(), "the slice shown holds none of the proposal"
    assert "shown on its TRUS (fixed) slice" in widget.status.text()
    user.press("Reject")
    assert widget.status.text() == "proposal rejected: nothing was saved"
    user.press("Propose TRUS")
    qtbot.waitUntil(lambda: proposal.visible, timeout=60_000)
    user.press("Accept proposal")
    assert widget.status.text().startswith(f"proposal accepted into {widget._called(widget.session.selected)} ")
    user.saved()  # then the write's own report
    assert widget.status.text() == f"saved the TRUS (fixed) side of {widget.session.pair.name} " \
                                   f"{widget._called(widget.session.selected)}"


@pytest.mark.parametrize("size", [(1366, 768), (1089, 630)])
def test_each_pair_opens_with_its_gland_filling_about_half_a_cell(make_napari_viewer, db_path, qtbot, size):
    from qtpy.QtCore import Qt

    viewer, widget, user, _ = open_day(make_napari_viewer, db_path, qtbot, size=size)
    for _ in range(2):
        qtbot.wait(50)
        gland = next(lp.id for lp in widget.workspace.view.label_pairs if lp.type == "gland")
        mask = widget.workspace.masks[gland][1]  # the TRUS gland
        extent = (np.ptp(np.argwhere(mask), 0) + 1) * np.abs(widget.workspace.layers["fixed", "image"].scale)
        shown = list(viewer.dims.displayed)
        cell = np.asarray(viewer.canvas.viewbox_size(viewer.layers), float)
        spans = extent[shown] * viewer.scene.camera.zoom / cell  # of the cell, per displayed axis
        assert 0.3 <= spans.max() <= 0.6, spans
        user.key(Qt.Key.Key_PageDown)
        user.wait_loaded()


def test_the_cross_hair_falls_on_the_corresponding_point_within_half_a_voxel(make_napari_viewer, db_path, qtbot,
                                                                            trained_run):
    from qtpy.QtCore import Qt

    from napari_labelreg.core.geometry import apply_affine

    viewer, widget, user, inspect = open_day(make_napari_viewer, db_path, qtbot)
    ws = widget.workspace
    shown = list(viewer.dims.displayed)
    target = np.asarray(viewer.dims.point, float)
    target[shown] += [3.0, -2.0]
    user.hover("fixed", target)  # the initial correspondence: the same display point in the MR cell
    cursor = ws.layers["moving", "cursor"]
    assert len(cursor.data) == 1 and len(ws.layers["fixed", "cursor"].data) == 0
    expected = apply_affine(np.linalg.inv(ws.placement("moving")), target[None])[0]
    assert np.abs(cursor.data[0] - expected)[shown].max() <= 0.5
    inspect.model_dir.setText(str(trained_run))
    click_register(inspect, qtbot)
    qtbot.waitUntil(lambda: ws.registered is not None, timeout=60_000)
    user.hover("fixed", target)  # now through the registration shown in the third cell
    reg = ws.registered.registration
    fixed_voxel = apply_affine(np.linalg.inv(ws.placement("fixed")), target[None])
    moved = reg.map_points(apply_affine(reg.fixed.affine, fixed_voxel), to="moving").points
    expected = apply_affine(np.linalg.inv(reg.moving.affine), moved)[0]
    assert np.abs(cursor.data[0] - expected)[shown].max() <= 0.5, (cursor.data[0], expected)
    user.key(Qt.Key.Key_PageDown)  # another pair: no cross-hair of the last one stays behind
    user.wait_loaded()
    assert all(len(ws.layers[side, "cursor"].data) == 0 for side in ("moving", "fixed"))
