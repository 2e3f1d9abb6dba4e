"""How much of an input volume may be read at once, and which part of it to read.

A volume is read whole only when it is an in-memory numpy array within the memory budget.
A lazily backed array (dask, zarr, memory-mapped file...) or one over the budget is read as a
:class:`Region` (the part in view, shrunk to the budget, :func:`fit_region`) by
:func:`read_region`, which turns any read failure into a one-line :class:`InputReadError`;
:func:`read_parts` reads it in Z slabs, so that a worker can be cancelled between them.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

#: Default memory budget: this fraction of the RAM available when the budget is asked for.
BUDGET_FRACTION = 0.25
#: Environment variable that sets the budget in GB (10**9 bytes), e.g. ``4``.
BUDGET_ENV = "ANYSTAR_MEMORY_BUDGET_GB"
#: RAM assumed when neither psutil nor ``os.sysconf`` can tell (bytes).
FALLBACK_AVAILABLE = 8 * 10**9
#: A region is at least this many voxels along each axis (or the whole axis, if shorter).
MIN_REGION_EDGE = 16
#: :func:`read_parts` reads slabs of at least this many bytes (whole storage chunks along Z).
READ_PART_BYTES = 32 * 10**6

Kind = Literal["memory", "lazy", "over_budget"]
Bounds = tuple[int, int]  # [start, stop) along one axis


def available_memory() -> int:
    """RAM available now, in bytes (psutil if installed, else ``os.sysconf``)."""
    try:
        import psutil
    except ImportError:
        pass
    else:
        return int(psutil.virtual_memory().available)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return FALLBACK_AVAILABLE


def memory_budget(budget_gb: float | None = None) -> int:
    """The memory budget in bytes: ``budget_gb`` if given, else ``$ANYSTAR_MEMORY_BUDGET_GB``,
    else :data:`BUDGET_FRACTION` of the available RAM. Raises ValueError for a bad value."""
    source = "the memory budget"
    if budget_gb is None:
        text = os.environ.get(BUDGET_ENV, "").strip()
        if not text:
            return int(BUDGET_FRACTION * available_memory())
        source = f"{BUDGET_ENV}={text!r}"
        try:
            budget_gb = float(text)
        except ValueError:
            budget_gb = math.nan
    if not (math.isfinite(budget_gb) and budget_gb > 0):
        raise ValueError(f"{source} must be a positive number of GB.")
    return int(budget_gb * 1e9)


def format_bytes(nbytes: float) -> str:
    """``4.3 GB``, ``295 kB``... (powers of 1000, as disks and ``BUDGET_ENV`` count)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= size:
            return f"{nbytes / size:.3g} {unit}"
    return f"{int(nbytes)} bytes"


@dataclass(frozen=True)
class InputSize:
    """What reading (part of) an array would cost, and whether to read it whole."""

    kind: Kind  # memory: an in-memory numpy array within the budget, read as it is
    nbytes: int
    budget: int

    def describe(self, name: str) -> str:
        """``'big' is a lazy 4.3 GB layer`` / ``'big' is 4.3 GB, over the memory budget
        (2 GB)`` (empty for an in-memory array within the budget)."""
        size = format_bytes(self.nbytes)
        if self.kind == "lazy":
            return f"'{name}' is a lazy {size} layer"
        if self.kind == "over_budget":
            return f"'{name}' is {size}, over the memory budget ({format_bytes(self.budget)})"
        return ""


def classify(array: Any, budget: int, shape: Sequence[int] | None = None) -> InputSize:
    """How to read ``shape`` (default: all) of ``array``: over the budget, lazily backed
    (anything but an in-memory numpy array, e.g. dask, zarr, ``np.memmap``) or in memory."""
    shape = tuple(array.shape if shape is None else shape)
    nbytes = math.prod(shape) * np.dtype(getattr(array, "dtype", np.float64)).itemsize
    if nbytes > budget:
        kind: Kind = "over_budget"
    elif isinstance(array, np.ndarray) and not isinstance(array, np.memmap):
        kind = "memory"
    else:
        kind = "lazy"
    return InputSize(kind, nbytes, budget)


@dataclass(frozen=True)
class Region:
    """A box of a (Z, Y, X) volume: ``start`` inclusive, ``stop`` exclusive, per axis."""

    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))

    @property
    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))

    def covers(self, shape: Sequence[int]) -> bool:
        """Is this the whole of a volume of ``shape``?"""
        return self.start == (0, 0, 0) and self.stop == tuple(shape)

    def describe(self) -> str:
        """``z 0-511, y 800-1311, x 900-1411`` (inclusive voxel indices)."""
        return ", ".join(f"{axis} {a}-{b - 1}"
                         for axis, a, b in zip("zyx", self.start, self.stop, strict=True))


def _window(centre: float, length: int, size: int) -> Bounds:
    """``length`` voxels of an axis of ``size`` around ``centre``, kept inside the axis."""
    length = min(length, size)
    start = int(np.clip(round(centre - length / 2), 0, size - length))
    return start, start + length


def fit_region(
    shape: Sequence[int],
    itemsize: int,
    budget: int,
    *,
    view: tuple[Bounds, Bounds] | None = None,
    z: float | None = None,
    min_edge: int = MIN_REGION_EDGE,
) -> Region:
    """The part of a (Z, Y, X) volume to read: the Y/X ``view`` (default all; at least
    ``min_edge`` wide) with all Z slices, or the slab of Z around ``z`` that fits ``budget``
    bytes; when not even ``min_edge`` slices fit, the view shrinks around its centre.

    Raises ValueError when a ``min_edge`` cube does not fit the budget.
    """
    depth, height, width = (int(s) for s in shape)
    view = view or ((0, height), (0, width))
    (y0, y1), (x0, x1) = ((max(0, a), min(size, b)) for (a, b), size
                          in zip(view, (height, width), strict=True))
    if y1 <= y0 or x1 <= x0:
        raise ValueError("The image is not in view: pan or zoom to the part to segment.")
    centre_y, centre_x = (y0 + y1) / 2, (x0 + x1) / 2
    ny, nx = max(y1 - y0, min(min_edge, height)), max(x1 - x0, min(min_edge, width))
    nz = min(depth, budget // (ny * nx * itemsize))
    if nz < min(depth, min_edge):  # not enough slices: narrow the view instead
        nz = min(depth, min_edge)
        factor = math.sqrt(budget / (nz * ny * nx * itemsize))
        ny = max(min(ny, min_edge), math.floor(ny * factor))
        nx = max(min(nx, min_edge), math.floor(nx * factor))
        if nz * ny * nx * itemsize > budget:
            raise ValueError(
                f"The memory budget ({format_bytes(budget)}) is too small for a region of "
                f"{nz} x {ny} x {nx} voxels: raise {BUDGET_ENV}.")
    bounds = (_window(depth / 2 if z is None else z + 0.5, nz, depth),
              _window(centre_y, ny, height), _window(centre_x, nx, width))
    return Region(tuple(a for a, _ in bounds), tuple(b for _, b in bounds))


class InputReadError(ValueError):
    """Reading the input failed (out of memory, I/O, a lazy array's computation): one line."""


def read_region(array: Any, index: tuple, what: str) -> np.ndarray:
    """``array[index]`` read into memory; any failure raises :class:`InputReadError` whose
    one-line message names ``what`` (e.g. ``'big' (z 0-31, y 0-47, x 0-47)``)."""
    try:
        return np.asarray(array[index])
    except Exception as exc:  # MemoryError, OSError, whatever a lazy array's compute raises
        raise _read_error(exc, what) from exc


def _read_error(exc: Exception, what: str) -> InputReadError:
    detail = (str(exc).strip().splitlines() or [""])[0]
    hint = f" Zoom in or lower {BUDGET_ENV} to read less." if isinstance(exc, MemoryError) else ""
    return InputReadError(f"Could not read {what}: {type(exc).__name__}"
                          f"{': ' + detail if detail else ''}.{hint}")


def read_parts(array: Any, index: tuple, what: str,
               part_bytes: int | None = None) -> Generator[tuple[int, int], None, np.ndarray]:
    """:func:`read_region` of a (..., Z, Y, X) ``index`` (leading integers, then three
    slices) in Z slabs of at least ``part_bytes`` (default :data:`READ_PART_BYTES`), each
    made of whole storage chunks along Z (dask, zarr, h5py); yields (slabs read, slabs) after
    each, so that closing the generator between slabs stops the read."""
    z_axis = len(index) - 3
    z0, z1, _ = index[z_axis].indices(int(array.shape[z_axis]))
    plane = math.prod(len(range(*s.indices(int(n))))
                      for s, n in zip(index[-2:], array.shape[-2:], strict=True))
    itemsize = np.dtype(getattr(array, "dtype", np.float64)).itemsize
    depth = max(1, (READ_PART_BYTES if part_bytes is None else part_bytes)
                // max(1, plane * itemsize))
    chunk_edges = _chunk_edges(array, z_axis)
    edges = [z0]
    for cut in range(z0 + depth, z1, depth) if chunk_edges is None else chunk_edges:
        if z0 < cut < z1 and cut - edges[-1] >= depth:
            edges.append(cut)
    edges.append(z1)
    out: np.ndarray | None = None
    for done, (a, b) in enumerate(itertools.pairwise(edges), start=1):
        part = read_region(array, (*index[:z_axis], slice(a, b), *index[-2:]), what)
        if out is None:
            try:
                out = np.empty((z1 - z0, *part.shape[1:]), part.dtype)
            except MemoryError as exc:
                raise _read_error(exc, what) from exc
        out[a - z0 : b - z0] = part
        yield done, len(edges) - 1
    return out


def _chunk_edges(array: Any, axis: int) -> list[int] | None:
    """Where ``array``'s storage chunks start along ``axis``, but 0 (None: not chunked)."""
    chunks = getattr(array, "chunks", None)
    try:
        along = chunks[axis]  # dask: the chunk lengths; zarr, h5py: one length
    except (TypeError, IndexError, KeyError):
        return None
    if isinstance(along, (int, np.integer)):
        return list(range(int(along), int(array.shape[axis]), int(along))) if along > 0 else []
    return [int(e) for e in np.cumsum(along)[:-1]]

