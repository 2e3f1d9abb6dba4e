"""Layers the Segment widget writes: the instance labels and, optionally, the probability map.

Both are "ours" (tagged in metadata, see ``_layers``) and updated in place on later runs or
threshold changes; a user's layer is never touched, even if it has the name we would use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import napari_anystar
from napari_anystar._widgets._layers import add_or_update_layer, find_owned_layer
from napari_anystar._widgets._segment_input import InputVolume
from napari_anystar.model import registry

if TYPE_CHECKING:
    from napari_anystar._widgets._segment_jobs import RunResult
    from napari_anystar.model.predict import PredictSettings


#: Labels-layer metadata key: the network's probability per label id (index 0 unused).
OBJECT_PROBABILITY = "object_probability"


@dataclass
class RunRecord:
    """A run's inputs, kept to place and describe its output layers."""

    input_name: str
    volume: InputVolume
    thresholds: tuple[float, float]  # (prob, nms) the run's labels were made with
    metadata: dict[str, Any]
    result: RunResult | None = None


def run_metadata(entry: registry.ModelEntry, input_name: str, volume: InputVolume,
                 settings: PredictSettings, scale_mode: str) -> dict[str, Any]:
    """What the output layers record of a run (the scale used is added when it is known)."""
    return {
        "model": entry.name,
        "model_path": str(entry.path),
        "ray_scale": registry.ray_scale(entry.path),
        "scale_mode": scale_mode,
        "tiling": "auto" if settings.n_tiles is None else "manual",
        "normalization": settings.norm.to_json(),
        "device": settings.device,
        "input_layer": input_name,
        "frame": volume.frame,
        "plugin_version": napari_anystar.__version__,
    }


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


def show_labels(viewer: Any, run: RunRecord, labels: np.ndarray, n_objects: int,
                object_prob: np.ndarray, prob: float, nms: float) -> Any:
    """Our labels layer of ``run``, with these thresholds' labels and metadata.

    ``metadata["object_probability"][i]`` is the network's probability of object ``i``.
    """
    metadata = {**run.metadata, "prob_thresh": prob, "nms_thresh": nms, "n_objects": n_objects,
                OBJECT_PROBABILITY: object_prob}
    return show_layer(viewer, "labels", labels, input_name=run.input_name, role="labels",
                      suffix="labels", transform=run.volume.transform, metadata=metadata)


def show_probability(viewer: Any, run: RunRecord) -> Any:
    """Our probability map layer of ``run``, placed over its input."""
    output = run.result.output
    placed = probability_transform(run.volume.transform, output.grid, output.scale)
    return show_layer(viewer, "image", output.prob, input_name=run.input_name,
                      role="probability", suffix="probability", transform=placed,
                      metadata=run.metadata, colormap="magma", blending="additive",
                      contrast_limits=(0.0, 1.0))


def remove_probability(viewer: Any, run: RunRecord) -> None:
    """Remove our probability map layer of ``run``'s input, if it is shown."""
    layer = find_owned_layer(viewer, "image", layer_tag(run.input_name, "probability"))
    if layer is not None:
        viewer.layers.remove(layer)
