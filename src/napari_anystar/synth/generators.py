"""The named AnyStar generators and :func:`generate`, one synthetic training sample per seed.

A sample is ``L`` (label map), ``g(L)`` (clean image), then ``A(g(L)), A(L)`` (augmentation),
with labels finally made unique (connected components) and numbered 1..n. A seed fully
determines the sample; a draw whose image is all zero or that keeps no instance is discarded
and redrawn from a seed derived deterministically from the sample seed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "BACKGROUND_MODES",
    "GENERATOR_NAMES",
    "GENERATOR_TITLES",
    "SynthSettings",
    "SyntheticSample",
    "generate",
    "sample_seed",
]

GENERATOR_NAMES: tuple[str, ...] = (
    "as-mix",
    "as-brightfg-plainbg",
    "as-randfg-plainbg",
    "as-randfg-perlinbg",
)
BACKGROUND_MODES: tuple[str, ...] = ("plain", "rand", "perlin")
GENERATOR_TITLES: dict[str, str] = {
    "as-mix": "AS-Mix",
    "as-brightfg-plainbg": "AS-BrightFG-PlainBG",
    "as-randfg-plainbg": "AS-RandFG-PlainBG",
    "as-randfg-perlinbg": "AS-RandFG-PerlinBG",
}
# background modes each generator draws from (uniformly)
GENERATOR_BACKGROUNDS: dict[str, tuple[str, ...]] = {
    "as-mix": BACKGROUND_MODES,
    "as-brightfg-plainbg": ("plain",),
    "as-randfg-plainbg": ("rand",),
    "as-randfg-perlinbg": ("perlin",),
}
MAX_ATTEMPTS = 100
_MASK64 = 2**64 - 1


#: Smallest output edge length (voxels) a sample can be cropped to.
MIN_OUTPUT_SIZE = 16


@dataclass(frozen=True)
class SynthSettings:
    """Synthesis settings (paper defaults); every field is checked by :meth:`validate`."""

    size: int = 64  # output edge length (the random crop), voxels
    grid_size: int = 128  # synthesis grid edge length
    mean_radius: float = 12.0  # r_mean, voxels
    pad_choices: tuple[int, ...] = (0, 32, 64, 96)  # density padding per side
    background: str | None = None  # override the generator's background mode
    augment: bool = True  # apply A(.) (False: final = centre crop of g(L), L)
    augment_spatial: bool = True  # False: only A(.)'s intensity steps, labels left whole
    zoom_range: tuple[float, float] = (0.4, 1.4)  # RandZoom factors of A(.)
    axial_blur: float = 0.0  # probability of a blur along one axis (an elongated PSF)
    psf_blur: float = 0.0  # probability of an isotropic PSF blur of g(L) before A(.)
    aligned_zoom: bool = True  # False: the reference's half-voxel label shift (ablation only)
    random_crop: bool = True  # False: a fixed size^3 first crop, as before 2957b69 (--fixed-crop)

    def validate(self) -> None:
        """Raise ValueError with a one-line, user-facing message if a setting is unusable."""
        if not _is_int(self.grid_size) or self.grid_size < 32:
            raise ValueError(f"grid size must be an integer >= 32, got {self.grid_size!r}")
        if not _is_int(self.size) or not MIN_OUTPUT_SIZE <= self.size <= self.grid_size:
            raise ValueError(
                f"output size must be an integer between {MIN_OUTPUT_SIZE} and the grid size "
                f"({self.grid_size}), got {self.size!r}"
            )
        max_radius = self.grid_size / 4
        if not isinstance(self.mean_radius, int | float) or not (
            3 <= self.mean_radius <= max_radius
        ):
            raise ValueError(
                f"mean radius must be between 3 and {max_radius:g} voxels (grid size / 4), "
                f"got {self.mean_radius!r}"
            )
        pads = self.pad_choices
        if (
            not isinstance(pads, tuple | list)
            or not pads
            or not all(_is_int(p) and 0 <= p <= 2 * self.grid_size for p in pads)
        ):
            raise ValueError(
                f"padding choices must be a non-empty list of integers between 0 and "
                f"{2 * self.grid_size} (2 x grid size), got {pads!r}"
            )
        zoom = self.zoom_range
        if (not isinstance(zoom, tuple | list) or len(zoom) != 2
                or not all(isinstance(z, int | float) for z in zoom)
                or not 0.1 <= zoom[0] <= zoom[1] <= 4):
            raise ValueError(
                f"zoom range must be two numbers 0.1 <= low <= high <= 4, got {zoom!r}")
        if not isinstance(self.axial_blur, int | float) or not 0 <= self.axial_blur <= 1:
            raise ValueError(f"axial blur must be a probability in [0, 1], got {self.axial_blur!r}")
        if not isinstance(self.psf_blur, int | float) or not 0 <= self.psf_blur <= 1:
            raise ValueError(f"PSF blur must be a probability in [0, 1], got {self.psf_blur!r}")
        if self.background is not None and self.background not in BACKGROUND_MODES:
            raise ValueError(
                f"unknown background mode {self.background!r}; "
                f"choose one of {', '.join(BACKGROUND_MODES)}"
            )


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@dataclass
class SyntheticSample:
    """One synthetic training pair and, optionally, its intermediate stages."""

    image: np.ndarray  # float32 in [0, 1], shape (size,)*3
    labels: np.ndarray  # uint16, ids consecutive from 1, 0 = background
    generator: str
    seed: int
    background: str  # the background mode actually used
    settings: SynthSettings
    # "label_map" (L, grid^3 uint16), "clean_image" (g(L) on the full grid^3, float32 in
    # [0, 1]), "augmented_image" (A(g(L)), = image), "augmented_labels" (A(L) before the ids
    # are made unique); empty unless keep_stages
    stages: dict[str, np.ndarray] = field(default_factory=dict)


def sample_seed(base_seed: int, index: int) -> int:
    """Seed of the ``index``-th sample of a series from ``base_seed`` (0 <= seed < 2^63)."""
    state = np.random.SeedSequence([int(base_seed) & _MASK64, int(index)])
    return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))


def check_generator(generator: str) -> None:
    """ValueError listing the valid names if ``generator`` is not one of them."""
    if generator not in GENERATOR_NAMES:
        raise ValueError(
            f"unknown generator {generator!r}; choose one of {', '.join(GENERATOR_NAMES)}"
        )


def _centre_crop(array: np.ndarray, size: int) -> np.ndarray:
    start = [(n - size) // 2 for n in array.shape]
    return array[tuple(slice(s, s + size) for s in start)]


def _attempt(generator: str, seed: int, attempt: int, settings: SynthSettings, keep: bool):
    # imported here so that names, settings and the CLI parser load without torch
    from .appearance import synth_image
    from .augment import augment, psf_blur
    from .labels import make_unique, synth_label_map

    children = np.random.SeedSequence([seed & _MASK64, attempt]).spawn(4)
    rngs = [np.random.default_rng(s) for s in children]
    background = settings.background or str(rngs[0].choice(GENERATOR_BACKGROUNDS[generator]))
    label_map = synth_label_map(
        rngs[1], settings.grid_size, settings.mean_radius, settings.pad_choices
    )
    clean = synth_image(rngs[2], label_map, background)
    stages: dict[str, np.ndarray] = {}
    if keep:
        low, high = float(clean.min()), float(clean.max())
        stages["label_map"] = label_map
        stages["clean_image"] = ((clean - low) / max(high - low, 1e-12)).astype(np.float32)
    if settings.augment:
        clean = psf_blur(rngs[2], clean, float(settings.psf_blur))
        image, aug_labels = augment(
            rngs[3], clean, label_map, settings.size, zoom=tuple(settings.zoom_range),
            spatial=settings.augment_spatial, axial_blur_prob=float(settings.axial_blur),
            aligned=settings.aligned_zoom, random_crop=settings.random_crop,
        )
        if keep:
            stages["augmented_image"] = image
            stages["augmented_labels"] = aug_labels.astype(np.uint16)
        labels = make_unique(aug_labels)
    else:
        low, high = float(clean.min()), float(clean.max())
        image = ((_centre_crop(clean, settings.size) - low) / max(high - low, 1e-12)).astype(
            np.float32
        )
        labels = make_unique(_centre_crop(label_map, settings.size))
    return background, np.ascontiguousarray(image, np.float32), labels, stages


@contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run torch single-threaded (its small ops only lose time to thread hand-offs here)."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def generate(
    generator: str,
    seed: int,
    settings: SynthSettings | None = None,
    *,
    keep_stages: bool = False,
) -> SyntheticSample:
    """One synthetic sample of ``generator`` fully determined by ``seed`` and ``settings``.

    Raises ValueError for an unknown generator or invalid settings. Never returns an all-zero
    image or a sample without instances (such draws are redrawn from derived seeds).
    """
    check_generator(generator)
    settings = settings or SynthSettings()
    settings.validate()
    seed = int(seed)
    with _one_torch_thread():
        for attempt in range(MAX_ATTEMPTS):
            background, image, labels, stages = _attempt(
                generator, seed, attempt, settings, keep_stages
            )
            if image.max() > 0 and labels.max() > 0:
                return SyntheticSample(
                    image, labels, generator, seed, background, settings, stages
                )
    raise RuntimeError(f"no usable sample after {MAX_ATTEMPTS} attempts (seed {seed})")
