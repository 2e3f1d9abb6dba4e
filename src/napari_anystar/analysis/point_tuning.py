"""Score and tune segmentations against clicked object centres instead of full labels.

Matching rule: each clicked point lies in at most one predicted object (the label at the
point's voxel). A predicted object holding exactly one point is a true positive; one holding
``k > 1`` points counts 1 true positive and ``k - 1`` false negatives (a merge); a point on
background is a false negative. A predicted object holding no point is a false positive when
its centroid lies inside the scoring region: by default the axis-aligned bounding box of the
points (the clicks must mark every object inside the box they span), or the whole volume
when the clicks mark every object in it. ``F1 = 2 TP / (2 TP + FP + FN)``, counts summed over
volumes before the ratio. :func:`tune_thresholds_on_points` maximises it with the threshold
search of :mod:`.tuning`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import numpy as np

from .evaluate import Box, object_centroids
from .tuning import search_thresholds

#: What the default scoring region asks of the person clicking (shown in the widget).
BOX_RULE = "Click the centre of every nucleus inside the box your clicks span."
#: The same for the whole-volume region.
WHOLE_VOLUME_RULE = "My clicks mark every nucleus in the volume."


@dataclass(frozen=True)
class ClickedPoints:
    """Clicked centres of one volume as voxel indices, and the region they score."""

    voxels: np.ndarray  # (n, 3) int64 voxel indices (Z, Y, X), all inside the volume
    region: Box  # scoring region, voxel bounds inclusive


def clicked_points(
    coords: np.ndarray, shape: Sequence[int], *, whole_volume: bool = False
) -> ClickedPoints:
    """Clicked points at voxel coordinates ``coords`` (n, 3) of a volume of ``shape``.

    Coordinates are rounded to the nearest voxel (voxel ``i`` spans ``i - 0.5 ... i + 0.5``).
    Raises ValueError (one line) for no points, non-3D or non-finite coordinates, or points
    outside the volume. The region is the points' bounding box, or the whole volume.
    """
    coords = np.asarray(coords, dtype=float)
    shape = tuple(int(s) for s in shape)
    if coords.ndim != 2 or coords.shape[1] != 3 or len(shape) != 3:
        raise ValueError(f"Points must be 3D (Z, Y, X) in a 3D volume, got points of shape "
                         f"{coords.shape} and a volume of shape {shape}.")
    if not len(coords):
        raise ValueError("There are no points: click object centres first.")
    if not np.all(np.isfinite(coords)):
        raise ValueError("Some points have non-finite coordinates.")
    voxels = np.floor(coords + 0.5).astype(np.int64)
    outside = ~np.all((voxels >= 0) & (voxels < shape), axis=1)
    if outside.any():
        first = ", ".join(f"{c:g}" for c in np.round(coords[outside][0], 1))
        raise ValueError(f"{int(outside.sum())} of {len(coords)} points lie outside the volume "
                         f"{shape} (first at voxel {first}): move or delete them.")
    if whole_volume:
        lo, hi = (0, 0, 0), tuple(s - 1 for s in shape)
    else:
        lo, hi = tuple(voxels.min(axis=0).tolist()), tuple(voxels.max(axis=0).tolist())
    return ClickedPoints(voxels, Box(lo, hi))


@dataclass(frozen=True)
class PointCounts:
    """True/false positives and false negatives of the point matching rule."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: PointCounts) -> PointCounts:
        return PointCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def f1(self) -> float:
        """``2 TP / (2 TP + FP + FN)``; 0 when there is nothing to count."""
        denominator = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denominator if denominator else 0.0

    def to_dict(self) -> dict[str, float]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "f1": round(self.f1, 4)}


def point_counts(labels: np.ndarray, points: ClickedPoints) -> PointCounts:
    """Counts of the matching rule for predicted ``labels`` (3D) and clicked ``points``."""
    hit = labels[tuple(points.voxels.T)]
    hit_ids = np.unique(hit[hit > 0])
    tp = len(hit_ids)
    ids, centres = object_centroids(labels)
    unclicked = ~np.isin(ids, hit_ids)
    fp = int(np.count_nonzero(points.region.contains(centres[unclicked])))
    return PointCounts(tp=tp, fp=fp, fn=len(points.voxels) - tp)


@dataclass(frozen=True)
class PointChoice:
    """The best threshold pair found and its pooled point counts."""

    prob: float
    nms: float
    counts: PointCounts

    @property
    def objective(self) -> float:
        return self.counts.f1


def pooled_point_counts(labels: Sequence[np.ndarray],
                        points: Sequence[ClickedPoints]) -> PointCounts:
    """Point counts summed over volumes."""
    if len(labels) != len(points) or not points:
        raise ValueError("need one set of points per label volume (at least one)")
    return sum((point_counts(lbl, pts) for lbl, pts in zip(labels, points, strict=True)),
               PointCounts())


def tune_thresholds_on_points(
    labels_for: Sequence[Callable[[float, float], np.ndarray]],
    points: Sequence[ClickedPoints],
    *,
    min_prob: float = 0.05,
) -> Generator[int, None, PointChoice]:
    """The threshold search of :mod:`.tuning` maximising the pooled point F1.

    ``labels_for[i](prob, nms)`` returns the label volume of volume ``i``. Yields the number
    of threshold pairs evaluated so far; returns the best pair.
    """
    if len(labels_for) != len(points) or not points:
        raise ValueError("need one label function per set of points (at least one)")
    counts: dict[tuple[float, float], PointCounts] = {}

    def score(prob: float, nms: float) -> float:
        counts[prob, nms] = pooled_point_counts([f(prob, nms) for f in labels_for], points)
        return counts[prob, nms].f1

    prob, nms = yield from search_thresholds(score, min_prob=min_prob)
    return PointChoice(prob=prob, nms=nms, counts=counts[prob, nms])
