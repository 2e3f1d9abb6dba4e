"""Training loop: learning, cancel, resume, thresholds, saved folders, fine-tuning (tiny config)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
from test_train_data import spheres_volume

from conftest import drain
from napari_anystar.train import TrainEvent, TrainSettings, train
from napari_anystar.train.checkpoint import WORK_DIR

pytestmark = pytest.mark.slow



def load_stardist(folder):
    from stardist.models import StarDist3D

    with contextlib.redirect_stdout(io.StringIO()):
        return StarDist3D(None, name=folder.name, basedir=str(folder.parent))


@pytest.fixture(scope="module")
def spheres():
    pairs = [spheres_volume(seed=s) for s in range(4)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A synthetic tiny run of 6 steps, cancelled after step 4, checked, then resumed."""
    from napari_anystar.synth import SynthSettings

    out = tmp_path_factory.mktemp("runs") / "synthetic"
    small = SynthSettings(size=32, grid_size=64, mean_radius=6.0, pad_choices=(0, 16))
    settings = TrainSettings(out_dir=out, config="tiny", generator="as-mix", steps=6,
                             steps_per_epoch=3, workers=0, synth_settings=small, seed=3,
                             fragment_ignore=10)  # the tiny volumes' objects are small
    first = []
    gen = train(settings)
    for event in gen:
        first.append(event)
        if event.kind == "step" and event.step == 4:
            break
    gen.close()
    cancelled = {
        "files": sorted(p.name for p in out.iterdir()),
        "state": json.loads((out / WORK_DIR / "state.json").read_text()),
        "record": json.loads((out / "training.json").read_text()),
        "optimizer_iteration": int(np.load(out / WORK_DIR / "optimizer.npz")["arr_0"]),
        "predicted": load_stardist(out).predict_instances(
            np.random.default_rng(0).random((24, 24, 24), dtype=np.float32),
            show_tile_progress=False)[0].shape,
    }
    with pytest.raises(FileExistsError):
        next(train(settings))
    with pytest.raises(ValueError, match="steps was 6, now 8"):
        next(train(replace(settings, resume=True, steps=8)))
    second, folder = drain(train(replace(settings, resume=True)))
    return {"out": out, "first": first, "cancelled": cancelled, "second": second,
            "folder": folder}


def test_cancel_leaves_a_loadable_resumable_model(interrupted_run):
    cancelled = interrupted_run["cancelled"]
    for name in ("config.json", "weights_best.h5", "weights_last.h5", "thresholds.json",
                 "training.json", WORK_DIR):
        assert name in cancelled["files"]
    assert cancelled["state"]["step"] == 4
    assert cancelled["optimizer_iteration"] == 4  # Adam's step counter is checkpointed
    assert cancelled["record"]["status"] == "interrupted"
    assert cancelled["record"]["steps_done"] == 4
    assert len(cancelled["record"]["epochs"]) == 1
    assert cancelled["predicted"] == (24, 24, 24)
    kinds = [e.kind for e in interrupted_run["first"]]
    assert kinds[0] == "prepare" and kinds.count("step") == 4 and kinds.count("epoch") == 1
    assert all(isinstance(e, TrainEvent) for e in interrupted_run["first"])


def test_resume_continues_at_the_interrupted_step(interrupted_run):
    steps = [e for e in interrupted_run["second"] if e.kind == "step"]
    assert [e.step for e in steps] == [5, 6]
    assert all(e.total_steps == 6 for e in steps)
    assert all(np.isfinite(e.loss) for e in steps)
    lrs = [e.lr for e in steps]
    assert lrs[0] > lrs[1] > 0  # linear decay continues where it stopped
    assert lrs[1] == pytest.approx(1e-3 * (1 - 5 / 6))
    record = json.loads((interrupted_run["out"] / "training.json").read_text())
    assert record["status"] == "finished" and record["steps_done"] == 6
    assert [e["step"] for e in record["epochs"]] == [3, 6]
    assert record["resumed_at"] == [4]
    assert record["optimizer_restored"] is True
    assert record["seed"] == 3 and record["data"]["generator"] == "as-mix"
    for epoch in record["epochs"]:  # training health: distance MAE beside a constant guess
        assert epoch["val_dist_mae"] > 0 and epoch["val_dist_mae_constant_guess"] > 0
    assert record["recipe"]["fragment_ignore"] == 10
    assert record["recipe"]["normalization"] == {"low": 0.0, "high": 99.9, "clip": True}
    settings = json.loads((interrupted_run["out"] / "anystar.json").read_text())
    assert settings["normalization"] == record["recipe"]["normalization"]
    assert 2 < settings["object_diameter"] < 24  # measured on the run's own tiny recipe
    assert not (interrupted_run["out"] / WORK_DIR).exists()
    assert interrupted_run["second"][-1].kind == "saved"
    assert interrupted_run["folder"] == interrupted_run["out"].resolve()


def test_recipe_defaults_ignore_fragments_only_for_synthetic_training(tmp_path):
    from napari_anystar.train.recipe import FRAGMENT_IGNORE_VOXELS, make_recipe

    recipe = make_recipe(TrainSettings(out_dir=tmp_path, generator="as-mix"))
    assert recipe.fragment_ignore == FRAGMENT_IGNORE_VOXELS == 100
    assert make_recipe(TrainSettings(out_dir=tmp_path, generator="as-mix",
                                     normalize=False)).normalization is None


def test_thresholds_are_tuned_and_written(interrupted_run):
    out = interrupted_run["out"]
    thresholds = json.loads((out / "thresholds.json").read_text())
    assert 0 < thresholds["prob"] < 1 and 0 < thresholds["nms"] < 1
    assert json.loads((out / "training.json").read_text())["thresholds"] == thresholds
    tuning = [e for e in interrupted_run["second"] if e.kind == "thresholds"]
    assert tuning[-1].done == tuning[-1].total > 8
    assert [e.done for e in tuning] == sorted(e.done for e in tuning)
    record = json.loads((out / "training.json").read_text())
    assert record["data"]["threshold_tuning"].endswith("A(.) intensity steps only")


def test_saved_model_loads_in_stardist(interrupted_run):
    model = load_stardist(interrupted_run["out"])
    assert model.config.n_rays == 16 and tuple(model.config.grid) == (2, 2, 2)
    thresholds = json.loads((interrupted_run["out"] / "thresholds.json").read_text())
    assert model.thresholds.prob == pytest.approx(thresholds["prob"])
    image = np.random.default_rng(1).random((40, 36, 32), dtype=np.float32)
    labels, _ = model.predict_instances(image, show_tile_progress=False)
    assert labels.shape == image.shape


def test_loss_decreases_on_spheres(tmp_path, spheres):
    images, labels = spheres
    settings = TrainSettings(out_dir=tmp_path / "spheres", config="tiny", images=images,
                             labels=labels, steps=48, steps_per_epoch=24, batch_size=2,
                             seed=0, optimize_thresholds=False)
    events, folder = drain(train(settings))
    losses = [e.loss for e in events if e.kind == "step"]
    assert len(losses) == 48
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
    record = json.loads((folder / "training.json").read_text())
    assert len(record["epochs"]) == 2 and record["data"]["synthetic_fraction"] == 0.0
    assert [r["split"] for r in record["data"]["real"]].count("val") == 1
    assert json.loads((folder / "thresholds.json").read_text()) == {"prob": 0.5, "nms": 0.4}


def test_finetune_on_a_mix_from_folder_with_only_best_weights(tmp_path, tiny_model_dir,
                                                              spheres):
    from napari_anystar.synth import SynthSettings

    base = tmp_path / "base"
    base.mkdir()
    for name in ("config.json", "weights_best.h5"):
        shutil.copy(tiny_model_dir / name, base / name)
    images, labels = spheres
    small = SynthSettings(size=32, grid_size=64, mean_radius=6.0, pad_choices=(0, 16))
    settings = TrainSettings(out_dir=tmp_path / "tuned", base_model=base, images=images[:2],
                             labels=labels[:2], generator="as-brightfg-plainbg",
                             synthetic_fraction=0.5, synth_settings=small, pool_size=1,
                             val_samples=1, workers=0, steps=2, learning_rate=1e-7,
                             batch_size=2, patch_size=32, optimize_thresholds=False)
    _, folder = drain(train(settings))
    config = json.loads((folder / "config.json").read_text())
    assert config["n_rays"] == 32 and config["unet_n_depth"] == 2
    record = json.loads((folder / "training.json").read_text())
    assert record["recipe"]["base_model"] == str(base.resolve())
    assert record["recipe"]["learning_rate"] == 1e-7
    assert record["data"]["synthetic_fraction"] == 0.5
    assert record["data"]["generator"] == "as-brightfg-plainbg"
    assert record["recipe"]["fragment_ignore"] == 0  # real labels have no A(.) slivers
    # the base folder records no normalisation: the fine-tuned model keeps the legacy one
    assert record["recipe"]["normalization"] == {"low": 1.0, "high": 99.8, "clip": False}
    assert sorted(r["split"] for r in record["data"]["real"]) == ["train", "val"]
    # a tiny learning rate: the conv kernels are still (almost) the base model's
    before = [w for w in load_stardist(base).keras_model.get_weights() if w.ndim == 5]
    after = [w for w in load_stardist(folder).keras_model.get_weights() if w.ndim == 5]
    assert len(before) == len(after) > 0
    assert max(float(np.abs(a - b).max()) for a, b in zip(before, after, strict=True)) < 1e-4
