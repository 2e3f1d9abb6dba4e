"""A small QPainter line plot of training and validation loss against the training step."""

from __future__ import annotations

import math

from qtpy.QtCore import QPointF, QRectF, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPen, QPolygonF
from qtpy.QtWidgets import QSizePolicy, QWidget

SERIES_COLORS: dict[str, str] = {"train": "#ff7f0e", "val": "#1f9bde"}
SERIES_TITLES: dict[str, str] = {"train": "train loss", "val": "val loss"}
_MARGIN_LEFT, _MARGIN_RIGHT, _MARGIN_TOP, _MARGIN_BOTTOM = 52, 14, 20, 38


def _nice_range(lo: float, hi: float) -> tuple[float, float]:
    """Pad a value range so a flat or single-point series still gets a visible band.

    The padded range does not cross 0 when the values do not (losses stay non-negative).
    """
    flat = hi - lo <= 1e-12 * max(1.0, abs(hi))
    pad = max(abs(hi) * 0.1, 1e-3) if flat else (hi - lo) * 0.05
    low = lo - pad
    if lo >= 0 > low:
        low = 0.0
    return low, hi + pad


def _fmt(value: float) -> str:
    return f"{value:.3g}"


class LossPlot(QWidget):
    """Train and validation loss curves (autoscaled axes, step on x).

    ``series`` maps ``"train"`` / ``"val"`` to lists of ``(step, loss)`` points in the order
    they were added; non-finite losses are ignored.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.series: dict[str, list[tuple[int, float]]] = {name: [] for name in SERIES_COLORS}
        self.setMinimumHeight(140)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)
        self.setToolTip("Training loss (orange) and validation loss (blue) against the step.")

    def sizeHint(self) -> QSize:
        return QSize(300, 180)

    def clear(self) -> None:
        """Remove every point."""
        for points in self.series.values():
            points.clear()
        self.update()

    def add_point(self, name: str, step: int, value: float | None) -> None:
        """Append ``(step, value)`` to series ``name`` (``"train"`` or ``"val"``)."""
        if name not in self.series:
            raise KeyError(f"unknown series {name!r}; expected one of {sorted(self.series)}")
        if value is None or not math.isfinite(value):
            return
        self.series[name].append((int(step), float(value)))
        self.update()

    def _ranges(self) -> tuple[float, float, float, float] | None:
        points = [p for pts in self.series.values() for p in pts]
        if not points:
            return None
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        x0, x1 = min(0, *xs), max(xs)
        if x1 <= x0:
            x1 = x0 + 1
        y0, y1 = _nice_range(min(ys), max(ys))
        return x0, x1, y0, y1

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        palette = self.palette()
        fg = palette.color(palette.ColorRole.WindowText)
        area = QRectF(
            _MARGIN_LEFT,
            _MARGIN_TOP,
            max(1, self.width() - _MARGIN_LEFT - _MARGIN_RIGHT),
            max(1, self.height() - _MARGIN_TOP - _MARGIN_BOTTOM),
        )
        painter.setPen(QPen(fg, 1))
        painter.drawLine(area.bottomLeft(), area.bottomRight())
        painter.drawLine(area.bottomLeft(), area.topLeft())
        ranges = self._ranges()
        if ranges is None:
            painter.drawText(area, int(Qt.AlignmentFlag.AlignCenter), "no loss values yet")
            painter.end()
            return
        x0, x1, y0, y1 = ranges

        def to_screen(step: float, value: float) -> QPointF:
            fx = (step - x0) / (x1 - x0)
            fy = (value - y0) / (y1 - y0)
            return QPointF(area.left() + fx * area.width(), area.bottom() - fy * area.height())

        self._draw_ticks(painter, area, x0, x1, y0, y1)
        for name, points in self.series.items():
            if not points:
                continue
            pen = QPen(QColor(SERIES_COLORS[name]), 2)
            painter.setPen(pen)
            polygon = QPolygonF([to_screen(s, v) for s, v in points])
            if len(points) == 1:
                painter.drawEllipse(polygon[0], 2.5, 2.5)
            else:
                painter.drawPolyline(polygon)
        self._draw_legend(painter, area)
        painter.end()

    def _draw_ticks(self, painter: QPainter, area: QRectF, x0, x1, y0, y1) -> None:
        metrics = painter.fontMetrics()
        h = metrics.height()
        for frac in (0.0, 0.5, 1.0):
            value = y0 + frac * (y1 - y0)
            y = area.bottom() - frac * area.height()
            painter.drawLine(QPointF(area.left() - 4, y), QPointF(area.left(), y))
            rect = QRectF(0, y - h / 2, _MARGIN_LEFT - 6, h)
            painter.drawText(rect, int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter),
                             _fmt(value))
        steps = sorted({round(x0), round((x0 + x1) / 2), round(x1)})
        for step in steps:
            x = area.left() + (step - x0) / (x1 - x0) * area.width()
            painter.drawLine(QPointF(x, area.bottom()), QPointF(x, area.bottom() + 4))
            rect = QRectF(x - 40, area.bottom() + 4, 80, h)
            painter.drawText(rect, int(Qt.AlignmentFlag.AlignHCenter), str(step))
        painter.drawText(QRectF(area.left(), area.bottom() + 4 + h, area.width(), h),
                         int(Qt.AlignmentFlag.AlignHCenter), "step")

    def _draw_legend(self, painter: QPainter, area: QRectF) -> None:
        x = area.left() + 6
        h = painter.fontMetrics().height()
        for name, title in SERIES_TITLES.items():
            if not self.series[name]:
                continue
            painter.setPen(QPen(QColor(SERIES_COLORS[name]), 2))
            painter.drawLine(QPointF(x, _MARGIN_TOP / 2), QPointF(x + 14, _MARGIN_TOP / 2))
            painter.drawText(QRectF(x + 18, _MARGIN_TOP / 2 - h / 2, 90, h),
                             int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter), title)
            x += 18 + painter.fontMetrics().horizontalAdvance(title) + 12
