"""The training widget: train (or resume) from a label database in a worker thread."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import torch
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
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
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..config import PRESETS, REGULARISERS, SIMILARITIES, VARIANTS, TrainConfig
from ..database import LABEL_TYPES
from ..jobs import training_job
from .plot import CurvePlot


class TrainWidget(QWidget):
    """Choose data, network and budget; Start, Cancel (keeps a checkpoint) or Resume."""

    def __init__(self, napari_viewer=None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self.last_progress = None
        self._build()

    def _build(self) -> None:
        self.db_path = QLineEdit(placeholderText="labels.db")
        self.types = QLineEdit(placeholderText=f"all types (or e.g. {LABEL_TYPES[0]}, {LABEL_TYPES[1]})")
        self.verified_only = QCheckBox("verified label pairs only")
        self.preset = _combo(sorted(PRESETS), "cpu")
        self.variant = _combo(VARIANTS, "baseline")
        self.loss = _combo(SIMILARITIES, "msdice")
        self.regulariser = _combo(REGULARISERS, "bending")
        self.weight = _spin(QDoubleSpinBox(), 0.5, 0, 100, decimals=3)
        self.iterations = _spin(QSpinBox(), 500, 1, 10**7)
        self.minutes = _spin(QDoubleSpinBox(), 0.0, 0, 10**5, decimals=1)
        self.minutes.setSpecialValueText("no time limit")
        self.members = _spin(QSpinBox(), PRESETS["cpu"].members, 1, 16)
        self.members.setToolTip("networks trained one after another in the budget; registration averages their DDFs")
        self.preset.currentTextChanged.connect(lambda name: self.members.setValue(PRESETS[name].members))
        self.validation = _spin(QDoubleSpinBox(), 0.0, 0, 0.5, decimals=2)
        self.device = _combo(["auto", "cpu"] + (["cuda"] if torch.cuda.is_available() else []), "auto")
        self.out_dir = QLineEdit(placeholderText="run folder")
        self.start_btn, self.resume_btn, self.cancel_btn = (QPushButton(text) for text in ("Start", "Resume", "Cancel"))
        self.start_btn.clicked.connect(lambda: self.start(resume=False))
        self.resume_btn.clicked.connect(lambda: self.start(resume=True))
        self.cancel_btn.clicked.connect(self.cancel)
        self.cancel_btn.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.plot = CurvePlot()

        form = QFormLayout()
        for label, widget in (("Database", self.db_path), ("Label types", self.types), ("", self.verified_only),
                              ("Preset", self.preset), ("Network", self.variant), ("Similarity", self.loss),
                              ("Regulariser", self.regulariser), ("Weight α", self.weight),
                              ("Iterations", self.iterations), ("Minutes", self.minutes),
                              ("Networks averaged", self.members),
                              ("Validation fraction", self.validation), ("Device", self.device),
                              ("Output folder", self.out_dir)):
            form.addRow(label, widget)
        buttons = QHBoxLayout()
        for b in (self.start_btn, self.resume_btn, self.cancel_btn):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.plot)
        layout.addWidget(self.status)

    def config(self) -> TrainConfig:
        """The TrainConfig the form describes."""
        base = PRESETS[self.preset.currentText()]
        minutes = self.minutes.value() or None
        return replace(
            base,
            model=replace(base.model, variant=self.variant.currentText()),
            loss=replace(base.loss, similarity=self.loss.currentText(), regulariser=self.regulariser.currentText(),
                         weight=self.weight.value()),
            iterations=self.iterations.value(), minutes=minutes, members=self.members.value(),
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
            config = self.config()
            if resume and (Path(out) / "checkpoint.pt").exists():
                from ..nn.checkpoint import load_checkpoint

                config = replace(load_checkpoint(Path(out) / "checkpoint.pt")["config"],
                                 iterations=config.iterations, minutes=config.minutes)
        except Exception as exc:  # noqa: BLE001
            show_error(str(exc))
            return
        self.plot.clear() if not resume else None
        self.progress.setMaximum(config.iterations or 0)
        self._stop = threading.Event()
        job = thread_worker(training_job, progress=False, start_thread=False)(
            db, config, out, types=types, verified_only=self.verified_only.isChecked(),
            validation_fraction=self.validation.value(), resume=resume, device=self.device.currentText(),
            validate_every=max(1, min(50, config.iterations or 50)), stop=self._stop)
        job.yielded.connect(self._on_progress)
        job.errored.connect(lambda exc: show_error(f"training stopped: {exc}"))
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
        if p.phase != "registration":  # the gland locator (and prior) train first; the plot is the registration's
            self.status.setText(f"gland {p.phase}, step {p.step}: loss {p.loss:.4f}")
            return
        self.last_progress = p
        self.progress.setValue(p.step)
        self.plot.add("loss", p.step, p.loss)
        if p.val_dice is not None:
            self.plot.add("val Dice", p.step, p.val_dice)
            self.plot.add("val TRE mm", p.step, p.val_tre_mm)
        self.status.setText(f"step {p.step}: loss {p.loss:.4f} ({p.step_s:.2f} s/step)")

    def _on_finished(self) -> None:
        self.worker = None
        self._running(False)
        step = self.last_progress.step if self.last_progress else 0
        self.status.setText(f"stopped at step {step}; checkpoint in {self.out_dir.text()}")
        show_info(f"training stopped at step {step}")

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
