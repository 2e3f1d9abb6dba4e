"""Model registry: validation, listing order and names, remembering, loading, events."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from napari_anystar._paths import user_config_dir, user_models_dir
from napari_anystar.model import model_settings, registry
from napari_anystar.model.registry import InvalidModelError, ModelEntry
from napari_anystar.normalization import ANYSTAR, LEGACY, Normalization


@pytest.fixture(autouse=True)
def _fresh_registry(monkeypatch, tmp_path):
    """No shipped models unless a test adds some; no cached networks across tests."""
    monkeypatch.setattr(registry, "BUNDLED_MODELS_DIR", tmp_path / "bundled")
    registry.clear_caches()
    yield
    registry.clear_caches()


def copy_model(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def edit_config(folder: Path, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


# ------------------------------------------------------------------------ validation
def test_valid_folder_passes(tiny_model_dir):
    registry.validate_model_folder(tiny_model_dir)
    assert registry.weights_file(tiny_model_dir).name == "weights_best.h5"


def _missing_config(folder):
    (folder / "config.json").unlink()


def _missing_weights(folder):
    (folder / "weights_best.h5").unlink()


def _two_d(folder):
    edit_config(folder, n_dim=2, axes="YXC")


def _two_channels(folder):
    edit_config(folder, n_channel_in=2)


def _garbage_json(folder):
    (folder / "config.json").write_text("{not json at all")


def _json_list(folder):
    (folder / "config.json").write_text("[1, 2, 3]")


def _bad_ray_scale(folder):
    (folder / "anystar.json").write_text(json.dumps({"ray_scale": "wide"}))


def _huge_ray_scale(folder):
    (folder / "anystar.json").write_text(json.dumps({"ray_scale": 5}))


def _bad_normalization(folder):
    (folder / "anystar.json").write_text(json.dumps({"normalization": {"low": 99, "high": 1}}))


def _untyped_normalization(folder):
    (folder / "anystar.json").write_text(json.dumps({"normalization": [0, 99.9]}))


def _settings_not_json(folder):
    (folder / "anystar.json").write_text("ray_scale = 1.2")


@pytest.mark.parametrize(
    ("breaker", "expected"),
    [
        (_missing_config, "no config.json"),
        (_missing_weights, "weights_best.h5"),
        (_two_d, "2D model"),
        (_two_channels, "2 input channels"),
        (_garbage_json, "not valid JSON"),
        (_json_list, "not a StarDist configuration"),
        (_bad_ray_scale, "needs a number 'ray_scale'"),
        (_huge_ray_scale, "outside 0.5..2"),
        (_bad_normalization, "0 <= low < high <= 100"),
        (_untyped_normalization, "normalization must be"),
        (_settings_not_json, "anystar.json is not valid JSON"),
    ],
)
def test_broken_folders_are_refused(tiny_model_dir, tmp_path, breaker, expected):
    folder = copy_model(tiny_model_dir, tmp_path / "broken")
    breaker(folder)
    with pytest.raises(InvalidModelError, match=expected) as info:
        registry.validate_model_folder(folder)
    assert "\n" not in str(info.value)
    with pytest.raises(InvalidModelError):
        registry.remember_model_folder(folder)
    assert registry.list_models() == []
    assert not (user_config_dir() / "model_folders.json").exists()


def test_not_a_folder_is_refused(tmp_path):
    with pytest.raises(InvalidModelError, match="is not a folder"):
        registry.validate_model_folder(tmp_path / "nowhere")


def test_weights_last_is_the_fallback(tiny_model_dir, tmp_path):
    folder = copy_model(tiny_model_dir, tmp_path / "last-only")
    (folder / "weights_best.h5").rename(folder / "weights_last.h5")
    registry.validate_model_folder(folder)
    assert registry.weights_file(folder) == folder / "weights_last.h5"


# --------------------------------------------------------------------------- listing
def test_no_models_is_said_clearly():
    assert registry.list_models() == []
    assert registry.default_model() is None
    assert "--add" in registry.NO_MODELS_MESSAGE
    assert "\n" not in registry.NO_MODELS_MESSAGE
    with pytest.raises(InvalidModelError, match="No StarDist3D model available"):
        registry.resolve_model("as-mix-lite")


def test_listing_order_sources_and_unique_names(tiny_model_dir, tmp_path):
    bundled = tmp_path / "bundled"
    copy_model(tiny_model_dir, bundled / "zeta")
    copy_model(tiny_model_dir, bundled / registry.DEFAULT_MODEL_NAME)
    user = user_models_dir()
    copy_model(tiny_model_dir, user / "nuclei")
    copy_model(tiny_model_dir, user / "zeta")
    (user / "half-trained").mkdir()  # no config yet: skipped
    copy_model(tiny_model_dir, user / ".partial")  # hidden (a download in progress): skipped
    picked = copy_model(tiny_model_dir, tmp_path / "elsewhere" / "nuclei")
    picked2 = copy_model(tiny_model_dir, tmp_path / "more" / "nuclei")
    registry.remember_model_folder(picked)
    registry.remember_model_folder(picked2)

    entries = registry.list_models()
    assert [(e.name, e.source) for e in entries] == [
        (registry.DEFAULT_MODEL_NAME, "bundled"),
        ("zeta", "bundled"),
        ("nuclei", "user"),
        ("zeta (user)", "user"),
        ("nuclei (folder)", "folder"),
        ("nuclei (folder 2)", "folder"),
    ]
    assert entries[4].path == picked.resolve()
    assert entries[5].path == picked2.resolve()
    assert registry.default_model() == entries[0]
    assert registry.resolve_model("nuclei (folder)") == entries[4]


def test_default_is_first_model_without_bundled_default(tiny_model_dir):
    copy_model(tiny_model_dir, user_models_dir() / "b-model")
    copy_model(tiny_model_dir, user_models_dir() / "a-model")
    default = registry.default_model()
    assert default == ModelEntry("a-model", (user_models_dir() / "a-model").resolve(), "user")


def test_resolve_by_name_by_folder_and_unknown(tiny_model_dir, tmp_path):
    copy_model(tiny_model_dir, user_models_dir() / "mine")
    assert registry.resolve_model("mine").source == "user"
    # a listed folder given by path resolves to its listed entry
    assert registry.resolve_model(user_models_dir() / "mine").name == "mine"
    other = copy_model(tiny_model_dir, tmp_path / "other")
    entry = registry.resolve_model(str(other))
    assert entry == ModelEntry("other", other.resolve(), "folder")
    assert [e.name for e in registry.list_models()] == ["mine"]  # not remembered
    with pytest.raises(InvalidModelError, match="not one of: mine"):
        registry.resolve_model("nope")
    (other / "weights_best.h5").unlink()
    with pytest.raises(InvalidModelError, match="weights"):
        registry.resolve_model(other)


# ---------------------------------------------------------------------- remembering
def test_remembered_folder_survives_a_restart(tiny_model_dir, tmp_path):
    folder = copy_model(tiny_model_dir, tmp_path / "picked")
    entry = registry.remember_model_folder(folder)
    assert entry == ModelEntry("picked", folder.resolve(), "folder")
    saved = json.loads((user_config_dir() / "model_folders.json").read_text())
    assert saved == {"folders": [str(folder.resolve())]}
    assert [p.name for p in user_config_dir().iterdir()] == ["model_folders.json"]  # no temp
    code = (
        "import json; from napari_anystar.model.registry import list_models; "
        "print(json.dumps([[e.name, e.source, str(e.path)] for e in list_models() "
        "if e.source != 'bundled']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [["picked", "folder", str(folder.resolve())]]


def test_remembering_twice_or_a_listed_folder_adds_nothing(tiny_model_dir, tmp_path):
    folder = copy_model(tiny_model_dir, tmp_path / "picked")
    first = registry.remember_model_folder(folder)
    assert registry.remember_model_folder(str(folder) + "/") == first
    user = copy_model(tiny_model_dir, user_models_dir() / "trained")
    assert registry.remember_model_folder(user).source == "user"
    saved = json.loads((user_config_dir() / "model_folders.json").read_text())
    assert saved["folders"] == [str(folder.resolve())]


def test_vanished_folder_is_skipped_without_crash(tiny_model_dir, tmp_path):
    gone = copy_model(tiny_model_dir, tmp_path / "gone")
    kept = copy_model(tiny_model_dir, tmp_path / "kept")
    registry.remember_model_folder(gone)
    registry.remember_model_folder(kept)
    shutil.rmtree(gone)
    assert [e.name for e in registry.list_models()] == ["kept"]
    assert registry.default_model().name == "kept"


def test_unreadable_remembered_file_is_ignored(tiny_model_dir, tmp_path):
    (user_config_dir() / "model_folders.json").write_text("garbage{")
    assert registry.list_models() == []
    entry = registry.remember_model_folder(copy_model(tiny_model_dir, tmp_path / "fresh"))
    assert registry.list_models() == [entry]


# ------------------------------------------------------------------------- thresholds
def test_model_thresholds(tiny_model_dir, tmp_path):
    folder = copy_model(tiny_model_dir, tmp_path / "m")
    entry = ModelEntry("m", folder, "folder")
    (folder / "thresholds.json").write_text(json.dumps({"prob": 0.61, "nms": 0.27}))
    assert registry.model_thresholds(entry) == (0.61, 0.27)
    (folder / "thresholds.json").write_text(json.dumps({"prob": 1.5, "nms": 0.2}))
    assert registry.model_thresholds(entry) == (registry.DEFAULT_THRESHOLDS[0], 0.2)
    (folder / "thresholds.json").unlink()
    assert registry.model_thresholds(entry) == registry.DEFAULT_THRESHOLDS


# ---------------------------------------------------------------------------- loading
def test_load_model_reads_weights_and_thresholds_and_caches(tiny_model_dir, tmp_path):
    import numpy as np
    from stardist.models import StarDist3D

    folder = copy_model(tiny_model_dir, tmp_path / "loadme")
    (folder / "thresholds.json").write_text(json.dumps({"prob": 0.61, "nms": 0.27}))
    entry = registry.remember_model_folder(folder)
    model = registry.load_model(entry)
    assert isinstance(model, StarDist3D)
    assert model.config.n_dim == 3
    assert Path(model.logdir).resolve() == folder.resolve()
    assert (model.thresholds.prob, model.thresholds.nms) == (0.61, 0.27)
    assert registry.load_model(entry) is model  # cached
    (folder / "thresholds.json").write_text(json.dumps({"prob": 0.7, "nms": 0.2}))
    stat = (folder / "thresholds.json").stat()
    os.utime(folder / "thresholds.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    model = registry.load_model(entry)  # tuned thresholds are picked up
    assert (model.thresholds.prob, model.thresholds.nms) == (0.7, 0.2)

    # new weights (newer mtime) are picked up: zero them and compare outputs
    zeros = [np.zeros_like(w) for w in model.keras_model.get_weights()]
    model.keras_model.set_weights(zeros)
    model.keras_model.save_weights(str(folder / "weights_best.h5"))
    stat = (folder / "weights_best.h5").stat()
    os.utime(folder / "weights_best.h5", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    reloaded = registry.load_model(entry)
    assert reloaded is not model
    assert all(not w.any() for w in reloaded.keras_model.get_weights())


def test_ray_scale_comes_from_anystar_json(tiny_model_dir, tmp_path):
    plain = registry.remember_model_folder(copy_model(tiny_model_dir, tmp_path / "plain"))
    assert registry.ray_scale(plain.path) == 1.0
    assert registry.load_model(plain).anystar_ray_scale == 1.0
    folder = copy_model(tiny_model_dir, tmp_path / "wider")
    (folder / "anystar.json").write_text(json.dumps({"ray_scale": 1.2, "note": "x"}))
    wider = registry.remember_model_folder(folder)
    assert registry.load_model(wider).anystar_ray_scale == 1.2
    (folder / "anystar.json").write_text(json.dumps({"ray_scale": 0.9}))
    stat = (folder / "anystar.json").stat()
    os.utime(folder / "anystar.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert registry.load_model(wider).anystar_ray_scale == 0.9  # an edit is picked up


def write_settings(folder: Path, **data) -> None:
    (folder / "anystar.json").write_text(json.dumps(data))


def test_normalization_is_the_recorded_one_else_legacy(tiny_model_dir, tmp_path):
    plain = copy_model(tiny_model_dir, tmp_path / "plain")
    assert registry.model_normalization(plain) == LEGACY  # earlier models' default
    trained = copy_model(tiny_model_dir, tmp_path / "trained")
    recorded = Normalization(2.0, 99.5, clip=True)
    write_settings(trained, normalization=recorded.to_json())  # no ray_scale: it is optional
    registry.validate_model_folder(trained)
    assert registry.model_normalization(trained) == recorded
    assert registry.ray_scale(trained) == 1.0
    entry = ModelEntry("trained", trained, "folder")
    model = registry.load_model(entry)
    assert model.anystar_normalization == recorded and model.anystar_ray_scale == 1.0
    assert registry.model_note(trained) == ""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_papers_weights_are_recognised_by_hash(tiny_model_dir, tmp_path, monkeypatch):
    paper = copy_model(tiny_model_dir, tmp_path / "anystar-mix")
    other = copy_model(tiny_model_dir, tmp_path / "other")
    edit_config(other, train_epochs=7)  # another config.json, the same weights
    monkeypatch.setattr(model_settings, "PAPER_CONFIG_SHA256", _sha256(paper / "config.json"))
    monkeypatch.setattr(model_settings, "PAPER_WEIGHTS_SHA256",
                        _sha256(paper / "weights_best.h5"))
    hashed: list[str] = []
    real_hash = model_settings.file_sha256
    monkeypatch.setattr(model_settings, "file_sha256",
                        lambda path: hashed.append(Path(path).name) or real_hash(path))

    assert registry.model_normalization(paper) == ANYSTAR  # clip at p99.9, then min-max
    assert registry.model_note(paper) == model_settings.PAPER_MODEL_NOTE
    assert registry.load_model(ModelEntry("anystar-mix", paper, "folder")
                               ).anystar_normalization == ANYSTAR
    hashed.clear()
    assert registry.model_normalization(other) == LEGACY
    assert hashed == ["config.json"]  # the weights are only hashed after the config matched
    write_settings(paper, normalization=LEGACY.to_json())
    assert registry.model_normalization(paper) == LEGACY  # a record wins


def test_file_hashes_are_cached_by_size_and_mtime(tiny_model_dir, tmp_path):
    weights = copy_model(tiny_model_dir, tmp_path / "hashed") / "weights_best.h5"
    first = model_settings.file_sha256(weights)
    assert first == _sha256(weights)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    stat = weights.stat()
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert model_settings.file_sha256(weights) == first  # same size and mtime: not re-read
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert model_settings.file_sha256(weights) == _sha256(weights) != first


def test_load_model_falls_back_to_weights_last(tiny_model_dir, tmp_path):
    folder = copy_model(tiny_model_dir, tmp_path / "lastonly")
    (folder / "weights_best.h5").rename(folder / "weights_last.h5")
    model = registry.load_model(ModelEntry("lastonly", folder, "folder"))
    assert model.config.n_rays == 32


def test_load_model_with_corrupt_weights_is_a_clear_error(tiny_model_dir, tmp_path):
    folder = copy_model(tiny_model_dir, tmp_path / "corrupt")
    (folder / "weights_best.h5").write_bytes(b"not an hdf5 file")
    with pytest.raises(InvalidModelError, match="cannot load the model") as info:
        registry.load_model(ModelEntry("corrupt", folder, "folder"))
    assert "\n" not in str(info.value)


def test_fingerprint_is_sha256_of_weights_and_follows_changes(tiny_model_dir, tmp_path):
    folder = copy_model(tiny_model_dir, tmp_path / "fp")
    entry = ModelEntry("fp", folder, "folder")
    weights = folder / "weights_best.h5"
    expected = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert registry.model_fingerprint(entry) == expected
    assert registry.model_fingerprint(entry) == expected
    weights.write_bytes(weights.read_bytes() + b"\0")
    os.utime(weights, ns=(0, weights.stat().st_mtime_ns + 10**9))
    assert registry.model_fingerprint(entry) == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert registry.model_fingerprint(entry) != expected


# ----------------------------------------------------------------------------- events
def test_models_changed_callbacks(tiny_model_dir, tmp_path):
    calls: list[str] = []

    def broken():
        raise RuntimeError("a widget that went away")

    unsubscribe_a = registry.on_models_changed(lambda: calls.append("a"))
    unsubscribe_broken = registry.on_models_changed(broken)
    unsubscribe_b = registry.on_models_changed(lambda: calls.append("b"))
    try:
        registry.notify_models_changed()
        assert calls == ["a", "b"]
        registry.remember_model_folder(copy_model(tiny_model_dir, tmp_path / "new"))
        assert calls == ["a", "b", "a", "b"]
        unsubscribe_a()
        unsubscribe_a()  # twice is harmless
        registry.notify_models_changed()
        assert calls == ["a", "b", "a", "b", "b"]
    finally:
        unsubscribe_broken()
        unsubscribe_b()


def test_unfinished_training_runs_are_marked_in_listings(tiny_model_dir, tmp_path):
    from napari_anystar.model.model_settings import model_note

    folder = copy_model(tiny_model_dir, tmp_path / "cut")
    record = {"status": "interrupted", "steps_done": 14, "total_steps": 100}
    (folder / "training.json").write_text(json.dumps(record))
    assert model_note(folder) == "unfinished training (interrupted at step 14 of 100)"
    (folder / "training.json").write_text(json.dumps({**record, "status": "running"}))
    assert model_note(folder) == "unfinished training (running at step 14 of 100)"
    (folder / "training.json").write_text(json.dumps({**record, "status": "finished"}))
    assert model_note(folder) == ""
    (folder / "training.json").write_text("{broken")
    assert model_note(folder) == ""  # an unreadable record says nothing
