"""The inspection widget: register a pair with a trained model and show what the DDF does.

"Open a register output folder…" shows one written by ``napari-labelreg register`` (your own MR and TRUS) the
same way.  "Map MR targets…" then maps points planned on the MR (a CSV or a 3D Slicer ``.mrk.json``, world mm
of the moving image) onto the TRUS through the registration, as a Points layer over the TRUS.
"""

from __future__ import annotations

from pathlib import Path

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

from ..app.inspection import inspection_layers, register_for_inspection
from ..app.placement import to_napari
from ..app.results import export_registration, read_registration
from ..core.io import DataError
from ..core.points import read_points, refusal
from ..core.transform import OutsideField
from ._common import reports_errors, start_worker

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
        self.results_viewer = None
        self.registration = None
        self.model_dir = QLineEdit(placeholderText="run folder of a trained model")
        self.db_path = QLineEdit(placeholderText="label database (empty: a phantom pair)")
        self.pair_index = QSpinBox()
        self.pair_index.setRange(0, 100000)
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
        self.errors = QListWidget()
        form = QFormLayout()
        form.addRow("Model", self.model_dir)
        form.addRow("Database", self.db_path)
        form.addRow("Pair index", self.pair_index)
        weight = QHBoxLayout()
        weight.addWidget(self.runs_weight)
        weight.addWidget(self.network_weight)
        form.addRow("Network weight", weight)
        form.addRow("Gland fit", self.glands)
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
        worker = start_worker(register_for_inspection, self.model_dir.text().strip(),
                              self.db_path.text().strip() or None, self.pair_index.value(), self.weight(),
                              self.glands.currentText(),
                              done=self.show_result, what="registration", status=self.summary)
        self.summary.setText("registering…")
        worker.start()
        return worker

    def target_viewer(self):
        """Where results go: this viewer, or a viewer of their own while it holds an annotation workspace.

        Inspection never writes into (or regroups the grid of) the layers an annotator is painting.
        """
        if not any("image_pair_id" in layer.metadata for layer in self.viewer.layers):
            return self.viewer
        if self.results_viewer is None or self.results_viewer.window._qt_window is None:
            import napari

            self.results_viewer = napari.Viewer(title="napari-labelreg: inspection")
        return self.results_viewer

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
        coords = to_napari(mapped.points)  # the plugin's world, where this widget's layers and the reader's are
        viewer = self.target_viewer()
        for layer in [la for la in viewer.layers if la.name == TARGETS_LAYER and la.metadata.get("inspection")]:
            viewer.layers.remove(layer)  # the targets mapped before, not a layer of that name of the user's
        features = {"label": list(labels), "residual_mm": mapped.residual_mm}
        layer = viewer.add_points(coords, name=TARGETS_LAYER, features=features, face_color="lime", size=3,
                                  text={"string": "{label}", "size": 10, "color": "lime", "anchor": "upper_left"},
                                  metadata={"inspection": True, "source": str(path),
                                            "world_mm": mapped.points.tolist()})
        message = (f"{len(coords)} MR target{'s' * (len(coords) != 1)} mapped onto the TRUS "
                   f"(inversion residual up to {mapped.residual_mm.max():.2g} mm)")
        show_info(message)
        self.summary.setText(message)  # in place of an earlier refusal
        return layer
