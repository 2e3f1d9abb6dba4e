"""``anystar timeseries``: CSVs from 4D TIFF / NIfTI files, the segmenting path, user errors."""

from __future__ import annotations

import json
import re
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy.ndimage import gaussian_filter1d

from napari_anystar import cli
from napari_anystar._cli import timeseries as ts_cli
from napari_anystar.analysis.timeseries import DEFAULT_SIGMA, object_time_series
from napari_anystar.model import registry
from napari_anystar.normalization import LEGACY

SHAPE = (10, 12, 14)  # Z, Y, X
N_FRAMES = 9


def movie(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uint16 image T x Z x Y x X, labels with ids 2 and 5, exact means 2 x T)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(SHAPE, dtype=np.uint16)
    labels[1:4, 2:6, 3:7] = 2
    labels[5:9, 6:11, 8:13] = 5
    expected = rng.integers(200, 900, size=(2, N_FRAMES)).astype(np.float64)
    image = rng.integers(0, 100, size=(N_FRAMES, *SHAPE)).astype(np.uint16)
    for k, object_id in enumerate((2, 5)):
        image[:, labels == object_id] = expected[k][:, None]
    return image, labels, expected


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["timeseries", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def files(tmp_path):
    image, labels, expected = movie()
    tifffile.imwrite(tmp_path / "movie.tif", image, metadata={"axes": "TZYX"})
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    return tmp_path, expected


def read_series(path) -> tuple[np.ndarray, np.ndarray]:
    table = pd.read_csv(path)
    assert tuple(table.columns) == ("object", "frame", "value")
    wide = table.pivot(index="object", columns="frame", values="value")
    assert wide.columns.tolist() == list(range(wide.shape[1]))
    return wide.index.to_numpy(), wide.to_numpy()


# --------------------------------------------------------------------------- --labels
def test_tiff_with_labels_default_sigma(files, capsys):
    folder, expected = files
    out = folder / "series.csv"
    code, stdout, stderr = run_cli(capsys, folder / "movie.tif", "--out", out,
                                   "--labels", folder / "labels.tif")  # fmt: skip
    assert code == 0, stderr
    ids, values = read_series(out)
    assert ids.tolist() == [2, 5]
    np.testing.assert_allclose(values, gaussian_filter1d(expected, DEFAULT_SIGMA, axis=1),
                               rtol=1e-12)  # fmt: skip
    assert stdout.strip() == f"{out}\t2 objects"
    assert "sigma 3 frames" in stderr


def test_nifti_with_labels_and_no_smoothing(tmp_path, capsys):
    image, labels, expected = movie(seed=1)
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    nib.save(nib.Nifti1Image(image.T, affine), tmp_path / "movie.nii.gz")  # (X, Y, Z, T)
    nib.save(nib.Nifti1Image(labels.T, affine), tmp_path / "labels.nii.gz")
    out = tmp_path / "series.csv"
    code, _, stderr = run_cli(capsys, tmp_path / "movie.nii.gz", "--out", out, "--labels",
                              tmp_path / "labels.nii.gz", "--sigma", "0")  # fmt: skip
    assert code == 0, stderr
    ids, values = read_series(out)
    assert ids.tolist() == [2, 5]
    np.testing.assert_array_equal(values, expected)  # exact means per frame
    assert "not smoothed" in stderr


def test_overwrite_replaces_only_when_asked(files, capsys):
    folder, expected = files
    out = folder / "series.csv"
    out.write_text("mine\n")
    args = [folder / "movie.tif", "--out", out, "--labels", folder / "labels.tif", "--sigma", "0"]
    code, _, stderr = run_cli(capsys, *args)
    assert code == 2 and "already exists (use --overwrite" in stderr
    assert out.read_text() == "mine\n"
    assert run_cli(capsys, *args, "--overwrite")[0] == 0
    np.testing.assert_array_equal(read_series(out)[1], expected)


# --------------------------------------------------------------------------- errors
def _write(folder, name, array):
    tifffile.imwrite(folder / name, array)
    return folder / name


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("3d_image", r"is 3D \(10, 12, 14\); the time-series tool needs a 4D image"),
        ("shape_mismatch", r"labels have shape \(10, 12, 13\) but the image's frames"),
        ("empty_labels", "the labels have no objects"),
        ("float_labels", "integer ids"),
        ("4d_labels", "the labels are 4D"),
        ("frame_with_labels", "leave them out with --labels"),
        ("save_with_labels", "--save-labels writes segmented labels"),
        ("not_csv", "name a file ending in .csv"),
        ("negative_sigma", "--sigma: the smoothing sigma must be 0"),
        ("missing_input", "does not exist"),
        ("png_input", "unsupported file type"),
        ("save_is_input", r"output .*movie.tif would replace an input"),
        ("no_folder", "does not exist"),
    ],
)
def test_user_errors_write_nothing(files, capsys, case, message):
    folder, _ = files
    image, labels = folder / "movie.tif", folder / "labels.tif"
    out = folder / "series.csv"
    extra: list = []
    if case == "3d_image":
        image = _write(folder, "volume.tif", tifffile.imread(image)[0])
    elif case == "shape_mismatch":
        labels = _write(folder, "small.tif", tifffile.imread(labels)[:, :, :13])
    elif case == "empty_labels":
        labels = _write(folder, "empty.tif", np.zeros(SHAPE, np.uint16))
    elif case == "float_labels":
        labels = _write(folder, "float.tif", tifffile.imread(labels).astype(np.float32))
    elif case == "4d_labels":
        labels = _write(folder, "labels4d.tif", np.stack([tifffile.imread(labels)] * 2))
    elif case == "frame_with_labels":
        extra = ["--frame", "1"]
    elif case == "save_with_labels":
        extra = ["--save-labels", folder / "seg.tif"]
    elif case == "not_csv":
        out = folder / "series.txt"
    elif case == "negative_sigma":
        extra = ["--sigma", "-1"]
    elif case == "missing_input":
        image = folder / "nothing.tif"
    elif case == "png_input":
        image = _write(folder, "x.tif", np.zeros((2, 2))).rename(folder / "x.png")
    elif case == "save_is_input":
        labels, extra = None, ["--save-labels", image, "--overwrite"]
    elif case == "no_folder":
        out = folder / "missing" / "series.csv"
    before = sorted(p.name for p in folder.iterdir())
    with_labels = ["--labels", labels] if labels is not None else []
    code, stdout, stderr = run_cli(capsys, image, "--out", out, *with_labels, *extra)
    assert code == 2
    assert stdout == ""
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("anystar timeseries: error: "), stderr
    assert re.search(message, lines[0]), lines[0]
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written
    assert tifffile.imread(folder / "movie.tif").shape == (N_FRAMES, *SHAPE)


# ------------------------------------------------------------------ segmenting path
@pytest.fixture
def spy(monkeypatch, tiny_model_dir):
    """Skip the network: record the volume handed to ``segment_image``, return fixed labels."""
    seen: dict = {}

    def fake_segment(model, volume, settings, args, prob, nms, name):
        seen["volume"], seen["scale"] = np.array(volume), settings.scale
        return movie()[1]

    monkeypatch.setattr(ts_cli, "load_model", lambda entry, settings: None)
    monkeypatch.setattr(ts_cli, "segment_image", fake_segment)
    return seen


@pytest.mark.parametrize("choice", [[], ["--mean"], ["--frame", "4"]])
def test_segments_the_mean_or_the_chosen_frame(files, capsys, spy, tiny_model_dir, choice):
    folder, expected = files
    image = tifffile.imread(folder / "movie.tif")
    out = folder / "series.csv"
    code, _, stderr = run_cli(capsys, folder / "movie.tif", "--out", out, "--model",
                              tiny_model_dir, "--scale", "1", "--sigma", "0", *choice)  # fmt: skip
    assert code == 0, stderr
    wanted = image[4] if choice[:1] == ["--frame"] else image.mean(axis=0)
    np.testing.assert_allclose(spy["volume"], wanted, rtol=1e-6)
    assert spy["scale"] == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(read_series(out)[1], expected)


def test_frame_out_of_range_and_no_objects(files, capsys, spy, tiny_model_dir, monkeypatch):
    folder, _ = files
    out = folder / "series.csv"
    base = [folder / "movie.tif", "--out", out, "--model", tiny_model_dir, "--scale", "1"]
    code, _, stderr = run_cli(capsys, *base, "--frame", str(N_FRAMES))
    assert code == 2 and f"frame {N_FRAMES} is out of range" in stderr
    monkeypatch.setattr(ts_cli, "segment_image", lambda *a: np.zeros(SHAPE, np.int32))
    code, _, stderr = run_cli(capsys, *base)
    assert code == 2 and "found no objects; nothing written" in stderr
    assert not out.exists()


@pytest.fixture(scope="module")
def thresh_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model keeping only its ~0.5% most likely voxels of :func:`blob_movie`'s mean."""
    folder = shutil.copytree(tiny_model_dir, tmp_path_factory.mktemp("ts") / "tiny-ts")
    model = registry.load_model(registry.ModelEntry("tiny-ts", folder, "folder"))
    prob, _ = model.predict(LEGACY.apply(blob_movie().mean(axis=0)))
    thresholds = {"prob": round(float(np.quantile(prob, 0.995)), 4), "nms": 0.35}
    (folder / "thresholds.json").write_text(json.dumps(thresholds))
    return folder


def blob_movie(shape=(24, 32, 40), n_frames: int = 5) -> np.ndarray:
    """Bright Gaussian blobs on noise that brighten over time, uint16 (T, Z, Y, X)."""
    rng = np.random.default_rng(3)
    grid = np.indices(shape, dtype=np.float32)
    blobs = np.zeros(shape, np.float32)
    for _ in range(6):
        centre = [rng.uniform(4, s - 4) for s in shape]
        blobs += np.exp(-sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) / 18.0)
    frames = [100 + rng.normal(0, 5, shape) + 800 * (1 + 0.2 * t) * blobs for t in range(n_frames)]
    return np.stack(frames).astype(np.uint16)


def test_segments_with_a_real_model_and_saves_its_labels(tmp_path, capsys, thresh_model_dir):
    image = blob_movie()
    tifffile.imwrite(tmp_path / "movie.tif", image, metadata={"axes": "TZYX"})
    out, seg = tmp_path / "series.csv", tmp_path / "seg.tif"
    code, stdout, stderr = run_cli(capsys, tmp_path / "movie.tif", "--out", out, "--model",
                                   thresh_model_dir, "--scale", "1", "--save-labels", seg)
    assert code == 0, stderr
    labels = tifffile.imread(seg)
    assert labels.shape == image.shape[1:]
    ids, values = read_series(out)
    assert ids.size >= 1
    np.testing.assert_array_equal(ids, np.unique(labels[labels > 0]))
    np.testing.assert_allclose(values, object_time_series(image, labels, DEFAULT_SIGMA)[1],
                               rtol=1e-12)  # fmt: skip
    assert f"{ids.size} objects" in stdout and str(seg) in stdout
