"""Suggest a scale from the objects the network finds: objects are rescaled to training size.

AnyStar networks see objects of a typical size in their 64^3 training windows. Like
Cellpose's size model, :func:`estimate_scale` runs the network and measures the objects it
finds: the extent along Z, Y and X of each kept polyhedron, and per axis the median over the
objects weighted by their volume (as :data:`TRAINING_DIAMETER` is), so that a crowd of small
spurious detections does not decide it. It returns the per-axis scale that brings that
object to :data:`TRAINING_DIAMETER` voxels along every axis. A second round at the suggested
scale refines it: the network measures best near its training size. Only the image itself
is used, no labels.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, replace

import numpy as np

from napari_anystar._generators import result_of

from .instances import InstanceSolver
from .predict import PredictSettings, predict_network

#: Object diameter (voxels) the AS-Mix training windows are dominated by: the volume-weighted
#: median equivalent diameter of AS-Mix instances after A(.) is 11.8 voxels (quartiles 8.6
#: and 15.5; 40 samples of ``synth.generate("as-mix", ...)``, 64^3).
TRAINING_DIAMETER = 12.0
#: Fewer kept objects than this give no estimate.
MIN_OBJECTS = 3
#: Suggested scales are clipped to this range.
SCALE_LIMITS = (0.1, 8.0)
#: Each round looks at a centred crop of at most this many voxels per axis after scaling.
MAX_EDGE = 160


@dataclass(frozen=True)
class SizeEstimate:
    """A suggested scale (Z, Y, X) and what it rests on."""

    scale: tuple[float, float, float]
    object_size: tuple[float, float, float]  # median object extent, input voxels (Z, Y, X)
    n_objects: int


def object_extents(solver: InstanceSolver, prob_thresh: float, nms_thresh: float) -> np.ndarray:
    """Extents (n, 3) along Z, Y, X of the kept objects, in voxels of the input image."""
    kept = solver.kept(prob_thresh, nms_thresh)
    output = solver.output
    vertices = output.cand_dist[kept][:, :, None] * solver.rays.vertices[None]
    extents = vertices.max(axis=1) - vertices.min(axis=1)
    scale = np.ones(3) if output.scale is None else np.asarray(output.scale, dtype=float)
    return extents / scale


def weighted_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per column of ``values`` (n, k), the median of the distribution weighted by ``weights``."""
    out = []
    for column in values.T:
        order = np.argsort(column)
        cumulative = np.cumsum(weights[order])
        out.append(column[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])
    return np.array(out)


def centre_crop(image: np.ndarray, scale: tuple[float, float, float],
                max_edge: int = MAX_EDGE) -> np.ndarray:
    """The centred part of ``image`` that is at most ``max_edge`` voxels per axis after scaling."""
    window = []
    for size, s in zip(image.shape, scale, strict=True):
        keep = min(size, max(1, int(max_edge / s)))
        start = (size - keep) // 2
        window.append(slice(start, start + keep))
    return image[tuple(window)]


def estimate_scale(
    model,
    image: np.ndarray,
    settings: PredictSettings | None,
    prob_thresh: float,
    nms_thresh: float,
    *,
    rounds: int = 2,
    diameter: float = TRAINING_DIAMETER,
) -> Generator[tuple[int, int], None, SizeEstimate]:
    """Yields ``(step, total)`` progress; returns the :class:`SizeEstimate`.

    Starts at ``settings.scale`` (none: 1). Raises ValueError if a round finds fewer than
    :data:`MIN_OBJECTS` objects. Closing the generator cancels it between rounds (a round
    sees at most :data:`MAX_EDGE`^3 voxels).
    """
    settings = settings or PredictSettings()
    scale = tuple(float(s) for s in (settings.scale or (1.0, 1.0, 1.0)))
    estimate = None
    for done in range(rounds):
        yield done, rounds
        crop = centre_crop(np.asarray(image), scale)
        output = result_of(predict_network(
            model, crop, replace(settings, scale=None if scale == (1.0,) * 3 else scale,
                                 n_tiles=None)))
        extents = object_extents(InstanceSolver(output, model), prob_thresh, nms_thresh)
        if len(extents) < MIN_OBJECTS:
            raise ValueError(
                f"Found {len(extents)} object(s) at scale {_fmt(scale)}: too few to estimate "
                "their size. Set the scale by hand, or lower the probability threshold.")
        size = weighted_median(extents, np.prod(extents, axis=1))
        scale = tuple(float(np.clip(diameter / max(s, 1e-6), *SCALE_LIMITS)) for s in size)
        scale = tuple(round(s, 3) for s in scale)
        estimate = SizeEstimate(scale, tuple(round(float(s), 2) for s in size), len(extents))
    yield rounds, rounds
    return estimate


def _fmt(scale: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{s:g}" for s in scale) + ")"
