"""``anystar segment``: end to end on small TIFF / NIfTI volumes, and every user error."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import tifffile

from conftest import gaussian_blobs as blobs
from napari_anystar import cli
from napari_anystar.model import registry
from napari_anystar.normalization import LEGACY, Normalization

AFFINE = np.array(
    [[0.0, -2.0, 0.0, 10.0], [1.5, 0.0, 0.0, -3.0], [0.0, 0.0, 3.0, 5.0], [0.0, 0.0, 0.0, 1.0]]
)


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with thresholds that keep only its ~0.5% most likely voxels.

    (Its random weights give probabilities near 0.5 everywhere; a low threshold would make
    thousands of candidates and a slow NMS.)
    """
    folder = shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("cli") / "tiny-thresh")
    model = registry.load_model(registry.ModelEntry("tiny-thresh", folder, "folder"))
    prob, _ = model.predict(LEGACY.apply(blobs()))  # the model's own normalisation
    thresholds = {"prob": round(float(np.quantile(prob, 0.995)), 4), "nms": 0.35}
    (folder / "thresholds.json").write_text(json.dumps(thresholds))
    return folder


def thresholds(folder) -> tuple[float, float]:
    data = json.loads((folder / "thresholds.json").read_text())
    return data["prob"], data["nms"]


@pytest.fixture
def calls(monkeypatch):
    """Record what the CLI passes to the pipeline core (``segmenter.network_job``): the
    volume, the settings as run (the scale chosen), the thresholds and the labels."""
    from napari_anystar.model import segmenter

    real = segmenter.network_job
    seen: list[dict] = []

    def spy(entry, image, settings, thresholds, cache, **kwargs):
        call = {"shape": image.shape, "prob": thresholds[0], "nms": thresholds[1]}
        seen.append(call)
        result = yield from real(entry, image, settings, thresholds, cache, **kwargs)
        call["settings"], call["labels"] = result.settings, result.labels
        return result

    monkeypatch.setattr(segmenter, "network_job", spy)
    return seen


def run_cli(capsys, *argv: str) -> tuple[int, str, list[str]]:
    code = cli.main(["segment", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


# ---------------------------------------------------------------------- end to end
def test_tif_end_to_end_with_model_thresholds(model_dir, calls, tmp_path, capsys):
    image = blobs()
    tifffile.imwrite(tmp_path / "cells.tif", image, photometric="minisblack")
    out = tmp_path / "cells_seg.tif"
    code, stdout, _ = run_cli(capsys, str(tmp_path / "cells.tif"), "--out", str(out),
                              "--model", str(model_dir), "--scale", "1")  # fmt: skip
    assert code == 0
    assert (calls[0]["prob"], calls[0]["nms"]) == thresholds(model_dir)  # model's defaults
    labels = tifffile.imread(out)
    assert labels.shape == image.shape
    assert np.issubdtype(labels.dtype, np.integer)
    np.testing.assert_array_equal(labels, calls[0]["labels"])
    assert labels.max() > 0  # the thresholds keep a few candidates
    assert str(out) in stdout
    assert f"{len(np.unique(labels)) - 1} objects" in stdout


def test_nifti_end_to_end_keeps_shape_and_affine(model_dir, calls, tmp_path, capsys):
    data = blobs((20, 28, 36)).T  # stored (i, j, k) = XYZ
    img = nib.Nifti1Image(data, AFFINE)
    img.set_qform(AFFINE, code=1)
    nib.save(img, tmp_path / "scan.nii.gz")
    out = tmp_path / "scan_seg.nii.gz"
    prob = thresholds(model_dir)[0] + 0.001
    code, _, _ = run_cli(
        capsys, str(tmp_path / "scan.nii.gz"), "--out", str(out), "--model", str(model_dir),
        "--prob-thresh", str(prob), "--nms-thresh", "0.5", "--scale", "1",
        "--n-tiles", "1", "2", "2", "--norm", "2", "99.5",
    )  # fmt: skip
    assert code == 0
    call = calls[0]
    assert call["shape"] == (20, 28, 36)  # ZYX inside
    assert (call["prob"], call["nms"]) == (prob, 0.5)
    settings = call["settings"]
    assert settings.scale == (1.0, 1.0, 1.0)
    assert settings.n_tiles == (1, 2, 2)
    assert settings.norm == Normalization(2.0, 99.5, clip=False)  # the model's own clip
    written = nib.load(out)
    assert written.shape == data.shape
    np.testing.assert_allclose(written.affine, nib.load(tmp_path / "scan.nii.gz").affine)
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), call["labels"].T)


def test_several_inputs_go_to_a_folder_with_the_default_model(model_dir, calls, tmp_path, capsys):
    registry.remember_model_folder(model_dir)
    tifffile.imwrite(tmp_path / "a.tif", blobs(seed=1), photometric="minisblack")
    nib.save(nib.Nifti1Image(blobs((16, 24, 24), seed=2), AFFINE), tmp_path / "b.nii")
    out = tmp_path / "results"
    code, _, _ = run_cli(capsys, str(tmp_path / "a.tif"), str(tmp_path / "b.nii"), "--out",
                         str(out), "--scale", "1")  # fmt: skip
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.tif", "b_labels.nii"]
    assert tifffile.imread(out / "a_labels.tif").shape == (24, 32, 40)
    assert nib.load(out / "b_labels.nii").shape == (16, 24, 24)
    assert [(c["prob"], c["nms"]) for c in calls] == [thresholds(model_dir)] * 2


def test_overwrite_replaces_an_existing_output(model_dir, calls, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "a.tif", blobs(), photometric="minisblack")
    out = tmp_path / "out.tif"
    out.write_bytes(b"old")
    args = [str(tmp_path / "a.tif"), "--out", str(out), "--model", str(model_dir), "--scale", "1"]
    assert run_cli(capsys, *args)[0] == 2
    assert out.read_bytes() == b"old"
    assert run_cli(capsys, *args, "--overwrite")[0] == 0
    assert tifffile.imread(out).shape == (24, 32, 40)


def test_the_default_normalisation_is_the_models_own(model_dir, calls, tmp_path, capsys):
    folder = shutil.copytree(model_dir, tmp_path / "trained")
    recorded = Normalization(0.5, 99.9, clip=True)
    (folder / "anystar.json").write_text(json.dumps({"normalization": recorded.to_json()}))
    image = _tif(tmp_path, "a.tif", blobs())
    args = [str(image), "--model", str(folder), "--scale", "1", "--overwrite"]
    code, _, err = run_cli(capsys, *args, "--out", str(tmp_path / "a_seg.tif"))
    assert code == 0 and calls[-1]["settings"].norm == recorded
    assert f"model: trained ({folder}); normalisation percentiles 0.5-99.9, clipped" in err
    assert run_cli(capsys, *args, "--out", str(tmp_path / "b.tif"), "--norm", "2", "99")[0] == 0
    assert calls[-1]["settings"].norm == Normalization(2.0, 99.0, clip=True)  # clip: recorded
    assert run_cli(capsys, *args, "--out", str(tmp_path / "c.tif"), "--no-norm-clip")[0] == 0
    assert calls[-1]["settings"].norm == Normalization(0.5, 99.9, clip=False)


def test_help_states_the_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["segment", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: auto)" in text and "keeps 1 1 1, with a warning" in text
    assert "(default: the model's recorded normalisation" in text


@pytest.mark.bundled_model
def test_auto_scale_batch_carries_on_past_a_volume_without_objects(calls, tmp_path, capsys):
    """The default scale: Suggest from raw voxels per volume; too few objects -> 1 1 1."""
    from napari_anystar.synth import SynthSettings, generate

    nuclei = generate("as-brightfg-plainbg", 9004, SynthSettings(augment=False)).image
    noise = np.random.default_rng(0).normal(100, 5, (24, 32, 40)).astype(np.float32)
    inputs = [_tif(tmp_path, "nuclei.tif", nuclei), _tif(tmp_path, "empty.tif", noise)]
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, *map(str, inputs), "--out", str(out))
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["empty_labels.tif", "nuclei_labels.tif"]
    assert stdout.count("objects") == 2
    measured = [line for line in err if line.startswith("nuclei.tif: objects ~")]
    assert len(measured) == 1 and "warning" not in measured[0]
    assert ("empty.tif: warning: found 0 object(s), too few to measure their size: using "
            "the fallback scale (1, 1, 1).") in err
    scale = calls[0]["settings"].scale
    assert f"scale ({', '.join(f'{s:g}' for s in scale)})" in measured[0]
    assert scale != (1.0, 1.0, 1.0) and calls[1]["settings"].scale == (1.0, 1.0, 1.0)
    assert tifffile.imread(out / "nuclei_labels.tif").max() > 0


# ---------------------------------------------------------------------- user errors
def _tif(tmp_path, name, array):
    path = tmp_path / name
    tifffile.imwrite(path, array, photometric="minisblack")
    return path


def _nan_volume():
    volume = blobs().astype(np.float32)
    volume[3, 4, 5] = np.nan
    return volume


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.ones((32, 32), np.uint16) * np.arange(32, dtype=np.uint16), "3D"),
        (np.random.default_rng(0).random((2, 16, 16, 16)).astype(np.float32), "3D"),
        (np.random.default_rng(0).integers(0, 255, (16, 16, 16, 3), dtype=np.uint8), "RGB"),
        (_nan_volume(), "NaN"),
        (np.full((16, 16, 16), 7, np.uint16), "constant"),
    ],
    ids=["2d", "4d", "rgb", "nan", "constant"],
)
def test_unusable_volumes_exit_2_with_one_line(model_dir, tmp_path, capsys, array, expected):
    path = _tif(tmp_path, "bad.tif", array)
    code, _, err = run_cli(capsys, str(path), "--out", str(tmp_path / "o.tif"), "--model",
                           str(model_dir))  # fmt: skip
    assert code == 2
    assert len(err) == 1
    assert err[0].startswith("anystar segment: error: ")
    assert expected in err[0]
    assert not (tmp_path / "o.tif").exists()


def test_path_and_option_errors_exit_2_with_one_line(model_dir, tmp_path, capsys):
    good = _tif(tmp_path, "good.tif", blobs())
    (tmp_path / "img.png").write_bytes(b"png")
    (tmp_path / "taken.tif").write_bytes(b"keep")
    broken = shutil.copytree(model_dir, tmp_path / "broken-model")
    (broken / "weights_best.h5").unlink()
    corrupt = shutil.copytree(model_dir, tmp_path / "corrupt-model")
    (corrupt / "weights_best.h5").write_bytes(b"not hdf5")
    model = ["--model", str(model_dir)]
    cases = [
        ([str(tmp_path / "missing.tif"), "--out", str(tmp_path / "x.tif"), *model],
         "does not exist"),
        ([str(tmp_path / "img.png"), "--out", str(tmp_path / "x.tif"), *model],
         "unsupported file type"),
        ([str(good), "--out", str(tmp_path / "taken.tif"), *model], "already exists"),
        ([str(good), "--out", str(good), "--overwrite", *model], "would replace its input"),
        ([str(good), "--out", str(tmp_path / "x.png"), *model], "--out"),
        ([str(good), "--out", str(tmp_path / "x.tif"), "--model", str(broken)], "weights"),
        ([str(good), "--out", str(tmp_path / "x.tif"), "--model", str(corrupt)],
         "cannot load the model"),
        ([str(good), "--out", str(tmp_path / "x.tif"), "--model", "no-such-model"],
         "Unknown model"),
        ([str(good), "--out", str(tmp_path / "x.tif"), "--scale", "1", "2", *model], "--scale"),
        ([str(good), "--out", str(tmp_path / "x.tif"), "--scale", "0", *model], "cale"),
        ([str(good), "--out", str(tmp_path / "x.tif"), "--scale", "big", *model], "'auto'"),
        ([str(good), "--out", str(tmp_path / "x.tif"), "--prob-thresh", "1.5", *model],
         "--prob-thresh"),
        ([str(good), "--out", str(tmp_path / "x.tif"), "--norm", "99", "1", *model], "ercentile"),
        ([str(good), str(good), "--out", str(tmp_path / "taken.tif"), *model], "is a file"),
        ([str(good), "--out", str(tmp_path / "taken.tif" / "sub" / "x.tif"), *model],
         "is not a folder"),  # refused before any work, not after the segmentation
    ]  # fmt: skip
    for argv, expected in cases:
        code, _, err = run_cli(capsys, *argv)
        assert code == 2, argv
        assert len(err) == 1, (argv, err)
        assert err[0].startswith("anystar segment: error: "), err
        assert expected in err[0], (expected, err[0])
    assert (tmp_path / "taken.tif").read_bytes() == b"keep"
    assert not (tmp_path / "x.tif").exists()


def test_no_models_available_is_a_clear_error(tmp_path, capsys):
    path = _tif(tmp_path, "good.tif", blobs())
    code, _, err = run_cli(capsys, str(path), "--out", str(tmp_path / "o.tif"))
    assert code == 2
    assert err == [f"anystar segment: error: {registry.NO_MODELS_MESSAGE}"]


def test_batch_skips_a_failing_volume_and_says_so(model_dir, calls, tmp_path, capsys):
    good = _tif(tmp_path, "a.tif", blobs(seed=1))
    flat = _tif(tmp_path, "b.tif", np.full((16, 16, 16), 7, np.uint16))  # unusable
    corrupt = tmp_path / "c.tif"
    corrupt.write_bytes(b"II*\x00garbage")  # unreadable
    last = _tif(tmp_path, "d.tif", blobs(seed=2))
    out = tmp_path / "out"
    code, stdout, err = run_cli(capsys, str(good), str(flat), str(corrupt), str(last), "--out",
                                str(out), "--scale", "1", "--model", str(model_dir))  # fmt: skip
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["a_labels.tif", "d_labels.tif"]
    assert [line.split("\t")[0] for line in stdout.splitlines()] == [
        str(out / "a_labels.tif"), str(out / "d_labels.tif")]
    skipped = [line for line in err if line.endswith("(skipped)")]
    assert len(skipped) == 2 and "constant" in skipped[0] and "cannot read" in skipped[1]
    assert err[-1] == "anystar segment: 2 of 4 volumes segmented; 2 failed: b.tif, c.tif"
    assert len(calls) == 2


def test_a_model_that_cannot_load_ends_the_batch(model_dir, tmp_path, capsys):
    corrupt = shutil.copytree(model_dir, tmp_path / "corrupt-model")
    (corrupt / "weights_best.h5").write_bytes(b"not hdf5")
    inputs = [str(_tif(tmp_path, f"{k}.tif", blobs(seed=k))) for k in range(2)]
    code, _, err = run_cli(capsys, *inputs, "--out", str(tmp_path / "out"), "--scale", "1",
                           "--model", str(corrupt))  # fmt: skip
    assert code == 2 and len(err) == 1 and "cannot load the model" in err[0]
    assert not (tmp_path / "out").exists()
