"""Layers the Segment widget writes: the instance labels and, optionally, the probability map.

Both are "ours" (tagged in metadata, see ``_layers``) and updated in place on later runs or
threshold changes; a user's layer is never touched, even if it has the name we would use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from napari_anystar._widgets._layers import add_or_update_layer, find_owned_layer


def count_objects(labels: np.ndarray) -> int:
    """Number of distinct non-zero ids (O(voxels), no sort)."""
    if labels.size == 0:
        return 0
    flat = labels.ravel()
    if flat.max() <= 0:
        return 0
    return int(np.count_nonzero(np.bincount(flat[flat > 0])))


def layer_tag(input_name: str, role: str) -> dict[str, str]:
    """The metadata tag identifying our ``role`` ("labels"/"probability") layer of an input."""
    return {"widget": "segment", "role": role, "input": input_name}


def free_name(viewer: Any, base: str) -> str:
    """``base``, or ``base (AnyStar)`` / ``base (AnyStar 2)``... if a layer has that name."""
    names = {layer.name for layer in viewer.layers}
    if base not in names:
        return base
    name, k = f"{base} (AnyStar)", 1
    while name in names:
        k += 1
        name = f"{base} (AnyStar {k})"
    return name


def _place(layer: Any, transform: Mapping[str, Any]) -> None:
    for key, value in transform.items():
        setattr(layer, key, value)


def show_layer(
    viewer: Any,
    kind: str,
    data: np.ndarray,
    *,
    input_name: str,
    role: str,
    suffix: str,
    transform: Mapping[str, Any],
    metadata: Mapping[str, Any],
    **add_kwargs: Any,
) -> Any:
    """Add our ``role`` layer for ``input_name`` or replace its data/metadata/placement."""
    tag = layer_tag(input_name, role)
    existing = find_owned_layer(viewer, kind, tag)
    name = existing.name if existing is not None else free_name(viewer, f"{input_name} {suffix}")
    layer = add_or_update_layer(
        viewer, kind, data, name=name, tag=tag, metadata=metadata, **transform, **add_kwargs
    )
    if existing is not None:
        _place(layer, transform)
    return layer


def probability_transform(
    transform: Mapping[str, Any],
    grid: tuple[int, ...],
    scale: tuple[float, ...] | None,
) -> dict[str, Any]:
    """Placement of the network's probability map over the input volume.

    StarDist puts probability voxel ``i`` at input voxel ``i * grid / scale`` (per axis), so
    the map shares the input's placement with its voxel size multiplied by ``grid / scale``.
    """
    factor = np.asarray(grid, dtype=float) / np.asarray(scale or (1.0,) * len(grid), dtype=float)
    placed = dict(transform)
    placed["scale"] = tuple(float(s) for s in np.asarray(transform["scale"]) * factor)
    return placed
