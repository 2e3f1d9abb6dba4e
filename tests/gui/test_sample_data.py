"""File > Open Sample: one synthetic image + labels volume per AnyStar generator."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels

from napari_anystar import _sample_data
from napari_anystar.synth import GENERATOR_NAMES

KEYS = ("as-mix", "as-brightfg-plainbg", "as-randfg-plainbg", "as-randfg-perlinbg")


def test_keys_cover_every_generator():
    assert set(KEYS) == set(GENERATOR_NAMES)


@pytest.mark.parametrize("key", KEYS)
def test_open_sample(make_napari_viewer, key):
    viewer = make_napari_viewer()
    layers = viewer.open_sample("napari-anystar", key)

    assert len(layers) == len(viewer.layers) == 2
    image, labels = layers
    assert isinstance(image, Image) and isinstance(labels, Labels)
    assert image.data.shape == labels.data.shape == (64, 64, 64)
    assert image.data.dtype == np.float32 and image.data.max() > 0
    assert np.issubdtype(labels.data.dtype, np.integer) and labels.data.max() >= 1
    assert image.metadata["generator"] == labels.metadata["generator"] == key


def test_sample_is_deterministic():
    first = _sample_data.as_randfg_plainbg()
    second = _sample_data.as_randfg_plainbg()
    assert [kind for _, _, kind in first] == ["image", "labels"]
    for (a, meta_a, _), (b, meta_b, _) in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)
        assert meta_a["name"] == meta_b["name"]
