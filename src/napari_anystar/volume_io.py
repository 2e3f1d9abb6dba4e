"""Reading image volumes and writing label volumes (.tif/.tiff and .nii/.nii.gz).

Axis convention: every array this module hands out or takes is in **ZYX** order (slowest
axis first), like TIFF stacks and napari. NIfTI stores voxel axes (i, j, k), usually X, Y, Z
with k the slice axis, so a NIfTI array is returned transposed to (k, j, i) and transposed
back when written. A label volume written "like" a NIfTI input therefore has exactly the
input file's shape, affine (qform/sform and their codes) and units. Trailing singleton NIfTI
axes (e.g. a one-frame 4D file) are dropped. TIFF files are read as stored.

Writes are atomic (temporary file in the target folder, then ``os.replace``) and never
replace an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SUPPORTED_SUFFIXES",
    "VolumeMeta",
    "read_volume",
    "split_suffix",
    "volume_format",
    "write_labels",
]

SUPPORTED_SUFFIXES = (".tif", ".tiff", ".nii", ".nii.gz")
# tifffile logs each defect of a damaged file; without a handler, Python's last-resort one
# would print them next to our one-line message (a configured logging setup still gets them).
logging.getLogger("tifffile").addHandler(logging.NullHandler())
_FORMATS = {".tif": "tiff", ".tiff": "tiff", ".nii": "nifti", ".nii.gz": "nifti"}


@dataclass(frozen=True, eq=False)
class VolumeMeta:
    """What a written label volume must keep from the image it was computed from."""

    path: Path
    format: str  # "tiff" | "nifti"
    shape: tuple[int, ...]  # shape of the array read_volume returned (ZYX)
    voxel_size: tuple[float, float, float] | None = None  # ZYX, None when unknown
    affine: np.ndarray | None = None  # NIfTI voxel (i, j, k) -> world; None for TIFF
    header: Any = None  # the NIfTI header (units, qform/sform codes); None for TIFF


def split_suffix(path: str | Path) -> tuple[str, str]:
    """(stem, suffix) with ``.nii.gz`` as one suffix: ``a/b.nii.gz`` -> ("b", ".nii.gz")."""
    name = Path(path).name
    if name.lower().endswith(".nii.gz"):
        return name[: -len(".nii.gz")], name[-len(".nii.gz") :]
    return Path(name).stem, Path(name).suffix


def volume_format(path: str | Path) -> str:
    """The format of ``path``, "tiff" or "nifti", from its name; ValueError otherwise."""
    suffix = split_suffix(path)[1].lower()
    if suffix not in _FORMATS:
        supported = ", ".join(SUPPORTED_SUFFIXES)
        raise ValueError(f"{Path(path).name}: unsupported file type (use {supported})")
    return _FORMATS[suffix]


def read_volume(path: str | Path) -> tuple[np.ndarray, VolumeMeta]:
    """The volume stored in ``path`` (ZYX array, dtype as stored) and its metadata."""
    path = Path(path)
    fmt = volume_format(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    if fmt == "tiff":
        return _read_tiff(path)
    return _read_nifti(path)


def _read_tiff(path: Path) -> tuple[np.ndarray, VolumeMeta]:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        data = tif.asarray() if len(tif.pages) else np.empty(0)
        if data.size == 0:
            raise ValueError("no image data in the file (is it corrupt or truncated?)")
        voxel_size = _tiff_voxel_size(tif) if data.ndim == 3 else None
    return data, VolumeMeta(path, "tiff", data.shape, voxel_size=voxel_size)


def _tiff_voxel_size(tif: Any) -> tuple[float, float, float] | None:
    """(z, y, x) voxel size from ImageJ metadata, if the file has it."""
    meta = tif.imagej_metadata
    if not meta:
        return None
    tags = tif.pages[0].tags
    try:
        x_num, x_den = tags["XResolution"].value
        y_num, y_den = tags["YResolution"].value
        return (float(meta.get("spacing", 1.0)), y_den / y_num, x_den / x_num)
    except (KeyError, ZeroDivisionError, TypeError, ValueError):
        return None


def _read_nifti(path: Path) -> tuple[np.ndarray, VolumeMeta]:
    import nibabel as nib

    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    array = np.ascontiguousarray(data.T)  # (i, j, k) -> (k, j, i), i.e. ZYX
    meta = VolumeMeta(
        path,
        "nifti",
        array.shape,
        voxel_size=zooms[::-1] if len(zooms) == 3 else None,
        affine=np.array(img.affine, dtype=float),
        header=img.header.copy(),
    )
    return array, meta


def check_writable(folder: str | Path) -> None:
    """ValueError unless files can be written in ``folder`` (created later if missing).

    The folder, or for a missing one the nearest existing folder above it, is tested by
    creating and removing a temporary file in it (this also catches read-only file systems,
    where permission bits say nothing for root).
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot write to {folder}: {existing} is not a folder")
    try:
        fd, tmp = tempfile.mkstemp(dir=existing, prefix=".anystar-write-check-")
    except OSError as err:
        reason = err.strerror or str(err)
        if existing != folder:
            raise ValueError(f"cannot create {folder}: {existing} is not writable "
                             f"({reason})") from None
        raise ValueError(f"cannot write to {folder}: {reason}") from None
    os.close(fd)
    os.remove(tmp)


def write_labels(
    path: str | Path, labels: np.ndarray, like: VolumeMeta, overwrite: bool = False
) -> None:
    """Write an integer ZYX label volume computed from the image ``like`` describes.

    The format follows ``path``'s suffix: TIFF, or NIfTI with the image's affine (a TIFF
    image's voxel size becomes a diagonal affine). FileExistsError if ``path`` exists and
    ``overwrite`` is False; ValueError if ``labels`` is not integer or has the wrong shape.
    """
    path = Path(path)
    fmt = volume_format(path)
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"labels must be an integer array, not {labels.dtype}")
    if labels.shape != tuple(like.shape):
        raise ValueError(f"labels have shape {labels.shape}, the image {tuple(like.shape)}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists (allow overwriting to replace it)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"folder {path.parent} does not exist")
    suffix = split_suffix(path)[1]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        if fmt == "tiff":
            import tifffile

            tifffile.imwrite(
                tmp, labels, photometric="minisblack", compression="zlib", metadata={"axes": "ZYX"}
            )
        else:
            import nibabel as nib

            nib.save(_nifti_image(labels, like), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _nifti_image(labels: np.ndarray, like: VolumeMeta) -> Any:
    import nibabel as nib

    data = labels.astype(np.uint8) if labels.dtype == bool else labels
    data = data.T  # ZYX -> (i, j, k)
    if like.header is None:
        sizes = like.voxel_size or (1.0, 1.0, 1.0)
        image = nib.Nifti1Image(data, np.diag([*sizes[::-1], 1.0]))
    else:
        header = nib.Nifti1Header.from_header(like.header)
        header.set_data_dtype(data.dtype)
        header.set_slope_inter(1.0, 0.0)
        header["cal_min"], header["cal_max"] = 0, 0
        # affine=None keeps the input's qform/sform (and their codes) as they are.
        image = nib.Nifti1Image(data, None, header=header)
    image.header.set_intent("label")  # readers (ours in napari) open it as labels
    return image
