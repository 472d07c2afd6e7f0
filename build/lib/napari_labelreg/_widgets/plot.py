"""A minimal live curve widget (QPainter): no plotting library needed in the GUI."""

from __future__ import annotations

from qtpy.QtCore import QPointF
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QWidget

COLOURS = ("#4fc3f7", "#ffb74d", "#81c784", "#e57373")


class CurvePlot(QWidget):
    """Named series of (x, y) points drawn as lines, each scaled to its own range."""

    def __init__(self, parent=None, x_label: str = "step") -> None:
        super().__init__(parent)
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.x_label = x_label
        self.setMinimumHeight(120)

    def add(self, name: str, x: float, y: float) -> None:
        self.series.setdefault(name, []).append((float(x), float(y)))
        self.update()

    def clear(self) -> None:
        self.series.clear()
        self.update()

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#262930"))
        w, h, pad = self.width(), self.height() - 16, 6  # the bottom 16 px: the x axis' labels
        xs = [x for pts in self.series.values() for x, _ in pts]
        if not xs:
            return
        x0, x1 = min(xs), max(max(xs), min(xs) + 1)
        painter.setPen(QPen(QColor("#aaaaaa"), 1))
        painter.drawLine(QPointF(pad, h - pad), QPointF(w - pad, h - pad))
        painter.drawText(pad, h + 10, f"{x0:.0f}")
        painter.drawText(w // 2 - 40, h + 10, self.x_label)
        painter.drawText(w - pad - 40, h + 10, f"{x1:.0f}")
        for i, (name, pts) in enumerate(self.series.items()):
            ys = [y for _, y in pts]
            y0, y1 = min(ys), max(max(ys), min(ys) + 1e-9)
            colour = QColor(COLOURS[i % len(COLOURS)])
            painter.setPen(QPen(colour, 1.5))
            points = [QPointF(pad + (x - x0) / (x1 - x0) * (w - 2 * pad),
                              h - pad - (y - y0) / (y1 - y0) * (h - 2 * pad))
                      for x, y in pts]
            for a, b in zip(points, points[1:]):
                painter.drawLine(a, b)
            # each series has its own y scale: its legend gives the range the height spans
            painter.drawText(pad + 4, 14 + 14 * i, f"{name}: {ys[-1]:.4g}  (axis {y0:.3g} to {y1:.3g})")
        painter.end()
