"""PredictionCache: keys, hits/misses, LRU and memory bounds."""

from __future__ import annotations

import numpy as np
import pytest

from napari_anystar.model.cache import PredictionCache, data_fingerprint, make_key
from napari_anystar.model.predict import NetworkOutput, PredictSettings
from napari_anystar.normalization import Normalization


def _output(n=10, n_rays=8):
    return NetworkOutput(
        image_shape=(8, 8, 8), scaled_shape=(8, 8, 8), scale=None, n_tiles=(1, 1, 1),
        tiles_total=1, grid=(1, 1, 1), min_prob=0.05,
        points=np.zeros((n, 3), np.int64), cand_prob=np.full(n, 0.5, np.float32),
        cand_dist=np.ones((n, n_rays), np.float32), prob=np.zeros((8, 8, 8), np.float32))


def test_data_fingerprint_tracks_content_shape_and_dtype():
    a = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    assert data_fingerprint(a) == data_fingerprint(a.copy())
    b = a.copy()
    b[1, 2, 3] += 1
    assert data_fingerprint(b) != data_fingerprint(a)
    assert data_fingerprint(a.reshape(3, 5, 4)) != data_fingerprint(a)
    assert data_fingerprint(a.astype(np.float64)) != data_fingerprint(a)
    assert data_fingerprint(a[:, ::2]) == data_fingerprint(np.ascontiguousarray(a[:, ::2]))


def test_key_depends_on_what_changes_the_network_output():
    base = make_key("d", "m", PredictSettings())
    assert base == make_key("d", "m", PredictSettings(device="cpu"))
    variants = [
        make_key("d2", "m", PredictSettings()),
        make_key("d", "m2", PredictSettings()),
        make_key("d", "m", PredictSettings(scale=(1.0, 0.5, 0.5))),
        make_key("d", "m", PredictSettings(norm=Normalization(2.0, 99.8, clip=False))),
        make_key("d", "m", PredictSettings(norm=Normalization(2.0, 99.8, clip=True))),
        make_key("d", "m", PredictSettings(n_tiles=(1, 2, 2))),
    ]
    assert len({base, *variants}) == 7


def test_hits_misses_and_lru_eviction():
    cache = PredictionCache(max_entries=2)
    k1, k2, k3 = (make_key(f"d{i}", "m", PredictSettings()) for i in range(3))
    assert cache.get(k1) is None and cache.misses == 1
    out1, out2, out3 = _output(), _output(), _output()
    cache.put(k1, out1, "solver1")
    cache.put(k2, out2, "solver2")
    assert cache.get(k1) == (out1, "solver1") and cache.hits == 1
    cache.put(k3, out3, "solver3")             # evicts k2, the least recently used
    assert k2 not in cache and k1 in cache and k3 in cache and len(cache) == 2
    assert cache.get(k2) is None and cache.misses == 2
    assert cache.keys() == [k1, k3]
    cache.clear()
    assert len(cache) == 0


def test_memory_bound_keeps_newest_entry():
    one = _output(n=1000, n_rays=64)
    cache = PredictionCache(max_entries=5, max_bytes=int(1.5 * (one.cand_dist.nbytes)))
    k1, k2 = make_key("a", "m", PredictSettings()), make_key("b", "m", PredictSettings())
    cache.put(k1, one, None)
    cache.put(k2, _output(n=1000, n_rays=64), None)
    assert k2 in cache and k1 not in cache
    assert cache.nbytes <= cache.max_bytes or len(cache) == 1


def test_rejects_empty_cache():
    with pytest.raises(ValueError):
        PredictionCache(max_entries=0)
