"""What a run validates on, so that validation loss and tuned thresholds are not training data.

With two or more real image/labels pairs a share of them (``val_fraction``) is held out. With
one pair and no synthetic data, a slab at the end of one axis of its volume is held out
(:func:`holdout_slab`) and training uses only the rest. With synthetic data, held-out
synthetic samples validate. :attr:`ValidationSplit.text` says which (``training.json``
``data.validation``, the Fine-tune widget).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_anystar.train.recipe import Recipe

#: Share of an axis held out as the validation slab of a single image/labels pair.
HOLDOUT_FRACTION = 0.2
#: A slab widened to a whole training patch may take at most this share of its axis.
HOLDOUT_MAX_FRACTION = 0.5
AXIS_NAMES = ("Z", "Y", "X")


@dataclass(frozen=True)
class Slab:
    """The last planes ``start..stop-1`` of axis ``axis`` (length ``length``) of a volume."""

    axis: int
    start: int
    stop: int
    length: int

    def cut(self, array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rest, slab)`` of ``array``: the part trained on and the held-out part."""
        before = (slice(None),) * self.axis
        return array[(*before, slice(0, self.start))], array[(*before, slice(self.start, None))]

    def describe(self) -> str:
        axis = AXIS_NAMES[self.axis]
        return (f"the last {self.stop - self.start} of {self.length} {axis} planes "
                f"({axis} {self.start}-{self.stop - 1})")

    def to_dict(self) -> dict:
        return {"axis": AXIS_NAMES[self.axis], "start": self.start, "stop": self.stop}


def holdout_slab(labels: np.ndarray, patch: int) -> Slab | None:
    """The slab held out of a single pair's volume; None if none leaves objects on both sides.

    The last :data:`HOLDOUT_FRACTION` of Z, widened to ``patch`` planes where that takes at most
    :data:`HOLDOUT_MAX_FRACTION` of the axis; else the same on the largest axis; else the last
    :data:`HOLDOUT_FRACTION` of the largest axis (validation patches are then padded).
    """
    shape = labels.shape
    largest = int(np.argmax(shape))
    candidates = []
    for axis in dict.fromkeys((0, largest)):
        thick = max(math.ceil(HOLDOUT_FRACTION * shape[axis]), patch)
        if thick <= HOLDOUT_MAX_FRACTION * shape[axis]:
            candidates.append((axis, thick))
    candidates.append((largest, math.ceil(HOLDOUT_FRACTION * shape[largest])))
    for axis, thick in candidates:
        n = shape[axis]
        slab = Slab(axis, n - thick, n, n)
        rest, held = slab.cut(labels)
        if (rest > 0).any() and (held > 0).any():
            return slab
    return None


@dataclass(frozen=True)
class ValidationSplit:
    """Real pairs trained on and validated on; with ``slab``, pair 0 is split by it."""

    train: tuple[int, ...]
    val: tuple[int, ...]
    slab: Slab | None
    text: str

    def pairs(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[list, list]:
        """``(training pairs, validation pairs)`` of the loaded (image, labels) pairs."""
        if self.slab is not None:
            (image, labels), = pairs
            (x, x_val), (y, y_val) = self.slab.cut(image), self.slab.cut(labels)
            return [(x, y)], [(x_val, y_val)]
        return [pairs[k] for k in self.train], [pairs[k] for k in self.val]

    def role(self, index: int) -> str:
        """What pair ``index`` is used for ("train", "val" or "train + held-out slab")."""
        if self.slab is not None:
            return "train + held-out slab"
        return "val" if index in self.val and index not in self.train else "train"


def split_validation(labels: Sequence[np.ndarray], recipe: Recipe) -> ValidationSplit:
    """How a run with these real label volumes (maybe none) and ``recipe`` validates."""
    n = len(labels)
    synthetic = recipe.generator is not None and recipe.synthetic_fraction > 0
    if n >= 2 and recipe.val_fraction > 0:
        n_val = max(1, round(n * recipe.val_fraction))
        order = np.random.default_rng([recipe.seed, 11]).permutation(n).tolist()
        text = f"{n_val} held-out image/labels pair(s) of {n}"
        text += " and held-out synthetic samples" if synthetic else ""
        return ValidationSplit(tuple(sorted(order[n_val:])), tuple(sorted(order[:n_val])),
                               None, text)
    if synthetic:
        return ValidationSplit(tuple(range(n)), (), None, "held-out synthetic samples")
    slab = holdout_slab(labels[0], recipe.patch_size) if n == 1 else None
    if slab is not None:
        text = (f"a held-out slab of the image/labels pair: {slab.describe()}, "
                f"{(slab.stop - slab.start) / slab.length:.0%} of the volume; training uses "
                "the rest")
        return ValidationSplit((0,), (0,), slab, text)
    why = "no slab of it holds objects on both sides" if n == 1 else "validation fraction 0"
    return ValidationSplit(tuple(range(n)), tuple(range(n)), None,
                           f"the training data itself ({why}): validation loss and thresholds "
                           "are not independent of it")
