"""The annotation widget: paint corresponding landmark pairs on MR and TRUS, saved as you go.

The widget holds the controls; :class:`~napari_labelreg._widgets.workspace.Workspace`
holds the layers; :class:`~napari_labelreg.app.annotation.AnnotationSession` holds
the state and talks to the database.  Loading a pair and proposing a side run
in worker threads; a stroke is saved a quarter second after it ends, only into
the label pair and image pair its layer shows.
"""

from __future__ import annotations

import dataclasses
import weakref

import numpy as np
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QObject, Qt, QTimer
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDockWidget,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..app.annotation import AnnotationSession, ball, number, shown_name
from ..database import LABEL_TYPES, ConflictError
from ..database.store import when
from ..app.settings import load_settings, save_setting
from ._common import reports_errors, start_worker
from .proposals import Proposals
from .saving import MaskWriter
from .workspace import SIDES, TITLES, Workspace, colour_of

SAVE_DELAY_MS = 250  # a stroke is saved this long after it ends
LABEL_PAIR_ID = Qt.ItemDataRole.UserRole  # where a list item keeps its label pair's id
# (key, what it does, method): bound on the viewer, listed in the widget
SHORTCUTS = (
    ("PageDown", "next image pair", "next_pair"),
    ("PageUp", "previous image pair", "previous_pair"),
    (".", "next label pair", "next_label_pair"),
    (",", "previous label pair", "previous_label_pair"),
    ("N", "new label pair of the type shown", "new_label_pair"),
    ("K", "mark the label pair verified", "verify"),
    ("J", "jump to the partner (other panel)", "jump_to_partner"),
    ("O", "point mode on / off", "toggle_point_mode"),
    ("G", "propose the gland on both sides (the Model's segmenters)", "propose_glands"),
    ("P", "paint again (after another layer was selected)", "resume_painting"),
    ("F2", "rename or retype the label pair", "rename_selected"),
    ("R", "reload the image pair (after a conflict: take their change)", "reload_pair"),
    ("Shift-R", "after a conflict: save yours over theirs (theirs stays in the history)", "keep_mine"),
)


_OPEN: list[weakref.ref] = []  # every annotation widget made, for the Inspect tab to find its viewer's


def annotate_widget_of(viewer) -> "AnnotateWidget | None":
    """The annotation widget of ``viewer`` with a database open (the last made), or None."""
    _OPEN[:] = [ref for ref in _OPEN if ref() is not None]
    found = [ref() for ref in _OPEN if ref().viewer is viewer and ref().session is not None]
    return found[-1] if found else None


class AnnotateWidget(Proposals, QWidget):
    """Open a label database, walk its image pairs, paint label pairs into it."""

    def __init__(self, napari_viewer, session: AnnotationSession | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: AnnotationSession | None = None
        self.workspace = Workspace(napari_viewer)
        self.loading: int | None = None  # the image pair id a worker is loading
        self.conflicted = False  # a save was refused: someone changed the label pair since it was loaded
        self.workers: set = set()
        self._timers = {side: self._make_timer(side) for side in SIDES}
        self.saver = MaskWriter(reports_errors(self._saved))  # every Qt slot reports its errors: none aborts Python
        self._hooked: set[int] = set()
        self._build()
        self._bind_keys()
        napari_viewer.cursor.events.viewbox.connect(self._follow_cursor)
        napari_viewer.layers.selection.events.active.connect(self._active_changed)
        napari_viewer.mouse_move_callbacks.append(self._pointer_moved)
        _OPEN.append(weakref.ref(self))
        if session is not None:
            self.set_session(session)

    # ---- layout -----------------------------------------------------------------
    def _build(self) -> None:
        self.db_path = QLineEdit(placeholderText="labels.db")
        open_btn = _button("Open…", self._browse)
        self.db_path.returnPressed.connect(lambda: self.open_database(self.db_path.text()))
        self.annotator = QLineEdit(load_settings().get("annotator", ""), placeholderText="your name")
        self.annotator.editingFinished.connect(self._annotator_changed)
        self.pair_label = QLabel("no database open")
        self.labels = QListWidget()
        self.labels.setMaximumHeight(140)
        self.labels.currentItemChanged.connect(self._label_clicked)
        self.labels.itemDoubleClicked.connect(lambda _item: reports_errors(self.rename_selected, self.status)())
        self._keys = _WorkspaceKeys(self)
        self.labels.installEventFilter(self._keys)  # PageUp/PageDown switch image pairs, never the list's row
        self.new_type = QComboBox()
        self.new_type.addItems(LABEL_TYPES)
        self.new_type.setCurrentText(load_settings().get("label_type", "other"))  # a landmark, not a second gland
        self.new_type.currentTextChanged.connect(lambda text: save_setting("label_type", text))
        self.new_name = QLineEdit(placeholderText="name (optional; Return adds)")
        self.new_name.returnPressed.connect(lambda: reports_errors(self.new_label_pair, self.status)())
        self.verifier = QLineEdit(placeholderText="verifier name")
        self.brush_mm = _spin(3.0, 0.5, 30.0, "brush diameter in mm (each panel converts it to its voxels)")
        self.brush_mm.valueChanged.connect(lambda _v: reports_errors(self._set_brush, self.status)())
        self.point_mode = QCheckBox("point mode")
        self.point_mode.setToolTip("a click places a sphere of the radius beside it, instead of painting")
        self.point_mode.toggled.connect(lambda on: reports_errors(self._point_mode_changed, self.status)(on))
        self.point_radius = _spin(2.0, 0.5, 15.0, "radius of the sphere a click places, mm")
        self.linked = QCheckBox("link slices")
        self.linked.setChecked(True)
        self.linked.setToolTip("linked: one slice position shows corresponding anatomy in both panels; "
                               "unlinked: the slider moves only the panel being painted (relinking snaps back)")
        self.linked.toggled.connect(lambda on: reports_errors(self._link_changed, self.status)(on))
        self._last_point = None
        self.viewer.dims.events.point.connect(self._slice_moved)
        self.windows = {side: _window_slider(side, self) for side in SIDES}  # contrast that keeps the brush
        self.model_dir = QLineEdit(placeholderText="trained model run folder (optional)")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumHeight(8)
        self.busy.setTextVisible(False)
        self.busy.hide()

        form = QFormLayout()
        form.addRow("Database", _row(self.db_path, open_btn))
        form.addRow("Annotator", self.annotator)
        form.addRow("Image pair", _row(_button("◀", self.previous_pair), self.pair_label, _button("▶", self.next_pair)))
        self.setMaximumWidth(440)  # leaves the two panels their room on a 1366-px screen
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(QLabel("Label pairs (# name · type · annotator · status; double-click or F2 renames)"))
        layout.addWidget(self.labels)
        layout.addLayout(_row(self.new_type, self.new_name, _button("Add", self.new_label_pair)))
        layout.addLayout(_row(self.verifier, _button("Verify", self.verify), _button("Delete…", self._confirm_delete)))
        layout.addLayout(_row(QLabel("Brush mm"), self.brush_mm, self.linked))
        layout.addLayout(_row(QLabel("Window MR"), self.windows["moving"], QLabel("TRUS"), self.windows["fixed"]))
        layout.addLayout(_row(self.point_mode, QLabel("radius mm"), self.point_radius,
                              _button("Jump to partner", self.jump_to_partner)))
        layout.addLayout(_row(self.model_dir, _button("Propose TRUS", self.propose_from_run),
                              _button("Propose gland", self.propose_glands)))
        layout.addLayout(_row(_button("Accept proposal", self.accept_proposal),
                              _button("Reject", self.reject_proposal)))
        keys = QLabel("Keys: " + " · ".join(f"<b>{key}</b> {what}" for key, what, _ in SHORTCUTS))
        keys.setWordWrap(True)
        layout.addWidget(keys)
        layout.addWidget(self.busy)
        layout.addWidget(self.status)
        layout.addStretch(1)

    def _make_timer(self, side: str) -> QTimer:
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(SAVE_DELAY_MS)
        timer.timeout.connect(lambda: self.save_side(side))
        return timer

    def _bind_keys(self) -> None:
        for key, _what, method in SHORTCUTS:
            action = reports_errors(getattr(self, method), self.status)
            self.viewer.bind_key(key, lambda _viewer, action=action: action(), overwrite=True)

    # ---- opening ------------------------------------------------------------------
    @reports_errors
    def open_database(self, location: str) -> None:
        self.set_session(AnnotationSession.open(location, self.annotator.text().strip()))

    def set_session(self, session: AnnotationSession) -> None:
        self.flush()
        self.session = session
        self.db_path.setText(session.db.location)
        save_setting("database", session.db.location)  # the Train widget starts from it
        if session.annotator:
            self.annotator.setText(session.annotator)
        session.annotator = self.annotator.text().strip()
        if not session.pairs:
            self.pair_label.setText("the database holds no image pairs")
            return
        session.select_pair(session.pair_index)
        self._load()

    @reports_errors
    def _browse(self, *_):
        path, _ = QFileDialog.getSaveFileName(self, "Open or create a label database", "", "Label database (*.db)",
                                              options=QFileDialog.Option.DontConfirmOverwrite)
        if path:
            self.open_database(path)

    def _annotator_changed(self) -> None:
        name = self.annotator.text().strip()
        save_setting("annotator", name)
        if self.session:
            self.session.annotator = name

    # ---- image pairs ----------------------------------------------------------------
    def next_pair(self) -> None:
        self.go_to_pair(self._session().pair_index + 1)
        if self.session.pair_index == 0:
            self.status.setText("past the last image pair: back to the first")

    def previous_pair(self) -> None:
        self.go_to_pair(self._session().pair_index - 1)
        if self.session.pair_index == len(self.session.pairs) - 1:
            self.status.setText("before the first image pair: on to the last")

    def go_to_pair(self, index: int) -> None:
        self.flush()
        self._session().select_pair(index)
        self._load()

    def _load(self) -> None:
        """Load the session's current pair in a worker; painting waits until it is shown."""
        pair = self.session.pair
        self.loading = pair.id
        self.pair_label.setText(f"{pair.name} · {self.session.pair_index + 1}/{len(self.session.pairs)} (loading…)")
        for side in SIDES:
            layer = self.workspace.layers.get((side, "selected"))
            if layer is not None and layer in self.viewer.layers:
                layer.editable = False
        self._start(self.session.view, pair.id, done=self._show_view, what=f"loading {pair.name}",
                    failed=lambda: setattr(self, "loading", None))

    def _show_view(self, view) -> None:
        if self.session is None or view.record.id != self.session.pair.id:
            return  # a later pair switch has its own worker
        self.loading = None
        self.conflicted = False  # the layers now show what the database holds
        first = self.workspace.view is None
        self.workspace.show(view, self.session.selected)
        self._hook_layers()
        self._fit_windows(view)
        self._reset_history()
        self._set_brush()
        self._fill_list()
        rec = view.record
        self.pair_label.setText(f"{rec.name} · {self.session.pair_index + 1}/{len(self.session.pairs)}")
        self.pair_label.setToolTip(f"subject {rec.subject}; initial correspondence: {rec.convention}")
        if not view.exact:
            self.status.setText(f"{rec.name}: the MR is shown without its rotation to the TRUS (panels slice along "
                                "array axes); correspondence is approximate")
        else:
            self._say_selected()
        self.workspace.frame()  # every image pair opens on its gland, at a size to paint
        if first:
            # again once the window is laid out (the cells' size), the slice left on the selected pair
            QTimer.singleShot(0, lambda: reports_errors(self.workspace.frame, self.status)(slice=False))
            self._jump_to_selected()

    def _hook_layers(self) -> None:
        for side in SIDES:
            layer = self.workspace.layers[side, "selected"]
            if id(layer) in self._hooked:
                continue
            self._hooked.add(id(layer))
            # strokes emit paint; undo and redo set_data or labels_update (which slicing emits too,
            # so a save happens only when the mask really differs from the stored one)
            for event in (layer.events.paint, layer.events.data, layer.events.set_data, layer.events.labels_update):
                event.connect(lambda _e, side=side: self._painted(side))
            layer.mouse_drag_callbacks.append(self._place_point)
            layer.mode = "paint"
        self.viewer.layers.selection.active = self.workspace.layers["moving", "selected"]

    # ---- label pairs ------------------------------------------------------------------
    def next_label_pair(self) -> None:
        self._step_label_pair(+1)

    def previous_label_pair(self) -> None:
        self._step_label_pair(-1)

    def _step_label_pair(self, step: int) -> None:
        self._ready()
        self.flush()
        self.session.step_label_pair(step)
        self._selection_changed()

    def new_label_pair(self) -> int:
        """Add a label pair of the type (and name) in the form to this image pair and select it."""
        pid = self.add_label_pair(self.new_type.currentText(), self.new_name.text().strip())
        self.new_name.clear()
        return pid

    def add_label_pair(self, type: str, name: str = "") -> int:
        self._ready()
        if not self.session.annotator:
            raise ValueError("type your name in Annotator first: every label pair records who drew it")
        self.flush()
        pid = self.session.create_label_pair(type, name)
        self.workspace.update_records(self.session.label_pairs())
        self._selection_changed(jump=False)
        return pid

    def _label_clicked(self, item, _previous=None) -> None:
        if item is None or self.session is None:
            return
        pid = item.data(LABEL_PAIR_ID)
        if pid != self.session.selected:
            reports_errors(self.select_label_pair, self.status)(pid)

    def select_label_pair(self, label_pair_id: int) -> None:
        self._ready()
        self.flush()
        self.session.select_label_pair(label_pair_id)
        self._selection_changed()

    def _selection_changed(self, jump: bool = True) -> None:
        self._drop_proposal()
        self.workspace.select(self.session.selected)
        self._say_selected()
        self._reset_history()
        self._fill_list()
        if jump:
            self._jump_to_selected()

    def _say_selected(self) -> None:
        chosen = [lp for lp in self.workspace.view.label_pairs if lp.id == self.session.selected]
        self.status.setText(f"painting #{number(chosen[0])} {shown_name(chosen[0])} ({chosen[0].type}; "
                            f"{_last_change(chosen[0])})"
                            if chosen else "choose a label pair to paint ('.' or the list) or add one (N)")

    @reports_errors
    def _confirm_delete(self, *_):
        if self.session is None or self.session.selected is None:
            return
        answer = QMessageBox.question(self, "Delete label pair", "Delete the selected label pair from the database?")
        if answer == QMessageBox.StandardButton.Yes:
            self.delete_selected()

    def delete_selected(self) -> None:
        self._ready()
        self.flush()
        self.session.delete_selected()
        self.workspace.update_records(self.session.label_pairs())
        self._selection_changed()

    def _called(self, label_pair_id: int | None) -> str:
        """"#3 other 3": how the list, the status line and napari's label box (3) know a label pair."""
        found = [lp for lp in (self.workspace.view.label_pairs if self.workspace.view else []) if lp.id == label_pair_id]
        return f"#{number(found[0])} {shown_name(found[0])}" if found else f"label pair id {label_pair_id}"

    def rename_selected(self) -> None:
        """Rename or retype the selected label pair in a small dialog (F2, or a double-click in the list)."""
        self._ready()
        if self.session.selected is None:
            raise ValueError("no label pair selected: choose one ('.' or the list) first")
        lp = next(lp for lp in self.session.label_pairs() if lp.id == self.session.selected)
        self.rename_dialog = dialog = RenameDialog(self, shown_name(lp), lp.type)
        dialog.accepted.connect(lambda: reports_errors(self._renamed, self.status)(dialog))
        dialog.open()  # window-modal, not blocking: the event loop (and a test's events) go on
        return dialog

    def _renamed(self, dialog: "RenameDialog") -> None:
        self.flush()
        name, type_ = dialog.name.text().strip(), dialog.type.currentText()
        lp = next(lp for lp in self.session.label_pairs() if lp.id == self.session.selected)
        self.session.rename(type=type_ if type_ != lp.type else None, name=name if name != lp.name else None)
        self.workspace.update_records(self.session.label_pairs())
        self.workspace.select(self.session.selected)
        self._fill_list()
        self.status.setText(f"{self._called(self.session.selected)} ({type_}): renamed")

    def verify(self) -> None:
        self._ready()
        self.flush()
        if self.session.selected is None:
            raise ValueError("no label pair selected: choose one ('.' or the list) first")
        verifier = self.verifier.text().strip()
        if not verifier:
            raise ValueError("type the verifier's name first: someone other than the label pair's author")
        self.session.verify_selected(verifier)
        self.workspace.update_records(self.session.label_pairs())
        self._fill_list()
        self.status.setText(f"{self._called(self.session.selected)} verified")

    # ---- finding a label pair ------------------------------------------------------------
    def jump_to(self, label_pair_id: int, side: str) -> None:
        """Move the slice (and centre the view) to the label pair's centroid on ``side``."""
        centre = self.workspace.centroid(label_pair_id, side)
        if centre is None:
            raise ValueError(f"{self._called(label_pair_id)} is not painted on the {TITLES[side]} side yet")
        self.go_to_point(side, centre)

    def go_to_point(self, side: str, centre: np.ndarray) -> None:
        """Move the slice to display point ``centre`` of ``side``'s panel."""
        dims = self.viewer.dims
        sliced = [axis for axis in range(dims.ndim) if axis not in dims.displayed]
        if self.linked.isChecked():
            dims.point = tuple(centre[a] if a in sliced else p for a, p in enumerate(dims.point))
        else:  # unlinked: bring that side's slice to the one shown, leaving the other panel where it is
            self.workspace.shift(side, [dims.point[a] - centre[a] if a in sliced else 0.0 for a in range(3)])
        # the slice only: re-centring the camera moves both panels and can push one off the canvas

    def jump_to_partner(self) -> None:
        """Jump to the selected pair on the other panel than the one being painted."""
        self._ready()
        if self.session.selected is None:
            raise ValueError("no label pair selected")
        other = "fixed" if self.painted_side() == "moving" else "moving"
        self.jump_to(self.session.selected, other)

    def _jump_to_selected(self) -> None:
        pid = self.session.selected
        for side in SIDES:
            if pid is not None and self.workspace.centroid(pid, side) is not None:
                self.jump_to(pid, side)
                return

    def painted_side(self) -> str:
        """The side whose selected-pair layer is active (MR unless the TRUS one is)."""
        active = self.viewer.layers.selection.active
        return "fixed" if active is self.workspace.layers.get(("fixed", "selected")) else "moving"

    def _link_changed(self, linked: bool) -> None:
        self._last_point = np.asarray(self.viewer.dims.point, float)
        if linked and self.workspace.view is not None:
            self.workspace.relink()

    def _slice_moved(self, _event=None) -> None:
        """Unlinked: the panel not being painted keeps its slice while the slider moves."""
        point = np.asarray(self.viewer.dims.point, float)
        last, self._last_point = self._last_point, point
        if self.linked.isChecked() or last is None or last.shape != point.shape or self.workspace.view is None:
            return
        delta = np.where(np.isin(np.arange(point.size), list(self.viewer.dims.displayed)), 0.0, point - last)
        if delta[-3:].any():
            still = "fixed" if self.painted_side() == "moving" else "moving"
            self.workspace.shift(still, delta[-3:])

    def _follow_cursor(self, event) -> None:
        """The panel under the mouse picks the layer that is painted."""
        cell = event.value
        if cell is None or not self.workspace.complete() or self.viewer.canvas.grid.shape[0] != 1:
            return
        active = self.viewer.layers.selection.active
        painted = [self.workspace.layers[side, "selected"] for side in SIDES]
        if active not in painted:
            return  # the user chose another layer: leave it
        target = painted[cell[1]] if cell[1] < 2 else active
        if target is not active:
            target.mode = active.mode
            self.viewer.layers.selection.active = target

    def _fit_windows(self, view) -> None:
        """The window sliders span each image's intensities and start at the window the panels open with."""
        for side, slider in self.windows.items():
            low, high, least, most = view.windows[side]
            slider.blockSignals(True)
            slider.setRange(least, most if most > least else least + 1)
            slider.setValue((low, high))
            slider.blockSignals(False)

    def set_window(self, side: str, low: float, high: float) -> None:
        """Contrast of one panel's image, set without selecting its layer: painting goes on."""
        if high <= low:
            raise ValueError(f"the window's top must be above its bottom, got {low:g}..{high:g}")
        layer = self.workspace.layers.get((side, "image"))
        if layer is not None:
            layer.contrast_limits = (low, high)

    def _pointer_moved(self, viewer, _event=None) -> None:
        """The correspondence cursor: where the pointer's point is in the other cell."""
        if not self.workspace.complete() or self.workspace.view is None or self.loading is not None:
            return
        cell = viewer.cursor.viewbox
        side = SIDES[cell[1]] if cell is not None and cell[1] < 2 else None
        try:
            self.workspace.show_cursor(side, viewer.cursor.position)
        except Exception as exc:  # noqa: BLE001 - a pointer move never raises into napari's event loop
            self.status.setText(f"correspondence cursor: {exc}")

    def _active_changed(self, _event=None) -> None:
        """Another layer than a panel's painted one selected (say, an image for its contrast): strokes would not
        paint, so the status says so, and how to paint again."""
        if not self.workspace.complete() or self.session is None or self.session.selected is None:
            return
        active = self.viewer.layers.selection.active
        painted = [self.workspace.layers[side, "selected"] for side in SIDES]
        if active in painted:
            self._say_selected()
        else:
            what = f"'{active.name}' is selected" if active is not None else "no layer is selected"
            self.status.setText(f"painting paused: {what}; press P to paint again (contrast: the MR and TRUS "
                                "window sliders here keep the brush)")

    def resume_painting(self) -> None:
        """Make the painted layer of the panel under the pointer (else the MR's) active again, in paint mode."""
        self._ready()
        cell = self.viewer.cursor.viewbox
        side = "fixed" if cell is not None and cell[1] == 1 else "moving"
        layer = self.workspace.layers[side, "selected"]
        self.viewer.layers.selection.active = layer
        if layer.editable:
            layer.mode = "pan_zoom" if self.point_mode.isChecked() else "paint"
        self._say_selected()

    # ---- brush and point mode ---------------------------------------------------------------
    def _set_brush(self) -> None:
        for side in SIDES:
            layer = self.workspace.layers.get((side, "selected"))
            if layer is None:
                continue
            spacing = np.abs(np.asarray(layer.scale)[-3:])
            in_plane = spacing[list(self.viewer.dims.displayed)[-2:]] if self.viewer.dims.ndim >= 3 else spacing
            layer.brush_size = max(1, int(round(self.brush_mm.value() / float(np.min(in_plane)))))

    def toggle_point_mode(self) -> None:
        self.point_mode.setChecked(not self.point_mode.isChecked())

    def _point_mode_changed(self, on: bool) -> None:
        for side in SIDES:
            layer = self.workspace.layers.get((side, "selected"))
            if layer is not None and layer.editable:
                layer.mode = "pan_zoom" if on else "paint"

    def _place_point(self, layer, event):
        if not self.point_mode.isChecked() or event.type != "mouse_press" or not layer.editable:
            return
        side = "moving" if layer is self.workspace.layers["moving", "selected"] else "fixed"
        centre = np.asarray(layer.world_to_data(event.position))[-3:]
        spacing = np.abs(np.asarray(layer.scale)[-3:])
        try:
            where = ball(layer.data.shape, spacing, centre, self.point_radius.value())
        except ValueError as exc:
            self.status.setText(str(exc))
            return
        layer.data_setitem(where, layer.selected_label)
        self._painted(side)
        event.handled = True

    # ---- saving -----------------------------------------------------------------
    def _painted(self, side: str) -> None:
        if self.session is not None and self.session.selected is not None and self.loading is None:
            self._timers[side].start()

    @reports_errors
    def save_side(self, side: str) -> None:
        """Write one side's mask now (normally called by the debounce timer)."""
        self._timers[side].stop()
        layer = self.workspace.layers.get((side, "selected"))
        s = self.session
        if layer is None or s is None or s.selected is None or self.workspace.view is None:
            return
        mask = np.asarray(layer.data) > 0
        stored = self.workspace.stored(side)
        if stored is not None and np.array_equal(mask, stored):
            return
        shown = (layer.metadata.get("image_pair_id"), layer.metadata.get("label_pair_id"))
        if shown != (s.pair.id, s.selected) or self.workspace.selected != s.selected:
            raise RuntimeError(f"not saved: the {TITLES[side]} layer shows {layer.metadata.get('image_pair')} "
                               f"label pair id {shown[1]}, but {s.pair.name} label pair id {s.selected} is selected")
        self.workspace.record_saved(side, mask)  # what the database will hold once the write below lands
        was_verified = any(lp.id == s.selected and lp.status == "verified" for lp in self.workspace.view.label_pairs)
        what = f"the {TITLES[side]} side of {s.pair.name} {self._called(s.selected)}"
        if was_verified:
            what += " (the edit withdrew its verification: verify it again)"
            self.workspace.update_records(
                [dataclasses.replace(lp, status="complete") if lp.id == s.selected else lp
                 for lp in self.workspace.view.label_pairs])
        self.saver.submit(s, side, mask, s.selected, what)

    def _saved(self, what: str, error: Exception | None) -> None:
        """A write has landed (or failed): say so; the list shows the label pair's new status."""
        try:
            self.status.text()
        except RuntimeError:  # the widget went with its window while the write landed: nothing to tell
            return
        if error is not None:
            self.workspace.forget_saved()  # the next stroke or action writes the layer again
            message = f"{what} was not saved: {error}"
            if isinstance(error, ConflictError):
                self.conflicted = True
                message = (f"conflict, not saved: {error}. R takes their change (your unsaved strokes are dropped); "
                           "Shift+R saves yours over it (theirs stays in the history)")
            show_error(message)
            self.status.setText(message)
            return
        self.conflicted = False
        self.status.setText(f"saved {what}")
        if self.session is not None and self.workspace.view is not None:
            self._fill_list()

    def reload_pair(self) -> None:
        """Show the image pair as the database holds it now (others' changes included).  Strokes not saved yet
        are saved first, except after a conflict, where they would be refused again: those are dropped."""
        self._ready()
        if self.conflicted:
            for timer in self._timers.values():
                timer.stop()
        self.flush()
        self._load()

    def keep_mine(self) -> None:
        """After a conflict: save the selected label pair as these layers show it, over the newer revision
        (which stays in the history: ``db history``, ``db restore``)."""
        self._ready()
        if self.session.selected is None:
            raise ValueError("no label pair selected")
        self.saver.wait()
        self.session.keep_mine(self.session.selected)
        self.workspace.forget_saved()
        for side in SIDES:
            self.save_side(side)

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """Once docked in its window: the pointer over the canvas takes the keys back from any field."""
        super().showEvent(event)
        for widget in self.window().findChildren(QWidget):
            if type(widget).__name__.startswith("CanvasBackend") and not widget.property("labelreg_keys"):
                widget.installEventFilter(self._keys)  # vispy's Qt canvas, found through Qt, not napari's privates
                widget.setProperty("labelreg_keys", True)

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt's name
        """Closing the window (or hiding the dock) saves strokes still waiting for their timer."""
        self.flush()
        super().hideEvent(event)

    def flush(self) -> None:
        """Save any stroke still waiting for its timer, and wait for the writes under way to land.

        Strokes are written in a background thread; any action that changes what is selected or
        shown first lets those writes finish (milliseconds), so the database sees every write in order.
        """
        for side, timer in self._timers.items():
            if timer.isActive():
                self.save_side(side)
        self.saver.wait()

    # ---- helpers -------------------------------------------------------------------------
    def _session(self) -> AnnotationSession:
        if self.session is None:
            raise ValueError("open a label database first")
        return self.session

    def _ready(self) -> None:
        self._session()
        if self.loading is not None or self.workspace.view is None:
            raise ValueError("the image pair is still loading")

    def _reset_history(self) -> None:
        """Undo stays within one label pair: a layer's history restarts when it is made editable."""
        for side in SIDES:
            layer = self.workspace.layers[side, "selected"]
            mode = layer.mode
            layer.editable = False
            layer.editable = self.session.selected is not None
            if layer.editable:
                layer.mode = "pan_zoom" if self.point_mode.isChecked() else (mode if mode != "pan_zoom" else "paint")

    def _fill_list(self) -> None:
        self.labels.blockSignals(True)
        self.labels.clear()
        for lp in self.session.label_pairs():
            text = f"#{number(lp)} {shown_name(lp)} · {lp.type} · {lp.annotator or '-'} · {lp.status}"
            if lp.status == "incomplete":
                text += f" (paint the {'TRUS' if lp.has_moving else 'MR'} side)"
            if lp.modified_by and lp.modified_by != lp.annotator:
                text += f" · changed by {lp.modified_by}"  # the tooltip says when
            item = QListWidgetItem(_swatch(colour_of(lp.position)), text)  # its colour in the panels
            item.setToolTip(_last_change(lp))
            item.setData(LABEL_PAIR_ID, lp.id)
            self.labels.addItem(item)
            if lp.id == self.session.selected:
                self.labels.setCurrentItem(item)
        self.labels.blockSignals(False)

    def _start(self, func, *args, done, what: str, failed=None):
        worker = start_worker(func, *args, done=done, what=what, status=self.status, failed=failed)
        self.workers.add(worker)
        self.busy.show()

        def finished():
            self.workers.discard(worker)
            self.busy.setVisible(bool(self.workers))

        worker.finished.connect(finished)
        worker.start()
        return worker


class RenameDialog(QDialog):
    """A label pair's name and type; Return accepts."""

    def __init__(self, parent, name: str, type_: str) -> None:
        super().__init__(parent)
        self.setWindowTitle("Rename label pair")
        self.name = QLineEdit(name)
        self.name.selectAll()
        self.type = QComboBox()
        self.type.addItems(LABEL_TYPES)
        self.type.setCurrentText(type_)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Name", self.name)
        form.addRow("Type", self.type)
        form.addRow(buttons)


class _WorkspaceKeys(QObject):
    """Keys for the workspace wherever they are typed: the label pair list passes PageUp/PageDown to the image
    pair switch instead of moving its row; the canvas takes the keyboard focus whenever the pointer is over it,
    so the workspace's keys reach it after a field or the list had the focus."""

    def __init__(self, widget: "AnnotateWidget") -> None:
        super().__init__(widget)
        self.widget = widget

    def eventFilter(self, watched, event) -> bool:  # noqa: N802 - Qt's name
        kind = event.type()
        if kind == QEvent.Type.KeyPress and watched is self.widget.labels:
            step = {Qt.Key.Key_PageDown: self.widget.next_pair, Qt.Key.Key_PageUp: self.widget.previous_pair}
            action = step.get(event.key())
            if action is not None:
                reports_errors(action, self.widget.status)()
                return True
        elif (kind in (QEvent.Type.Enter, QEvent.Type.MouseMove) and watched is not self.widget.labels
              and not watched.hasFocus()):
            watched.setFocus(Qt.FocusReason.MouseFocusReason)
        return False


def _window_slider(side: str, widget: "AnnotateWidget"):
    from superqt import QDoubleRangeSlider

    slider = QDoubleRangeSlider(Qt.Orientation.Horizontal)
    slider.setToolTip(f"the {TITLES[side]} panel's contrast (window), without leaving the brush")
    slider.valueChanged.connect(lambda value: reports_errors(widget.set_window, widget.status)(side, *value))
    return slider


def _last_change(lp) -> str:
    return f"last changed by {lp.modified_by or 'someone'} at {when(lp.modified)}, revision {lp.revision}"


def _swatch(colour: str):
    from qtpy.QtGui import QColor, QIcon, QPixmap

    pixmap = QPixmap(12, 12)
    pixmap.fill(QColor(colour))
    return QIcon(pixmap)


def _button(text: str, action) -> QPushButton:
    button = QPushButton(text)
    owner = getattr(action, "__self__", None)
    button.clicked.connect(lambda *_: reports_errors(action, getattr(owner, "status", None))())
    return button


def _row(*widgets) -> QHBoxLayout:
    row = QHBoxLayout()
    for w in widgets:
        row.addWidget(w)
    return row


def _spin(value: float, lo: float, hi: float, tip: str) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setRange(lo, hi)
    spin.setSingleStep(0.5)
    spin.setDecimals(1)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin


def launch(viewer, db: str | None, pair_id: int | None = None, annotator: str | None = None) -> AnnotateWidget:
    """Dock the three widgets (tabbed) in ``viewer`` with ``db`` open (a phantom database when None)."""
    from ..app.annotation import phantom_database
    from ..app.settings import user_data_dir
    from .inspect import InspectWidget
    from .train import TrainWidget

    if db is None:
        db = str(phantom_database(user_data_dir() / "phantom"))
        show_info(f"no database given: opened the phantom database at {db}")
        print(f"napari-labelreg annotate: no --db given; using the phantom database at {db}")
    session = AnnotationSession.open(db, annotator or load_settings().get("annotator", ""))
    if pair_id is not None:
        session.select_pair_id(pair_id)
    widget = AnnotateWidget(viewer, session)
    viewer.window.add_dock_widget(widget, name="Label pairs", area="right")
    viewer.window.add_dock_widget(TrainWidget(viewer), name="Train", area="right", tabify=True)
    viewer.window.add_dock_widget(InspectWidget(viewer), name="Inspect", area="right", tabify=True)
    dock = widget.parent()
    while dock is not None and not isinstance(dock, QDockWidget):
        dock = dock.parent()
    if dock is not None:
        QTimer.singleShot(0, dock.raise_)  # the annotation tab in front, once the tabs exist
    return widget
