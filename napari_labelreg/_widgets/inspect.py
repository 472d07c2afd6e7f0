"""The inspection widget: register a pair with a trained model and show what the DDF does.

Beside the annotation workspace (``napari-labelreg annotate``, or the Annotate widget in the same window) it
registers the workspace's image pairs (its database, its 1-based numbering) and shows the result in the
workspace's own third cell, updated in place: never a second napari viewer, whose canvas would share the GL
context with the workspace's.  Registering another pair first opens that pair in the workspace.

"Open a register output folder…" shows one written by ``napari-labelreg register`` (your own MR and TRUS) the
same way.  "Map MR targets…" then maps points planned on the MR (a CSV or a 3D Slicer ``.mrk.json``, world mm
of the moving image) onto the TRUS through the registration, as a Points layer over the TRUS.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from napari.utils.notifications import show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..app.inspection import inspection_layers, register_for_inspection, register_in_workspace
from ..app.placement import to_napari
from ..app.results import export_registration, read_registration
from ..core.geometry import apply_affine
from ..core.io import DataError
from ..core.points import read_points, refusal
from ..core.transform import OutsideField
from ._common import reports_errors, start_worker
from .workspace import SHOWN

TARGETS_LAYER = "MR targets on TRUS"
POINTS_FILTER = "Points (*.csv *.mrk.json *.json)"


GLAND_TIPS = {
    "none": "no gland fit: the run's registration as it is",
    "given": "fit to the pair's own gland label pair, as a clinician's contours",
    "predicted": "fit to the glands the run's segmenters find on both images",
    "moving-given": "fit to the MR gland label and the TRUS gland the run segments",
}


class InspectWidget(QWidget):
    """Model + pair -> warped MR over TRUS, displacement, Jacobian, vectors, landmark errors."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.registration = None
        self.model_dir = QLineEdit(placeholderText="run folder of a trained model")
        self.db_path = QLineEdit(placeholderText="label database (empty: a phantom pair)")
        self.pair_index = QSpinBox()  # 1-based, as the workspace counts ("2/5")
        self.pair_index.setRange(1, 100000)
        self.shown = QComboBox()
        self.shown.addItems(SHOWN)
        self.shown.setToolTip("over the registration cell's TRUS: the warped MR, the displacement magnitude or "
                              "the Jacobian determinant")
        self.shown.currentTextChanged.connect(lambda text: reports_errors(self._show_map, self.status)(text))
        self._followed: set[int] = set()  # sessions whose pair switches the pair number follows
        self.runs_weight = QCheckBox("the run's")
        self.runs_weight.setChecked(True)
        self.runs_weight.setToolTip("register with the network weight the run was trained to be used with")
        self.network_weight = QDoubleSpinBox()
        self.network_weight.setRange(0.0, 1.0)
        self.network_weight.setSingleStep(0.05)
        self.network_weight.setValue(1.0)
        self.network_weight.setEnabled(False)
        self.network_weight.setToolTip("weight of the network's DDF over the located glands and gland prior; "
                                       "0: without the network, 1: the paper")
        self.runs_weight.toggled.connect(lambda own: self.network_weight.setEnabled(not own))
        self.glands = QComboBox()
        for choice, tip in GLAND_TIPS.items():
            self.glands.addItem(choice)
            self.glands.setItemData(self.glands.count() - 1, tip, Qt.ItemDataRole.ToolTipRole)
        self.glands.setToolTip("fit the registration to the glands at its end: the pair's own gland labels "
                               "(given), the run's segmented glands (predicted), or the MR gland label with the "
                               "segmented TRUS gland (moving-given)")
        # clicked(bool) would hand its flag to a method that takes none
        self.register_btn = register_btn = QPushButton("Register")
        register_btn.clicked.connect(lambda: self.register())
        open_btn = QPushButton("Open a register output folder…")
        open_btn.setToolTip("a folder `napari-labelreg register` wrote: inspect it and map MR targets through it")
        open_btn.clicked.connect(lambda: self.open_result())
        export_btn = QPushButton("Export DDF and warped MR…")
        export_btn.clicked.connect(lambda: self._export())
        self.targets_btn = QPushButton("Map MR targets…")
        self.targets_btn.setToolTip("map points planned on the MR (CSV or Slicer .mrk.json, world mm) onto the TRUS")
        self.targets_btn.setEnabled(False)  # until a registration exists
        self.targets_btn.clicked.connect(lambda: self.map_targets())
        self.summary = self.status = QLabel("")  # errors stay here after their notification fades
        self.summary.setWordWrap(True)  # the dock's width, whatever the line's
        self.errors = QListWidget()
        form = QFormLayout()
        form.addRow("Model", self.model_dir)
        form.addRow("Database", self.db_path)
        form.addRow("Image pair", self.pair_index)
        weight = QHBoxLayout()
        weight.addWidget(self.runs_weight)
        weight.addWidget(self.network_weight)
        form.addRow("Network weight", weight)
        form.addRow("Gland fit", self.glands)
        form.addRow("Show", self.shown)
        self.setMaximumWidth(440)  # tabbed with the workspace's: the panels keep their room on a 1366-px screen
        for field in (self.model_dir, self.db_path):
            field.setMinimumWidth(0)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(register_btn)
        layout.addWidget(open_btn)
        layout.addWidget(self.summary)
        layout.addWidget(QLabel("Landmark errors"))
        layout.addWidget(self.errors)
        layout.addWidget(export_btn)
        layout.addWidget(self.targets_btn)

    @reports_errors
    def register(self) -> None:
        if not self.model_dir.text().strip():
            raise ValueError("give the run folder of a trained model (Model) first")
        annotate = self.annotate_widget()
        if annotate is not None:
            return self._register_in_workspace(annotate)
        worker = start_worker(register_for_inspection, self.model_dir.text().strip(),
                              self.db_path.text().strip() or None, self.pair_index.value() - 1, self.weight(),
                              self.glands.currentText(),
                              done=self.show_result, what="registration", status=self.summary)
        self.summary.setText("registering…")
        worker.start()
        return worker

    # ---- beside the annotation workspace ----------------------------------------------
    def annotate_widget(self):
        """The annotation widget with an open database in this viewer, or None."""
        from .annotate import annotate_widget_of

        annotate = annotate_widget_of(self.viewer)
        if annotate is not None:
            self._follow(annotate)
        return annotate

    def _follow(self, annotate) -> None:
        """Take the workspace's database, and its pair number now and after every pair switch."""
        session = annotate.session
        self.db_path.setText(session.db.location)
        self.db_path.setReadOnly(True)
        self.db_path.setToolTip("the annotation workspace's database")
        self.pair_index.setMaximum(max(1, len(session.pairs)))
        if id(session) not in self._followed:
            self._followed.add(id(session))
            self.pair_index.setValue(session.pair_index + 1)
            session.listeners.append(lambda what, s=session: what == "pair" and annotate.session is s
                                     and self.pair_index.setValue(s.pair_index + 1))

    def showEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.annotate_widget()
        super().showEvent(event)

    def _register_in_workspace(self, annotate):
        session = annotate.session
        index = self.pair_index.value() - 1
        if index >= len(session.pairs):
            raise ValueError(f"the database holds {len(session.pairs)} image pairs; there is no pair {index + 1}")
        if index != session.pair_index:
            annotate.go_to_pair(index)  # the workspace shows the pair it registers
        pair_id = session.pairs[index].id
        worker = start_worker(register_in_workspace, self.model_dir.text().strip(), session.db.location, pair_id,
                              self.weight(), self.glands.currentText(),
                              done=lambda registered: self._show_in_workspace(annotate, registered),
                              what="registration", status=self.summary)
        self.summary.setText(f"registering {session.pairs[index].name}…")
        self.errors.clear()  # the last registration's errors are not this one's
        worker.start()
        return worker

    def _show_in_workspace(self, annotate, registered) -> None:
        workspace = annotate.workspace
        if workspace.view is None or workspace.view.record.id != registered.pair_id:
            if annotate.loading == registered.pair_id:  # the pair is still being opened: show it once it is
                from qtpy.QtCore import QTimer

                QTimer.singleShot(100, lambda: reports_errors(self._show_in_workspace, self.summary)(annotate,
                                                                                                      registered))
                return
            self.summary.setText("the workspace moved to another image pair: register it again")
            return
        workspace.show_registration(registered, self.shown.currentText())
        self.registration = registered.registration
        self.targets_btn.setEnabled(True)
        self.summary.setText(self._said(workspace.view.record.name, registered.summary))
        self.errors.clear()
        for name, err in zip(registered.names, registered.errors_mm):
            self.errors.addItem(f"{name}: {err:.2f} mm")

    @staticmethod
    def _said(name: str, meta: dict) -> str:
        text = f"{name}: folding voxels {meta['folding_voxels']}"
        if "tre_mm" in meta:
            text += (f"\nlandmark TRE {meta['tre_before_mm']:.2f} mm before (initial correspondence), "
                     f"{meta['tre_mm']:.2f} mm after; gland DSC {meta['dice_before']:.3f} before, {meta['dice']:.3f} after")
        if "gland_fit" in meta:
            text += f"\n{meta['gland_fit']}"
        return text

    def _show_map(self, shown: str) -> None:
        annotate = self.annotate_widget()
        if annotate is not None and annotate.workspace.registered is not None:
            annotate.workspace.show_map(shown)

    def target_viewer(self):
        """This viewer, for results that are not the workspace's pair (a phantom pair, a register output folder)
        when no annotation workspace is open in it; refused while one is.

        Inspection never writes into (or regroups the grid of) the layers an annotator is painting, and opens
        no second viewer (two canvases sharing one GL context break each other's textures).
        """
        self._refuse_beside_workspace()
        return self.viewer

    def _refuse_beside_workspace(self) -> None:
        if any("image_pair_id" in layer.metadata for layer in self.viewer.layers):
            raise ValueError("this window holds the annotation workspace: its pairs are registered in its own "
                             "cell; open other registrations in a napari window of their own (napari, then "
                             "Plugins > napari-labelreg > Inspect a registration)")

    def weight(self) -> float | None:
        """The network weight asked for; None: the run's."""
        return None if self.runs_weight.isChecked() else self.network_weight.value()

    def show_result(self, result) -> None:
        """Show ``(registration, pair or a name, layer tuples)``."""
        self.registration, pair, layers = result
        name = pair if isinstance(pair, str) else pair.name
        self.targets_btn.setEnabled(True)
        viewer = self.target_viewer()
        for layer in [layer for layer in viewer.layers if layer.metadata.get("inspection")]:
            viewer.layers.remove(layer)  # only this widget's own layers, never another widget's
        for data, kwargs, kind in layers:
            kwargs = {**kwargs, "name": f"{name}: {kwargs['name']}",
                      "metadata": {**kwargs.get("metadata", {}), "inspection": True}}
            layer = getattr(viewer, f"add_{kind}")(data, **kwargs)
            if kwargs["metadata"].get("colorbar"):
                layer.colorbar.visible = True  # drawn while the map is shown
            if kwargs["metadata"].get("outline"):
                layer.contour = 1
        meta = layers[0][1]["metadata"]
        text = f"{name}: folding voxels {meta['folding_voxels']}"
        if "tre_mm" in meta:
            text += f", landmark TRE {meta['tre_mm']:.2f} mm, gland DSC {meta['dice']:.3f}"
        if "gland_fit" in meta:
            text += f"\n{meta['gland_fit']}"
        self.summary.setText(text)
        self.errors.clear()
        for _data, kwargs, kind in layers:
            if kind == "points" and "text" in kwargs:
                feats = kwargs["features"]
                for label, err in zip(feats["label"], feats["error_mm"]):
                    self.errors.addItem(f"{label}: {err:.2f} mm")

    def ask_result_folder(self) -> str:
        """The register output folder to open ('' when cancelled); tests patch this."""
        return QFileDialog.getExistingDirectory(self, "A register output folder")

    @reports_errors
    def open_result(self, folder: str | None = None) -> None:
        """Show a register output folder (your own MR and TRUS registered from the command line) as a
        registration made here, so its layers, export and MR targets work the same."""
        self._refuse_beside_workspace()
        folder = folder or self.ask_result_folder()
        if not folder:
            return
        registration, fixed, _ = read_registration(folder)
        layers = inspection_layers(registration, None, fixed_image=None if fixed is None else fixed.data,
                                   source=folder)
        self.show_result((registration, Path(folder).name, layers))

    @reports_errors
    def _export(self, *_):
        if self.registration is None:
            raise ValueError("register a pair first")
        folder = QFileDialog.getExistingDirectory(self, "Export to folder")
        if folder:
            paths = export_registration(self.registration, folder)
            show_info(f"wrote {', '.join(p.name for p in paths)} to {folder}")

    def ask_points_file(self) -> str:
        """The points file to map ('' when cancelled); tests patch this."""
        path, _ = QFileDialog.getOpenFileName(self, "MR targets (world mm on the MR)", "", POINTS_FILTER)
        return path

    @reports_errors
    def map_targets(self, path: str | None = None):
        """Map MR targets (world mm on the moving image) onto the TRUS: a Points layer over the TRUS, each
        point labelled, with its inversion residual (mm) in the features.  Points the registration does not
        cover are refused, all of them, with the reason."""
        if self.registration is None:
            raise ValueError("register a pair first")
        path = path or self.ask_points_file()
        if not path:
            return None
        notes: list[str] = []
        labels, points = read_points(path, notes)
        for note in notes:
            show_info(note)
        try:
            mapped = self.registration.map_points(points, to="fixed")
        except OutsideField as exc:
            raise DataError(refusal(path, labels, exc.rows, exc.reason, then="none shown")) from None
        message = (f"{len(points)} MR target{'s' * (len(points) != 1)} mapped onto the TRUS "
                   f"(inversion residual up to {mapped.residual_mm.max():.2g} mm)")
        annotate = self.annotate_widget()
        if annotate is not None and annotate.workspace.registered is not None:  # into the registration cell
            to_voxel = np.linalg.inv(self.registration.fixed.affine)
            annotate.workspace.show_targets(apply_affine(to_voxel, mapped.points), list(labels))
            show_info(message)
            self.summary.setText(message)
            return annotate.workspace.cell["centroids"]
        coords = to_napari(mapped.points)  # the plugin's world, where this widget's layers and the reader's are
        viewer = self.target_viewer()
        for layer in [la for la in viewer.layers if la.name == TARGETS_LAYER and la.metadata.get("inspection")]:
            viewer.layers.remove(layer)  # the targets mapped before, not a layer of that name of the user's
        features = {"label": list(labels), "residual_mm": mapped.residual_mm}
        layer = viewer.add_points(coords, name=TARGETS_LAYER, features=features, face_color="lime", size=3,
                                  text={"string": "{label}", "size": 10, "color": "lime", "anchor": "upper_left"},
                                  metadata={"inspection": True, "source": str(path),
                                            "world_mm": mapped.points.tolist()})
        show_info(message)
        self.summary.setText(message)  # in place of an earlier refusal
        return layer
