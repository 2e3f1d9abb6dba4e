"""Layer helpers of the Objects widget: layer choices, input checks, the filtered layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from qtpy.QtWidgets import QComboBox

from napari_anystar._widgets._layers import OWNER_KEY
from napari_anystar._widgets._objects_form import NO_IMAGE
from napari_anystar._widgets._segment_input import spatial_transform


def layer_data(layer: Any) -> Any:
    """A layer's full-resolution data (level 0 of a multiscale layer)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


def index_of(choices: Sequence[Any], layer: Any) -> int:
    """Position of ``layer`` (by identity) in ``choices``, or -1."""
    return next((i for i, item in enumerate(choices) if item is layer), -1)


def fill_combo(combo: QComboBox, choices: Sequence[Any], chosen: Any) -> None:
    """List ``choices`` (layers, or None for 'none') by name with ``chosen`` current, silently."""
    combo.blockSignals(True)
    combo.clear()
    for item in choices:
        combo.addItem(NO_IMAGE if item is None else item.name)
    combo.setCurrentIndex(index_of(choices, chosen))
    combo.blockSignals(False)


def checked_inputs(labels_layer: Any, image_layer: Any) -> tuple[Any, Any]:
    """(labels data, image data or None) to measure; ValueError (one line) if unusable."""
    if labels_layer.ndim != 3:
        raise ValueError(f"'{labels_layer.name}' is {labels_layer.ndim}D; the objects table "
                         "measures 3D labels (Z, Y, X).")
    labels = layer_data(labels_layer)
    if image_layer is None:
        return labels, None
    image = layer_data(image_layer)
    if getattr(image_layer, "rgb", False) or tuple(image.shape) != tuple(labels.shape):
        raise ValueError(f"Image '{image_layer.name}' has shape {tuple(image.shape)}, labels "
                         f"'{labels_layer.name}' {tuple(labels.shape)}: choose an image of the "
                         "same shape, or 'none'.")
    return labels, image


def add_filtered_layer(viewer: Any, layer: Any, data: np.ndarray, colormap: Any,
                       filters: dict, kept: int) -> Any:
    """Add '<name> filtered' (napari adds a suffix if taken) over ``layer``, in ``colormap``.

    Its metadata is ``layer``'s without the plugin tag (so the Segment widget never updates
    it) plus what was kept and how.
    """
    copy = getattr(colormap, "model_copy", colormap.copy)  # pydantic 2 / 1 API
    metadata = {k: v for k, v in layer.metadata.items() if k != OWNER_KEY}
    metadata.update(filtered_from=layer.name, filters=filters, n_objects=kept)
    return viewer.add_labels(data, name=f"{layer.name} filtered", metadata=metadata,
                             colormap=copy(deep=True), **spatial_transform(layer))
