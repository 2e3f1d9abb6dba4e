"""Object polarity: are the objects brighter or darker than what surrounds them?

Fluorescence shows nuclei bright on a dark background; micro-CT (NucMM-M, mouse cortex) and
some electron microscopy show them dark on a brighter one. AS-Mix trains on objects of either
contrast, but the bundled network finds bright objects far better: the 22 BBBC050 dev volumes
with their intensities negated (dark nuclei on a bright background) score 0.238 against
0.412 as recorded (*auto* scale, StarDist's outlines), and outline refinement, which looks
for the edge where the intensity rises into an object, made that worse (0.199).

The *auto* policy (:data:`DEFAULT_POLARITY`) segments the image as given and measures the
contrast of the objects found (:func:`object_contrast`). When they are darker than their
surroundings on the whole (or none were found), it segments the negated image too and keeps
that (``PredictSettings.invert``: the network and the refinement then see bright objects)
if the objects found there are brighter than theirs. Both runs must agree because AS-Mix
volumes mix objects of both contrasts: there the network finds dark objects as trained, and
in 2 of 16 clean AS-Mix 128^3 volumes both orientations measured dark objects, negating
would have lost 0.09 and 0.15 accuracy. On the dev folder as recorded every volume measured
a contrast of +0.07 or more (110 volume versions: as recorded, under an illumination
gradient, with shot noise, at other samplings); negated, every volume with objects measured
-0.03 or less.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import TypeVar

import numpy as np

P = TypeVar("P")
R = TypeVar("R")

#: Which objects to segment: decided per volume (``auto``), or as stated.
POLARITIES = ("auto", "bright", "dark")
#: The Segment widget's and ``anystar segment``'s default.
DEFAULT_POLARITY = "auto"
#: Shell around each object whose intensity it is compared with, in object diameters per
#: axis (as far as outline refinement lets an outline move: ``refine.GROWTH``).
SHELL = 0.25


def check_polarity(polarity: str) -> None:
    """ValueError (one line) unless ``polarity`` is one of :data:`POLARITIES`."""
    if polarity not in POLARITIES:
        raise ValueError(f"Objects must be one of {', '.join(POLARITIES)}, got {polarity!r}.")


def object_contrast(smoothed: np.ndarray, labels: np.ndarray,
                    diameter: tuple[float, float, float]) -> float:
    """How much brighter the objects of ``labels`` are than the shell around them in
    ``smoothed`` (an image scaled to [0, 1]): the mean over objects, weighted by their
    volume, of (mean inside - mean of the voxels within :data:`SHELL` diameters outside
    it). Positive: bright objects; negative: dark ones; nan without an object that has a
    shell."""
    n = int(labels.max(initial=0))
    if n == 0:
        return math.nan
    from scipy import ndimage as ndi

    box = [2 * math.ceil(SHELL * d) + 1 for d in diameter]
    near = ndi.grey_dilation(labels, size=box)  # the largest id within the box
    flat, values = labels.ravel(), smoothed.ravel()
    shell = (flat == 0) & (near.ravel() > 0)
    size = np.bincount(flat, minlength=n + 1)
    inside = np.bincount(flat, weights=values, minlength=n + 1) / np.maximum(size, 1)
    ring_ids = near.ravel()[shell]
    ring_size = np.bincount(ring_ids, minlength=n + 1)
    ring = np.bincount(ring_ids, weights=values[shell], minlength=n + 1) / np.maximum(ring_size, 1)
    weight = np.where(ring_size > 0, size, 0)[1:]
    if weight.sum() == 0:
        return math.nan
    return float(np.sum(weight * (inside - ring)[1:]) / weight.sum())


def choose_polarity(run: Callable[[bool], Generator[P, None, R]], contrast: Callable[[R], float],
                    polarity: str) -> Generator[P, None, R]:
    """The run that ``polarity`` picks, yielding the runs' progress: ``run(invert)`` segments
    the volume as given (False) or negated (True), ``contrast`` measures a run's objects
    (:func:`object_contrast`). *auto* runs the volume as given and, if its objects are dark
    (or none were found), the negation too, kept if its objects are bright."""
    check_polarity(polarity)
    result = yield from run(polarity == "dark")
    if polarity == "auto" and not contrast(result) >= 0:
        negated = yield from run(True)
        if contrast(negated) > 0:
            result = negated
    return result
