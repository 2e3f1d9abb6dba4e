"""``--refine/--no-refine`` of ``anystar segment`` and ``anystar timeseries``: refined outlines
by default, StarDist's own labels when turned off."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from test_refine import blurred_blobs, objects_model

from conftest import drain
from napari_anystar import cli
from napari_anystar.model import registry
from napari_anystar.model.instances import InstanceSolver
from napari_anystar.model.object_size import TRAINING_DIAMETER
from napari_anystar.model.predict import PredictSettings, predict_network
from napari_anystar.model.refine import OutlineRefiner

PROB, NMS = 0.5, 0.35  # the model's thresholds.json


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory):
    return objects_model(tiny_model_dir, tmp_path_factory.mktemp("cli-refine") / "tiny-objects")


@pytest.fixture(scope="module")
def expected(model_dir) -> dict[str, np.ndarray]:
    """StarDist's labels of ``blurred_blobs()`` at scale 1, and the same refined."""
    model = registry.load_model(registry.ModelEntry(model_dir.name, model_dir, "folder"))
    image = blurred_blobs()
    settings = PredictSettings(scale=(1.0, 1.0, 1.0)).for_model(model)
    plain = InstanceSolver(drain(predict_network(model, image, settings))[1], model).labels(
        PROB, NMS)
    refined = OutlineRefiner.at_scale(image, (1.0, 1.0, 1.0), TRAINING_DIAMETER)(plain)
    assert plain.max() >= 8 and np.sum(refined != plain) > 100  # refinement shows here
    return {"plain": plain, "refined": refined}


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([*map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("flag, kind", [(None, "refined"), ("--refine", "refined"),
                                        ("--no-refine", "plain")])
def test_segment_refines_unless_told_not_to(model_dir, expected, tmp_path, capsys, flag, kind):
    tifffile.imwrite(tmp_path / "cells.tif", blurred_blobs(), photometric="minisblack")
    out = tmp_path / "labels.tif"
    code, stdout, stderr = run_cli(capsys, "segment", tmp_path / "cells.tif", "--out", out,
                                   "--model", model_dir, "--scale", "1", *filter(None, [flag]))
    assert code == 0, stderr
    labels = tifffile.imread(out)
    np.testing.assert_array_equal(labels, expected[kind])
    n_objects = int(expected["plain"].max())
    assert set(np.unique(labels)) == set(range(n_objects + 1))  # the same objects either way
    assert f"{n_objects} objects" in stdout


@pytest.mark.parametrize("flag, kind", [(None, "refined"), ("--no-refine", "plain")])
def test_timeseries_segments_with_the_same_choice(model_dir, expected, tmp_path, capsys, flag,
                                                  kind):
    movie = np.stack([blurred_blobs()] * 3)
    movie[1:] += 7  # frames differ; frame 0 is the volume of ``expected``
    tifffile.imwrite(tmp_path / "movie.tif", movie, metadata={"axes": "TZYX"})
    saved = tmp_path / "labels.tif"
    code, _, stderr = run_cli(capsys, "timeseries", tmp_path / "movie.tif", "--out",
                              tmp_path / "series.csv", "--frame", "0", "--save-labels", saved,
                              "--model", model_dir, "--scale", "1", *filter(None, [flag]))
    assert code == 0, stderr
    np.testing.assert_array_equal(tifffile.imread(saved), expected[kind])


def test_help_offers_both_flags(capsys):
    for command in ("segment", "timeseries"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "--refine, --no-refine" in text or "--refine | --no-refine" in text
        assert "(default: True)" in text


@pytest.mark.parametrize("flag, said", [(None, True), ("--objects=auto", True),
                                        ("--objects=dark", False)])
def test_segment_finds_dark_objects_in_the_negated_volume(model_dir, expected, tmp_path, capsys,
                                                          flag, said):
    blobs = blurred_blobs()
    dark = (int(blobs.max()) - blobs.astype(np.int64)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "dark.tif", dark, photometric="minisblack")
    out = tmp_path / "labels.tif"
    code, _, stderr = run_cli(capsys, "segment", tmp_path / "dark.tif", "--out", out,
                              "--model", model_dir, "--scale", "1", *filter(None, [flag]))
    assert code == 0, stderr
    # the negated volume is the bright one up to an offset: its labels, refined
    np.testing.assert_array_equal(tifffile.imread(out), expected["refined"])
    assert ("darker than their surroundings" in stderr) == said


def test_segment_can_be_told_the_objects_are_bright(model_dir, expected, tmp_path, capsys):
    blobs = blurred_blobs()
    dark = (int(blobs.max()) - blobs.astype(np.int64)).astype(np.uint16)
    tifffile.imwrite(tmp_path / "dark.tif", dark, photometric="minisblack")
    out = tmp_path / "labels.tif"
    code, _, stderr = run_cli(capsys, "segment", tmp_path / "dark.tif", "--out", out, "--model",
                              model_dir, "--scale", "1", "--objects", "bright", "--no-refine")
    assert code == 0, stderr
    assert not np.array_equal(tifffile.imread(out), expected["plain"])
    with pytest.raises(SystemExit) as exit_:
        cli.main(["segment", str(tmp_path / "dark.tif"), "--out", str(out), "--overwrite",
                  "--objects", "inverted"])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err


def test_both_segment_paths_report_an_auto_negation_alike():
    """Whole-volume and block-wise ``anystar segment`` print the same lines (``run_notes``):
    the negation only when *auto* chose it (a stated polarity is the user's own)."""
    from types import SimpleNamespace

    from napari_anystar._cli.common import run_notes

    def result(invert, auto=None):
        return SimpleNamespace(auto=auto, settings=SimpleNamespace(invert=invert))

    negated = "a.tif: the objects are darker than their surroundings: segmented the negated volume"
    assert run_notes("a.tif", result(True), "auto") == [negated]
    assert run_notes("a.tif", result(True), "dark") == []
    assert run_notes("a.tif", result(False), "auto") == []
    fell_back = SimpleNamespace(fell_back=True, note="found 0 object(s)")
    assert run_notes("a.tif", result(True, fell_back), "auto") == [
        "a.tif: warning: found 0 object(s)", negated]
