"""Every TensorFlow call runs on one owner thread, whichever thread asks (``_tf.py``)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from conftest import drain, forward_calls
from napari_anystar import _tf
from napari_anystar.model import registry
from napari_anystar.model.predict import predict_network
from napari_anystar.train import TrainSettings, train


def _in_threads(fn, n: int = 3) -> list:
    """``fn()`` called from ``n`` fresh threads, one after another; their results."""
    results: list = []
    for _ in range(n):
        thread = threading.Thread(target=lambda: results.append(fn()))
        thread.start()
        thread.join(60)
    return results


def test_calls_from_any_thread_run_on_one_owner_thread():
    idents = [*_in_threads(lambda: _tf.tf_call(threading.get_ident)),
              _tf.tf_call(threading.get_ident)]
    assert len(set(idents)) == 1
    assert idents[0] != threading.get_ident()
    assert _tf.tf_call(lambda: threading.current_thread().name) == "anystar-tensorflow"
    assert not _tf.on_owner_thread()
    assert _tf.tf_call(_tf.on_owner_thread)


def test_call_passes_arguments_and_exceptions_and_nests():
    assert _tf.tf_call(divmod, 7, 2) == (3, 1)
    with pytest.raises(ZeroDivisionError):
        _tf.tf_call(divmod, 1, 0)
    # a call made on the owner thread runs at once instead of waiting for itself
    assert _tf.tf_call(lambda: _tf.tf_call(lambda: 5) + 1) == 6


def test_owned_generator_steps_sends_returns_and_closes_on_the_owner():
    seen: list[tuple[str, int]] = []

    def job():
        try:
            got = yield threading.get_ident()
            seen.append(("sent", got))
            yield threading.get_ident()
            return "done"
        finally:
            seen.append(("finally", threading.get_ident()))

    owner = _tf.tf_call(threading.get_ident)
    gen = _tf.tf_owned(job())
    assert next(gen) == owner
    assert gen.send(41) == owner
    with pytest.raises(StopIteration) as stop:
        next(gen)
    assert stop.value.value == "done"
    assert seen == [("sent", 41), ("finally", owner)]

    seen.clear()
    gen = _tf.tf_owned(job())
    next(gen)
    gen.close()  # cancelled between steps: the job's finally runs, on the owner
    assert seen == [("finally", owner)]


def test_owned_generator_raises_the_jobs_error():
    def job():
        yield 1
        raise ValueError("bad volume")

    gen = _tf.tf_owned(job())
    assert next(gen) == 1
    with pytest.raises(ValueError, match="bad volume"):
        next(gen)


def test_model_load_and_prediction_run_on_the_owner(tiny_model_dir, monkeypatch):
    owner = _tf.tf_call(threading.get_ident)
    loaded: list[int] = []
    original_load = registry._load

    def recording_load(folder, weights):
        loaded.append(threading.get_ident())
        return original_load(folder, weights)

    monkeypatch.setattr(registry, "_load", recording_load)
    entry = registry.remember_model_folder(tiny_model_dir)
    models = _in_threads(lambda: registry.load_model(entry), n=2)
    assert models[0] is models[1] and loaded and set(loaded) == {owner}

    model = models[0]
    predicted = forward_calls(model, monkeypatch, lambda _: threading.get_ident())
    image = np.random.default_rng(0).random((24, 40, 40)).astype(np.float32)
    outputs = _in_threads(lambda: drain(predict_network(model, image))[1], n=2)
    assert len(predicted) == 2 and set(predicted) == {owner}
    np.testing.assert_array_equal(outputs[0].cand_prob, outputs[1].cand_prob)


def test_training_steps_run_on_the_owner(tiny_model_dir, tmp_path, monkeypatch):
    from napari_anystar.train import loop

    owner = _tf.tf_call(threading.get_ident)
    stepped: list[int] = []
    original = loop._val_loss

    def recording_val_loss(*args, **kwargs):
        stepped.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(loop, "_val_loss", recording_val_loss)
    rng = np.random.default_rng(0)
    labels = np.zeros((32, 32, 32), np.int32)
    labels[8:16, 8:16, 8:16], labels[18:26, 18:26, 18:26] = 1, 2
    image = (labels > 0) + 0.1 * rng.random(labels.shape)
    settings = TrainSettings(out_dir=tmp_path / "run", base_model=str(tiny_model_dir),
                             images=[image.astype(np.float32)] * 2, labels=[labels] * 2,
                             steps=1, patch_size=32, optimize_thresholds=False)
    events, folder = _in_threads(lambda: drain(train(settings)), n=1)[0]
    assert folder == (tmp_path / "run").resolve() and events[-1].kind == "saved"
    assert stepped == [owner]
