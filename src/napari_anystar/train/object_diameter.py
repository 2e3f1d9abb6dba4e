"""The object size a synthetic recipe teaches, recorded so the scale suggestion matches it.

The Segment widget's *Suggest* and the default *auto* scale rescale a volume so that its
objects get the size of the training objects. That size depends on the recipe (synthesis
radius, zoom range of A(.), which instances are ignored), so it is measured on held-out
samples of the recipe itself: the volume-weighted median equivalent diameter of the
instances the targets keep (fragments marked ignore are left out, as the network never
learns them).
"""

from __future__ import annotations

import numpy as np

from napari_anystar.model.object_size import weighted_median
from napari_anystar.train.data import mark_fragments

#: Held-out samples measured, and their seed-series offset.
DIAMETER_SAMPLES = 24
DIAMETER_OFFSET = 3_000_000_000


def equivalent_diameters(labels: np.ndarray) -> np.ndarray:
    """Diameter (voxels) of the sphere with each instance's volume (labels > 0)."""
    counts = np.bincount(np.maximum(labels, 0).ravel())[1:]
    return (6.0 * counts[counts > 0] / np.pi) ** (1.0 / 3.0)


def volume_weighted_median(diameters: np.ndarray) -> float:
    """Median of the diameters, each instance weighted by its volume."""
    return float(weighted_median(diameters[:, None], diameters**3)[0])


def training_object_diameter(generator: str, seed: int, synth_settings,
                             fragment_ignore: int) -> float:
    """The recipe's training object size in voxels (see the module docstring)."""
    from napari_anystar.synth import generate, sample_seed

    diameters = [
        equivalent_diameters(mark_fragments(
            generate(generator, sample_seed(seed, DIAMETER_OFFSET + j), synth_settings)
            .labels.astype(np.int32), fragment_ignore))
        for j in range(DIAMETER_SAMPLES)
    ]
    return round(volume_weighted_median(np.concatenate(diameters)), 2)
