"""Controls of the Objects dock widget (layout only; behaviour lives in ``objects.py``)."""

from __future__ import annotations

import math

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QTableView,
    QVBoxLayout,
    QWidget,
)
from superqt import QLabeledDoubleRangeSlider

from napari_anystar.analysis.measure import PROBABILITY_COLUMN, ObjectTable
from napari_anystar.analysis.object_filter import FILTER_COLUMNS, Range

NO_IMAGE = "none"
FILTER_TITLES = {
    "volume_um3": "Volume (µm³)",
    "mean_intensity": "Mean intensity",
    "probability": "Probability",
}
#: Bounds of the probability filter (the other filters span the measured values).
PROBABILITY_BOUNDS = (0.0, 1.0)

HELP = {
    "labels": "3D labels layer to measure (never modified). Re-measured whenever its data "
    "changes, e.g. when the Segment widget's thresholds move.",
    "image": "Image layer of the same shape whose intensities are measured inside each object "
    "(mean, max and integrated = sum); 'none' for no intensity columns.",
    "volume_um3": "Keep objects whose volume (µm³, from the layer's scale) lies in this range.",
    "mean_intensity": "Keep objects whose mean intensity in the chosen image lies in this "
    "range (needs an image layer).",
    "probability": "Keep objects whose network probability lies in this range (labels made "
    "by the Segment widget only).",
    "border": "Hide objects that touch the edge of the volume (often cut off).",
    "reset": "Clear all filters: every object is shown again in the original colours.",
    "apply": "Add a new labels layer '<name> filtered' holding only the kept objects; the "
    "original layer is left untouched.",
    "export": "Save the table (the kept objects, in the shown order) as a CSV file.",
    "table": "One row per object; click a header to sort, click a row to centre the viewer on "
    "that object and select its label. Filtered-out objects are hidden in the layer (display "
    "only: its data is unchanged).",
}


def _decimals(low: float, high: float) -> int:
    span = high - low
    if not math.isfinite(span) or span <= 0:
        return 2
    return int(min(6, max(0, 3 - math.floor(math.log10(span)))))


class RangeFilter(QLabeledDoubleRangeSlider):
    """A two-handle slider whose handles at the ends mean 'no bound' on that side."""

    def __init__(self, tooltip: str) -> None:
        super().__init__(Qt.Orientation.Horizontal)
        self.setToolTip(tooltip)
        self.setRange(0.0, 1.0)
        self.setValue((0.0, 1.0))

    def set_bounds(self, low: float, high: float) -> None:
        """Span ``[low, high]`` keeping the chosen values (an open side stays open)."""
        old_low, old_high = self.bound()
        self.blockSignals(True)
        self.setDecimals(_decimals(low, high))
        self.setRange(low, high)
        value_low = low if old_low is None else min(max(old_low, low), high)
        value_high = high if old_high is None else min(max(old_high, low), high)
        self.setValue((value_low, max(value_low, value_high)))
        self.blockSignals(False)

    def clear(self) -> None:
        self.setValue((self.minimum(), self.maximum()))

    def bound(self) -> Range:
        """(low, high) with None for a handle at its end of the slider."""
        low, high = self.value()
        tolerance = 1e-9 * max(abs(self.maximum() - self.minimum()), 1e-300)
        return (None if low <= self.minimum() + tolerance else float(low),
                None if high >= self.maximum() - tolerance else float(high))


class ObjectsForm(QWidget):
    """The Objects widget's controls: inputs, filters, the table and its export."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip(HELP["labels"])
        self.image_combo = QComboBox()
        self.image_combo.setToolTip(HELP["image"])
        self.filters = {name: RangeFilter(HELP[name]) for name in FILTER_COLUMNS}
        self.filter_labels = {name: QLabel(FILTER_TITLES[name]) for name in FILTER_COLUMNS}
        self.border_check = QCheckBox("Exclude objects touching the border")
        self.border_check.setToolTip(HELP["border"])
        self.reset_button = QPushButton("Reset filters")
        self.reset_button.setToolTip(HELP["reset"])
        self.apply_button = QPushButton("Apply")
        self.apply_button.setToolTip(HELP["apply"])
        self.kept_label = QLabel("")
        self.table_view = QTableView()
        self.table_view.setToolTip(HELP["table"])
        self.table_view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table_view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table_view.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table_view.verticalHeader().setVisible(False)
        self.export_button = QPushButton("Export CSV...")
        self.export_button.setToolTip(HELP["export"])
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self._layout()

    def _layout(self) -> None:
        inputs = QFormLayout()
        inputs.addRow("Labels", self.labels_combo)
        inputs.addRow("Image", self.image_combo)
        filters = QGroupBox("Filters")
        form = QFormLayout(filters)
        for name in FILTER_COLUMNS:
            form.addRow(self.filter_labels[name], self.filters[name])
        form.addRow(self.border_check)
        buttons = QHBoxLayout()
        buttons.addWidget(self.kept_label, 1)
        buttons.addWidget(self.reset_button)
        buttons.addWidget(self.apply_button)
        form.addRow(buttons)
        layout = QVBoxLayout(self)
        layout.addLayout(inputs)
        layout.addWidget(filters)
        layout.addWidget(self.table_view, 1)
        layout.addWidget(self.export_button)
        layout.addWidget(self.status_label)

    def set_table_controls(self, table: ObjectTable | None) -> None:
        """Filter bounds from the table's values; controls enabled only where they apply
        (a filter needs finite values in its column)."""
        has_rows = table is not None and len(table) > 0
        for name, slider in self.filters.items():
            values = table.columns.get(name) if has_rows else None
            finite = np.zeros(0) if values is None else values[np.isfinite(values)]
            if finite.size:
                low, high = (PROBABILITY_BOUNDS if name == PROBABILITY_COLUMN
                             else (float(finite.min()), float(finite.max())))
                slider.set_bounds(low, high)
            slider.setEnabled(finite.size > 0)
            self.filter_labels[name].setEnabled(finite.size > 0)
        for widget in (self.border_check, self.reset_button, self.apply_button,
                       self.export_button):
            widget.setEnabled(has_rows)

    def ranges(self) -> dict[str, Range]:
        """The active filter ranges (enabled sliders with a handle off its end)."""
        return {name: slider.bound() for name, slider in self.filters.items()
                if slider.isEnabled() and slider.bound() != (None, None)}

    def clear_filters(self) -> None:
        """Every slider to its full span, the border filter off (no signals)."""
        for slider in self.filters.values():
            slider.blockSignals(True)
            slider.clear()
            slider.blockSignals(False)
        self.border_check.blockSignals(True)
        self.border_check.setChecked(False)
        self.border_check.blockSignals(False)
