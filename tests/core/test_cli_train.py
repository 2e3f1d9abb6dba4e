"""``anystar train``: one-line errors (exit 2) and a 3-step end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
from test_train_data import spheres_volume

from napari_anystar import cli


@pytest.fixture
def anystar(monkeypatch, capsys):
    """Run ``anystar ARGS`` in-process (only the train sub-command registered)."""
    monkeypatch.setattr(cli, "SUBCOMMANDS", ("train",))

    def run(*args):
        code = cli.main(["train", *map(str, args)])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def write_pairs(folder, n=2, shape=(32, 32, 32), image_suffix="_image", label_suffix="_labels"):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image, labels = spheres_volume(shape, seed=i)
        tifffile.imwrite(folder / f"v{i}{image_suffix}.tif", image)
        tifffile.imwrite(folder / f"v{i}{label_suffix}.tif", labels.astype(np.uint16))
    return folder


def assert_one_line_error(result, *fragments):
    code, _, err = result
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("anystar train: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_unpaired_image_is_an_error(anystar, tmp_path):
    data = write_pairs(tmp_path / "data")
    (data / "v1_labels.tif").unlink()
    result = anystar("--images", data, "--labels", data, "--config", "tiny", "--out",
                     tmp_path / "m")
    assert_one_line_error(result, "v1_image.tif")
    assert not (tmp_path / "m").exists()


def test_shape_mismatch_is_an_error(anystar, tmp_path):
    data = write_pairs(tmp_path / "data", n=1)
    tifffile.imwrite(data / "v0_labels.tif", np.zeros((32, 32, 30), np.uint16))
    result = anystar("--images", data, "--labels", data, "--config", "tiny", "--out",
                     tmp_path / "m")
    assert_one_line_error(result, "v0_image.tif", "shape")
    assert not (tmp_path / "m").exists()


def test_2d_data_is_an_error(anystar, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    tifffile.imwrite(data / "a_image.tif", np.random.rand(64, 64).astype(np.float32))
    tifffile.imwrite(data / "a_labels.tif", np.ones((64, 64), np.uint16))
    result = anystar("--images", data, "--labels", data, "--config", "tiny", "--out",
                     tmp_path / "m")
    assert_one_line_error(result, "3D")


def test_empty_labels_are_an_error(anystar, tmp_path):
    data = write_pairs(tmp_path / "data", n=1)
    tifffile.imwrite(data / "v0_labels.tif", np.zeros((32, 32, 32), np.uint16))
    result = anystar("--images", data, "--labels", data, "--config", "tiny", "--out",
                     tmp_path / "m")
    assert_one_line_error(result, "no objects")


def test_existing_output_folder_is_an_error(anystar, tmp_path):
    out = tmp_path / "m"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = anystar("--generator", "as-mix", "--config", "tiny", "--out", out)
    assert_one_line_error(result, "already exists")
    assert (out / "notes.txt").read_text() == "mine"
    result = anystar("--generator", "as-mix", "--config", "tiny", "--out", out, "--resume")
    assert_one_line_error(result, "no interrupted training")


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((), "no training data"),
        (("--images", "x"), "--images and --labels"),
        (("--generator", "as-nothing"), "unknown generator"),
        (("--generator", "as-mix", "--synthetic-fraction", "0.5"), "image/label pairs"),
        (("--images", "x", "--labels", "x", "--fixed-crop"), "need --generator"),
    ],
)
def test_bad_options_are_errors(anystar, tmp_path, args, fragment):
    assert_one_line_error(anystar(*args, "--out", tmp_path / "m"), fragment)


def test_synthesis_options_reach_the_training_settings(tmp_path):
    from napari_anystar._cli.train import _settings
    from napari_anystar.cli import build_parser

    def settings(*args):
        return _settings(build_parser().parse_args(["train", "--out", str(tmp_path / "m"),
                                                    *map(str, args)]))

    assert settings("--generator", "as-mix").synth_settings is None  # the generator's defaults
    synth = settings("--generator", "as-mix", "--fixed-crop", "--zoom", 0.5, 1.2,
                     "--axial-blur", 0.3).synth_settings
    assert synth.random_crop is False and synth.zoom_range == (0.5, 1.2)
    assert synth.axial_blur == 0.3 and synth.psf_blur == 0.0 and synth.aligned_zoom
    assert settings("--generator", "as-mix", "--psf-blur", 0.8).synth_settings.random_crop


@pytest.mark.slow
def test_cli_trains_three_steps(anystar, tmp_path):
    data = write_pairs(tmp_path / "data", n=2)
    out = tmp_path / "model"
    code, stdout, stderr = anystar("--images", data, "--labels", data, "--config", "tiny",
                                   "--steps", 3, "--seed", 1, "--out", out)
    assert code == 0, stderr
    assert stdout.strip().splitlines()[-1] == str(out.resolve())
    assert "training" in stderr and "3/3" in stderr
    for name in ("config.json", "thresholds.json", "weights_best.h5", "weights_last.h5"):
        assert (out / name).is_file()
    record = json.loads((out / "training.json").read_text())
    assert record["status"] == "finished" and record["steps_done"] == 3
    assert record["recipe"]["config"] == "tiny" and record["recipe"]["seed"] == 1
    assert len(record["data"]["real"]) == 2
    thresholds = json.loads((out / "thresholds.json").read_text())
    assert 0 < thresholds["prob"] < 1 and 0 < thresholds["nms"] < 1


@pytest.mark.parametrize("checkpointed", [False, True])
def test_ctrl_c_says_whether_a_checkpoint_was_saved(anystar, monkeypatch, tmp_path,
                                                    checkpointed):
    import napari_anystar.train as train_module
    from napari_anystar.train import TrainEvent

    out = tmp_path / "run"

    def interrupted(settings):
        yield TrainEvent("prepare", 0, 10, message="building the network")
        if checkpointed:
            out.mkdir()
            (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "train", interrupted)
    images = tmp_path / "images"
    write_pairs(images)
    code, _stdout, stderr = anystar("--images", images, "--labels", images, "--out", out,
                                    "--steps", 10)
    assert code == 130
    if checkpointed:
        assert "usable model; continue with --resume" in stderr
    else:
        assert "before the first checkpoint; nothing was saved" in stderr
