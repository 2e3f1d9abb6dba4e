"""The pipeline's scale estimate reuses network output a Run already computed.

The tiny test model's estimate never settles (its scale grows 1.5x a round up to the limit),
so these tests fix the estimate at two rounds: what they check is which rounds reuse a Run.
"""

from __future__ import annotations

import pytest
from test_refine import blurred_blobs, objects_model

from conftest import drain
from napari_anystar.model import object_size, registry, segmenter
from napari_anystar.model.cache import PredictionCache
from napari_anystar.model.object_size import estimate_scale
from napari_anystar.model.predict import PredictSettings

PROB, NMS = 0.5, 0.35


@pytest.fixture(autouse=True)
def two_rounds(monkeypatch):
    monkeypatch.setattr(object_size, "MAX_ROUNDS", 2)


@pytest.fixture(scope="module")
def entry(tiny_model_dir, tmp_path_factory):
    folder = objects_model(tiny_model_dir, tmp_path_factory.mktemp("scale") / "tiny-objects")
    return registry.ModelEntry(folder.name, folder, "folder")


def _first_round(entry, image) -> tuple[float, float, float] | None:
    scale = drain(estimate_scale(registry.load_model(entry), image, None, PROB, rounds=1))[1].scale
    return None if scale == (1.0, 1.0, 1.0) else scale


def test_suggest_reads_the_round_a_run_already_did(entry, network_calls):
    image = blurred_blobs()
    settings = PredictSettings()  # raw voxels, automatic tiles: Suggest's first round
    alone = drain(segmenter.scale_job(entry, image, settings, PROB))[1]
    first = _first_round(entry, image)
    assert first is not None and network_calls == [None, first]       # two rounds, two runs

    cache = PredictionCache()
    drain(segmenter.network_job(entry, image, settings, (PROB, NMS), cache, refine=False))
    network_calls.clear()
    reused = drain(segmenter.scale_job(entry, image, settings, PROB, cache))[1]
    assert reused == alone                      # the same estimate ...
    assert network_calls == [first]             # ... with the network run for round 2 only
    assert (cache.hits, cache.misses) == (0, 1)  # looking does not count as a cache use

    network_calls.clear()                       # another volume: nothing to reuse
    other = blurred_blobs(seed=1)
    drain(segmenter.scale_job(entry, other, settings, PROB, cache))
    assert len(network_calls) == 2 and network_calls[0] is None


def test_auto_scale_reads_a_cached_raw_voxel_run(entry, network_calls):
    image = blurred_blobs()
    cache = PredictionCache()
    drain(segmenter.network_job(entry, image, PredictSettings(), (PROB, NMS), cache,
                                refine=False))
    network_calls.clear()
    auto = drain(segmenter.network_job(entry, image, PredictSettings(), (PROB, NMS), cache,
                                       auto_scaled=True, refine=False))[1]
    first = _first_round(entry, image)
    assert network_calls == [first, auto.settings.scale]   # round 2, then the Run itself
    fresh = drain(segmenter.network_job(entry, image, PredictSettings(), (PROB, NMS),
                                        PredictionCache(), auto_scaled=True, refine=False))[1]
    assert fresh.settings.scale == auto.settings.scale
