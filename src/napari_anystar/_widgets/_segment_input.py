"""The 3D volume the Segment widget works on, taken from a napari image layer (never modified).

An in-memory layer within the memory budget (``model.input_budget``) is used whole, as it is.
A lazily backed layer (dask, zarr...) or one over the budget is never read whole: the widget
segments the region in view (all Z that fit the budget) and reads it in its worker
(:func:`read_then`), in Z slabs: a Cancel takes effect after the slab being read. Of a 4D+
layer (e.g. time) the displayed frame is segmented.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np

from napari_anystar._generators import mapped
from napari_anystar.model.input_budget import (
    BUDGET_ENV,
    Bounds,
    Region,
    classify,
    fit_region,
    format_bytes,
    memory_budget,
    read_parts,
)
from napari_anystar.model.predict import check_volume

P = TypeVar("P")
T = TypeVar("T")

#: Data type of our labels layer holding all frames of a 4D+ layer.
SERIES_DTYPE = np.int32
ReadProgress = tuple[str, int, int]  # ("read", slabs read, slabs)


@dataclass(frozen=True)
class InputVolume:
    """A 3D volume of an image layer (or a region of it) and how to overlay results on it.

    ``data`` is None until the volume is read (:func:`read_volume`, in a worker): ``source``
    holds the layer's array, ``index`` the frame and region to read of it.
    """

    data: np.ndarray | None  # (Z, Y, X)
    frame: tuple[int, ...]  # indices of the leading (e.g. time) axes; () for a 3D layer
    #: places an array of the layer's ndim with the frame's shape, (1, ..., 1, Z, Y, X)
    transform: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # user-facing remark: which frame / region is segmented and why
    name: str = ""  # the layer's name
    region: Region | None = None  # the part of the frame segmented; None: all of it
    #: places an array of all frames, (T, ..., Z, Y, X); None: they exceed the budget
    series_transform: dict[str, Any] | None = None
    lead_shape: tuple[int, ...] = ()  # the layer's leading axes' lengths
    source: Any = None  # the layer's (lazy or big) array, until read
    index: tuple = ()  # frame + region slices of ``source`` to read

    def where(self) -> str:
        """``'big' (frame 2; z 0-31, y 0-47, x 0-47)``: what is segmented."""
        parts = "; ".join(filter(None, [f"frame {self.frame_text()}" if self.frame else "",
                                        self.region.describe() if self.region else ""]))
        return f"'{self.name}'" + (f" ({parts})" if parts else "")

    def frame_text(self) -> str:
        return ", ".join(str(i) for i in self.frame)


def plan_volume(layer: Any, world_point: Sequence[float] | None = None, *,
                view: tuple[Bounds, Bounds] | None = None,
                budget: int | None = None) -> InputVolume:
    """The 3D volume of an image layer; for 4D+ layers the one shown at ``world_point``.

    A lazy or over-budget layer gives the ``view`` region (Y/X bounds in data voxels, default
    all), all Z that fit the budget around the displayed slice, not yet read (``data`` None).
    Raises ValueError with a one-line message for RGB and 2D layers and a bad budget.
    ``world_point`` is ``viewer.dims.point``; ``budget`` (bytes) defaults to ``memory_budget()``.
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
    shape = tuple(int(s) for s in data.shape)
    point = layer.world_to_data(world_point) if world_point is not None else None
    frame = tuple(_index(point, axis, shape) for axis in range(ndim - 3))
    lead_shape = shape[: ndim - 3]
    budget = memory_budget() if budget is None else budget
    size = classify(data, budget, shape[-3:])
    notes = [f"'{name}' is {ndim}D: segmenting the displayed 3D volume (frame "
             f"{', '.join(map(str, frame))})." if frame else ""]
    region = Region((0, 0, 0), shape[-3:])
    if size.kind != "memory":
        itemsize = np.dtype(getattr(data, "dtype", np.float64)).itemsize
        z = _index(point, ndim - 3, shape) if point is not None else None
        region = fit_region(shape[-3:], itemsize, budget, view=view, z=z)
        notes.append(_region_note(size.describe(name), region, shape[-3:], itemsize))
    labels_bytes = int(np.prod(lead_shape + region.shape)) * np.dtype(SERIES_DTYPE).itemsize
    series = bool(frame) and labels_bytes <= budget
    if frame and not series:
        notes.append(f"Labels are kept for this frame only: a labels layer of all frames "
                     f"needs {format_bytes(labels_bytes)}, over the memory budget "
                     f"({format_bytes(budget)}).")
    lazy = size.kind != "memory"
    return InputVolume(
        data=None if lazy else np.asarray(data[frame]),
        frame=frame,
        transform=placed_transform(layer, frame + region.start),
        note=" ".join(filter(None, notes)),
        name=name,
        region=None if region.covers(shape[-3:]) else region,
        series_transform=(placed_transform(layer, (0,) * len(frame) + region.start)
                          if series else None),
        lead_shape=lead_shape,
        source=data if lazy else None,
        index=frame + region.slices if lazy else (),
    )


def _index(point: np.ndarray | None, axis: int, shape: tuple[int, ...]) -> int:
    """The voxel index at ``point`` along ``axis`` (0 without a point), inside the data."""
    return int(np.clip(round(point[axis]) if point is not None else 0, 0, shape[axis] - 1))


def _region_note(size: str, region: Region, shape: tuple[int, ...], itemsize: int) -> str:
    if region.covers(shape):
        return f"{size}: reading it in the background."
    nbytes = format_bytes(int(np.prod(region.shape)) * itemsize)
    return (f"{size}: segmenting the region in view, {region.describe()} ({nbytes}); zoom out "
            f"or raise {BUDGET_ENV} for a larger one.")


def read_then(volume: InputVolume, scale: tuple[float, ...] | None,
              job_for: Callable[[InputVolume], Generator[P, None, T]]
              ) -> Generator[ReadProgress | P, None, T]:
    """A worker's job: :func:`read_volume`, then ``job_for`` the volume read."""
    read = yield from read_volume(volume, scale)
    return (yield from job_for(read))


def read_volume(volume: InputVolume, scale: tuple[float, ...] | None
                ) -> Generator[ReadProgress, None, InputVolume]:
    """``volume`` with its region read into memory and checked (run it in a worker); yields
    ``("read", slabs read, slabs)`` after each Z slab (closing the generator stops the read).

    Raises ValueError with a one-line message when reading fails or the volume cannot be
    segmented (``check_volume``).
    """
    if volume.data is not None:
        return volume
    parts = read_parts(volume.source, volume.index, volume.where())
    data = yield from mapped(parts, lambda progress: ("read", *progress))
    check_volume(data, scale=scale)
    return replace(volume, data=data, source=None)


def visible_yx(viewer: Any, layer: Any) -> tuple[Bounds, Bounds] | None:
    """The Y/X data-voxel bounds of ``layer`` shown on the canvas (2D display of its last two
    axes), unclipped; None when the canvas shows other axes or a 3D view."""
    dims = viewer.dims
    ndim = dims.ndim
    if dims.ndisplay != 2 or tuple(dims.displayed) != (ndim - 2, ndim - 1):
        return None
    scene = getattr(viewer, "scene", None)  # napari >= 0.9; viewer.camera before
    camera = scene.camera if scene is not None else viewer.camera
    canvas = getattr(viewer, "canvas", None)
    height, width = canvas.size if canvas is not None else viewer._canvas_size
    centre = np.asarray(camera.center[-2:], dtype=float)
    half = np.array([height, width], dtype=float) / (2 * camera.zoom)
    corners = []
    for dy in (-1, 1):
        for dx in (-1, 1):
            world = np.asarray(dims.point, dtype=float)
            world[-2:] = centre + half * (dy, dx)
            corners.append(layer.world_to_data(world)[-2:])
    low, high = np.floor(np.min(corners, axis=0)), np.ceil(np.max(corners, axis=0))
    return (int(low[0]), int(high[0])), (int(low[1]), int(high[1]))


def placed_transform(layer: Any, offset: Sequence[float]) -> dict[str, Any]:
    """Keyword arguments placing an array of ``layer.ndim`` axes whose voxel 0 lies on the
    layer's data voxel ``offset``, with the layer's voxel size and orientation."""
    # world = affine(data2physical(voxel)); a shifted array keeps all but the translation
    physical = layer.affine.inverse(layer.data_to_world(np.asarray(offset, dtype=float)))
    transform: dict[str, Any] = {
        "scale": tuple(float(s) for s in layer.scale),
        "translate": tuple(float(t) for t in physical),
        "rotate": np.asarray(layer.rotate),
        "shear": np.asarray(layer.shear),
        "affine": np.asarray(layer.affine.affine_matrix),
    }
    units = getattr(layer, "units", None)
    if units is not None:
        transform["units"] = tuple(str(u) for u in units)
    return transform


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
