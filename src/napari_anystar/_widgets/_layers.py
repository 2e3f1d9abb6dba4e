"""Add a layer to the viewer, or update in place the one this plugin made for the same purpose.

A layer is "ours" when ``layer.metadata[OWNER_KEY]`` holds a tag (a small dict such as
``{"widget": "preview", "generator": "as-mix", "seed": 42, "role": "image"}``). Only a layer of
the same type whose tag is equal is ever updated; every other layer (a user's, or ours with a
different tag) is left alone, and a new layer is added instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from napari.layers import Image, Labels

OWNER_KEY = "napari_anystar"
_LAYER_CLASSES = {"image": Image, "labels": Labels}


def layer_tag(layer: Any) -> dict | None:
    """The plugin tag stored in a layer's metadata, or None for a layer that is not ours."""
    tag = layer.metadata.get(OWNER_KEY)
    return tag if isinstance(tag, Mapping) else None


def warm_labels_display(dtype: Any) -> None:
    """Pay napari's one-time cost of showing labels of ``dtype``: the first labels layer of a
    dtype compiles napari's label colouring (about 0.6 s). No viewer needed: for a worker."""
    Labels(np.zeros((1, 2, 2), dtype))


def find_owned_layer(viewer: Any, layer_type: str, tag: Mapping) -> Any | None:
    """The layer of ``layer_type`` ("image" / "labels") whose plugin tag equals ``tag``."""
    for layer in viewer.layers:
        if isinstance(layer, _LAYER_CLASSES[layer_type]) and layer_tag(layer) == dict(tag):
            return layer
    return None


def add_or_update_layer(
    viewer: Any,
    layer_type: str,
    data: np.ndarray,
    *,
    name: str,
    tag: Mapping,
    metadata: Mapping | None = None,
    **add_kwargs: Any,
) -> Any:
    """Replace ``.data`` and metadata of our layer tagged ``tag``, or add a new layer.

    ``metadata`` is stored next to the tag (``layer.metadata = {**metadata, OWNER_KEY: tag}``).
    ``add_kwargs`` (colormap, contrast_limits, ...) only apply when a layer is added, so a
    user's display choices on an updated layer are kept. Returns the layer.
    """
    if layer_type not in _LAYER_CLASSES:
        raise ValueError(f"layer_type must be 'image' or 'labels', got {layer_type!r}")
    full_metadata = {**(metadata or {}), OWNER_KEY: dict(tag)}
    layer = find_owned_layer(viewer, layer_type, tag)
    if layer is None:
        add = viewer.add_image if layer_type == "image" else viewer.add_labels
        return add(data, name=name, metadata=full_metadata, **add_kwargs)
    layer.data = data
    layer.metadata = full_metadata
    return layer
