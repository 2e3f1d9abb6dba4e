"""Suggest a scale from the objects the network finds: objects are rescaled to training size.

AnyStar networks see objects of a typical size in their 64^3 training windows. Like
Cellpose's size model, :func:`estimate_scale` runs the network and measures the objects it
finds: the extent along Z, Y and X of each object's polyhedron, and per axis the median over
the objects weighted by their volume (as :data:`TRAINING_DIAMETER` is), so that a crowd of
small spurious detections does not decide it. It returns the per-axis scale that brings that
object to :data:`TRAINING_DIAMETER` voxels along every axis. Further rounds at the suggested
scale refine it, since the network measures best near its training size: at least
:data:`MIN_ROUNDS`, more while a round still moves the scale (:data:`CONVERGED`). Only the
image itself is used, no labels.

The objects come from a quick greedy selection (:func:`quick_objects`), not StarDist's exact
NMS: a median of sizes does not need StarDist's exact set, which costs seconds per round on a
128^3 volume. On AS-Mix 128^3 the two rounds' selections took 13.9 s exact and 0.54 s quick,
for scales within 3 %; on the 22 BBBC050 dev volumes the scales differ by a median of 1 %.

:func:`auto_scale` is the default scale policy of the Segment widget and ``anystar segment``
(:data:`DEFAULT_SCALE_POLICY`): the estimate started from raw voxels, or
:data:`FALLBACK_SCALE` with a warning when there is too little to measure. On the BBBC050
dev folder it beat both raw voxels and the scale from the voxel size (issue 11).

Objects much larger than the training size defeat a first round at raw voxels: the network
cuts each of them into training-size pieces, measures the pieces, and the rounds then shrink
the volume too little (BBBC050 resampled 2x finer: 0.18 mean accuracy instead of 0.44 at the
right scale). The number of objects per unit volume belongs to the specimen, not to the
sampling, so :func:`estimate_scale` checks it: while the first round's objects measure at
least the training size and half the scale finds over :data:`FRAGMENT_RATIO` times fewer of
them per voxel, the first round starts at half the scale. Measured ratios (objects per voxel
at the scale over those at half of it): whole nuclei merge at most in pairs (the BBBC050 dev
volumes as sampled: 1.0-2.2); small objects that vanish at half the scale cost clean AS-Mix
128^3 volumes 1.8-7.3 (21 volumes); nuclei cut into pieces give 12-110 (the dev volumes
resampled 2x finer).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, replace

import numpy as np

from napari_anystar._generators import result_of

from ._nms3d import Geometry
from .predict import (
    NetworkOutput,
    PredictSettings,
    check_volume,
    min_network_size,
    predict_network,
    scaled_shape,
)

#: Object diameter (voxels) the AS-Mix training windows are dominated by: the volume-weighted
#: median equivalent diameter of AS-Mix instances after A(.) is 11.8 voxels (quartiles 8.6
#: and 15.5; 40 samples of ``synth.generate("as-mix", ...)``, 64^3).
TRAINING_DIAMETER = 12.0
#: Fewer kept objects than this give no estimate. One object is a measurement: a volume may
#: hold one or two nuclei (an early embryo), and the fallback without an estimate, raw
#: voxels, is where the network cuts large nuclei into tens of pieces. Demanding three cost
#: t301 dev volumes zoomed 1.5x with one nucleus left (11 volumes) 6 fallbacks and mean
#: accuracy 0.05 (pooled).
MIN_OBJECTS = 1
#: Suggested scales are clipped to this range.
SCALE_LIMITS = (0.1, 8.0)
#: Each round looks at a centred crop of at most this many voxels per axis after scaling.
MAX_EDGE = 160
#: The first round starts at half the scale while objects measured at least at training size
#: are found over this many times (2^3) as densely as at half the scale: cut into pieces.
FRAGMENT_RATIO = 8.0
#: Rounds of :func:`estimate_scale`: at least MIN_ROUNDS, then more (up to MAX_ROUNDS) while a
#: round suggests moving some axis by over CONVERGED (relative) from the scale it ran at. The
#: network measures objects far from its training size as more alike along the three axes
#: than they are, so a volume sampled unlike BBBC050 (Y/X 2x finer, or Z 2x coarser) needs
#: 4-5 rounds to settle; at the fixed point rounds scatter by about 5 %.
MIN_ROUNDS = 2
MAX_ROUNDS = 6
CONVERGED = 0.15
#: Scale policy of the Segment widget and ``anystar segment`` when none is given.
DEFAULT_SCALE_POLICY = "auto"
#: Raw voxels: where :func:`auto_scale` starts, and what it uses when it cannot measure.
FALLBACK_SCALE = (1.0, 1.0, 1.0)

#: How a round runs the network: ``(crop, settings) -> predict_network``-like generator
Network = Callable[[np.ndarray, PredictSettings], Generator[tuple[int, int], None, NetworkOutput]]


class TooFewObjectsError(ValueError):
    """The network found fewer than :data:`MIN_OBJECTS` objects to measure."""

    def __init__(self, n_objects: int, scale: tuple[float, ...]) -> None:
        super().__init__(
            f"Found {n_objects} object(s) at scale {_fmt(scale)}: too few to estimate their "
            "size. Set the scale by hand, or lower the probability threshold.")
        self.n_objects = n_objects


@dataclass(frozen=True)
class SizeEstimate:
    """A suggested scale (Z, Y, X) and what it rests on."""

    scale: tuple[float, float, float]
    object_size: tuple[float, float, float]  # median object extent, input voxels (Z, Y, X)
    n_objects: int
    #: where the first round ran instead of the start, because the network cut objects into
    #: pieces at the start (None: it ran at the start)
    coarse_start: tuple[float, float, float] | None = None
    #: some axis was raised to the smallest scale the network can run the volume at (the
    #: volume is too small to bring its objects down to the training size)
    raised: bool = False


@dataclass(frozen=True)
class AutoScale:
    """The scale :func:`auto_scale` chose; unpacks as ``scale, note``."""

    scale: tuple[float, float, float]
    note: str  # one line: the objects measured, or why FALLBACK_SCALE was used
    estimate: SizeEstimate | None  # None: fell back

    @property
    def fell_back(self) -> bool:
        return self.estimate is None

    def __iter__(self) -> Iterator[object]:
        return iter((self.scale, self.note))


def quick_objects(output: NetworkOutput, rays, prob_thresh: float) -> np.ndarray:
    """Candidates above ``prob_thresh`` kept by a greedy pass in decreasing probability
    that drops every candidate whose centre lies inside a kept polyhedron (indices into
    the output's candidates; ``rays`` the model's StarDist rays): about one per object, for
    measuring sizes."""
    from scipy.spatial import cKDTree

    sel = np.flatnonzero(output.cand_prob > np.float32(prob_thresh))
    order = sel[np.argsort(-output.cand_prob[sel], kind="stable")]
    if len(order) < 2:
        return order
    points = output.points[order]
    geom = Geometry(output.cand_dist[order], points, rays.vertices, rays.faces)
    geom.ensure(np.arange(len(order)))
    tree = cKDTree(points.astype(np.float64))
    dropped = np.zeros(len(order), bool)
    kept = []
    for k in range(len(order)):
        if dropped[k]:
            continue
        kept.append(k)
        near = np.asarray(tree.query_ball_point(points[k].astype(np.float64),
                                                float(geom.radius_outer[k]) + 1.0), np.int64)
        near = near[(near > k) & ~dropped[near]]
        if len(near):
            dropped[near[geom.inside(k, points[near])]] = True
    return order[np.array(kept, np.int64)]


def object_extents(output: NetworkOutput, model, prob_thresh: float) -> np.ndarray:
    """Extents (n, 3) along Z, Y, X of the :func:`quick_objects`, in voxels of the input
    image."""
    from stardist.rays3d import rays_from_json

    rays = rays_from_json(model.config.rays_json)
    kept = quick_objects(output, rays, prob_thresh)
    vertices = output.cand_dist[kept][:, :, None] * rays.vertices[None]
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


def training_diameter(model) -> float:
    """The object size a model was trained on: its recorded ``object_diameter``
    (``anystar.json``), else :data:`TRAINING_DIAMETER`."""
    return getattr(model, "anystar_object_diameter", None) or TRAINING_DIAMETER


def folder_training_diameter(folder) -> float:
    """:func:`training_diameter` of a model folder, read without loading the model."""
    from .model_settings import object_diameter

    return object_diameter(folder) or TRAINING_DIAMETER


def estimate_scale(
    model,
    image: np.ndarray,
    settings: PredictSettings | None,
    prob_thresh: float,
    *,
    rounds: int | None = None,
    diameter: float | None = None,
    network: Network | None = None,
) -> Generator[tuple[int, int], None, SizeEstimate]:
    """Yields ``(step, total)`` progress; returns the :class:`SizeEstimate`.

    Starts at ``settings.scale`` (none: 1). Each round runs ``network`` (default:
    :func:`predict_network`; the pipeline passes one that reuses a cached output) at the
    previous round's suggestion: ``rounds`` rounds, or by default until it converges (see
    :data:`CONVERGED`; the progress total grows by one for each further round). Raises
    :class:`TooFewObjectsError` if one of the first :data:`MIN_ROUNDS` rounds finds fewer than
    :data:`MIN_OBJECTS` objects; a later round that cannot measure ends the estimate at the
    round before. Closing the generator cancels it between rounds (a round sees at most
    :data:`MAX_EDGE`^3 voxels).
    """
    settings = settings or PredictSettings()
    diameter = diameter or training_diameter(model)
    scale = tuple(float(s) for s in (settings.scale or (1.0, 1.0, 1.0)))
    network = network or (lambda crop, at: predict_network(model, crop, at))

    def measure(at: tuple[float, ...]) -> tuple[SizeEstimate, float]:
        return _measure(model, image, settings, at, prob_thresh, diameter, network)

    total = rounds or MAX_ROUNDS
    required = rounds or MIN_ROUNDS
    estimate, start = None, scale
    first = scale  # where the first round ran (moved by _coarse_start)
    done = 0
    while done < total:
        yield done, max(required, done + 1)
        try:
            found, density = measure(scale)
        except ValueError:
            if done < required:
                raise
            break  # too few objects or no usable crop there: keep the last estimate
        if done == 0:
            first, found = _coarse_start(model, image, scale, found, density, diameter,
                                         measure)
            scale = first
        estimate, moved = found, _moves(scale, found.scale)
        scale = found.scale
        done += 1
        if done >= required and (rounds is not None or not moved):
            break
    if estimate is not None and first != start:
        estimate = replace(estimate, coarse_start=first)
    yield done, done
    return estimate


def _moves(ran_at: tuple[float, ...], suggested: tuple[float, ...]) -> bool:
    """Whether a round run at ``ran_at`` suggests moving some axis by over :data:`CONVERGED`."""
    ratio = np.asarray(suggested, float) / np.asarray(ran_at, float)
    return bool(np.max(np.abs(np.log(ratio))) > np.log1p(CONVERGED))


def _measure(model, image: np.ndarray, settings: PredictSettings, scale: tuple[float, ...],
             prob_thresh: float, diameter: float, network: Network
             ) -> tuple[SizeEstimate, float]:
    """One round at ``scale``: the estimate, and the objects found per input voxel."""
    crop = centre_crop(np.asarray(image), scale)
    output = result_of(network(
        crop, replace(settings, scale=None if scale == (1.0,) * 3 else scale, n_tiles=None)))
    extents = object_extents(output, model, prob_thresh)
    if len(extents) < MIN_OBJECTS:
        raise TooFewObjectsError(len(extents), scale)
    size = weighted_median(extents, np.prod(extents, axis=1))
    wanted = [round(float(np.clip(diameter / max(s, 1e-6), *SCALE_LIMITS)), 3) for s in size]
    usable = smallest_usable_scale(np.shape(image), min_network_size(model))
    suggested = tuple(min(max(w, u), SCALE_LIMITS[1]) for w, u in zip(wanted, usable,
                                                                       strict=True))
    estimate = SizeEstimate(suggested, tuple(round(float(s), 2) for s in size), len(extents),
                            raised=any(w < u for w, u in zip(wanted, usable, strict=True)))
    return estimate, len(extents) / crop.size


def smallest_usable_scale(shape: tuple[int, ...], min_size: int) -> tuple[float, ...]:
    """Per axis the smallest scale (3 decimals, as suggested scales) that leaves ``shape``
    at least ``min_size`` voxels long: a volume smaller than that at the objects' scale (a
    crop around one large nucleus) runs there rather than falling back to raw voxels, where
    the network cuts large nuclei into pieces."""
    return tuple(math.ceil(1000 * min_size / n) / 1000 for n in shape)


def _coarse_start(model, image: np.ndarray, scale: tuple[float, ...], estimate: SizeEstimate,
                  density: float, diameter: float,
                  measure: Callable[[tuple[float, ...]], tuple[SizeEstimate, float]],
                  ) -> tuple[tuple[float, ...], SizeEstimate]:
    """The first round's scale and estimate: ``scale``, halved while the network cuts objects
    into pieces there (objects it measures at least at training size, found over
    :data:`FRAGMENT_RATIO` times as densely as at half that scale; see the module note)."""
    while np.prod(np.array(estimate.object_size) * scale) >= diameter ** 3:
        coarser = tuple(s / 2 for s in scale)
        if min(scaled_shape(np.shape(image), coarser)) < min_network_size(model):
            break
        try:
            coarse, coarse_density = measure(coarser)
        except ValueError:  # too few objects there, or a crop the network rejects
            break
        if density < FRAGMENT_RATIO * coarse_density:
            break
        scale, estimate, density = coarser, coarse, coarse_density
    return scale, estimate


def auto_scale(
    model,
    image: np.ndarray,
    settings: PredictSettings | None,
    prob_thresh: float,
    *,
    network: Network | None = None,
) -> Generator[tuple[int, int], None, AutoScale]:
    """The default scale: :func:`estimate_scale` from raw voxels (``settings.scale`` is not
    used), or :data:`FALLBACK_SCALE` when it finds too few objects or no scale the network
    can run at. Yields ``(step, total)``; raises ValueError only for an unusable volume."""
    start = replace(settings or PredictSettings(), scale=None)
    check_volume(image, min_size=min_network_size(model))
    try:
        estimate = yield from estimate_scale(model, image, start, prob_thresh, network=network)
        check_volume(image, scale=estimate.scale, min_size=min_network_size(model))
    except TooFewObjectsError as err:
        reason = f"found {err.n_objects} object(s), too few to measure their size"
    except ValueError as err:
        reason = f"no usable scale ({str(err).rstrip('.')})"
    else:
        size = " x ".join(f"{s:.1f}" for s in estimate.object_size)
        coarse = ("" if estimate.coarse_start is None else
                  f" Measured first at {_fmt(estimate.coarse_start)}, because at raw voxels the "
                  "network cut the objects into pieces.")
        raised = (" The volume is too small to bring its objects to the training size: some "
                  "axis is at the smallest scale the network runs it at." if estimate.raised
                  else "")
        return AutoScale(estimate.scale, f"objects ~{size} voxels (Z, Y, X; "
                         f"{estimate.n_objects} found): scale {_fmt(estimate.scale)}.{coarse}"
                         f"{raised}", estimate)
    return AutoScale(FALLBACK_SCALE, f"{reason}: using the fallback scale "
                     f"{_fmt(FALLBACK_SCALE)}.", None)


def _fmt(scale: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{s:g}" for s in scale) + ")"
