"""Per-object measurements of a 3D label volume: position, size, shape, intensity, probability.

Conventions (ZYX, like every array in this package):

* Positions are voxel indices, a voxel's centre at its integer index. Physical columns
  (``*_um``) are those indices times the voxel size, assumed to be in micrometres, measured
  from the centre of voxel (0, 0, 0) (no origin offset).
* The bounding box is ``start`` (first voxel) to ``stop`` (one past the last voxel, like a
  Python slice), so ``stop_um - start_um`` is the box's physical size.
* ``elongation`` is the ratio of the longest to the shortest principal axis: the square root
  of the largest over the smallest eigenvalue of the object's covariance in physical units,
  each voxel counted as a solid box (its own variance ``voxel_size**2 / 12`` is added per
  axis). A sphere gives 1, a box of a x b x c voxels exactly ``max / min`` of its physical
  sides, and a one-voxel object the ratio of the voxel's longest to shortest side.
* ``integrated_intensity`` is the sum of the image over the object's voxels (not multiplied
  by the voxel volume).

All sums are one pass of ``np.bincount`` / ``ufunc.at`` over the foreground voxels, in slabs
along Z, so memory stays bounded and no Python loop runs per object.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "AXES",
    "DEFAULT_VOXEL_SIZE",
    "INTENSITY_COLUMNS",
    "PROBABILITY_COLUMN",
    "SPARSE_ID_FACTOR",
    "ObjectTable",
    "check_labels",
    "measure_objects",
    "write_csv",
]

AXES = ("z", "y", "x")
#: Voxel size (Z, Y, X, in um) when none is known.
DEFAULT_VOXEL_SIZE = (1.0, 1.0, 1.0)
#: Columns present only when an image is measured.
INTENSITY_COLUMNS = ("mean_intensity", "max_intensity", "integrated_intensity")
#: Column present only when per-object probabilities are given.
PROBABILITY_COLUMN = "probability"
#: Voxels read per slab along Z (bounds the temporary arrays to ~250 MB).
SLAB_VOXELS = 1 << 22
#: Label ids above this many times the voxel count are first renumbered (np.unique).
SPARSE_ID_FACTOR = 4


@dataclass(frozen=True, eq=False)
class ObjectTable:
    """One row per object (ordered by label id): ``columns[name]`` is a numpy array per column."""

    columns: dict[str, np.ndarray]
    voxel_size: tuple[float, float, float]
    shape: tuple[int, int, int]

    def __len__(self) -> int:
        return len(self.columns["label"])

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.columns)

    @property
    def ids(self) -> np.ndarray:
        return self.columns["label"]

    def take(self, rows: Any) -> ObjectTable:
        """The table of the rows ``rows`` (indices or a boolean mask), in that order."""
        return ObjectTable({k: v[rows] for k, v in self.columns.items()}, self.voxel_size,
                           self.shape)


def check_labels(labels: np.ndarray, image: np.ndarray | None = None) -> None:
    """ValueError (one line) unless ``labels`` is a 3D integer volume and ``image`` (if given)
    a real-valued volume of the same shape."""
    if labels.ndim != 3:
        raise ValueError(f"the labels are {labels.ndim}D {tuple(labels.shape)}; objects are "
                         "measured in 3D label volumes (Z, Y, X)")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"the labels must be integers, not {labels.dtype}")
    if image is not None:
        if image.shape != labels.shape:
            raise ValueError(f"the image has shape {tuple(image.shape)}, the labels "
                             f"{tuple(labels.shape)}; they must match voxel for voxel")
        if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool) or np.issubdtype(
                image.dtype, np.complexfloating):
            raise ValueError(f"the image must be real-valued, not {image.dtype}")


def _voxel_size(voxel_size: Sequence[float]) -> tuple[float, float, float]:
    size = tuple(abs(float(v)) for v in voxel_size)
    if len(size) != 3 or not all(math.isfinite(v) and v > 0 for v in size):
        raise ValueError(f"the voxel size must be 3 positive numbers (Z, Y, X), got "
                         f"{tuple(voxel_size)}")
    return size  # type: ignore[return-value]


def _index(labels: np.ndarray) -> tuple[np.ndarray | None, np.ndarray, int]:
    """How a label value becomes a row slot: (renumbering LUT or None, ids, slots).

    Without a LUT the slot is the label value itself (``slots = max + 1``); very sparse ids
    (e.g. random 64-bit ids) are renumbered to 1..n first so the sums stay small.
    """
    if labels.size == 0:
        return None, np.zeros(0, np.int64), 1
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        raise ValueError(f"the labels must not be negative (found {low})")
    if high <= SPARSE_ID_FACTOR * labels.size + 1:
        return None, np.zeros(0, np.int64), high + 1
    values, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape), values.astype(np.int64), len(values)


class _Sums:
    """Running per-slot sums, minima and maxima over the foreground voxels."""

    def __init__(self, slots: int, with_image: bool) -> None:
        self.count = np.zeros(slots)
        self.first = np.zeros((3, slots))  # sum of z, y, x
        self.second = np.zeros((6, slots))  # sum of zz, yy, xx, zy, zx, yx
        self.low = np.full((3, slots), np.iinfo(np.int64).max)
        self.high = np.full((3, slots), -1)
        self.total = np.zeros(slots) if with_image else None
        self.peak = np.full(slots, -np.inf) if with_image else None

    def add(self, slot: np.ndarray, coords: tuple[np.ndarray, ...],
            values: np.ndarray | None) -> None:
        n = len(self.count)
        self.count += np.bincount(slot, minlength=n)
        for axis, c in enumerate(coords):
            self.first[axis] += np.bincount(slot, weights=c, minlength=n)
            np.minimum.at(self.low[axis], slot, c)
            np.maximum.at(self.high[axis], slot, c)
        pairs = ((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))
        for k, (i, j) in enumerate(pairs):
            weights = (coords[i] * coords[j]).astype(np.float64)
            self.second[k] += np.bincount(slot, weights=weights, minlength=n)
        if values is not None:
            self.total += np.bincount(slot, weights=values, minlength=n)
            np.maximum.at(self.peak, slot, values)


def _accumulate(labels: np.ndarray, lut: np.ndarray | None, slots: int,
                image: np.ndarray | None) -> _Sums:
    sums = _Sums(slots, image is not None)
    nz, ny, nx = labels.shape
    step = max(1, SLAB_VOXELS // max(1, ny * nx))
    source = labels if lut is None else lut
    for z0 in range(0, nz, step):
        flat = np.ravel(source[z0:z0 + step])
        fg = np.flatnonzero(flat if lut is None else labels[z0:z0 + step].ravel())
        if fg.size == 0:
            continue
        slot = flat[fg].astype(np.intp, copy=False)
        plane, rest = np.divmod(fg, ny * nx)
        y, x = np.divmod(rest, nx)
        values = None
        if image is not None:
            values = np.ravel(image[z0:z0 + step])[fg].astype(np.float64)
        sums.add(slot, (plane + z0, y, x), values)
    return sums


def _elongation(cov: np.ndarray, voxel_size: np.ndarray) -> np.ndarray:
    """sqrt(largest / smallest eigenvalue) of (n, 3, 3) voxel-unit covariances, in physical
    units with each voxel's own box variance added."""
    physical = cov * np.outer(voxel_size, voxel_size) + np.diag(voxel_size**2 / 12.0)
    eig = np.linalg.eigvalsh(physical)
    return np.sqrt(eig[:, -1] / eig[:, 0])


def measure_objects(
    labels: np.ndarray,
    image: np.ndarray | None = None,
    voxel_size: Sequence[float] = DEFAULT_VOXEL_SIZE,
    probability: np.ndarray | None = None,
) -> ObjectTable:
    """Measure every object (non-zero id) of a 3D label volume; see the module docstring.

    ``image`` (same shape) adds mean, max and integrated intensity; ``probability`` (indexed
    by label id, e.g. the Segment widget's ``object_probability``) adds a ``probability``
    column (NaN for ids past its end). An empty volume gives an empty table. ValueError (one
    line) for bad input.
    """
    labels = np.asarray(labels)
    image = None if image is None else np.asarray(image)
    check_labels(labels, image)
    size = _voxel_size(voxel_size)
    if labels.dtype == bool:
        labels = labels.view(np.uint8)
    lut, values, slots = _index(labels)
    sums = _accumulate(labels, lut, slots, image)
    rows = np.flatnonzero(sums.count)
    rows = rows[rows > 0] if lut is None else rows[values[rows] > 0]
    ids = rows.astype(np.int64) if lut is None else values[rows]
    n = sums.count[rows]
    mean = sums.first[:, rows] / n
    second = sums.second[:, rows] / n
    cov = np.empty((len(rows), 3, 3))
    for k, (i, j) in enumerate(((0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2))):
        cov[:, i, j] = cov[:, j, i] = second[k] - mean[i] * mean[j]
    vsize = np.asarray(size)
    start, stop = sums.low[:, rows], sums.high[:, rows] + 1
    shape = np.asarray(labels.shape)[:, None]
    columns: dict[str, np.ndarray] = {"label": ids}
    for axis, name in enumerate(AXES):
        columns[f"centroid_{name}"] = mean[axis]
    for axis, name in enumerate(AXES):
        columns[f"centroid_{name}_um"] = mean[axis] * size[axis]
    for edge, array in (("start", start), ("stop", stop)):
        for axis, name in enumerate(AXES):
            columns[f"bbox_{name}_{edge}"] = array[axis].astype(np.int64)
    for edge, array in (("start", start), ("stop", stop)):
        for axis, name in enumerate(AXES):
            columns[f"bbox_{name}_{edge}_um"] = array[axis] * size[axis]
    volume_um3 = n * float(np.prod(vsize))
    columns["volume_voxels"] = n.astype(np.int64)
    columns["volume_um3"] = volume_um3
    columns["equivalent_diameter_um"] = np.cbrt(6.0 * volume_um3 / np.pi)
    columns["elongation"] = _elongation(cov, vsize) if len(rows) else np.zeros(0)
    columns["touches_border"] = np.any((start == 0) | (stop == shape), axis=0)
    if image is not None:
        columns["mean_intensity"] = sums.total[rows] / n
        columns["max_intensity"] = sums.peak[rows]
        columns["integrated_intensity"] = sums.total[rows]
    if probability is not None:
        columns[PROBABILITY_COLUMN] = _probability_of(ids, probability)
    return ObjectTable(columns, size, tuple(int(s) for s in labels.shape))


def _probability_of(ids: np.ndarray, probability: np.ndarray) -> np.ndarray:
    table = np.asarray(probability, dtype=np.float64).ravel()
    out = np.full(len(ids), np.nan)
    inside = ids < len(table)
    out[inside] = table[ids[inside]]
    return out


def _cell(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return ""
    return value


def write_csv(table: ObjectTable, path: str | Path, overwrite: bool = False) -> None:
    """Write ``table`` as CSV (header row, one row per object; NaN as an empty cell; floats
    with full precision), atomically. FileExistsError if ``path`` exists and not
    ``overwrite``."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (allow overwriting to replace it)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist")
    columns = [table[name].tolist() for name in table.names]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".csv")
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(table.names)
            for row in zip(*columns, strict=True):
                writer.writerow([_cell(v) for v in row])
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
