"""The segmentation pipeline core, shared by the Segment widget and ``anystar segment``.

Plain generators/functions (no napari, no Qt): load the model (``preload_model`` also pays
its one-time cost), choose the scale, run (or reuse from the cache) the network, solve
instances for any threshold pair.
``network_job`` loads the model, chooses the scale if asked to (the default policy,
``object_size.auto_scale``) and runs (or reuses from the cache) the network, yielding
``(stage, done, total)`` progress; closing it stops at the next tile boundary. ``scale_job``
suggests a scale from the objects the network finds. ``solve`` turns a cached
network output into labels for one threshold pair; ``warm_job`` pre-computes other
threshold pairs in the background, one chunk at a time, giving way to any ``solve``.
"""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np

from napari_anystar._generators import mapped, result_of
from napari_anystar.model._nms3d import warm_compiled
from napari_anystar.model.cache import CacheKey, PredictionCache, data_fingerprint, make_key
from napari_anystar.model.instances import InstanceSolver
from napari_anystar.model.object_size import (
    AutoScale,
    Network,
    SizeEstimate,
    auto_scale,
    estimate_scale,
    training_diameter,
)
from napari_anystar.model.polarity import DEFAULT_POLARITY, choose_polarity, object_contrast
from napari_anystar.model.predict import (
    NetworkOutput,
    PredictSettings,
    predict_network,
    warm_network,
)
from napari_anystar.model.refine import DEFAULT_REFINE, OutlineRefiner
from napari_anystar.model.registry import ModelEntry, load_model, model_fingerprint

T = TypeVar("T")
Progress = tuple[str, int, int]  # ("size", round, rounds) or ("tiles", done, total)


def preload_model(entry: ModelEntry) -> Any:
    """The model of ``entry``, loaded and its one-time prediction cost paid
    (:func:`~napari_anystar.model.predict.warm_network`) and the NMS's numba routines compiled,
    so that a first Run starts at once."""
    model = load_model(entry)
    warm_network(model)
    warm_compiled()
    return model


@dataclass
class RunResult:
    """What a finished run hands back to the widget."""

    output: Any  # NetworkOutput
    solver: InstanceSolver
    labels: np.ndarray
    n_objects: int
    object_prob: np.ndarray  # the network's probability per label id (index 0 unused)
    model_sha256: str
    cached: bool
    settings: PredictSettings  # as run: the scale used, the normalisation resolved
    auto: AutoScale | None  # the default policy's choice of scale; None: the scale was given
    refiner: OutlineRefiner  # outline refinement for this image (its work is done on first use)
    refined: bool  # whether ``labels`` have refined outlines


def staged(stage: str, job: Generator[tuple[int, int], None, T]) -> Generator[Progress, None, T]:
    """``job`` with its ``(done, total)`` progress tagged ``(stage, done, total)``; closing
    this closes ``job``."""
    return (yield from mapped(job, lambda progress: (stage, *progress)))


def network_job(
    entry: ModelEntry,
    image: np.ndarray,
    settings: PredictSettings,
    thresholds: tuple[float, float],
    cache: PredictionCache,
    *,
    auto_scaled: bool = False,
    refine: bool = DEFAULT_REFINE,
    polarity: str = DEFAULT_POLARITY,
) -> Generator[Progress, None, RunResult]:
    """Network output (cached or computed) + labels; with ``auto_scaled``, at the scale
    :func:`auto_scale` chooses first (once per volume, model, normalisation, polarity and
    probability: the choice is kept in ``cache.auto_scales``); with ``refine``, outlines
    refined to the image (:mod:`.refine`). ``polarity`` (:mod:`.polarity`): ``bright`` runs
    the image as given, ``dark`` its negation, ``auto`` the image as given and then, if the
    objects found are darker than their surroundings (or none were found), its negation
    (``result.settings.invert``) if the objects found there are brighter than theirs
    (not so where objects of both contrasts mix: the image is kept as given)."""
    data_fp = data_fingerprint(image)  # hashed once, for either orientation
    result = yield from choose_polarity(
        lambda invert: _network_run(entry, image, data_fp, replace(settings, invert=invert),
                                    thresholds, cache, auto_scaled), _contrast, polarity)
    if refine:
        result.labels = result.refiner(result.labels)
        result.refined = True
    return result


def _contrast(result: RunResult) -> float:
    """:func:`.polarity.object_contrast` of a run's objects (nan: none to measure)."""
    return object_contrast(result.refiner.smoothed, result.labels, result.refiner.diameter)


def _network_run(entry: ModelEntry, image: np.ndarray, data_fp: str, settings: PredictSettings,
                 thresholds: tuple[float, float], cache: PredictionCache, auto_scaled: bool
                 ) -> Generator[Progress, None, RunResult]:
    """:func:`network_job` at the polarity of ``settings`` (StarDist's outlines); ``data_fp``
    is ``image``'s :func:`data_fingerprint`."""
    model = load_model(entry)
    settings = settings.for_model(model)
    sha256 = model_fingerprint(entry)
    choice = None
    if auto_scaled:
        auto_key = (data_fp, sha256, settings.norm, settings.invert, thresholds[0])
        choice = cache.auto_scales.get(auto_key)
        if choice is None:
            choice = yield from staged("size", auto_scale(
                model, image, settings, thresholds[0],
                network=cached_network(model, entry, image, cache, data_fp)))
            cache.auto_scales[auto_key] = choice
        settings = replace(settings, scale=choice.scale)
    key = _cache_key(model, entry, data_fp, settings)
    hit = cache.get(key)
    if hit is None:
        # closing this job closes predict_network too: it stops at the next tile
        output = yield from staged("tiles", predict_network(model, image, settings))
        solver = InstanceSolver(output, model)
        cache.put(key, output, solver)
    else:
        output, solver = hit
    refiner = OutlineRefiner.at_scale(image, settings.scale, training_diameter(model),
                                      settings.invert)
    labels, n_objects, object_prob = solve(solver, *thresholds)
    return RunResult(output, solver, labels, n_objects, object_prob, sha256, hit is not None,
                     settings, choice, refiner, False)


def scale_job(
    entry: ModelEntry,
    image: np.ndarray,
    settings: PredictSettings,
    prob_thresh: float,
    cache: PredictionCache | None = None,
) -> Generator[Progress, None, SizeEstimate]:
    """Loads the model and estimates the scale that brings the objects found above
    ``prob_thresh`` to training size (a round a Run already did is read from ``cache``)."""
    model = load_model(entry)
    return (yield from staged("size", estimate_scale(
        model, image, settings, prob_thresh, network=cached_network(model, entry, image, cache))))


def _cache_key(model, entry: ModelEntry, data_fp: str, settings: PredictSettings) -> CacheKey:
    # the ray scale is applied to the network output, so it is part of what is cached
    ray_scale = getattr(model, "anystar_ray_scale", 1.0)
    return make_key(data_fp, f"{model_fingerprint(entry)} x{ray_scale:g}",
                    settings.for_model(model))


def cached_network(model, entry: ModelEntry, image: np.ndarray, cache: PredictionCache | None,
                   data_fp: str | None = None) -> Network:
    """The scale estimate's network: a round over the whole ``image`` at settings a Run
    already used reads that Run's output from ``cache`` instead of running the network."""

    fingerprint = [data_fp]  # the image's, hashed once at first need

    def network(crop: np.ndarray, settings: PredictSettings
                ) -> Generator[tuple[int, int], None, NetworkOutput]:
        if cache is not None and crop.shape == image.shape:
            fingerprint[0] = fingerprint[0] or data_fingerprint(image)
            hit = cache.peek(_cache_key(model, entry, fingerprint[0], settings))
            if hit is not None:
                return _ready(hit[0])
        return predict_network(model, crop, settings)

    return network


def _ready(output: NetworkOutput) -> Generator[tuple[int, int], None, NetworkOutput]:
    """A network run whose output is there already."""
    yield from ()
    return output


class SolveLock:
    """One solver user at a time; a waiting ``solve`` goes before the next warm-up chunk."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._waiting = 0  # solves waiting for the lock

    @contextmanager
    def _hold(self, foreground: bool) -> Iterator[None]:
        with self._cond:
            self._waiting += foreground
            while self._busy or (not foreground and self._waiting):
                self._cond.wait()
            self._waiting -= foreground
            self._busy = True
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

    def foreground(self) -> Any:
        return self._hold(True)

    def background(self) -> Any:
        return self._hold(False)

    def contended(self) -> bool:
        """Is a solve waiting for the lock (a warm-up chunk should end early)?"""
        return self._waiting > 0


_SOLVE_LOCK = SolveLock()


def solve(solver: InstanceSolver, prob: float, nms: float,
          refiner: OutlineRefiner | None = None) -> tuple[np.ndarray, int, np.ndarray]:
    """Labels for one threshold pair (outlines refined by ``refiner`` if given), their
    number of objects and each one's probability.

    Serialised: a run reusing a cached solver may overlap a slider's solve on the same one.
    """
    return result_of(solve_in_stages(solver, prob, nms, refiner))


def solve_in_stages(solver: InstanceSolver, prob: float, nms: float,
                    refiner: OutlineRefiner | None = None, *, plain_shown: bool = False
                    ) -> Generator[tuple[np.ndarray, int, np.ndarray], None,
                                   tuple[np.ndarray, int, np.ndarray]]:
    """:func:`solve` in two stages: with a ``refiner``, StarDist's answer is yielded before
    the refinement (the slow part) runs, unless ``plain_shown`` (it is on screen already);
    returns the final answer."""
    with _SOLVE_LOCK.foreground():
        labels = solver.labels(prob, nms)
        object_prob = solver.object_probabilities(prob, nms)
    n_objects = len(object_prob) - 1  # labels are numbered 1..n
    if refiner is None:
        return labels, n_objects, object_prob
    if not plain_shown:
        yield labels, n_objects, object_prob
    return refiner(labels), n_objects, object_prob


def warm_job(solver: InstanceSolver, prob: float, nms: float) -> Generator[float, None, bool]:
    """``solver.warm_grid`` (the NMS axis at ``prob``, then a coarse grid of both thresholds,
    nearest first), then ``solver.warm_up`` (every probability step below ``prob`` at
    ``nms``): chunks wait for pending solves, and end early (to be taken up again) when a
    solve starts waiting. True if both completed."""
    locks = {"lock": _SOLVE_LOCK.background, "interrupt": _SOLVE_LOCK.contended}
    grid = yield from solver.warm_grid(prob, nms, **locks)
    axis = yield from solver.warm_up(prob, nms, **locks)
    return grid and axis
