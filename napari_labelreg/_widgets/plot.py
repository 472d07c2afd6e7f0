"""A minimal live curve widget (QPainter): no plotting library needed in the GUI."""

from __future__ import annotations

from qtpy.QtCore import QPointF, QRectF, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QWidget

COLOURS = ("#4fc3f7", "#ffb74d", "#81c784", "#e57373", "#ba68c8")
TITLE_PX, AXIS_PX, GAP_PX = 14, 34, 6  # per panel: its title line above, the y-axis labels left of the lines


class CurvePlot(QWidget):
    """Named series of (x, y) points, one quantity per panel: the panels are stacked, each with its own y axis
    (its range written beside it) and its title above it, so no legend covers a line."""

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

    def panels(self) -> dict[str, QRectF]:
        """Where each series' lines are drawn (its title and axis labels lie outside that rectangle)."""
        names = list(self.series)
        if not names:
            return {}
        bottom = 16  # the x axis' labels
        height = (self.height() - bottom) / len(names)
        return {name: QRectF(AXIS_PX, i * height + TITLE_PX, max(1.0, self.width() - AXIS_PX - GAP_PX),
                             max(1.0, height - TITLE_PX - GAP_PX)) for i, name in enumerate(names)}

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt's name)
        painter = QPainter(self)
        painter.fillRect(self.rect(), QColor("#262930"))
        panels = self.panels()
        if not panels:
            painter.end()
            return
        grey = QPen(QColor("#aaaaaa"), 1)
        for i, (name, box) in enumerate(panels.items()):
            pts = self.series[name]
            xs, ys = [x for x, _ in pts], [y for _, y in pts]
            x0, x1 = min(xs), max(max(xs), min(xs) + 1)
            y0, y1 = min(ys), max(max(ys), min(ys) + 1e-9)
            colour = QColor(COLOURS[i % len(COLOURS)])
            painter.setPen(QPen(colour, 1))
            painter.drawText(QRectF(box.left(), box.top() - TITLE_PX, box.width(), TITLE_PX),
                             Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter, f"{name}: {ys[-1]:.4g}")
            painter.setPen(grey)
            painter.drawRect(box)
            left = QRectF(0, box.top(), AXIS_PX - 3, box.height())
            painter.drawText(left, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop, f"{y1:.3g}")
            painter.drawText(left, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom, f"{y0:.3g}")
            painter.drawText(QRectF(box.left(), box.bottom(), box.width(), 12),
                             Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignTop, f"{self.x_label} {x1:.0f}")
            painter.setPen(QPen(colour, 1.5))
            points = [QPointF(box.left() + (x - x0) / (x1 - x0) * box.width(),
                              box.bottom() - (y - y0) / (y1 - y0) * box.height()) for x, y in pts]
            for a, b in zip(points, points[1:]):
                painter.drawLine(a, b)
            if len(points) == 1:
                painter.drawEllipse(points[0], 1.5, 1.5)
        painter.end()
