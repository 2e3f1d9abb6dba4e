"""One-shot segmentation (benchmarks): network, then instances for one threshold pair."""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from .instances import InstanceSolver
from .predict import PredictSettings, predict_network


def segment_volume(model, image: np.ndarray, settings: PredictSettings | None,
                   prob_thresh: float, nms_thresh: float,
                   ) -> Generator[tuple[int, int], None, np.ndarray]:
    """Yields ``(tiles_done, tiles_total)``; returns the int32 label image.

    The labels equal ``model.predict_instances`` with the same thresholds, scale, tiles and
    percentile normalisation. Closing the generator cancels at the next tile boundary.
    """
    output = yield from predict_network(model, image, settings or PredictSettings())
    solver = InstanceSolver(output, model)
    return solver.labels(float(prob_thresh), float(nms_thresh))
