"""The 3D volume the Segment widget works on, taken from a napari image layer (never modified)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class InputVolume:
    """A copy-free 3D view of an image layer plus what is needed to overlay results on it."""

    data: np.ndarray  # (Z, Y, X)
    frame: tuple[int, ...]  # indices of the leading (e.g. time) axes; () for a 3D layer
    transform: dict[str, Any] = field(default_factory=dict)  # scale/translate/affine... (3D)
    note: str = ""  # user-facing remark, e.g. which time point of a 4D layer is used


def volume_from_layer(layer: Any, world_point: Sequence[float] | None = None) -> InputVolume:
    """The 3D volume of an image layer; for 4D+ layers the one shown at ``world_point``.

    Raises ValueError with a one-line message for RGB and 2D layers. ``world_point`` is
    ``viewer.dims.point``; the leading axes of a 4D+ layer (e.g. time) are taken there.
    """
    name = layer.name
    if getattr(layer, "rgb", False):
        raise ValueError(
            f"'{name}' is an RGB image; AnyStar needs a single-channel 3D volume "
            "(split the channels first)."
        )
    ndim = layer.ndim
    if ndim < 3:
        raise ValueError(f"'{name}' is {ndim}D; AnyStar segments 3D volumes (Z, Y, X).")
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    frame: tuple[int, ...] = ()
    note = ""
    if ndim > 3:
        point = layer.world_to_data(world_point) if world_point is not None else None
        frame = tuple(
            int(np.clip(round(point[axis]) if point is not None else 0, 0, data.shape[axis] - 1))
            for axis in range(ndim - 3)
        )
        data = data[frame]
        where = ", ".join(f"axis {axis} = {index}" for axis, index in enumerate(frame))
        note = f"'{name}' is {ndim}D: segmenting the displayed 3D volume ({where})."
    return InputVolume(np.asarray(data), frame, spatial_transform(layer), note)


def spatial_transform(layer: Any) -> dict[str, Any]:
    """Keyword arguments placing a (Z, Y, X) array exactly over the last 3 axes of ``layer``."""
    ndim = layer.ndim
    matrix = np.asarray(layer.affine.affine_matrix)
    affine = np.eye(4)
    affine[:3, :3] = matrix[ndim - 3 : ndim, ndim - 3 : ndim]
    affine[:3, 3] = matrix[ndim - 3 : ndim, ndim]
    transform: dict[str, Any] = {
        "scale": tuple(float(s) for s in layer.scale[-3:]),
        "translate": tuple(float(t) for t in layer.translate[-3:]),
        "affine": affine,
    }
    if ndim == 3:
        transform["rotate"] = np.asarray(layer.rotate)
        transform["shear"] = np.asarray(layer.shear)
    units = getattr(layer, "units", None)
    if units is not None:
        transform["units"] = tuple(str(u) for u in units[-3:])
    return transform


def default_scale(layer: Any) -> tuple[float, float, float]:
    """Network rescale factors (Z, Y, X) from the layer's voxel size, X (in-plane) set to 1.

    ``layer.scale`` holds the voxel size; dividing by the X voxel size resamples the volume
    to isotropic voxels at the in-plane resolution, e.g. voxel size (2, 0.5, 0.5) -> (4, 1, 1).
    """
    spacing = np.abs(np.asarray(layer.scale[-3:], dtype=float))
    if spacing.size < 3 or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        return (1.0, 1.0, 1.0)
    z, y, x = spacing / spacing[-1]
    return (float(z), float(y), float(x))
