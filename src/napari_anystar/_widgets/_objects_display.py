"""Show only the kept objects of a labels layer by swapping its colormap (data never touched).

Filtered-out labels get a transparent colour, kept labels the colours the layer's own colormap
gave them; the original colormap object is put back by :meth:`FilterDisplay.restore` (filters
cleared, another layer chosen, widget closed). For ids up to :data:`LUT_MAX_ID` the swap is a
lookup table (a ``CyclicLabelColormap`` with one colour per id, so napari's cheap modulo
mapping applies: ~5x faster than a ``DirectLabelColormap`` on a 3D view); larger ids use a
``DirectLabelColormap``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
from napari.utils.colormaps import CyclicLabelColormap, DirectLabelColormap

_TRANSPARENT = np.zeros(4, dtype=np.float32)
#: Largest label id shown through a lookup table (napari's uint16 label textures).
LUT_MAX_ID = 65534


def filter_colormap(original: Any, ids: np.ndarray, keep: np.ndarray) -> Any:
    """A label colormap showing ``ids[keep]`` in ``original``'s colours, all else transparent."""
    ids = np.asarray(ids, dtype=np.int64)
    kept = ids[np.asarray(keep, dtype=bool)]
    colors = np.asarray(original.map(kept), dtype=np.float32).reshape(-1, 4)
    if ids.size and int(ids.max()) <= LUT_MAX_ID:
        lut = np.zeros((int(ids.max()) + 1, 4), dtype=np.float32)
        lut[kept] = colors
        return CyclicLabelColormap(colors=lut, background_value=0)
    color_dict: dict[int | None, np.ndarray] = {None: _TRANSPARENT, 0: _TRANSPARENT}
    color_dict.update(zip(kept.tolist(), colors, strict=True))
    return DirectLabelColormap(color_dict=color_dict)


class FilterDisplay:
    """Owns the colormap swap of at most one labels layer at a time."""

    def __init__(self) -> None:
        self.layer: Any = None
        self.original: Any = None  # the layer's colormap before the first filter

    @property
    def active(self) -> bool:
        return self.layer is not None

    def show(self, layer: Any, ids: np.ndarray, keep: np.ndarray) -> None:
        """Show on ``layer`` only the labels ``ids[keep]``; every object kept: restore."""
        if self.layer is not None and self.layer is not layer:
            self.restore()
        if bool(np.all(keep)):
            self.restore()
            return
        if self.layer is None:
            self.layer, self.original = layer, layer.colormap
        layer.colormap = filter_colormap(self.original, ids, keep)

    def restore(self) -> None:
        """Give the layer its original colormap back (no-op when nothing is filtered)."""
        layer, original = self.layer, self.original
        self.layer = self.original = None
        if layer is not None:
            layer.colormap = original


def warm_up(dtype: np.dtype) -> None:
    """Compile napari's label-to-texture mappings for ``dtype`` ahead of the first filter
    (napari JIT-compiles them on first use: ~1 s). Safe to call from a worker thread."""
    colors = CyclicLabelColormap(colors=np.ones((2, 4)))
    for top in (300, LUT_MAX_ID + 1):  # a lookup table (uint16 texture), then a direct map
        ids = np.array([1, top])
        cmap = filter_colormap(colors, ids, np.array([True, False]))
        with contextlib.suppress(Exception):  # an optimisation only; napari's private API
            cmap._data_to_texture(np.zeros(4, dtype=dtype))
