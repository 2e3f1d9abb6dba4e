"""Bad-input rows of issue 13 for training: a single pair validates on a held-out slab; a run
that fails, is cancelled or is killed before its first checkpoint leaves no model folder;
unfinished runs are marked in every model list."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from conftest import drain
from napari_anystar import cli
from napari_anystar._paths import user_models_dir
from napari_anystar.model import registry
from napari_anystar.train import TrainSettings, checkpoint, loop, train
from napari_anystar.train.recipe import make_recipe
from napari_anystar.train.validation import (
    HOLDOUT_FRACTION,
    Slab,
    holdout_slab,
    split_validation,
)


def balls(shape, centres, r=4):
    """Instance labels: one ball of radius ``r`` per centre (ids 1, 2, ...)."""
    grid = np.indices(shape)
    labels = np.zeros(shape, np.int32)
    for i, centre in enumerate(centres, start=1):
        inside = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= r * r
        labels[inside] = i
    return labels


def spread(shape, n=4):
    """Balls along the diagonal: objects at both ends of every axis."""
    return balls(shape, [tuple(int(s * f) for s in shape) for f in np.linspace(0.15, 0.85, n)])


# ------------------------------------------------------------------------ the slab rule
@pytest.mark.parametrize(
    ("shape", "patch", "expected"),
    [
        ((200, 64, 64), 32, Slab(0, 160, 200, 200)),  # the last 20 % of Z
        ((100, 64, 64), 32, Slab(0, 68, 100, 100)),  # widened to a patch
        ((16, 200, 100), 32, Slab(1, 160, 200, 200)),  # Z too thin: the largest axis
        ((48, 48, 48), 64, Slab(0, 38, 48, 48)),  # no room for a patch: 20 % only
    ],
    ids=["z-fraction", "z-patch", "largest-axis", "thin"],
)
def test_holdout_slab_rule(shape, patch, expected):
    assert holdout_slab(spread(shape), patch) == expected


def test_holdout_slab_needs_objects_on_both_sides():
    only_top = balls((100, 40, 120), [(10, 20, 20), (20, 20, 100)])  # nothing in Z's end
    assert holdout_slab(only_top, 32) == Slab(2, 88, 120, 120)
    assert holdout_slab(balls((40, 40, 40), [(20, 20, 20)], r=3), 32) is None


def test_one_pair_is_split_and_the_split_is_stated(tmp_path):
    labels = spread((60, 40, 40))
    image = labels.astype(np.float32)
    recipe = make_recipe(TrainSettings(out_dir=tmp_path, config="tiny", images=[image],
                                       labels=[labels]))
    split = split_validation([labels], recipe)
    (train_pair,), (val_pair,) = split.pairs([(image, labels)])
    thick = int(np.ceil(HOLDOUT_FRACTION * 60))  # 12 < patch 32 > 60/2: no widening
    assert split.slab == Slab(0, 60 - thick, 60, 60)
    assert train_pair[0].shape == train_pair[1].shape == (60 - thick, 40, 40)
    np.testing.assert_array_equal(val_pair[1], labels[60 - thick:])
    assert "held-out slab" in split.text and f"last {thick} of 60 Z planes" in split.text
    assert split.role(0) == "train + held-out slab"

    several = split_validation([labels] * 4, recipe)
    assert several.slab is None and len(several.val) == 1 and len(several.train) == 3
    assert several.text == "1 held-out image/labels pair(s) of 4"
    mixed = split_validation([labels], replace(recipe, generator="as-mix",
                                               synthetic_fraction=0.5))
    assert mixed.text == "held-out synthetic samples" and mixed.val == ()
    lonely = balls((40, 40, 40), [(20, 20, 20)], r=3)
    fallback = split_validation([lonely], recipe)
    assert fallback.slab is None and fallback.val == fallback.train == (0,)
    assert "training data itself" in fallback.text and "not independent" in fallback.text


# --------------------------------------------------------------------- staging folders
def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_staging_folder_is_hidden_from_listings_and_swept_once_its_run_is_gone(
        tiny_model_dir):
    out = user_models_dir() / "run"
    staging = checkpoint.staging_dir(out)
    shutil.copytree(tiny_model_dir, staging, dirs_exist_ok=True)  # a complete model inside
    assert staging.parent == out.parent and staging.name.startswith(".run.preparing-")
    assert registry.list_models() == []
    killed = out.parent / f".run{checkpoint.STAGING_MARK}{_dead_pid()}-x"
    shutil.copytree(staging, killed)
    other = out.parent / f".other{checkpoint.STAGING_MARK}{_dead_pid()}-x"
    other.mkdir()
    second = checkpoint.staging_dir(out)
    assert not killed.exists()  # its process is gone
    assert staging.is_dir() and second.is_dir() and other.is_dir()  # alive / another name


def test_promote_moves_into_place_and_never_over_a_folder(tmp_path):
    out = tmp_path / "model"
    out.mkdir()  # an empty folder may be taken over
    folder = checkpoint.RunFolder(out, fresh=True)
    (folder.path / "config.json").write_text("{}")
    assert folder.staged and not (out / "config.json").exists()
    folder.promote()
    assert not folder.staged and (out / "config.json").is_file()
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "user.txt").write_text("mine")
    late = checkpoint.RunFolder(taken, fresh=True)
    with pytest.raises(FileExistsError, match="appeared while training"):
        late.promote()
    late.discard()  # a refused promotion keeps the run where it is
    assert late.path.is_dir() and [p.name for p in taken.iterdir()] == ["user.txt"]


# ------------------------------------------------------------------- failing and cancelling
def _siblings(out):
    return sorted(p.name for p in out.parent.iterdir()) if out.parent.exists() else []


def test_failure_while_building_leaves_no_folder(tmp_path, monkeypatch):
    def broken(recipe):
        raise MemoryError("no memory for the network")

    monkeypatch.setattr(loop, "build_model", broken)
    labels = spread((40, 40, 40))
    out = tmp_path / "models" / "run"
    run = train(TrainSettings(out_dir=out, config="tiny", images=[labels.astype(np.float32)],
                              labels=[labels], steps=2))
    assert next(run).kind == "prepare"
    with pytest.raises(MemoryError):
        next(run)
    assert _siblings(out) == []


@pytest.mark.slow
def test_failure_or_cancel_before_the_first_checkpoint_leaves_no_folder(monkeypatch):
    from napari_anystar.synth import SynthSettings

    out = user_models_dir() / "run"
    labels = spread((40, 40, 40))
    settings = TrainSettings(out_dir=out, config="tiny", images=[labels.astype(np.float32)],
                             labels=[labels], steps=4, steps_per_epoch=4, batch_size=1)

    class BrokenStream(loop.BatchStream):
        def next(self, step):
            raise OSError("disk read failed")

    with monkeypatch.context() as patched:
        patched.setattr(loop, "BatchStream", BrokenStream)
        with pytest.raises(OSError, match="disk read failed"):
            drain(train(settings))
    assert _siblings(out) == []

    # cancelled while making synthetic samples, before any step: nothing is kept
    small = SynthSettings(size=32, grid_size=64, mean_radius=6.0, pad_choices=(0, 16))
    run = train(replace(settings, images=[], labels=[], generator="as-mix", workers=0,
                        synth_settings=small))
    for event in run:
        if event.total:  # the first "generating synthetic samples" event
            (staged,) = out.parent.iterdir()
            assert staged.name.startswith(".run.preparing-")
            break
    run.close()
    assert _siblings(out) == []

    # cancelled after a step, before the first epoch's end: the folder appears, marked
    run = train(replace(settings, steps=10, steps_per_epoch=10))
    for event in run:
        if event.kind == "step":
            assert registry.list_models() == [] and not out.exists()  # still in preparation
            break
    run.close()
    assert _siblings(out) == ["run"]
    (entry,) = registry.list_models()
    assert entry.path == out.resolve()
    assert registry.model_note(out) == "unfinished training (interrupted at step 1 of 10)"


@pytest.mark.slow
def test_one_pair_trains_on_the_rest_and_validates_and_tunes_on_the_slab(tmp_path,
                                                                        monkeypatch):
    labels = spread((60, 40, 40), n=6)
    image = (0.1 + 0.8 * (labels > 0)).astype(np.float32)
    seen: dict[str, list] = {"train": [], "val": [], "tune": []}

    class Stream(loop.BatchStream):
        def __init__(self, **kwargs):
            seen["train"] += [y.copy() for _, y in kwargs["real"]]
            super().__init__(**kwargs)

    real_sample_patch = loop.sample_patch

    def sample_patch(x, y, *args, **kwargs):
        seen["val"].append(y.copy())
        return real_sample_patch(x, y, *args, **kwargs)

    def tune(model, images, labels, norm):
        seen["tune"] += labels
        return {"prob": 0.55, "nms": 0.35}
        yield  # a generator, as the real tuner

    monkeypatch.setattr(loop, "BatchStream", Stream)
    monkeypatch.setattr(loop, "sample_patch", sample_patch)
    monkeypatch.setattr(loop, "tune_thresholds", tune)
    settings = TrainSettings(out_dir=tmp_path / "one", config="tiny", images=[image],
                             labels=[labels], steps=2, steps_per_epoch=2, batch_size=1)
    _, folder = drain(train(settings))

    thick = int(np.ceil(HOLDOUT_FRACTION * 60))
    (trained,) = seen["train"]
    np.testing.assert_array_equal(trained, labels[:60 - thick])
    (validated,) = seen["val"]
    np.testing.assert_array_equal(validated, labels[60 - thick:])
    slab_ids = set(np.unique(labels[60 - thick:])) - {0}
    (tuned,) = seen["tune"]
    assert slab_ids and set(np.unique(tuned)) - {0, -1} <= slab_ids
    record = json.loads((folder / "training.json").read_text())
    assert record["data"]["real"][0]["held_out_slab"] == {"axis": "Z", "start": 60 - thick,
                                                          "stop": 60}
    assert record["data"]["real"][0]["split"] == "train + held-out slab"
    assert record["data"]["validation"].startswith("a held-out slab of the image/labels pair")
    assert record["data"]["threshold_tuning"] == ("validation patches of "
                                                  + record["data"]["validation"])
    assert json.loads((folder / "thresholds.json").read_text()) == {"prob": 0.55, "nms": 0.35}


# --------------------------------------------------------------------------- listings
def test_cli_models_marks_an_unfinished_run(tiny_model_dir, capsys):
    folder = shutil.copytree(tiny_model_dir, user_models_dir() / "cut")
    record = {"status": "interrupted", "steps_done": 14, "total_steps": 100}
    (folder / "training.json").write_text(json.dumps(record))
    assert cli.main(["models"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[1]
    assert row.split()[1] == "cut"
    assert row.endswith("unfinished training (interrupted at step 14 of 100)")
