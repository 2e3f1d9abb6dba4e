"""The Segment widget's choosers: the image layer list, and the selected model (its
thresholds and normalisation shown, the model loaded in the background).

A mixin of :class:`~napari_anystar._widgets.segment.SegmentWidget`, which provides the form's
controls, ``viewer``, ``_life``, ``_run`` and ``_refuse``.
"""

from __future__ import annotations

import logging
from functools import partial
from pathlib import Path
from typing import Any

from napari.layers import Image
from napari.qt.threading import create_worker

from napari_anystar._widgets._layers import layer_tag, warm_labels_display
from napari_anystar._widgets._segment_input import SERIES_DTYPE, default_scale
from napari_anystar._widgets._segment_models import model_thresholds
from napari_anystar.model import registry
from napari_anystar.model.object_size import FALLBACK_SCALE
from napari_anystar.model.segmenter import preload_model

logger = logging.getLogger(__name__)


def preload_for_display(entry: registry.ModelEntry) -> Any:
    """The model of ``entry``, loaded and warmed (``preload_model``), and napari's labels
    display warmed for our labels' dtype (``warm_labels_display``). For a worker."""
    model = preload_model(entry)
    warm_labels_display(SERIES_DTYPE)
    return model


class ChoosersMixin:
    """Image layer and model choice of the Segment widget."""

    def selected_layer(self) -> Image | None:
        name = self.image_combo.currentData()
        return next((layer for layer in self.viewer.layers if layer.name == name), None)

    def selected_model(self) -> registry.ModelEntry | None:
        return self.model_chooser.entry()

    def add_model_folder(self, path: str | Path | None = None) -> registry.ModelEntry | None:
        """Validate and remember a model folder (asks for one if ``path`` is None)."""
        entry = self.model_chooser.add_model_folder(path)
        if entry is not None:
            self.status_label.setText(f"Added model '{entry.name}'.")
        return entry

    def _on_layer_inserted(self, event: Any) -> None:
        event.value.events.name.connect(self._refresh_layers)
        self._refresh_layers()

    def _refresh_layers(self, *_: Any) -> None:
        """List the image layers, except the probability maps this widget made."""
        if not self._life.alive:
            return
        current = self.image_combo.currentData()
        names = [
            layer.name
            for layer in self.viewer.layers
            if isinstance(layer, Image) and (layer_tag(layer) or {}).get("widget") != "segment"
        ]
        self.image_combo.blockSignals(True)
        self.image_combo.clear()
        for name in names:
            self.image_combo.addItem(name, name)
        self.image_combo.setCurrentIndex(names.index(current) if current in names else -1)
        if self.image_combo.currentIndex() < 0 and names:
            self.image_combo.setCurrentIndex(0)
        self.image_combo.blockSignals(False)
        if self.image_combo.currentData() != current:
            self._on_image_changed()

    def _on_image_changed(self, *_: Any) -> None:
        self._life.stop_warmup()
        self._show_mode_scale()

    def _show_mode_scale(self, *_: Any) -> None:
        """Auto: the start scale until a run chose one; voxel size: the layer's; manual: kept."""
        layer = self.selected_layer()
        if self.scale_mode() == "auto":
            self.set_scale(FALLBACK_SCALE)
        elif self.scale_mode() == "voxel_size" and layer is not None:
            self.set_scale(default_scale(layer))

    def _on_model_changed(self, entry: registry.ModelEntry | None) -> None:
        self._life.stop_warmup()
        prob, nms = model_thresholds(entry)
        self.prob_slider.setValue(prob)
        self.nms_slider.setValue(nms)
        if entry is not None:
            self.set_normalization(registry.model_normalization(entry.path))
            self._preload(entry)
        self.run_button.setEnabled(entry is not None and self._life.worker is None)

    def _preload(self, entry: registry.ModelEntry) -> None:
        """Load (and warm) the selected model, and napari's labels display, in the
        background, so that the first Run starts and shows at once."""
        worker = create_worker(preload_for_display, entry, _ignore_errors=True)
        worker.returned.connect(partial(self._on_preloaded, entry))
        worker.errored.connect(partial(logger.warning, "AnyStar: preloading a model failed: %s"))
        if self._life.worker is None:
            self.status_label.setText(f"Loading model '{entry.name}' in the background...")
        worker.start()

    def _on_preloaded(self, entry: registry.ModelEntry, _model: Any) -> None:
        busy = self._life.worker is not None or self._run is not None
        if self._life.alive and not busy and self.selected_model() == entry:
            self.status_label.setText(f"Model '{entry.name}' ready.")
