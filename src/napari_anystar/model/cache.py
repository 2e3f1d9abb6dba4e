"""Bounded cache of network outputs, so threshold changes never re-run the network."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from typing import NamedTuple

import numpy as np

from napari_anystar.normalization import Normalization

from .instances import InstanceSolver
from .predict import NetworkOutput, PredictSettings


class CacheKey(NamedTuple):
    data: str
    model: str
    scale: tuple[float, float, float] | None
    norm: Normalization | None
    n_tiles: tuple[int, int, int] | None
    invert: bool = False


def data_fingerprint(image: np.ndarray) -> str:
    """Content hash of an array (shape, dtype and bytes)."""
    a = np.ascontiguousarray(image)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr((a.shape, a.dtype.str)).encode())
    h.update(memoryview(a).cast("B"))
    return h.hexdigest()


def make_key(data_fp: str, model_fp: str, settings: PredictSettings) -> CacheKey:
    """Cache key of a prediction: what changes the network output (not the device).

    Give ``settings`` with ``norm`` set (``PredictSettings.for_model``): None is the model's own.
    """
    return CacheKey(
        data_fp, model_fp,
        None if settings.scale is None else tuple(float(s) for s in settings.scale),
        settings.norm,
        None if settings.n_tiles is None else tuple(int(t) for t in settings.n_tiles),
        bool(settings.invert))


def _nbytes(output: NetworkOutput) -> int:
    return sum(a.nbytes for a in (output.points, output.cand_prob, output.cand_dist, output.prob))


class PredictionCache:
    """LRU cache ``CacheKey -> (NetworkOutput, InstanceSolver)``, bounded in entries and bytes."""

    def __init__(self, max_entries: int = 3, max_bytes: int = 2 * 1024**3) -> None:
        if max_entries < 1:
            raise ValueError("The prediction cache needs room for at least one entry.")
        self.max_entries = int(max_entries)
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[CacheKey, tuple[NetworkOutput, InstanceSolver]] = OrderedDict()
        #: Scales the *auto* policy chose, by (data, model, normalisation, thresholds): a
        #: repeated Run on the same volume skips the Suggest rounds (small values, unbounded
        #: in bytes but one per volume and setting).
        self.auto_scales: dict[tuple, object] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey) -> tuple[NetworkOutput, InstanceSolver] | None:
        """The cached pair for ``key`` (marks it most recently used), or None."""
        item = self._items.get(key)
        if item is None:
            self.misses += 1
            return None
        self.hits += 1
        self._items.move_to_end(key)
        return item

    def peek(self, key: CacheKey) -> tuple[NetworkOutput, InstanceSolver] | None:
        """The cached pair for ``key`` or None, without counting or reordering."""
        return self._items.get(key)

    def put(self, key: CacheKey, output: NetworkOutput, solver: InstanceSolver) -> None:
        """Store a pair; evicts least recently used entries beyond the bounds (keeps the new)."""
        self._items[key] = (output, solver)
        self._items.move_to_end(key)
        while len(self._items) > 1 and (len(self._items) > self.max_entries
                                        or self.nbytes > self.max_bytes):
            self._items.popitem(last=False)

    @property
    def nbytes(self) -> int:
        return sum(_nbytes(out) for out, _ in self._items.values())

    def keys(self) -> list[CacheKey]:
        return list(self._items)

    def clear(self) -> None:
        self._items.clear()

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)
