"""Predicted labels against ground truth: scores per volume and pooled, errors, regions.

Scores are the AnyStar paper's protocol (``scores.pooled_scores``: ``stardist.matching`` at
IoU 0.1 ... 0.9, counts pooled over volumes). An evaluation may be restricted to a region
made of boxes in the labels' voxel coordinates (voxel centres at integers, bounds inclusive):
an object, predicted or true, takes part when its centroid lies in at least one box; every
other object is removed from both volumes before matching. Two regions are built here:

* the ground truth's *annotated region*: the bounding box of its labelled (non-zero) voxels,
  for volumes annotated only in part;
* boxes from points (e.g. the corners of shapes drawn over the volume): each box spans the
  points' bounding box; an axis the points do not give, or along which they span less than
  one voxel (a rectangle drawn on one Z plane), spans the whole volume.

False positives (predicted objects without a match) and false negatives (true objects
without a match) are reported at one IoU, by default :data:`REPORT_IOU`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from napari_anystar.analysis.scores import MatchScores, pooled_scores

#: IoU of the headline scores and of the false positive / false negative lists.
REPORT_IOU = 0.5
WHOLE, ANNOTATED = "whole", "annotated"
#: Region names understood by :func:`evaluate_pair` (boxes may be given instead).
REGIONS = (WHOLE, ANNOTATED)
DEFAULT_REGION = WHOLE
#: Values of :func:`error_map`: voxels of false positives, of false negatives, of both.
FALSE_POSITIVE, FALSE_NEGATIVE, BOTH = 1, 2, 3
_DENSE_IDS = 1 << 16  # bincount directly over ids up to this much above their count


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in voxel coordinates; bounds inclusive, +-inf where unrestricted."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Which of ``points`` (n, ndim) lie in the box."""
        points = np.asarray(points, dtype=float).reshape(-1, len(self.lo))
        return np.all((points >= self.lo) & (points <= self.hi), axis=1)


def box_from_points(points: np.ndarray, ndim: int) -> Box:
    """The box around ``points`` (n, k) given for the last k of ``ndim`` axes.

    Leading axes the points do not give, and axes along which they span less than one voxel,
    are unrestricted.
    """
    points = np.asarray(points, dtype=float)
    if points.ndim != 2 or not 0 < points.shape[1] <= ndim or len(points) == 0:
        raise ValueError(f"need points with 1 to {ndim} coordinates, got shape {points.shape}")
    lo, hi = [-np.inf] * ndim, [np.inf] * ndim
    low, high = points.min(axis=0), points.max(axis=0)
    for axis, (a, b) in enumerate(zip(low, high, strict=True), start=ndim - points.shape[1]):
        if b - a >= 1.0:
            lo[axis], hi[axis] = float(a), float(b)
    return Box(tuple(lo), tuple(hi))


def annotated_box(truth: np.ndarray) -> Box:
    """The bounding box of the labelled voxels of ``truth`` (ValueError if it has none)."""
    lo, hi = [], []
    for axis in range(truth.ndim):
        present = np.flatnonzero(np.any(truth, axis=tuple(a for a in range(truth.ndim)
                                                          if a != axis)))
        if present.size == 0:
            raise ValueError("the ground truth has no labelled voxels, so no annotated region")
        lo.append(float(present[0]))
        hi.append(float(present[-1]))
    return Box(tuple(lo), tuple(hi))


def as_labels(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as an integer label volume (2D or more); ValueError naming ``name`` if not."""
    array = np.asarray(array)
    if array.ndim < 2:
        raise ValueError(f"{name} is {array.ndim}D; labels need 2 or more dimensions")
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(np.mod(array, 1) == 0):
            raise ValueError(f"{name} is not a label volume (values must be whole numbers)")
        array = array.astype(np.int64)
    if array.size and array.min() < 0:
        raise ValueError(f"{name} has negative labels")
    return array


def check_pair(truth: np.ndarray, pred: np.ndarray, truth_name: str = "the ground truth",
               pred_name: str = "the prediction") -> tuple[np.ndarray, np.ndarray]:
    """Both volumes as labels of one shape; ValueError naming the pair otherwise."""
    truth, pred = as_labels(truth, truth_name), as_labels(pred, pred_name)
    if truth.shape != pred.shape:
        raise ValueError(f"{pred_name} has shape {pred.shape} but {truth_name} has shape "
                         f"{truth.shape}; they must match voxel for voxel")
    return truth, pred


def object_centroids(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The non-zero ids of ``labels`` (sorted) and their centroids (n, ndim), in voxels.

    Works one slice of the first axis at a time, so it needs little memory beyond the input.
    """
    ids = np.unique(labels)
    ids = ids[ids != 0]
    if ids.size == 0:
        return ids, np.zeros((0, labels.ndim))
    dense = int(ids[-1]) <= ids.size + _DENSE_IDS
    n_bins = int(ids[-1]) + 1 if dense else ids.size + 1
    table = np.concatenate([[0], ids])
    counts = np.zeros(n_bins)
    sums = np.zeros((labels.ndim, n_bins))
    coords = [c.ravel() for c in np.indices(labels.shape[1:], dtype=float)]
    for index, plane in enumerate(labels):
        flat = plane.ravel()
        flat = flat.astype(np.intp) if dense else np.searchsorted(table, flat)
        count = np.bincount(flat, minlength=n_bins)
        counts += count
        sums[0] += index * count
        for axis, coord in enumerate(coords, start=1):
            sums[axis] += np.bincount(flat, weights=coord, minlength=n_bins)
    rows = ids if dense else np.arange(1, ids.size + 1)
    return ids, (sums[:, rows] / counts[rows]).T


def restrict(labels: np.ndarray, boxes: Sequence[Box]) -> tuple[np.ndarray, int]:
    """``labels`` without the objects whose centroid lies in none of ``boxes`` (a copy when
    any is removed; the input is never changed) and how many were removed."""
    ids, centroids = object_centroids(labels)
    inside = np.zeros(len(ids), dtype=bool)
    for box in boxes:
        inside |= box.contains(centroids)
    dropped = ids[~inside]
    if dropped.size == 0:
        return labels, 0
    kept = np.where(np.isin(labels, dropped), 0, labels).astype(labels.dtype, copy=False)
    return kept, int(dropped.size)


def region_boxes(region: str | Sequence[Box], truth: np.ndarray) -> list[Box] | None:
    """The boxes of ``region`` (a name in :data:`REGIONS`, or boxes); None for the whole."""
    if isinstance(region, str):
        if region not in REGIONS:
            raise ValueError(f"unknown region {region!r}; expected one of {', '.join(REGIONS)}")
        return None if region == WHOLE else [annotated_box(truth)]
    if not region:
        raise ValueError("the region has no boxes")
    return list(region)


@dataclass(frozen=True)
class RestrictedPair:
    """A ground truth / prediction pair with the objects outside the region removed."""

    truth: np.ndarray
    pred: np.ndarray
    ignored_true: int  # objects outside the region
    ignored_pred: int


def restrict_pair(truth: np.ndarray, pred: np.ndarray,
                  region: str | Sequence[Box] = DEFAULT_REGION) -> RestrictedPair:
    """The pair restricted to ``region`` (the volumes must have passed :func:`check_pair`)."""
    boxes = region_boxes(region, truth)
    if boxes is None:
        return RestrictedPair(truth, pred, 0, 0)
    truth, ignored_true = restrict(truth, boxes)
    pred, ignored_pred = restrict(pred, boxes)
    return RestrictedPair(truth, pred, ignored_true, ignored_pred)


def error_ids(truth: np.ndarray, pred: np.ndarray,
              iou: float = REPORT_IOU) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Ids of the false positives (in ``pred``) and false negatives (in ``truth``) at ``iou``,
    from ``stardist.matching``'s one-to-one matching."""
    from stardist.matching import matching

    stats = matching(truth, pred, thresh=iou, report_matches=True)
    matched = [stats.matched_pairs[i] for i in stats.matched_tps]
    true_ids, pred_ids = (set(np.unique(a).tolist()) - {0} for a in (truth, pred))
    fp = sorted(pred_ids - {p for _, p in matched})
    fn = sorted(true_ids - {t for t, _ in matched})
    return tuple(int(i) for i in fp), tuple(int(i) for i in fn)


def error_map(truth: np.ndarray, pred: np.ndarray, false_positives: Sequence[int],
              false_negatives: Sequence[int]) -> np.ndarray:
    """uint8 volume: :data:`FALSE_POSITIVE` / :data:`FALSE_NEGATIVE` on those objects'
    voxels, :data:`BOTH` where one of each overlaps, 0 elsewhere."""
    out = np.zeros(truth.shape, np.uint8)
    if false_positives:
        out[np.isin(pred, false_positives)] = FALSE_POSITIVE
    if false_negatives:
        out[np.isin(truth, false_negatives)] += FALSE_NEGATIVE
    return out


@dataclass(frozen=True)
class PairEvaluation:
    """Scores of one prediction against its ground truth, and its errors at ``error_iou``."""

    scores: MatchScores
    ignored_true: int
    ignored_pred: int
    error_iou: float
    false_positives: tuple[int, ...]
    false_negatives: tuple[int, ...]
    errors: np.ndarray  # error_map of the (restricted) pair


def evaluate_pair(truth: np.ndarray, pred: np.ndarray,
                  region: str | Sequence[Box] = DEFAULT_REGION,
                  error_iou: float = REPORT_IOU, *, truth_name: str = "the ground truth",
                  pred_name: str = "the prediction") -> PairEvaluation:
    """Scores, false positives and false negatives of ``pred`` against ``truth`` in ``region``.

    ValueError (a one-line reason using the names) for volumes that are not labels of one
    shape, when either has no objects at all, or when no ground-truth object lies in the region.
    """
    truth, pred = check_pair(truth, pred, truth_name, pred_name)
    for name, volume in ((truth_name, truth), (pred_name, pred)):
        if not np.any(volume):
            raise ValueError(f"{name} is empty (no labelled objects)")
    pair = restrict_pair(truth, pred, region)
    if not np.any(pair.truth):
        raise ValueError(f"no object of {truth_name} has its centre inside the region")
    scores = pooled_scores([pair.truth], [pair.pred])
    fp, fn = error_ids(pair.truth, pair.pred, error_iou)
    return PairEvaluation(scores, pair.ignored_true, pair.ignored_pred, float(error_iou), fp, fn,
                          error_map(pair.truth, pair.pred, fp, fn))
