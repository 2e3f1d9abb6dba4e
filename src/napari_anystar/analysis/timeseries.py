"""Per-object intensity time series of a 4D image (T, Z, Y, X) over one 3D label volume.

The objects are segmented once, on one frame or on the mean over time (:func:`projection`),
and every frame is then measured inside the same objects: an object's value in frame ``t``
is the mean image intensity over its voxels. Frames are read one at a time
(``np.asarray(image[t])``), so a lazy (dask, zarr) 4D array is never loaded whole.

Optional temporal smoothing is ``scipy.ndimage.gaussian_filter1d`` along time with sigma in
frames and scipy's default boundary mode, ``"reflect"`` (:data:`SMOOTHING_MODE`): the curve
is mirrored at its first and last frame, so a constant curve stays constant and the ends are
not pulled towards zero.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d

from napari_anystar._generators import result_of

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_SIGMA",
    "SMOOTHING_MODE",
    "check_inputs",
    "check_sigma",
    "iter_projection",
    "iter_time_series",
    "object_time_series",
    "projection",
    "smooth",
    "write_csv",
]

#: Temporal Gaussian sigma in frames (the AnyStar paper's); 0 or None: no smoothing.
DEFAULT_SIGMA = 3.0
#: Boundary mode of the temporal smoothing (``gaussian_filter1d``'s ``mode``).
SMOOTHING_MODE = "reflect"
#: Columns of the tidy CSV: one row per object and frame (frames counted from 0).
CSV_COLUMNS = ("object", "frame", "value")

Progress = tuple[int, int]  # (frames done, frames in all)


def check_inputs(image_shape: tuple[int, ...], labels: Any | None = None) -> None:
    """ValueError (one line) unless ``image_shape`` is 4D (T, Z, Y, X) and ``labels`` (if
    given) is a 3D integer volume of its Z, Y, X shape with at least one object."""
    if len(image_shape) != 4:
        raise ValueError(
            f"the image is {len(image_shape)}D {tuple(image_shape)}; the time-series tool "
            "needs a 4D image (T, Z, Y, X)"
        )
    if image_shape[0] < 1:
        raise ValueError("the image has no frames")
    if labels is None:
        return
    if labels.ndim != 3:
        raise ValueError(
            f"the labels are {labels.ndim}D {tuple(labels.shape)}; the time-series tool needs "
            "3D labels (Z, Y, X)"
        )
    if tuple(labels.shape) != tuple(image_shape[1:]):
        raise ValueError(
            f"the labels have shape {tuple(labels.shape)} but the image's frames (Z, Y, X) "
            f"are {tuple(image_shape[1:])}; they must match voxel for voxel"
        )
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"the labels must hold integer ids, not {labels.dtype}")
    if not np.any(labels):
        raise ValueError("the labels have no objects (every voxel is 0)")


def _frame(image: Any, index: int) -> np.ndarray:
    """Frame ``index`` of a 4D array as a numpy array (one frame read)."""
    n_frames = image.shape[0]
    if not 0 <= index < n_frames:
        raise ValueError(f"frame {index} is out of range: the image has frames 0 to {n_frames - 1}")
    return np.asarray(image[index])


def iter_projection(image: Any, frame: int | None = None) -> Generator[Progress, None, np.ndarray]:
    """The 3D volume to segment: frame ``frame`` as stored, or (``frame`` None) the mean over
    time as float32, summed one frame at a time; yields ``(frames read, frames to read)``."""
    check_inputs(tuple(image.shape))
    if frame is not None:
        yield 0, 1
        volume = _frame(image, frame)
        yield 1, 1
        return volume
    n_frames = image.shape[0]
    total = np.zeros(image.shape[1:], dtype=np.float64)
    for t in range(n_frames):
        yield t, n_frames
        total += _frame(image, t)
    yield n_frames, n_frames
    return (total / n_frames).astype(np.float32)


def projection(image: Any, frame: int | None = None) -> np.ndarray:
    """:func:`iter_projection` without progress: frame ``frame``, or the mean over time."""
    return result_of(iter_projection(image, frame))


def check_sigma(sigma: float | None) -> float:
    """``sigma`` as a float (None -> 0, no smoothing); ValueError unless it is 0 or positive."""
    sigma = 0.0 if sigma is None else float(sigma)
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"the smoothing sigma must be 0 (none) or positive, got {sigma:g}")
    return sigma


def smooth(values: np.ndarray, sigma: float | None) -> np.ndarray:
    """``values`` (objects x frames) smoothed along time with a Gaussian of ``sigma`` frames
    (:data:`SMOOTHING_MODE` at the ends); a float64 copy unchanged for sigma 0 or None."""
    sigma = check_sigma(sigma)
    values = np.array(values, dtype=np.float64)
    if sigma == 0:
        return values
    return gaussian_filter1d(values, sigma, axis=-1, mode=SMOOTHING_MODE)


def iter_time_series(
    image: Any, labels: np.ndarray, sigma: float | None = None
) -> Generator[Progress, None, tuple[np.ndarray, np.ndarray]]:
    """:func:`object_time_series`, yielding ``(frames done, frames)`` before each frame."""
    labels = np.asarray(labels)
    check_inputs(tuple(image.shape), labels)
    check_sigma(sigma)  # a bad sigma fails before any frame is read
    flat = labels.ravel().astype(np.uint8) if labels.dtype == bool else labels.ravel()
    voxels = np.flatnonzero(flat)  # only the objects' voxels are read from each frame
    ids, which = np.unique(flat[voxels], return_inverse=True)
    counts = np.bincount(which, minlength=ids.size)
    n_frames = image.shape[0]
    values = np.empty((ids.size, n_frames), dtype=np.float64)
    for t in range(n_frames):
        yield t, n_frames
        intensities = _frame(image, t).ravel()[voxels].astype(np.float64)
        sums = np.bincount(which, weights=intensities, minlength=ids.size)
        if not np.all(np.isfinite(sums)):
            raise ValueError(f"frame {t} has NaN or infinite intensities inside objects")
        values[:, t] = sums / counts
    yield n_frames, n_frames
    return ids, smooth(values, sigma)


def object_time_series(
    image4d: Any, labels3d: np.ndarray, sigma: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(object ids, values)``: each object's mean intensity in every frame of ``image4d``
    (T, Z, Y, X; numpy or lazy), ``values`` of shape (objects, T), objects in increasing id
    order; smoothed along time with a Gaussian of ``sigma`` frames unless sigma is 0/None.

    ValueError (one line) for a non-4D image, labels that are not 3D, not integer, not the
    frames' shape or empty, a negative sigma, or non-finite intensities inside an object.
    """
    return result_of(iter_time_series(image4d, labels3d, sigma))


def write_csv(
    path: str | Path, object_ids: np.ndarray, values: np.ndarray, overwrite: bool = False
) -> None:
    """Write a tidy CSV (:data:`CSV_COLUMNS`, one row per object and frame, objects in the
    given order) atomically; FileExistsError if ``path`` exists and ``overwrite`` is False.

    Values are written in Python's shortest round-trip form, so reading them back gives the
    same float64 numbers.
    """
    path = Path(path)
    object_ids, values = np.asarray(object_ids), np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != object_ids.size:
        raise ValueError(f"values of shape {values.shape} do not fit {object_ids.size} objects")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (allow overwriting to replace it)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist")
    n_frames = values.shape[1]
    frames = list(range(n_frames))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".csv")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for object_id, row in zip(object_ids.tolist(), values.tolist(), strict=True):
                writer.writerows(zip([object_id] * n_frames, frames, row, strict=True))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
