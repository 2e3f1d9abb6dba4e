"""One-shot segmentation (benchmarks): network, then instances for one threshold pair."""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from .instances import InstanceSolver
from .object_size import training_diameter
from .predict import PredictSettings, predict_network
from .refine import DEFAULT_REFINE, OutlineRefiner


def segment_volume(model, image: np.ndarray, settings: PredictSettings | None,
                   prob_thresh: float, nms_thresh: float, *, refine: bool = DEFAULT_REFINE,
                   ) -> Generator[tuple[int, int], None, np.ndarray]:
    """Yields ``(tiles_done, tiles_total)``; returns the int32 label image.

    Without ``refine`` the labels equal ``model.predict_instances`` with the same thresholds,
    scale, tiles, percentile normalisation and edge band (``b``, :data:`.predict.EDGE_BAND`);
    with it, their outlines are refined to the image (:mod:`.refine`), as the Segment widget
    and ``anystar segment`` do by default.
    Closing the generator cancels at the next tile boundary.
    """
    settings = settings or PredictSettings()
    output = yield from predict_network(model, image, settings)
    labels = InstanceSolver(output, model).labels(float(prob_thresh), float(nms_thresh))
    if not refine:
        return labels
    return OutlineRefiner.at_scale(image, settings.scale, training_diameter(model),
                                   settings.invert)(labels)
