"""The training widget: train (or resume) from a label database in a worker thread."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import torch
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..config import PRESETS, REGULARISERS, SIMILARITIES, USE, VARIANTS, TrainConfig
from ..database import LABEL_TYPES
from ..app.jobs import budget_warning, overall_fraction, training_job
from ..pipeline.checkpoint import CHECKPOINT, load_checkpoint
from ..app.settings import load_settings
from .plot import CurvePlot

PROGRESS_STEPS = 1000  # the progress bar's resolution over the whole budget
VALIDATIONS = 20  # validation points over a run's registration steps


STAGE_NAMES = {"locate": "gland locator", "prior": "gland prior", "refine": "registration network"}

class TrainWidget(QWidget):
    """Choose data, network and budget; Start, Cancel (keeps a checkpoint) or Resume."""

    def __init__(self, napari_viewer=None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.last_progress = None
        self.outcome = ""  # "finished", "cancelled" or "failed: ..." once a run has ended
        self._config = None
        self._build()

    def _build(self) -> None:
        self.db_path = QLineEdit(load_settings().get("database", ""), placeholderText="labels.db")
        self.types = QLineEdit(placeholderText=f"all types (or e.g. {LABEL_TYPES[0]}, {LABEL_TYPES[1]})")
        self.verified_only = QCheckBox("verified label pairs only")
        self.consensus = QCheckBox("annotators' consensus")
        self.consensus.setToolTip("each landmark's consensus where several annotators labelled it")
        self.preset = _combo(sorted(PRESETS), "cpu")
        self.variant = _combo(VARIANTS, "baseline")
        self.loss = _combo(SIMILARITIES, "msdice")
        self.regulariser = _combo(REGULARISERS, "bending")
        self.weight = _spin(QDoubleSpinBox(), 0.5, 0, 100, decimals=3)
        self.iterations = _spin(QSpinBox(), 500, 1, 10**7)
        self.time_limit = QCheckBox("also stop after")  # whichever of the two budgets ends first
        self.minutes = _spin(QDoubleSpinBox(), 30.0, 0.1, 10**5, decimals=1)
        self.minutes.setSuffix(" min")
        self.minutes.setEnabled(False)
        self.time_limit.toggled.connect(self.minutes.setEnabled)
        minutes = QHBoxLayout()
        minutes.addWidget(self.time_limit)
        minutes.addWidget(self.minutes)
        self.validation = _spin(QDoubleSpinBox(), 0.0, 0, 0.5, decimals=2)
        self.device = _combo(["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else []), "auto")
        self.out_dir = QLineEdit(placeholderText="run folder")
        self.start_btn, self.resume_btn, self.cancel_btn = (QPushButton(text) for text in ("Start", "Resume", "Cancel"))
        self.start_btn.clicked.connect(lambda: self.start(resume=False))
        self.resume_btn.clicked.connect(lambda: self.start(resume=True))
        self.cancel_btn.clicked.connect(self.cancel)
        self.cancel_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.progress.setMaximum(PROGRESS_STEPS)
        self.progress.setFormat("%p% of the budget")
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.plot = CurvePlot(x_label="step")
        self.plot.setMinimumHeight(180)

        form = QFormLayout()
        for label, widget in (("Database", self.db_path), ("Label types", self.types), ("", self.verified_only),
                              ("", self.consensus),
                              ("Preset", self.preset), ("Network", self.variant), ("Similarity", self.loss),
                              ("Regulariser", self.regulariser), ("Weight α", self.weight),
                              ("Iterations", self.iterations), ("Time limit", minutes),
                              ("Validation fraction", self.validation), ("Device", self.device),
                              ("Output folder", self.out_dir)):
            form.addRow(label, widget)
        buttons = QHBoxLayout()
        for b in (self.start_btn, self.resume_btn, self.cancel_btn):
            buttons.addWidget(b)
        fields = QWidget()
        fields.setLayout(form)
        scroll = QScrollArea()  # the form scrolls; buttons, progress and curve stay in view on a small screen
        scroll.setWidget(fields)
        scroll.setWidgetResizable(True)
        # down only: the fields shrink to the dock's width, so no label ever scrolls out of sight
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)
        for field in fields.findChildren(QWidget):
            field.setMinimumWidth(0)
        self.setMaximumWidth(440)  # tabbed with the workspace's: the panels keep their room on a 1366-px screen
        layout = QVBoxLayout(self)
        layout.addWidget(scroll)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.plot)
        layout.addWidget(self.status)

    def config(self) -> TrainConfig:
        """The TrainConfig the form describes."""
        base = PRESETS[self.preset.currentText()]
        minutes = self.minutes.value() if self.time_limit.isChecked() else None
        return replace(
            base,
            model=replace(base.model, variant=self.variant.currentText()),
            loss=replace(base.loss, similarity=self.loss.currentText(), regulariser=self.regulariser.currentText(),
                         weight=self.weight.value()),
            iterations=self.iterations.value(), minutes=minutes,
            checkpoint_every=max(1, min(base.checkpoint_every, self.iterations.value())),
        )

    def start(self, resume: bool = False) -> None:
        if self.worker is not None:
            return
        try:
            db, out = self.db_path.text().strip(), self.out_dir.text().strip()
            if not db or not out:
                raise ValueError("choose a database and an output folder")
            types = [t.strip() for t in self.types.text().split(",") if t.strip()] or None
            config, use = self.config(), USE[self.preset.currentText()]
            if resume and (Path(out) / CHECKPOINT).exists():
                saved = load_checkpoint(Path(out) / CHECKPOINT)
                config = replace(saved["config"], iterations=config.iterations, minutes=config.minutes)
                use = saved["use"]
        except Exception as exc:  # noqa: BLE001
            show_error(str(exc))
            self.status.setText(str(exc))
            return
        self.plot.clear() if not resume else None
        self.progress.setValue(0)
        self._config, self.outcome, self.last_progress = config, "", None
        self._stop = threading.Event()
        job = thread_worker(training_job, progress=False, start_thread=False, connect={"errored": self._on_error})(
            db, config, out, use=use, types=types, verified_only=self.verified_only.isChecked(),
            consensus=self.consensus.isChecked(),
            validation_fraction=self.validation.value(), resume=resume, device=self.device.currentText(),
            validate_every=max(1, (config.iterations or 1000) // VALIDATIONS), stop=self._stop)
        job.yielded.connect(self._on_progress)
        job.finished.connect(self._on_finished)
        self.worker = job
        self._running(True)
        self.status.setText("preparing data…")
        job.start()

    def cancel(self) -> None:
        """Stop after the current step; the generator's cleanup writes a checkpoint."""
        if self.worker is not None:
            self.status.setText("cancelling (a checkpoint is written)…")
            self._stop.set()

    def _on_progress(self, p) -> None:
        self.last_progress = p
        self.progress.setValue(round(PROGRESS_STEPS * overall_fraction(p, self._config)))
        of = f"/{p.total}" if p.total else ""
        self.plot.add(f"{STAGE_NAMES[p.stage]} loss", p.step, p.loss)  # every stage from its first step
        if p.val_dice is not None:
            self.plot.add("validation gland Dice", p.step, p.val_dice)
            self.plot.add("validation TRE (mm)", p.step, p.val_tre_mm)
        self.status.setText(f"{STAGE_NAMES[p.stage]}: step {p.step}{of}, loss {p.loss:.4f} ({p.step_s:.2f} s/step)")

    def _on_error(self, exc: Exception) -> None:
        self.outcome = f"failed: {exc}"
        show_error(f"training failed: {exc}")

    def _on_finished(self) -> None:
        self.worker = None
        self._running(False)
        p = self.last_progress
        if self.outcome.startswith("failed"):
            self.status.setText(f"training {self.outcome}")
            return
        if self._stop.is_set():
            self.outcome = "cancelled"
            where = f"{STAGE_NAMES[p.stage]} step {p.step}" if p else "before the first step"
            text = f"cancelled at {where}; checkpoint in {self.out_dir.text()}: Resume continues it"
        else:
            self.outcome = "finished"
            self.progress.setValue(PROGRESS_STEPS)
            text = f"finished ({p.step if p else 0} network steps); the model is in {self.out_dir.text()}"
            warning = budget_warning(self.out_dir.text().strip())
            if warning:
                text += f". Warning: {warning}"
        self.status.setText(text)
        show_info(f"training {text}")

    def _running(self, running: bool) -> None:
        self.start_btn.setEnabled(not running)
        self.resume_btn.setEnabled(not running)
        self.cancel_btn.setEnabled(running)


def _combo(options, current) -> QComboBox:
    box = QComboBox()
    box.addItems(list(options))
    box.setCurrentText(current)
    return box


def _spin(box, value, low, high, decimals=None):
    if decimals is not None:
        box.setDecimals(decimals)
    box.setRange(low, high)
    box.setValue(value)
    return box
