"""A person at the annotation workspace: real Qt mouse and key events on napari's canvas (Xvfb).

Every action goes through the widgets a user touches (the vispy canvas, the
dock's buttons) and is counted, so a test can say how many actions a task
took.  Positions are given in display millimetres and mapped to canvas pixels
through the grid cell's own camera.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QEvent, QPoint, QPointF, Qt
from qtpy.QtGui import QMouseEvent
from qtpy.QtWidgets import QApplication

CELLS = {"moving": 0, "fixed": 1}


class User:
    def __init__(self, viewer, widget, qtbot) -> None:
        self.viewer, self.widget, self.qtbot = viewer, widget, qtbot
        self.actions = 0  # key presses, clicks and button presses
        self.strokes = 0  # brush strokes (press, drags, release)

    @property
    def canvas(self):
        return self.viewer.window._qt_viewer.canvas

    def wait_loaded(self) -> None:
        self.qtbot.waitUntil(lambda: self.widget.loading is None and not self.widget.workers, timeout=60_000)

    # ---- positions -------------------------------------------------------------------
    def pixel(self, side: str, world) -> QPointF:
        """Canvas pixel of display point ``world`` (3 mm coordinates) in ``side``'s grid cell."""
        view = self.canvas.grid_views[CELLS[side]]
        displayed = list(self.viewer.dims.displayed)
        xy = [world[displayed[1]], world[displayed[0]]]
        pos = np.asarray(view.transform.translate[:2]) + np.asarray(view.scene.transform.map(xy)[:2])
        back = self.canvas._map_canvas2world(pos, view)
        assert np.allclose(np.asarray(back)[displayed], np.asarray(world)[displayed], atol=0.5), (back, world)
        return QPointF(float(pos[0]), float(pos[1]))

    def world_of_voxel(self, side: str, voxel) -> np.ndarray:
        layer = self.widget.workspace.layers[side, "selected"]
        return np.asarray(layer.data_to_world(np.asarray(voxel, float)))

    # ---- events --------------------------------------------------------------------------
    def _mouse(self, kind, pos: QPointF, buttons) -> None:
        button = Qt.MouseButton.LeftButton if kind != QEvent.Type.MouseMove else Qt.MouseButton.NoButton
        event = QMouseEvent(kind, pos, self.canvas.native.mapToGlobal(pos), button, buttons,
                            Qt.KeyboardModifier.NoModifier)
        QApplication.sendEvent(self.canvas.native, event)
        QApplication.processEvents()

    def hover(self, side: str, world) -> None:
        self._mouse(QEvent.Type.MouseMove, self.pixel(side, world), Qt.MouseButton.NoButton)

    def stroke(self, side: str, worlds) -> None:
        """Press at the first point, drag through the rest, release: one brush stroke."""
        points = [self.pixel(side, w) for w in worlds]
        self._mouse(QEvent.Type.MouseMove, points[0], Qt.MouseButton.NoButton)  # the panel picks the layer
        self._mouse(QEvent.Type.MouseButtonPress, points[0], Qt.MouseButton.LeftButton)
        for p in points[1:]:
            self._mouse(QEvent.Type.MouseMove, p, Qt.MouseButton.LeftButton)
        self._mouse(QEvent.Type.MouseButtonRelease, points[-1], Qt.MouseButton.NoButton)
        self.strokes += 1

    def click(self, side: str, world) -> None:
        p = self.pixel(side, world)
        self._mouse(QEvent.Type.MouseMove, p, Qt.MouseButton.NoButton)
        self._mouse(QEvent.Type.MouseButtonPress, p, Qt.MouseButton.LeftButton)
        self._mouse(QEvent.Type.MouseButtonRelease, p, Qt.MouseButton.NoButton)
        self.actions += 1

    def key(self, key, modifier=Qt.KeyboardModifier.NoModifier) -> None:
        self.qtbot.keyClick(self.canvas.native, key, modifier)
        QApplication.processEvents()
        self.actions += 1

    def type_key(self, key, modifier=Qt.KeyboardModifier.NoModifier) -> None:
        """A key pressed as a person presses it: to whichever widget has the keyboard focus now."""
        target = QApplication.focusWidget() or self.canvas.native
        self.qtbot.keyClick(target, key, modifier)
        QApplication.processEvents()
        self.actions += 1

    def type_text(self, widget, text: str) -> None:
        """Click into a text field and type ``text``."""
        self.qtbot.mouseClick(widget, Qt.MouseButton.LeftButton, pos=QPoint(5, 5))
        self.qtbot.keyClicks(widget, text)
        QApplication.processEvents()
        self.actions += 1

    def press(self, button_text: str) -> None:
        """Click the dock widget's button with this text."""
        from qtpy.QtWidgets import QPushButton

        matches = [b for b in self.widget.findChildren(QPushButton) if b.text() == button_text]
        assert len(matches) == 1, f"{len(matches)} buttons read {button_text!r}"
        self.qtbot.mouseClick(matches[0], Qt.MouseButton.LeftButton, pos=QPoint(5, 5))
        self.actions += 1

    def saved(self) -> None:
        """Wait for the debounced saves of the strokes made."""
        self.qtbot.waitUntil(lambda: not any(t.isActive() for t in self.widget._timers.values())
                             and not self.widget.saver.busy, timeout=10_000)
        self.qtbot.wait(10)  # the write's report to the GUI thread
