"""napari reader for NIfTI files (.nii, .nii.gz) and zarr stores (.zarr folders).

napari-free: readers return LayerData tuples ``(data, kwargs, layer_type)``, plain tuples.

NIfTI voxel axes (i, j, k[, t, ...]) are reversed to napari's order (ZYX, TZYX for 4D), the
voxel sizes (``header.get_zooms()``) become the layer's ``scale`` and the affine's origin its
``translate`` when the affine has no rotation or flip. A volume larger than the memory budget
(:func:`~napari_anystar.model.input_budget.memory_budget`) stays on disk as a dask array read
through nibabel's array proxy, one slice per chunk. A NIfTI whose intent is "label" opens as
labels, any other as an image.

A zarr store is always opened lazily (``dask.array.from_zarr``). It follows the attribute
the block-wise writer puts on its labels (:data:`~napari_anystar.model.block_io.ATTRIBUTE`),
on an array (in a group, the arrays that carry it are read, or every array if none does)::

    {"anystar": {"kind": "labels" | "image", "voxel_size": [z, y, x], "name": "...", ...}}

All keys are optional; others (the writer's run settings, whose ``scale`` is the model's
rescaling, not a voxel size) are ignored. Without ``kind``, bool and integer dtypes of 32 bits
or more are labels and everything else (float, uint8/uint16 microscope data) is an image. A
``voxel_size`` shorter than the array's rank applies to its trailing axes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_anystar.model.block_io import ATTRIBUTE

__all__ = ["LayerData", "get_reader", "open_nifti", "read_paths"]

LayerData = tuple[Any, dict[str, Any], str]
ReaderFunction = Callable[[Any], list[LayerData]]

_NIFTI_SUFFIXES = (".nii", ".nii.gz")
_ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")  # zarr v2 array/group, zarr v3 node
_LAYER_TYPES = ("labels", "image")


def get_reader(path: str | Sequence[str]) -> ReaderFunction | None:
    """:func:`read_paths` if every path is a NIfTI file name or a zarr store folder, else None."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    if paths and all(_kind(p) for p in paths):
        return read_paths
    return None


def read_paths(path: str | Sequence[str]) -> list[LayerData]:
    """The layers stored in ``path`` (one path or several)."""
    paths = [path] if isinstance(path, str | Path) else list(path)
    layers: list[LayerData] = []
    for p in paths:
        layers.extend(_read_nifti(Path(p)) if _kind(p) == "nifti" else _read_zarr(Path(p)))
    return layers


def _kind(path: str | Path) -> str | None:
    name = str(path).rstrip("/\\").lower()
    if name.endswith(_NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(".zarr") and any((Path(path) / m).is_file() for m in _ZARR_MARKERS):
        return "zarr"
    return None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (*_NIFTI_SUFFIXES, ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


# --- NIfTI -----------------------------------------------------------------------------


class _ProxyArray:
    """A nibabel array proxy with the dtype its reads really have (scaling makes floats)."""

    def __init__(self, proxy: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self._proxy, self.shape, self.dtype, self.ndim = proxy, shape, dtype, len(shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        return np.asarray(self._proxy[key], dtype=self.dtype)


def open_nifti(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """(array, layer kwargs) of a NIfTI file: ZYX (TZYX...) array, numpy when it fits the
    memory budget and dask otherwise, with ``name``, ``scale``, ``translate`` (when the affine
    has no rotation or flip) and ``metadata["nifti_intent"]``. ValueError, naming the file,
    when it cannot be read."""
    import nibabel as nib

    from napari_anystar.model.input_budget import memory_budget

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    budget = memory_budget()
    try:
        img = nib.load(str(path))
        shape = tuple(int(n) for n in img.shape)
        while len(shape) > 3 and shape[-1] == 1:  # a one-frame 4D file is a volume
            shape = shape[:-1]
        proxy = img.dataobj.reshape(shape)
        dtype = np.asarray(proxy[(0,) * len(shape)]).dtype  # scaled data may be float
        if int(np.prod(shape)) * dtype.itemsize <= budget:
            data: Any = np.asarray(proxy, dtype=dtype).T
        else:
            import dask.array as da

            chunks = (*shape[:2], *((1,) * (len(shape) - 2)))  # one NIfTI slice per chunk
            data = da.from_array(_ProxyArray(proxy, shape, dtype), chunks=chunks).T
        # str() of the stored float32 gives the written decimal (0.7, not 0.699999988).
        zooms = [float(str(np.float32(z))) for z in img.header.get_zooms()[: len(shape)]]
        affine = np.asarray(img.affine, dtype=float)
        intent = str(img.header.get_intent()[0])
    except Exception as err:  # nibabel, gzip and numpy raise many types for a damaged file
        raise ValueError(f"{path.name}: not a readable NIfTI file ({err})") from None
    spatial = min(len(shape), 3)
    scale = [z if np.isfinite(z) and z > 0 and i < 3 else 1.0 for i, z in enumerate(zooms)]
    kwargs: dict[str, Any] = {"name": _stem(path), "scale": tuple(scale[::-1])}
    linear = affine[:spatial, :spatial]
    if np.allclose(linear, np.diag(np.diag(linear))) and np.all(np.diag(linear) > 0):
        origin = [float(t) for t in affine[:spatial, 3][::-1]]
        kwargs["translate"] = tuple([0.0] * (len(shape) - spatial) + origin)
    kwargs["metadata"] = {"nifti_intent": intent}
    return data, kwargs


def _read_nifti(path: Path) -> list[LayerData]:
    data, kwargs = open_nifti(path)
    layer_type = "labels" if kwargs["metadata"]["nifti_intent"] == "label" else "image"
    return [(data, kwargs, layer_type)]


# --- zarr ------------------------------------------------------------------------------


def _read_zarr(path: Path) -> list[LayerData]:
    import dask.array as da
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises many types for a damaged store
        raise ValueError(f"{path.name}: not a readable zarr store ({err})") from None
    if isinstance(node, zarr.Array):
        arrays = [(_stem(path), node)]
    else:
        members = sorted(node.arrays(), key=lambda item: item[0])
        marked = [m for m in members if ATTRIBUTE in m[1].attrs]
        arrays = [(f"{_stem(path)}/{key}", arr) for key, arr in (marked or members)]
        if not arrays:
            raise ValueError(f"{path.name}: the zarr group holds no arrays")
    return [_zarr_layer(path, name, arr, da.from_zarr(arr)) for name, arr in arrays]


def _zarr_layer(path: Path, name: str, array: Any, data: Any) -> LayerData:
    """One lazy layer from a zarr array and its ``anystar`` attributes."""
    attrs = dict(array.attrs.get(ATTRIBUTE) or {})
    dtype = np.dtype(array.dtype)
    label_like = dtype.kind == "b" or (dtype.kind in "iu" and dtype.itemsize >= 4)
    default = "labels" if label_like else "image"
    layer_type = str(attrs.get("kind", default))
    if layer_type not in _LAYER_TYPES:
        raise ValueError(
            f"{path.name}: {ATTRIBUTE}.kind is {layer_type!r}, not one of {_LAYER_TYPES}"
        )
    kwargs: dict[str, Any] = {"name": str(attrs.get("name", name))}
    if "voxel_size" in attrs:
        scale = [float(s) for s in attrs["voxel_size"]]
        if len(scale) > data.ndim or not all(np.isfinite(s) and s > 0 for s in scale):
            raise ValueError(
                f"{path.name}: {ATTRIBUTE}.voxel_size {scale} does not fit a {data.ndim}-D array"
            )
        kwargs["scale"] = tuple([1.0] * (data.ndim - len(scale)) + scale)
    return data, kwargs, layer_type
