"""The AnyStar generative model: label maps, appearance, augmentation A(.), named generators."""

from .export import export_samples
from .generators import (
    BACKGROUND_MODES,
    GENERATOR_NAMES,
    GENERATOR_TITLES,
    MIN_OUTPUT_SIZE,
    SyntheticSample,
    SynthSettings,
    generate,
    sample_seed,
)

__all__ = [
    "BACKGROUND_MODES",
    "GENERATOR_NAMES",
    "GENERATOR_TITLES",
    "MIN_OUTPUT_SIZE",
    "SynthSettings",
    "SyntheticSample",
    "export_samples",
    "generate",
    "sample_seed",
]
