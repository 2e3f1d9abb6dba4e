"""The shipped default model: complete, small, synthetic-only, reproducible, and it works."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import tifffile

from conftest import drain
from napari_anystar import cli
from napari_anystar.analysis import pooled_scores
from napari_anystar.model import registry
from napari_anystar.model.segment import segment_volume
from napari_anystar.synth import SynthSettings, generate

pytestmark = pytest.mark.bundled_model

SHIPPED_FILES = ("config.json", "thresholds.json", "weights_best.h5", "training.json",
                 "anystar.json", "MODEL_CARD.md")
#: Seeds far from the training run's (seed 0: pool and validation series of base seed 0).
HELD_OUT_SEEDS = (9001, 9002, 9003, 9004, 9005, 9006)
#: Clean bright blobs (AS-BrightFG-PlainBG without A(.)): intact spheres, F1 at IoU 0.5 pooled
#: over HELD_OUT_SEEDS measured 0.47 for the shipped model (an untrained network: ~0).
CLEAN = SynthSettings(augment=False)
MIN_POOLED_F1 = 0.35
#: The same for one volume (seed 9004: measured 0.95).
MIN_SINGLE_F1 = 0.6
#: Seed 9004 blown up 1.6x, then the auto scale: measured 0.52 with the model's normalisation
#: (0.66 with the earlier percentiles 1-99.8; resampling twice blurs the spheres' edges).
MIN_RESCALED_F1 = 0.45


@pytest.fixture(scope="module")
def entry():
    found = registry.default_model()
    assert found is not None
    return found


@pytest.fixture(scope="module")
def training(entry):
    return json.loads((entry.path / "training.json").read_text(encoding="utf-8"))


def test_default_model_is_the_bundled_as_mix_lite(entry):
    assert (entry.name, entry.source) == (registry.DEFAULT_MODEL_NAME, "bundled")
    assert entry.path.parent == registry.BUNDLED_MODELS_DIR
    assert registry.resolve_model("as-mix-lite") == entry


def test_folder_is_complete_and_small(entry):
    sizes = {name: (entry.path / name).stat().st_size for name in SHIPPED_FILES}
    assert all(size > 0 for size in sizes.values())
    assert sum(p.stat().st_size for p in entry.path.iterdir()) <= 20 * 2**20
    assert not (entry.path / "weights_last.h5").exists()  # only what the model needs


def test_thresholds_are_chosen_on_synthetic_data_and_documented(entry, training):
    raw = json.loads((entry.path / "thresholds.json").read_text(encoding="utf-8"))
    assert registry.model_thresholds(entry) == (raw["prob"], raw["nms"])
    assert 0 < raw["prob"] < 1 and 0 < raw["nms"] < 1
    # re-tuned since training (normalisation and ray scale changed): recorded and documented
    assert training["thresholds"] != pytest.approx(raw)
    settings = json.loads((entry.path / "anystar.json").read_text(encoding="utf-8"))
    assert "held-out synthetic" in settings["thresholds_chosen_on"]
    assert "retune_thresholds.py" in settings["thresholds_chosen_on"]
    card = (entry.path / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"prob {raw['prob']:.3f}, NMS {raw['nms']:g}" in card


@pytest.mark.slow
def test_thresholds_are_what_the_synthetic_tuning_picks_today(entry):
    """The recipe's own threshold search, run on the model as it predicts now, lands on the
    shipped pair (within one step of its probability grid: float noise across CPUs)."""
    from napari_anystar.analysis.tuning import PROB_REFINE
    from napari_anystar.train.thresholds import recipe_thresholds

    chosen = drain(recipe_thresholds(registry.load_model(entry), entry.path))[1]
    prob, nms = registry.model_thresholds(entry)
    step = min(b - a for a, b in itertools.pairwise(PROB_REFINE))  # the finest, 0.025
    assert chosen["nms"] == pytest.approx(nms)
    assert abs(chosen["prob"] - prob) <= step + 1e-6


def test_ray_scale_is_chosen_on_synthetic_data_and_documented(entry):
    settings = json.loads((entry.path / "anystar.json").read_text(encoding="utf-8"))
    assert 1.0 <= settings["ray_scale"] <= 1.3  # the range calibrate_ray_scale.py searches
    assert "held-out" in settings["ray_scale_chosen_on"]
    assert registry.load_model(entry).anystar_ray_scale == settings["ray_scale"]
    card = (entry.path / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert f"ray_scale {settings['ray_scale']}" in card
    assert "calibrate_ray_scale.py" in card


def test_trained_on_synthetic_data_only(training):
    assert training["status"] == "finished"
    assert training["steps_done"] == training["recipe"]["steps"]
    assert training["recipe"]["generator"] == "as-mix"
    assert training["recipe"]["config"] == "lite"
    assert training["recipe"]["base_model"] is None
    assert training["data"]["real"] == []
    assert training["data"]["synthetic_fraction"] == 1.0
    assert training["data"]["validation"] == "held-out samples"


def test_model_card_gives_the_command_that_reproduces_it(entry, training):
    recipe = training["recipe"]
    command = (f"anystar train --generator {recipe['generator']} --config {recipe['config']} "
               f"--steps {recipe['steps']} --val-samples {recipe['val_samples']} "
               f"--seed {recipe['seed']}")
    card = (entry.path / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert command in card
    for section in ("Licence", "Failure modes", "bbbc050"):
        assert section.lower() in card.lower()


@pytest.mark.slow
def test_segments_held_out_synthetic_blobs(entry):
    model = registry.load_model(entry)
    prob, nms = registry.model_thresholds(entry)
    truth, predicted = [], []
    for seed in HELD_OUT_SEEDS:
        sample = generate("as-brightfg-plainbg", seed, CLEAN)
        truth.append(sample.labels)
        predicted.append(drain(segment_volume(model, sample.image, None, prob, nms))[1])
    scores = pooled_scores(truth, predicted, iou_thresholds=(0.5,))
    assert scores.n_true >= 100
    assert scores.f1[0] >= MIN_POOLED_F1


@pytest.mark.slow
def test_cli_segments_with_the_default_model(tmp_path, capsys):
    sample = generate("as-brightfg-plainbg", 9004, CLEAN)
    tifffile.imwrite(tmp_path / "volume.tif", (sample.image * 1000).astype(np.uint16))
    assert cli.main(["segment", str(tmp_path / "volume.tif"),
                     "--out", str(tmp_path / "labels.tif")]) == 0
    assert "model: as-mix-lite" in capsys.readouterr().err
    labels = tifffile.imread(tmp_path / "labels.tif")
    scores = pooled_scores([sample.labels], [labels.astype(np.int32)], iou_thresholds=(0.5,))
    assert scores.f1[0] >= MIN_SINGLE_F1


@pytest.mark.slow
def test_cli_auto_scale_undoes_a_blown_up_volume(tmp_path, capsys):
    """Objects 1.6x too large: --scale auto brings them back and they are segmented."""
    from scipy import ndimage as ndi

    sample = generate("as-brightfg-plainbg", 9004, CLEAN)
    image = ndi.zoom(sample.image, 1.6, order=1)
    truth = ndi.zoom(sample.labels, 1.6, order=0).astype(np.int32)
    tifffile.imwrite(tmp_path / "big.tif", (image * 1000).astype(np.uint16))
    assert cli.main(["segment", str(tmp_path / "big.tif"), "--scale", "auto",
                     "--out", str(tmp_path / "labels.tif")]) == 0
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("big.tif: objects ~"))
    scale = [float(v) for v in line.rsplit("scale (", 1)[1].rstrip(").").split(", ")]
    assert all(0.3 < s < 1.0 for s in scale)  # shrinks the volume back
    labels = tifffile.imread(tmp_path / "labels.tif")
    assert labels.shape == image.shape
    scores = pooled_scores([truth], [labels.astype(np.int32)], iou_thresholds=(0.5,))
    assert scores.f1[0] >= MIN_RESCALED_F1
