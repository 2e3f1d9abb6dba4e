"""npe2 sample data: one small synthetic volume (image + labels) per AnyStar generator.

Each opener is deterministic (fixed seed) and quick (64^3 output, augmentation on).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from napari_anystar.synth import GENERATOR_TITLES, SynthSettings, generate

SAMPLE_SEED = 7
SAMPLE_SETTINGS = SynthSettings(size=64, augment=True)

LayerDataTuple = tuple[Any, dict, str]


def synthetic_sample(generator: str) -> list[LayerDataTuple]:
    """Image and labels layer data of the fixed sample of ``generator``."""
    sample = generate(generator, SAMPLE_SEED, SAMPLE_SETTINGS)
    title = GENERATOR_TITLES[generator]
    metadata = {
        "generator": generator,
        "seed": sample.seed,
        "background": sample.background,
        "settings": dataclasses.asdict(sample.settings),
    }
    return [
        (
            sample.image,
            {"name": f"{title} sample image", "metadata": metadata, "colormap": "gray",
             "contrast_limits": (0.0, 1.0)},
            "image",
        ),
        (sample.labels, {"name": f"{title} sample labels", "metadata": dict(metadata)}, "labels"),
    ]


def as_mix() -> list[LayerDataTuple]:
    """AS-Mix sample (background mode drawn among plain / rand / perlin)."""
    return synthetic_sample("as-mix")


def as_brightfg_plainbg() -> list[LayerDataTuple]:
    """AS-BrightFG-PlainBG sample (bright objects, plain background)."""
    return synthetic_sample("as-brightfg-plainbg")


def as_randfg_plainbg() -> list[LayerDataTuple]:
    """AS-RandFG-PlainBG sample (objects brighter or darker than a plain background)."""
    return synthetic_sample("as-randfg-plainbg")


def as_randfg_perlinbg() -> list[LayerDataTuple]:
    """AS-RandFG-PerlinBG sample (textured Perlin background)."""
    return synthetic_sample("as-randfg-perlinbg")
