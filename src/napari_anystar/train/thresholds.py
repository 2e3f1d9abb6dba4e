"""Probability/NMS threshold tuning of a freshly trained model on held-out volumes.

The network runs once per volume through the plugin's own prediction path
(:func:`~napari_anystar.model.predict.predict_network`, the model's normalisation); the
threshold pairs are then searched on the cached candidates
(:func:`~napari_anystar.analysis.tuning.tune_thresholds_on_outputs`), maximising the same
pooled mean accuracy over IoU 0.1 ... 0.9 that every benchmark reports. For a synthetic run
the volumes are :func:`tuning_volumes`: no real image ever chooses a model's thresholds.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from napari_anystar._generators import mapped, result_of
from napari_anystar.analysis.tuning import (
    NMS_GRID,
    PROB_GRID,
    PROB_REFINE,
    tune_thresholds_on_outputs,
)
from napari_anystar.normalization import Normalization

#: Held-out synthetic tuning volumes: how many, their edge length, their seed-series offset.
TUNING_VOLUMES = 8
TUNING_SIZE = 96
TUNING_OFFSET = 2_000_000_000
#: Normalisation of a recipe that records none: its [0, 1] images as made (min-max).
AS_MADE = Normalization(0.0, 100.0, clip=False)
#: The search never tries probability thresholds that keep more than this share of the
#: grid points as candidates (a badly trained network would make NMS take minutes).
MAX_CANDIDATE_SHARE = 0.05
#: Most threshold pairs the search tries (the progress total after the volumes).
MAX_PAIRS = len(NMS_GRID) * len(PROB_GRID) + len(PROB_REFINE)


def candidate_floor(solvers) -> float:
    """Lowest probability threshold worth searching: the one that keeps at most
    :data:`MAX_CANDIDATE_SHARE` of the grid points as NMS candidates (at most the search's
    highest grid value)."""
    probs = np.concatenate([s.output.prob.ravel() for s in solvers])
    return min(float(np.quantile(probs, 1 - MAX_CANDIDATE_SHARE)), max(PROB_GRID))


def tuning_settings(synth_settings):
    """Settings of held-out tuning volumes: A(.)'s intensity steps only, :data:`TUNING_SIZE`."""
    from napari_anystar.synth import SynthSettings

    base = synth_settings or SynthSettings()
    return replace(base, size=min(TUNING_SIZE, base.grid_size), augment_spatial=False)


def tuning_volumes(generator: str, seed: int, synth_settings) -> list[tuple[np.ndarray,
                                                                              np.ndarray]]:
    """Held-out synthetic (image, labels) for threshold tuning, made with A(.)'s intensity
    steps only: realistic noise and contrast, but whole objects (after the spatial steps most
    instances are slivers, which would make every threshold look bad) and no crop border
    inside a network window."""
    from napari_anystar.synth import generate, sample_seed

    settings = tuning_settings(synth_settings)
    return [
        (sample.image, sample.labels.astype(np.int32))
        for sample in (generate(generator, sample_seed(seed, TUNING_OFFSET + j), settings)
                       for j in range(TUNING_VOLUMES))
    ]


def tune_thresholds(
    model, images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
    norm: Normalization | None,
) -> Generator[int, None, dict[str, float]]:
    """Yield progress (volumes predicted, then pairs tried); return ``{"prob", "nms"}``.

    ``norm`` is the model's normalisation (None: images as made). Normalising an already
    normalised image again changes nothing, so the images may come either way.
    """
    from napari_anystar.model.instances import InstanceSolver
    from napari_anystar.model.predict import PredictSettings, predict_network

    settings = PredictSettings(norm=norm or AS_MADE)
    solvers = []
    for done, image in enumerate(images, start=1):
        solvers.append(InstanceSolver(result_of(predict_network(model, image, settings)), model))
        yield done
    truth = [np.maximum(y, 0).astype(np.int32) for y in labels]
    search = tune_thresholds_on_outputs(
        [s.labels for s in solvers], truth,
        min_prob=max(candidate_floor(solvers), solvers[0].output.min_prob))
    choice = yield from mapped(search, lambda tried: len(images) + tried)
    return {"prob": float(np.clip(choice.prob, 1e-3, 0.999)), "nms": float(choice.nms)}


def recipe_thresholds(model, folder: str | Path) -> Generator[int, None, dict[str, float]]:
    """:func:`tune_thresholds` for a trained synthetic model as it predicts today (its
    normalisation and ray scale, as ``registry.load_model`` sets them) on its recipe's
    held-out tuning volumes (generator, seed and synthesis settings from ``training.json``);
    yields progress like :func:`tune_thresholds`."""
    from napari_anystar.synth import SynthSettings

    record = json.loads((Path(folder) / "training.json").read_text(encoding="utf-8"))
    recorded = record["data"].get("synth_settings") or {}  # None: runs from before it was kept
    synth = SynthSettings(**{k: tuple(v) if isinstance(v, list) else v
                             for k, v in recorded.items()})
    volumes = tuning_volumes(record["recipe"]["generator"], record["seed"], synth)
    return (yield from tune_thresholds(model, [v[0] for v in volumes], [v[1] for v in volumes],
                                       model.anystar_normalization))
