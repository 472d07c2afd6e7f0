"""The annotation widget: paint corresponding landmark pairs on MR and TRUS, saved as you go."""

from __future__ import annotations

import numpy as np
from napari.utils.notifications import show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..annotation import SIDES, AnnotationSession
from ..database import LABEL_TYPES
from ..settings import load_settings, save_setting
from ._common import reports_errors

IMAGE_LAYERS = {"moving": "MR image (moving)", "fixed": "TRUS image (fixed)"}
LABEL_LAYERS = {"moving": "MR label (moving)", "fixed": "TRUS label (fixed)"}
PROPOSAL_LAYER = "proposal from model (TRUS)"
SAVE_DELAY_MS = 250  # a stroke is saved this long after it ends


class AnnotateWidget(QWidget):
    """Open a label database, walk its image pairs, paint label pairs into it."""

    def __init__(self, napari_viewer, session: AnnotationSession | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session: AnnotationSession | None = None
        self._timers = {side: self._make_timer(side) for side in SIDES}
        self._loaded_pair: int | None = None
        self._stored: dict[str, np.ndarray | None] = {}  # the masks as the database holds them
        self._build()
        if session is not None:
            self.set_session(session)

    # ---- layout -----------------------------------------------------------------
    def _build(self) -> None:
        self.db_path = QLineEdit(placeholderText="labels.db")
        open_btn = QPushButton("Open…")
        open_btn.clicked.connect(self._browse)
        self.db_path.returnPressed.connect(lambda: self.open_database(self.db_path.text()))
        self.annotator = QLineEdit(load_settings().get("annotator", ""), placeholderText="your name")
        self.annotator.editingFinished.connect(self._annotator_changed)
        self.pair_label = QLabel("no database open")
        prev_btn, next_btn = QPushButton("◀ Previous"), QPushButton("Next ▶")
        prev_btn.clicked.connect(lambda: self._go(-1))
        next_btn.clicked.connect(lambda: self._go(+1))
        self.labels = QListWidget()
        self.labels.currentItemChanged.connect(self._label_clicked)
        self.new_type = QComboBox()
        self.new_type.addItems(LABEL_TYPES)
        self.new_name = QLineEdit(placeholderText="name (optional)")
        add_btn = QPushButton("Add label pair")
        add_btn.clicked.connect(self._add)
        delete_btn = QPushButton("Delete…")
        delete_btn.clicked.connect(self._confirm_delete)
        self.verifier = QLineEdit(placeholderText="verifier name")
        verify_btn = QPushButton("Mark verified")
        verify_btn.clicked.connect(self._verify)
        self.status = QLabel("")
        self.model_dir = QLineEdit(placeholderText="trained model run folder (optional)")
        propose_btn, accept_btn, reject_btn = (QPushButton(text) for text in ("Propose TRUS side", "Accept", "Reject"))
        propose_btn.clicked.connect(self._propose)
        accept_btn.clicked.connect(self.accept_proposal)
        reject_btn.clicked.connect(self.reject_proposal)

        form = QFormLayout()
        row = QHBoxLayout()
        row.addWidget(self.db_path)
        row.addWidget(open_btn)
        form.addRow("Database", row)
        form.addRow("Annotator", self.annotator)
        nav = QHBoxLayout()
        nav.addWidget(prev_btn)
        nav.addWidget(next_btn)
        new = QHBoxLayout()
        new.addWidget(self.new_type)
        new.addWidget(self.new_name)
        new.addWidget(add_btn)
        ver = QHBoxLayout()
        ver.addWidget(self.verifier)
        ver.addWidget(verify_btn)
        ver.addWidget(delete_btn)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.pair_label)
        layout.addLayout(nav)
        layout.addWidget(QLabel("Label pairs (type · name · annotator · status)"))
        layout.addWidget(self.labels)
        layout.addLayout(new)
        layout.addLayout(ver)
        layout.addWidget(QLabel("Model-assisted: warp the MR label onto the TRUS"))
        layout.addWidget(self.model_dir)
        assist = QHBoxLayout()
        for b in (propose_btn, accept_btn, reject_btn):
            assist.addWidget(b)
        layout.addLayout(assist)
        layout.addWidget(self.status)

    def _make_timer(self, side: str) -> QTimer:
        timer = QTimer(self)
        timer.setSingleShot(True)
        timer.setInterval(SAVE_DELAY_MS)
        timer.timeout.connect(lambda: self.save_side(side))
        return timer

    # ---- actions (each one a thin call into AnnotationSession) -----------------
    @reports_errors
    def open_database(self, location: str) -> None:
        self.set_session(AnnotationSession.open(location, self.annotator.text().strip()))

    def set_session(self, session: AnnotationSession) -> None:
        self.flush()
        self.session = session
        self.db_path.setText(session.db.location)
        if session.annotator:
            self.annotator.setText(session.annotator)
        session.annotator = self.annotator.text().strip()
        if session.pairs:
            session.select_pair(session.pair_index)
        self.refresh(reload_images=True)

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

    @reports_errors
    def _go(self, step: int) -> None:
        self.go_to_pair(self.session.pair_index + step)

    def go_to_pair(self, index: int) -> None:
        self.flush()
        self.session.select_pair(index)
        self.refresh(reload_images=True)

    @reports_errors
    def _add(self, *_):
        self.add_label_pair(self.new_type.currentText(), self.new_name.text().strip())
        self.new_name.clear()

    def add_label_pair(self, type: str, name: str = "") -> int:
        self.flush()
        pid = self.session.create_label_pair(type, name)
        self.refresh()
        return pid

    def _label_clicked(self, item, _previous=None) -> None:
        if item is None or self.session is None:
            return
        pid = item.data(256)
        if pid != self.session.selected:
            self.select_label_pair(pid)

    @reports_errors
    def select_label_pair(self, label_pair_id: int) -> None:
        self.flush()
        self.session.select_label_pair(label_pair_id)
        self._show_masks()
        self._fill_list()

    @reports_errors
    def _confirm_delete(self, *_):
        if self.session is None or self.session.selected is None:
            return
        answer = QMessageBox.question(self, "Delete label pair", "Delete the selected label pair from the database?")
        if answer == QMessageBox.StandardButton.Yes:
            self.delete_selected()

    def delete_selected(self) -> None:
        self.flush()
        self.session.delete_selected()
        self.refresh()

    @reports_errors
    def _verify(self, *_):
        self.flush()
        self.session.verify_selected(self.verifier.text().strip())
        self.refresh()

    @reports_errors
    def _propose(self, *_):
        from ..inference import Registrator

        self.flush()
        self.propose(Registrator.from_run(self.model_dir.text().strip()))

    def propose(self, registrator) -> None:
        """Show the model's proposal for the TRUS side in its own layer."""
        proposal = self.session.propose_fixed(registrator)
        self.reject_proposal()
        fixed = self._layer(LABEL_LAYERS["fixed"])
        self.viewer.add_labels(proposal.astype(np.uint8) * 2, name=PROPOSAL_LAYER, scale=fixed.scale, opacity=0.5)
        self.status.setText(f"proposal: {int(proposal.sum())} voxels; Accept, correct after accepting, or Reject")

    @reports_errors
    def accept_proposal(self, *_) -> None:
        layer = self._layer(PROPOSAL_LAYER)
        if layer is None:
            raise ValueError("no proposal to accept")
        self._layer(LABEL_LAYERS["fixed"]).data = (np.asarray(layer.data) > 0).astype(np.uint8)
        self.viewer.layers.remove(PROPOSAL_LAYER)
        self.save_side("fixed")

    def reject_proposal(self, *_) -> None:
        if PROPOSAL_LAYER in self.viewer.layers:
            self.viewer.layers.remove(PROPOSAL_LAYER)

    # ---- saving -----------------------------------------------------------------
    def _painted(self, side: str) -> None:
        if self.session is not None and self.session.selected is not None:
            self._timers[side].start()

    @reports_errors
    def save_side(self, side: str) -> None:
        """Write one side's mask now (normally called by the debounce timer)."""
        self._timers[side].stop()
        layer = self._layer(LABEL_LAYERS[side])
        if layer is None or self.session is None or self.session.selected is None:
            return
        mask = np.asarray(layer.data) > 0
        if self._stored.get(side) is not None and np.array_equal(mask, self._stored[side]):
            return
        self.session.save_mask(side, mask)
        self._stored[side] = mask
        self._fill_list()
        self.status.setText(f"saved {side} mask of label pair {self.session.selected}")

    def flush(self) -> None:
        """Save any stroke still waiting for its timer."""
        for side, timer in self._timers.items():
            if timer.isActive():
                self.save_side(side)

    # ---- view -------------------------------------------------------------------
    def refresh(self, reload_images: bool = False) -> None:
        s = self.session
        if s is None or s.pair is None:
            self.pair_label.setText("the database holds no image pairs" if s else "no database open")
            return
        rec = s.pair
        self.pair_label.setText(f"pair {s.pair_index + 1}/{len(s.pairs)}: {rec.name} (subject {rec.subject})")
        if reload_images or self._loaded_pair != rec.id:
            self._show_images()
        self._show_masks()
        self._fill_list()

    def _fill_list(self) -> None:
        self.labels.blockSignals(True)
        self.labels.clear()
        for lp in self.session.label_pairs():
            text = f"{lp.type} · {lp.name or '-'} · {lp.annotator or '-'} · {lp.status}"
            if lp.status == "incomplete":
                text += f" (paint the {'fixed' if lp.has_moving else 'moving'} side)"
            item = QListWidgetItem(text)
            item.setData(256, lp.id)
            self.labels.addItem(item)
            if lp.id == self.session.selected:
                self.labels.setCurrentItem(item)
        self.labels.blockSignals(False)

    def _layer(self, name):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _show_images(self) -> None:
        moving, fixed = self.session.images()
        for name in (*IMAGE_LAYERS.values(), *LABEL_LAYERS.values()):
            if name in self.viewer.layers:
                self.viewer.layers.remove(name)
        for side, vol in (("moving", moving), ("fixed", fixed)):
            self.viewer.add_image(vol.data, name=IMAGE_LAYERS[side], scale=vol.grid.spacing, colormap="gray")
            labels = self.viewer.add_labels(np.zeros(vol.grid.shape, np.uint8), name=LABEL_LAYERS[side],
                                            scale=vol.grid.spacing, opacity=0.6)
            labels.brush_size = 3
            labels.selected_label = 1
            # strokes emit paint; undo and redo only set_data (which slicing emits too,
            # so a save happens only when the mask really differs from the stored one)
            for event in (labels.events.paint, labels.events.data, labels.events.set_data):
                event.connect(lambda _e, side=side: self._painted(side))
        self.viewer.canvas.grid.enabled = True
        self.viewer.canvas.grid.stride = 2
        self.viewer.canvas.grid.shape = (1, 2)
        self._loaded_pair = self.session.pair.id
        self.viewer.reset_view()

    def _show_masks(self) -> None:
        moving, fixed = self.session.masks()
        self._stored = {"moving": moving, "fixed": fixed}
        for side, mask in (("moving", moving), ("fixed", fixed)):
            layer = self._layer(LABEL_LAYERS[side])
            if layer is None:
                continue
            with layer.events.data.blocker():
                layer.data = mask.astype(np.uint8)
            layer.editable = self.session.selected is not None
            layer._undo_history.clear()  # undo stays within one label pair
            layer._redo_history.clear()


def launch(viewer, db: str | None, pair_id: int | None = None, annotator: str | None = None) -> AnnotateWidget:
    """Dock the widget in ``viewer`` with ``db`` open (a phantom database when None)."""
    from ..annotation import phantom_database
    from ..settings import user_data_dir

    if db is None:
        db = str(phantom_database(user_data_dir() / "phantom"))
        show_info(f"no database given: opened the phantom database at {db}")
        print(f"napari-labelreg annotate: no --db given; using the phantom database at {db}")
    session = AnnotationSession.open(db, annotator or load_settings().get("annotator", ""))
    widget = AnnotateWidget(viewer, session)
    if pair_id is not None:
        session.select_pair_id(pair_id)
        widget.refresh(reload_images=True)
    viewer.window.add_dock_widget(widget, name="Label pairs", area="right")
    from qtpy.QtCore import QTimer

    QTimer.singleShot(0, viewer.reset_view)  # fit both grid cells once the dock has taken its room
    return widget
