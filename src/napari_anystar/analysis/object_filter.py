"""Keep the objects of an :class:`~napari_anystar.analysis.measure.ObjectTable` whose values
lie in given ranges, and build the label volume of the kept objects."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from napari_anystar.analysis.measure import PROBABILITY_COLUMN, SPARSE_ID_FACTOR, ObjectTable

__all__ = ["FILTER_COLUMNS", "Range", "filter_labels", "keep_mask"]

#: The columns the Objects widget filters on, in its order.
FILTER_COLUMNS = ("volume_um3", "mean_intensity", PROBABILITY_COLUMN)
#: Inclusive (low, high) bounds; None leaves that side open.
Range = tuple[float | None, float | None]


def keep_mask(table: ObjectTable, ranges: Mapping[str, Range] | None = None,
              exclude_border: bool = False) -> np.ndarray:
    """Boolean mask of the rows whose every ranged column lies in its inclusive range (a NaN
    value, e.g. a missing probability, is out of any range with a bound) and, with
    ``exclude_border``, that do not touch the volume's border. ValueError for an unknown
    column."""
    keep = np.ones(len(table), dtype=bool)
    for name, (low, high) in (ranges or {}).items():
        if name not in table.columns:
            raise ValueError(f"cannot filter on {name!r}: the table has no such column")
        values = table[name]
        if low is not None:
            keep &= values >= low
        if high is not None:
            keep &= values <= high
    if exclude_border:
        keep &= ~table["touches_border"]
    return keep


def filter_labels(labels: np.ndarray, keep_ids: Iterable[int]) -> np.ndarray:
    """A new label volume (same dtype) with every object not in ``keep_ids`` set to 0."""
    labels = np.asarray(labels)
    keep = np.asarray(list(keep_ids) if not isinstance(keep_ids, np.ndarray) else keep_ids,
                      dtype=np.int64)
    keep = keep[keep > 0]
    high = int(labels.max()) if labels.size else 0
    if high <= SPARSE_ID_FACTOR * labels.size + 1 and int(labels.min(initial=0)) >= 0:
        lut = np.zeros(high + 1, dtype=labels.dtype)
        keep = keep[keep <= high]
        lut[keep] = keep
        return lut[labels]
    return np.where(np.isin(labels, keep), labels, 0).astype(labels.dtype, copy=False)
