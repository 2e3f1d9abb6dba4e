"""Model chooser of the Segment widget: the registry's models, "Add model folder...", a hint."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import QComboBox, QFileDialog, QLabel, QPushButton, QVBoxLayout, QWidget

from napari_anystar.model import registry


def model_thresholds(entry: registry.ModelEntry | None) -> tuple[float, float]:
    """The model's tuned (prob, nms) thresholds; StarDist's defaults without a model."""
    return registry.DEFAULT_THRESHOLDS if entry is None else registry.model_thresholds(entry)


def model_label(entry: registry.ModelEntry) -> tuple[str, str]:
    """(text, tooltip) of a model in the list: name, source, any note; folder, normalisation."""
    note = registry.model_note(entry.path)
    text = f"{entry.name} ({entry.source})" + (f": {note}" if note else "")
    norm = registry.model_normalization(entry.path).describe()
    return text, f"{entry.path}\nNormalisation: {norm}"


class ModelChooser(QWidget):
    """Combo box of ``registry.list_models()``, refreshed whenever the registry changes."""

    model_changed = Signal(object)  # the newly selected ModelEntry, or None
    refused = Signal(str)  # why a folder given to "Add model folder..." is not a model
    _registry_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.combo = QComboBox()
        self.combo.setToolTip(
            "StarDist3D model: bundled, trained in the Fine-tune widget, or added from a folder."
        )
        self.add_button = QPushButton("Add model folder...")
        self.add_button.setToolTip("Use a StarDist3D model folder (config.json + weights).")
        self.hint = QLabel()
        self.hint.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for widget in (self.combo, self.hint, self.add_button):
            layout.addWidget(widget)
        self._current: Path | None = None
        self.combo.currentIndexChanged.connect(self._on_index_changed)
        self.add_button.clicked.connect(lambda: self.add_model_folder())
        self._registry_changed.connect(self.refresh)
        unsubscribe = registry.on_models_changed(self._on_registry_changed)
        self.destroyed.connect(lambda *_: unsubscribe())
        self.refresh()

    def entry(self) -> registry.ModelEntry | None:
        return self.combo.currentData()

    def refresh(self, select: Path | None = None) -> None:
        """Re-read the registry, keeping the selection (or selecting ``select``)."""
        entries = registry.list_models()
        paths = [entry.path for entry in entries]
        keep = select if select is not None else self._current
        self.combo.blockSignals(True)
        self.combo.clear()
        for index, entry in enumerate(entries):
            text, tooltip = model_label(entry)
            self.combo.addItem(text, entry)
            self.combo.setItemData(index, tooltip, Qt.ItemDataRole.ToolTipRole)
        if keep in paths:
            self.combo.setCurrentIndex(paths.index(keep))
        elif entries:
            default = registry.default_model()
            self.combo.setCurrentIndex(paths.index(default.path) if default in entries else 0)
        self.combo.blockSignals(False)
        self.hint.setText("" if entries else registry.NO_MODELS_MESSAGE)
        self.hint.setVisible(not entries)
        self._on_index_changed()

    def add_model_folder(self, path: str | Path | None = None) -> registry.ModelEntry | None:
        """Validate and remember a model folder (asks for one if ``path`` is None)."""
        if path is None:
            path = QFileDialog.getExistingDirectory(self, "Choose a StarDist3D model folder")
            if not path:
                return None
        try:
            entry = registry.remember_model_folder(path)
        except registry.InvalidModelError as exc:
            self.refused.emit(str(exc))
            return None
        self.refresh(select=entry.path)
        return entry

    def _on_index_changed(self, *_: Any) -> None:
        entry = self.entry()
        path = entry.path if entry is not None else None
        if path != self._current or entry is None:
            self._current = path
            self.model_changed.emit(entry)

    def _on_registry_changed(self) -> None:
        """Registry callback; may run in a training thread, so hop to the GUI thread."""
        with contextlib.suppress(RuntimeError):  # raised if this widget is already deleted
            self._registry_changed.emit()
