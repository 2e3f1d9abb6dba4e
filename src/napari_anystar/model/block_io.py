"""Inputs and outputs of block-wise segmentation: volumes read part by part, labels written
block by block to a zarr store, and the record of finished blocks that a resumed run reads.

:func:`open_source` opens a ``.zarr`` store, a TIFF (memory-mapped when its data are stored
contiguously, else through tifffile's zarr view) or a NIfTI file (nibabel's array proxy,
transposed to ZYX) without reading it whole. Any array-like with ``shape``, ``dtype`` and
slicing (numpy, dask, zarr) is a source too.

The output is a zarr array (int32 labels, one chunk per block core) whose ``anystar``
attribute says what wrote it. The run's state lives beside the chunks in ``.anystar-run/``:
``run.json`` (what the run computes: a resumed run must match it), ``state.json`` (blocks
predicted with their object counts, blocks written; replaced atomically after each block)
and ``objects/<block>.npz`` (each predicted block's objects). It is removed when the run
completes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .blocks import BlockObjects

#: File name endings :func:`open_source` reads.
SOURCE_SUFFIXES = (".zarr", ".tif", ".tiff", ".nii", ".nii.gz")
STATE_DIR = ".anystar-run"
ATTRIBUTE = "anystar"


class Transposed:
    """A read-only ZYX view of an (X, Y, Z[, 1...]) array-like (a NIfTI proxy)."""

    def __init__(self, data: Any) -> None:
        self._data = data
        self._extra = (0,) * (len(data.shape) - 3)
        self.shape = tuple(int(s) for s in data.shape[:3][::-1])
        self.dtype = np.dtype(getattr(data, "dtype", np.float32))
        self.ndim = 3

    def __getitem__(self, box: tuple[slice, slice, slice]) -> np.ndarray:
        return np.asarray(self._data[(*box[::-1], *self._extra)]).T


def open_source(path: str | Path) -> Any:
    """The volume in ``path`` as a lazily read array-like; ValueError (one line) otherwise."""
    path = Path(path)
    name = path.name.lower()
    if not name.endswith(SOURCE_SUFFIXES):
        raise ValueError(f"{path.name}: unsupported file type (use {', '.join(SOURCE_SUFFIXES)})")
    if not path.exists():
        raise ValueError(f"input {path} does not exist")
    if name.endswith(".zarr"):
        return _open_zarr(path)
    if name.endswith((".tif", ".tiff")):
        import tifffile

        try:
            return tifffile.memmap(path, mode="r")
        except ValueError:  # compressed or scattered data: read through tifffile's zarr view
            import zarr

            return zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    import nibabel as nib

    image = nib.load(str(path))
    if len(image.shape) < 3 or any(s != 1 for s in image.shape[3:]):
        raise ValueError(f"{path.name}: expected a 3D volume, got shape {image.shape}")
    return Transposed(image.dataobj)


def voxel_size(path: str | Path) -> list[float] | None:
    """The (Z, Y, X) voxel size a volume file records (NIfTI zooms, ImageJ TIFF metadata, a
    zarr array's ``anystar`` attribute), or None."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith(".zarr"):
            size = dict(_open_zarr(path).attrs.get(ATTRIBUTE) or {}).get("voxel_size")
        elif name.endswith((".tif", ".tiff")):
            import tifffile

            from napari_anystar.volume_io import _tiff_voxel_size

            with tifffile.TiffFile(path) as tif:
                size = _tiff_voxel_size(tif)
        else:
            import nibabel as nib

            size = tuple(nib.load(str(path)).header.get_zooms()[:3])[::-1]
        return None if size is None else [float(s) for s in size]
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _open_zarr(path: Path) -> Any:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:
        raise ValueError(f"cannot open {path} as zarr: {str(err).splitlines()[0]}") from None
    if hasattr(node, "array_keys"):  # a group: take its only array
        keys = sorted(node.array_keys())
        if len(keys) != 1:
            found = ", ".join(keys) or "none"
            raise ValueError(f"{path} is a zarr group with {len(keys)} arrays ({found}); "
                             "give the path of one array")
        node = node[keys[0]]
    return node


def read_box(source: Any, box: tuple[slice, ...]) -> np.ndarray:
    """``source[box]`` as a numpy array (a dask source is computed in this process)."""
    part = source[box]
    if hasattr(part, "compute"):
        part = part.compute(scheduler="sync")
    return np.asarray(part)


# ------------------------------------------------------------------------ output store
def _write_atomic(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class RunStore:
    """The output zarr array of a block-wise run and its resumable state."""

    def __init__(self, path: Path, array: Any) -> None:
        self.path = path
        self.array = array
        self.state_dir = path / STATE_DIR
        #: block -> (number of objects, how many reach past its neighbours)
        self.predicted: dict[int, tuple[int, int]] = {}
        self.written: set[int] = set()

    @classmethod
    def open(cls, path: str | Path, shape: tuple[int, ...], chunks: tuple[int, ...],
             signature: dict[str, Any]) -> RunStore:
        """Resume the interrupted run at ``path`` if its ``run.json`` equals ``signature``,
        else start one (``path`` must not exist). ValueError (one line) otherwise."""
        import zarr

        path = Path(path)
        run_file = path / STATE_DIR / "run.json"
        if path.exists():
            if not run_file.is_file():
                raise ValueError(f"{path} already exists and holds no interrupted run")
            try:
                recorded = json.loads(run_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                recorded = None
            if recorded != json.loads(json.dumps(signature)):
                raise ValueError(f"{path} holds an interrupted run with other settings or "
                                 "another input; remove it to start over")
            store = cls(path, zarr.open_array(str(path), mode="r+"))
            store._load_state()
            return store
        array = zarr.open_array(str(path), mode="w-", shape=tuple(shape), chunks=tuple(chunks),
                                dtype="int32", fill_value=0)
        array.attrs[ATTRIBUTE] = {"kind": "labels", "complete": False}
        store = cls(path, array)
        (store.state_dir / "objects").mkdir(parents=True)
        _write_atomic(run_file, lambda tmp: Path(tmp).write_text(json.dumps(signature, indent=1),
                                                                 encoding="utf-8"))
        store._save_state()
        return store

    def _load_state(self) -> None:
        data = json.loads((self.state_dir / "state.json").read_text(encoding="utf-8"))
        self.predicted = {int(b): (int(n), int(c)) for b, n, c in data["predicted"]}
        self.written = {int(b) for b in data["written"]}

    def _save_state(self) -> None:
        text = json.dumps({"predicted": [[b, *v] for b, v in sorted(self.predicted.items())],
                           "written": sorted(self.written)})
        _write_atomic(self.state_dir / "state.json",
                      lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def _objects_file(self, block: int) -> Path:
        return self.state_dir / "objects" / f"{block}.npz"

    def save_objects(self, block: int, objs: BlockObjects, clipped: int) -> None:
        """Keep a predicted block's objects, then record it as predicted."""
        def write(tmp: str) -> None:
            with open(tmp, "wb") as handle:
                np.savez(handle, points=objs.points, dist=objs.dist, prob=objs.prob)

        _write_atomic(self._objects_file(block), write)
        self.predicted[block] = (len(objs), int(clipped))
        self._save_state()

    def load_objects(self, block: int) -> BlockObjects:
        with np.load(self._objects_file(block)) as data:
            return BlockObjects(data["points"], data["dist"], data["prob"])

    def write_labels(self, block: int, box: tuple[slice, ...], labels: np.ndarray) -> None:
        """Write a block's core (whole chunks), then record it as written."""
        self.array[box] = labels
        self.written.add(block)
        self._save_state()

    def complete(self, attributes: dict[str, Any]) -> None:
        """Mark the labels complete (``attributes`` in the ``anystar`` attribute) and remove
        the run's state."""
        self.array.attrs[ATTRIBUTE] = {"kind": "labels", "complete": True, **attributes}
        shutil.rmtree(self.state_dir)
