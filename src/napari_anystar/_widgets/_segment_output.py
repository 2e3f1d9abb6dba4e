"""Layers the Segment widget writes: the instance labels and, optionally, the probability map.

Both are "ours" (tagged in metadata, see ``_layers``) and updated in place on later runs or
threshold changes; a user's layer is never touched, even if it has the name we would use.
Labels of a region of the input get a layer of their own per region; a 4D+ input's labels
layer holds all its frames, each written only by a run on that frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import napari_anystar
from napari_anystar._widgets._layers import add_or_update_layer, find_owned_layer
from napari_anystar._widgets._segment_input import SERIES_DTYPE, InputVolume
from napari_anystar.model import registry

if TYPE_CHECKING:
    from napari_anystar.model.predict import PredictSettings
    from napari_anystar.model.segmenter import RunResult


#: Labels-layer metadata key: the network's probability per label id (index 0 unused).
OBJECT_PROBABILITY = "object_probability"
#: Labels-layer metadata key of a 4D+ input's labels: {frame: thresholds and object count}.
SEGMENTED_FRAMES = "segmented_frames"


@dataclass
class RunRecord:
    """A run's inputs, kept to place and describe its output layers."""

    input_name: str
    volume: InputVolume  # replaced by the volume read, in the run's worker
    thresholds: tuple[float, float]  # (prob, nms) the run's labels were made with
    metadata: dict[str, Any]
    result: RunResult | None = None
    note: str = ""  # what the status says of the run (input read, auto scale), once it ran


def run_metadata(entry: registry.ModelEntry, input_name: str, volume: InputVolume,
                 settings: PredictSettings, scale_mode: str, objects: str) -> dict[str, Any]:
    """What the output layers record of a run (the scale used and whether the image was
    negated are added when known); ``objects``: the *Objects* choice the run was started with."""
    return {
        "model": entry.name,
        "model_path": str(entry.path),
        "ray_scale": registry.ray_scale(entry.path),
        "scale_mode": scale_mode,
        "objects": objects,
        "tiling": "auto" if settings.n_tiles is None else "manual",
        "normalization": settings.norm.to_json(),
        "device": settings.device,
        "input_layer": input_name,
        "frame": volume.frame,
        "region": None if volume.region is None else tuple(
            zip(volume.region.start, volume.region.stop, strict=True)),
        "plugin_version": napari_anystar.__version__,
    }


def layer_tag(input_name: str, role: str, part: str = "") -> dict[str, str]:
    """The metadata tag identifying our ``role`` ("labels"/"probability") layer of an input
    (of one ``part`` of it, e.g. a region, when given)."""
    tag = {"widget": "segment", "role": role, "input": input_name}
    return {**tag, "part": part} if part else tag


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
    tag: Mapping[str, str],
    base_name: str,
    transform: Mapping[str, Any],
    metadata: Mapping[str, Any],
    **add_kwargs: Any,
) -> Any:
    """Add our layer tagged ``tag`` (named ``base_name`` if free) or replace its
    data/metadata/placement (a layer of other dimensionality is replaced by a new one)."""
    existing = find_owned_layer(viewer, kind, tag)
    if existing is not None and existing.ndim != data.ndim:
        viewer.layers.remove(existing)
        existing = None
    name = existing.name if existing is not None else free_name(viewer, base_name)
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
    the map shares the input's placement with its voxel size multiplied by ``grid / scale``
    (on the last axes; leading, e.g. time, axes keep theirs).
    """
    factor = np.asarray(grid, dtype=float) / np.asarray(scale or (1.0,) * len(grid), dtype=float)
    voxel = np.asarray(transform["scale"], dtype=float)
    factor = np.concatenate([np.ones(len(voxel) - len(factor)), factor])
    placed = dict(transform)
    placed["scale"] = tuple(float(s) for s in voxel * factor)
    return placed


def frame_array(volume_data: np.ndarray, volume: InputVolume) -> np.ndarray:
    """A (Z, Y, X) result with the input's leading axes, of length 1: (1, ..., Z, Y, X)."""
    return volume_data.reshape((1,) * len(volume.frame) + volume_data.shape)


def labels_part(volume: InputVolume) -> str:
    """What part of the input our labels layer holds: "" (all), a region, a single frame."""
    single_frame = bool(volume.frame) and volume.series_transform is None
    return "; ".join(filter(None, [f"frame {volume.frame_text()}" if single_frame else "",
                                   volume.region.describe() if volume.region else ""]))


def show_labels(viewer: Any, run: RunRecord, labels: np.ndarray, n_objects: int,
                object_prob: np.ndarray, prob: float, nms: float) -> Any:
    """Our labels layer of ``run``, with these thresholds' labels and metadata.

    ``metadata["object_probability"][i]`` is the network's probability of object ``i``.
    Of a 4D+ input, the labels layer has all its frames (unless they exceed the memory
    budget: then only the run's frame, placed at it): the run's frame is written, every
    other frame is kept as it is (empty until segmented), so no frame shows another's labels.
    """
    volume = run.volume
    metadata = {**run.metadata, "prob_thresh": prob, "nms_thresh": nms, "n_objects": n_objects,
                OBJECT_PROBABILITY: object_prob}
    part = labels_part(volume)
    tag = layer_tag(run.input_name, "labels", part)
    data, transform = frame_array(labels, volume), volume.transform
    if volume.series_transform is not None:
        shape = volume.lead_shape + labels.shape
        existing = find_owned_layer(viewer, "labels", tag)
        kept = existing is not None and isinstance(existing.data, np.ndarray) and (
            existing.data.shape == shape and existing.data.dtype == SERIES_DTYPE)
        data = existing.data if kept else np.zeros(shape, SERIES_DTYPE)
        data[volume.frame] = labels
        transform = volume.series_transform
        done = dict(existing.metadata.get(SEGMENTED_FRAMES, {})) if kept else {}
        done[volume.frame] = {"prob_thresh": prob, "nms_thresh": nms, "n_objects": n_objects}
        metadata[SEGMENTED_FRAMES] = done
    suffix = f"labels [{part}]" if part else "labels"
    return show_layer(viewer, "labels", data, tag=tag, base_name=f"{run.input_name} {suffix}",
                      transform=transform, metadata=metadata)


def show_probability(viewer: Any, run: RunRecord) -> Any:
    """Our probability map layer of ``run``'s input (its last run), placed over the input."""
    output = run.result.output
    placed = probability_transform(run.volume.transform, output.grid, output.scale)
    return show_layer(viewer, "image", frame_array(output.prob, run.volume),
                      tag=layer_tag(run.input_name, "probability"),
                      base_name=f"{run.input_name} probability", transform=placed,
                      metadata=run.metadata, colormap="magma", blending="additive",
                      contrast_limits=(0.0, 1.0))


def remove_probability(viewer: Any, run: RunRecord) -> None:
    """Remove our probability map layer of ``run``'s input, if it is shown."""
    layer = find_owned_layer(viewer, "image", layer_tag(run.input_name, "probability"))
    if layer is not None:
        viewer.layers.remove(layer)
