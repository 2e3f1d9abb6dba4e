"""The Fine-tune widget's image/labels pair list, kept in step with the viewer's layers."""

from __future__ import annotations

from typing import Any

from napari.layers import Image, Labels
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QListWidget,
    QListWidgetItem,
    QPushButton,
)


class PairPicker(QObject):
    """Image/labels combos, Add/Remove buttons and the list of chosen (image, labels) pairs.

    Its controls go into the caller's form (``add_rows``); listed pairs follow layer renames
    and vanish with their layers.
    """

    changed = Signal()  # the listed pairs or their texts changed
    refused = Signal(str)  # why a pair was not added

    def __init__(self, viewer: Any, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.image_combo = QComboBox()
        self.labels_combo = QComboBox()
        self.add_button = QPushButton("Add pair")
        self.add_button.setToolTip("List the image and labels layers chosen above as a "
                                   "training pair (copied when training starts).")
        self.add_button.clicked.connect(self.add)
        self.list = QListWidget()
        self.list.setMaximumHeight(90)
        self.remove_button = QPushButton("Remove pair")
        self.remove_button.setToolTip("Remove the selected pairs (the last one if none is "
                                      "selected) from the list; the layers stay.")
        self.remove_button.clicked.connect(self.remove_selected)

    def add_rows(self, form: QFormLayout) -> None:
        """Lay the controls out as rows of ``form``."""
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        form.addRow("Image", self.image_combo)
        form.addRow("Labels", self.labels_combo)
        form.addRow(buttons)
        form.addRow(self.list)

    def connect_layers(self) -> None:
        """Follow the viewer's layer insertions, removals and renames."""
        layers = self.viewer.layers.events
        layers.inserted.connect(self._on_layer_inserted)
        layers.removed.connect(self._on_layer_removed)
        for layer in self.viewer.layers:
            layer.events.name.connect(self.refresh)

    def refresh(self, *_: Any) -> None:
        """Refill the combos from the viewer's layers and relabel the listed pairs."""
        for combo, kind in ((self.image_combo, Image), (self.labels_combo, Labels)):
            current = combo.currentData()
            combo.clear()
            for layer in self.viewer.layers:
                if isinstance(layer, kind):
                    combo.addItem(layer.name, layer)
                    if layer is current:
                        combo.setCurrentIndex(combo.count() - 1)
        self._relabel()

    def _relabel(self) -> None:
        for row in range(self.list.count()):
            item = self.list.item(row)
            image, labels = item.data(Qt.ItemDataRole.UserRole)
            item.setText(f"{image.name}  +  {labels.name}")
        self.changed.emit()

    def _on_layer_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh)
        self.refresh()

    def _on_layer_removed(self, event: Any) -> None:
        removed = event.value
        for row in reversed(range(self.list.count())):
            if removed in self.list.item(row).data(Qt.ItemDataRole.UserRole):
                self.list.takeItem(row)
        self.refresh()

    def add(self) -> None:
        """Add the image/labels layers selected in the combos to the pair list."""
        image, labels = self.image_combo.currentData(), self.labels_combo.currentData()
        if image is None or labels is None:
            self.refused.emit("Pick an image layer and a labels layer to add a pair.")
            return
        for row in range(self.list.count()):
            if self.list.item(row).data(Qt.ItemDataRole.UserRole) == (image, labels):
                self.refused.emit(f"The pair '{image.name}' + '{labels.name}' is already listed.")
                return
        item = QListWidgetItem()
        item.setData(Qt.ItemDataRole.UserRole, (image, labels))
        self.list.addItem(item)
        self._relabel()

    def remove_selected(self) -> None:
        """Remove the selected pairs (the last one when none is selected)."""
        rows = sorted({i.row() for i in self.list.selectedIndexes()}, reverse=True)
        if not rows and self.list.count():
            rows = [self.list.count() - 1]
        for row in rows:
            self.list.takeItem(row)
        self.changed.emit()

    def pairs(self) -> list[tuple[Any, Any]]:
        """The listed (image layer, labels layer) pairs."""
        return [
            self.list.item(row).data(Qt.ItemDataRole.UserRole) for row in range(self.list.count())
        ]
