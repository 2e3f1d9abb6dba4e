"""Qt table model over an :class:`ObjectTable`: shows the kept rows, sorts with numpy.

The view asks only for the cells it draws, so thousands of objects cost nothing until
scrolled to; sorting is one ``np.argsort`` of a column.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from qtpy.QtCore import QAbstractTableModel, QModelIndex, QObject, Qt

from napari_anystar.analysis.measure import ObjectTable

_DISPLAY = Qt.ItemDataRole.DisplayRole
_ALIGN = Qt.ItemDataRole.TextAlignmentRole
_TIP = Qt.ItemDataRole.ToolTipRole

COLUMN_HELP = {
    "label": "Label id of the object.",
    "centroid": "Centre of mass (voxel index; *_um: times the voxel size, in µm).",
    "bbox": "Bounding box: first voxel (start) to one past the last (stop); *_um: in µm.",
    "volume_voxels": "Number of voxels.",
    "volume_um3": "Volume in µm³ (voxels times the voxel volume from the layer's scale).",
    "equivalent_diameter_um": "Diameter of the sphere with the same volume (µm).",
    "elongation": "Longest / shortest principal axis (1 for a sphere).",
    "touches_border": "Whether the object touches the edge of the volume.",
    "mean_intensity": "Mean image intensity over the object's voxels.",
    "max_intensity": "Maximum image intensity over the object's voxels.",
    "integrated_intensity": "Sum of the image intensity over the object's voxels.",
    "probability": "The network's probability for this object (Segment widget labels).",
}


def _help(name: str) -> str:
    return COLUMN_HELP.get(name) or COLUMN_HELP.get(name.split("_")[0], "")


def _text(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    return "" if math.isnan(value) else f"{value:.6g}"


class ObjectsModel(QAbstractTableModel):
    """The kept rows of a table (``set_rows``), in the order of the last ``sort``."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._table: ObjectTable | None = None
        self._kept = np.zeros(0, dtype=np.intp)  # table rows passing the filters
        self._shown = self._kept  # those rows in display order
        self._sort: tuple[str, Qt.SortOrder] | None = None  # column name, order

    @property
    def table(self) -> ObjectTable | None:
        return self._table

    def set_table(self, table: ObjectTable | None) -> None:
        """Show ``table`` (all rows kept); a sort by a column it still has is kept."""
        self.beginResetModel()
        if table is None or (self._sort is not None and self._sort[0] not in table.columns):
            self._sort = None
        self._table = table
        self._kept = np.arange(0 if table is None else len(table))
        self._shown = self._ordered(self._kept)
        self.endResetModel()

    def set_rows(self, rows: np.ndarray) -> None:
        """Show only the table rows ``rows`` (indices), in the current sort order."""
        self.beginResetModel()
        self._kept = np.asarray(rows, dtype=np.intp)
        self._shown = self._ordered(self._kept)
        self.endResetModel()

    def _ordered(self, rows: np.ndarray) -> np.ndarray:
        if self._sort is None or self._table is None:
            return rows
        name, order = self._sort
        values = self._table[name][rows]
        if order == Qt.SortOrder.DescendingOrder:
            # negate so equal values keep their table order (stable) and NaN still sorts last
            keys = -values.astype(np.float64)
            return rows[np.argsort(keys, kind="stable")]
        return rows[np.argsort(values, kind="stable")]

    def sort(self, column: int, order: Qt.SortOrder = Qt.SortOrder.AscendingOrder) -> None:
        if self._table is None or not 0 <= column < len(self._table.names):
            return
        self.layoutAboutToBeChanged.emit()
        self._sort = (self._table.names[column], order)
        self._shown = self._ordered(self._kept)
        self.layoutChanged.emit()

    def sort_state(self) -> tuple[int, Qt.SortOrder]:
        """(column index, order) of the current sort; column -1 when unsorted."""
        if self._sort is None or self._table is None:
            return -1, Qt.SortOrder.AscendingOrder
        return self._table.names.index(self._sort[0]), self._sort[1]

    # ------------------------------------------------------------------------ lookups
    def table_row(self, row: int) -> int:
        """The table row shown at view row ``row``."""
        return int(self._shown[row])

    def label_at(self, row: int) -> int:
        return int(self._table.ids[self._shown[row]])

    def view_row_of(self, label: int) -> int | None:
        """The view row showing ``label``, or None if it is filtered out or absent."""
        if self._table is None:
            return None
        found = np.flatnonzero(self._table.ids[self._shown] == label)
        return int(found[0]) if found.size else None

    def shown_table(self) -> ObjectTable | None:
        """The table of the shown rows, in display order (what Export writes)."""
        return None if self._table is None else self._table.take(self._shown)

    # --------------------------------------------------------------------- Qt model API
    def rowCount(self, parent: QModelIndex | None = None) -> int:
        return 0 if parent is not None and parent.isValid() else len(self._shown)

    def columnCount(self, parent: QModelIndex | None = None) -> int:
        if (parent is not None and parent.isValid()) or self._table is None:
            return 0
        return len(self._table.names)

    def data(self, index: QModelIndex, role: int = _DISPLAY) -> Any:
        if not index.isValid() or self._table is None:
            return None
        if role == _DISPLAY:
            name = self._table.names[index.column()]
            return _text(self._table[name][self._shown[index.row()]])
        if role == _ALIGN:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = _DISPLAY) -> Any:
        if orientation != Qt.Orientation.Horizontal or self._table is None:
            return None
        if not 0 <= section < len(self._table.names):
            return None
        name = self._table.names[section]
        if role == _DISPLAY:
            return name
        if role == _TIP:
            return _help(name)
        return None
