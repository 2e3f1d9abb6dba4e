"""``anystar segment`` in block-wise mode: .zarr/TIFF/NIfTI inputs to .zarr stores, many
inputs, resume after an interruption, and every user error."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import tifffile
import zarr
from test_cli_segment import run_cli

from conftest import gaussian_blobs as blobs
from napari_anystar._cli.segment_big import partial_path
from napari_anystar.model import blockwise, registry
from napari_anystar.model.block_io import STATE_DIR
from napari_anystar.normalization import LEGACY

BLOCKS = ["--block-size", "12", "16", "20", "--scale", "1", "--workers", "0"]


@pytest.fixture(scope="module")
def model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with thresholds that keep only its ~0.5% most likely voxels."""
    folder = shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("big") / "tiny-thresh")
    model = registry.load_model(registry.ModelEntry("tiny-thresh", folder, "folder"))
    prob, _ = model.predict(LEGACY.apply(blobs()))
    thresholds = {"prob": round(float(np.quantile(prob, 0.995)), 4), "nms": 0.35}
    (folder / "thresholds.json").write_text(json.dumps(thresholds))
    return folder


def test_tif_to_zarr_store_readable_by_zarr(model_dir, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "v.tif", blobs())
    code, out, err = run_cli(capsys, str(tmp_path / "v.tif"), "--out",
                             str(tmp_path / "labels.zarr"), "--model", str(model_dir), *BLOCKS)
    assert code == 0, err
    store = zarr.open(str(tmp_path / "labels.zarr"), mode="r")
    labels = store[:]
    n_objects = len(np.unique(labels)) - 1
    assert labels.shape == (24, 32, 40) and labels.dtype == np.int32
    assert out.strip() == f"{tmp_path / 'labels.zarr'}\t{n_objects} objects"
    assert store.attrs["anystar"]["complete"] and store.attrs["anystar"]["block_size"] == [
        12, 16, 20]
    assert not partial_path(tmp_path / "labels.zarr").exists()
    assert not (tmp_path / "labels.zarr" / STATE_DIR).exists()


def test_zarr_and_nifti_inputs_to_a_folder(model_dir, tmp_path, capsys):
    image = blobs()
    zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=image.shape,
                    dtype=image.dtype)[:] = image
    nib.save(nib.Nifti1Image(image.T, np.diag([0.5, 0.5, 2.0, 1.0])), tmp_path / "b.nii.gz")
    code, out, err = run_cli(capsys, str(tmp_path / "a.zarr"), str(tmp_path / "b.nii.gz"),
                             "--out", str(tmp_path / "out"), "--model", str(model_dir), *BLOCKS)
    assert code == 0, err
    a = zarr.open(str(tmp_path / "out" / "a_labels.zarr"), mode="r")[:]
    b = zarr.open(str(tmp_path / "out" / "b_labels.zarr"), mode="r")[:]
    assert np.array_equal(a, b)  # the same volume, read from two formats
    attrs = zarr.open(str(tmp_path / "out" / "b_labels.zarr"), mode="r").attrs["anystar"]
    assert attrs["voxel_size"] == [2.0, 0.5, 0.5]  # ZYX, for napari's scale
    assert len(out.strip().splitlines()) == 2


def test_an_interrupted_run_resumes(model_dir, tmp_path, capsys, monkeypatch):
    tifffile.imwrite(tmp_path / "v.tif", blobs())
    real = blockwise.predict_block
    calls = []

    def interrupted(*args):
        calls.append(args[-1])
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(blockwise, "predict_block", interrupted)
    argv = [str(tmp_path / "v.tif"), "--out", str(tmp_path / "l.zarr"), "--model",
            str(model_dir), *BLOCKS]
    code, _, err = run_cli(capsys, *argv)
    assert code == 130 and "run the same command again to resume" in err[-2]
    assert partial_path(tmp_path / "l.zarr").is_dir() and not (tmp_path / "l.zarr").exists()
    monkeypatch.setattr(blockwise, "predict_block", real)
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "v.tif: resumed (4 of 8 blocks were done)" in err
    resumed = zarr.open(str(tmp_path / "l.zarr"), mode="r")[:]
    code, _, err = run_cli(capsys, *argv[:2], str(tmp_path / "again.zarr"), *argv[3:])
    assert np.array_equal(resumed, zarr.open(str(tmp_path / "again.zarr"), mode="r")[:])


def test_existing_output_needs_overwrite(model_dir, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "v.tif", blobs())
    argv = [str(tmp_path / "v.tif"), "--out", str(tmp_path / "l.zarr"), "--model",
            str(model_dir), *BLOCKS]
    assert run_cli(capsys, *argv)[0] == 0
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err == [f"anystar segment: error: output {tmp_path / 'l.zarr'} "
                                 "already exists (use --overwrite to replace it)"]
    assert run_cli(capsys, *argv, "--overwrite")[0] == 0
    assert zarr.open(str(tmp_path / "l.zarr"), mode="r").attrs["anystar"]["complete"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--scheduler", "tcp://127.0.0.1:9"], "cannot connect to the Dask scheduler at "
                                               "'tcp://127.0.0.1:9' within 5 s"),
        (["--workers", "-1"], "--workers must be 0 or more, got -1"),
        (["--block-size", "16", "16"], "--block-size takes one value or three (Z Y X)"),
        (["--block-size", "4"], "--block-size must be at least 8 voxels per axis"),
    ],
)
def test_user_errors_are_one_line(model_dir, tmp_path, capsys, extra, message):
    tifffile.imwrite(tmp_path / "v.tif", blobs())
    code, out, err = run_cli(capsys, str(tmp_path / "v.tif"), "--out",
                             str(tmp_path / "l.zarr"), "--model", str(model_dir), "--scale", "1",
                             *extra)
    assert code == 2 and out == ""
    assert len(err) <= 2 and message in err[-1]  # the model line, then the error


def test_block_mode_output_must_be_a_store(model_dir, tmp_path, capsys):
    tifffile.imwrite(tmp_path / "v.tif", blobs())
    code, _, err = run_cli(capsys, str(tmp_path / "v.tif"), "--out", str(tmp_path / "l.tif"),
                           "--workers", "0", "--block-size", "16")
    assert code == 2 and "name a path ending in .zarr or a folder" in err[-1]
    code, _, err = run_cli(capsys, str(tmp_path / "v.png"), "--out", str(tmp_path / "l.zarr"))
    assert code == 2 and "unsupported file type" in err[-1]
