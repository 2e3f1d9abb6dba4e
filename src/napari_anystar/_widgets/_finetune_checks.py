"""Qt-free checks of the Fine-tune widget's inputs: layer pairs and the output model name."""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def check_pair(image: Any, labels: Any, image_name: str, labels_name: str) -> None:
    """Raise ValueError (one line, names the layers) unless image/labels suit training."""
    for data, name in ((image, image_name), (labels, labels_name)):
        if data.ndim != 3:
            raise ValueError(
                f"Layer '{name}' is {data.ndim}D; fine-tuning needs 3D volumes (z, y, x)."
            )
    if image.shape != labels.shape:
        raise ValueError(
            f"Image '{image_name}' has shape {tuple(image.shape)} but labels '{labels_name}' "
            f"has shape {tuple(labels.shape)}; they must match voxel for voxel."
        )
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
        raise ValueError(f"Image '{image_name}' must hold real numbers, not {image.dtype}.")
    if not np.isfinite(image).all():
        raise ValueError(f"Image '{image_name}' contains NaN or infinite values.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"Labels '{labels_name}' must hold integer ids, not {labels.dtype}.")
    lo, hi = labels.min(), labels.max()
    if lo < 0:
        raise ValueError(f"Labels '{labels_name}' contain negative ids; use 0 for background.")
    if hi == 0:
        raise ValueError(f"Labels '{labels_name}' have no objects (every voxel is 0).")
    if lo == hi:
        raise ValueError(
            f"Labels '{labels_name}' have the same value ({hi}) everywhere; mark each object "
            "with its own id and the background with 0."
        )
    if hi == 1:
        n_parts = ndimage.label(labels > 0)[1]
        if n_parts > 1:
            raise ValueError(
                f"Labels '{labels_name}' look like a binary mask (0/1) with {n_parts} separate "
                "objects; give each object its own id (instance labels)."
            )


def snapshot_pairs(pairs: Iterable[tuple[Any, Any]]) -> tuple[list, list]:
    """Checked copies ``(images, labels)`` of (image layer, labels layer) pairs.

    Raises ValueError with a one-line message for a layer unfit for training.
    """
    images, labels = [], []
    for image_layer, labels_layer in pairs:
        if image_layer.multiscale or labels_layer.multiscale:
            raise ValueError("Multiscale layers cannot be used for fine-tuning.")
        if image_layer.rgb:
            raise ValueError(f"Image '{image_layer.name}' is RGB; use a single channel.")
        image = np.array(image_layer.data, copy=True)
        label = np.array(labels_layer.data, copy=True)
        check_pair(image, label, image_layer.name, labels_layer.name)
        images.append(image)
        labels.append(label)
    return images, labels


def default_output_name(base: str, folder: Path, today: _dt.date | None = None) -> str:
    """``finetuned-<base>-<yyyymmdd>``, with ``-2``, ``-3``... appended if that folder exists."""
    stem = f"finetuned-{base}-{(today or _dt.date.today()):%Y%m%d}"
    name, n = stem, 1
    while (folder / name).exists():
        n += 1
        name = f"{stem}-{n}"
    return name


def output_dir(name: str, folder: Path) -> Path:
    """``folder / name``; ValueError unless ``name`` is a valid, unused model folder name."""
    if not _NAME_RE.match(name):
        raise ValueError(
            "Output name must start with a letter or digit and use only letters, digits, "
            "'.', '_' and '-'."
        )
    out_dir = folder / name
    if out_dir.exists():
        raise ValueError(f"A model named '{name}' already exists in {out_dir.parent}; "
                         "choose another output name.")
    return out_dir
