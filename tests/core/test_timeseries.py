"""Per-object time series: exact means per frame, smoothing, projections, lazy frames, CSV."""

from __future__ import annotations

import dask.array as da
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy.ndimage import gaussian_filter1d

from napari_anystar.analysis import timeseries as ts
from napari_anystar.volume_io import read_volume

SHAPE = (6, 10, 12)  # Z, Y, X
IDS = (3, 7, 1000)  # not consecutive: the ids must come back as they are


def known_series(n_frames: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image T x Z x Y x X, labels, expected means ids x T): object k has brightness
    ``expected[k, t]`` in frame t on half of its voxels +-5 on the others' halves."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(SHAPE, dtype=np.int32)
    labels[1:3, 1:4, 1:5] = IDS[0]
    labels[3:6, 5:9, 2:4] = IDS[1]
    labels[0:2, 6:10, 8:12] = IDS[2]
    expected = rng.integers(100, 1000, size=(len(IDS), n_frames)).astype(np.float64)
    image = rng.integers(0, 50, size=(n_frames, *SHAPE)).astype(np.uint16)  # background
    for k, object_id in enumerate(IDS):
        where = np.flatnonzero(labels == object_id)
        assert where.size % 2 == 0
        for t in range(n_frames):
            frame = image[t].reshape(-1)
            frame[where[::2]] = expected[k, t] + 5  # mean of +5 and -5 halves: the value
            frame[where[1::2]] = expected[k, t] - 5
    return image, labels, expected


class FrameReader:
    """A 4D array-like that only serves whole frames by integer index and counts reads."""

    def __init__(self, image: np.ndarray) -> None:
        self._image = image
        self.shape, self.dtype, self.ndim = image.shape, image.dtype, image.ndim
        self.reads: list[int] = []

    def __getitem__(self, index):
        assert isinstance(index, int), f"only single frames may be read, got {index!r}"
        self.reads.append(index)
        return self._image[index]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole 4D array was materialised")


# ----------------------------------------------------------------------- measurement
def test_exact_mean_per_frame_with_original_ids():
    image, labels, expected = known_series()
    ids, values = ts.object_time_series(image, labels)
    np.testing.assert_array_equal(ids, IDS)
    assert values.shape == (len(IDS), image.shape[0])
    assert values.dtype == np.float64
    np.testing.assert_array_equal(values, expected)


def test_one_frame_and_bool_labels():
    image, labels, expected = known_series(n_frames=1)
    ids, values = ts.object_time_series(image, labels == IDS[1])
    assert ids.tolist() == [1]
    assert values.shape == (1, 1)
    assert values[0, 0] == expected[1, 0]


def test_lazy_frames_are_read_one_at_a_time():
    image, labels, expected = known_series()
    reader = FrameReader(image)
    _, values = ts.object_time_series(reader, labels)
    assert reader.reads == list(range(image.shape[0]))
    np.testing.assert_array_equal(values, expected)
    lazy = da.from_array(image, chunks=(1, *SHAPE))
    np.testing.assert_array_equal(ts.object_time_series(lazy, labels)[1], expected)


def test_progress_counts_frames():
    image, labels, _ = known_series(n_frames=3)
    job = ts.iter_time_series(image, labels)
    progress = []
    while True:
        try:
            progress.append(next(job))
        except StopIteration:
            break
    assert progress == [(0, 3), (1, 3), (2, 3), (3, 3)]


# ------------------------------------------------------------------------- smoothing
@pytest.mark.parametrize("sigma", [ts.DEFAULT_SIGMA, 0.7, 10.0])
def test_smoothing_equals_scipy_gaussian_filter1d_along_time(sigma):
    image, labels, expected = known_series(n_frames=20)
    _, values = ts.object_time_series(image, labels, sigma=sigma)
    np.testing.assert_allclose(values, gaussian_filter1d(expected, sigma, axis=1), rtol=1e-12)
    assert not np.allclose(values, expected)  # it did smooth
    # every object's curve is smoothed on its own: object 0 alone gives the same row
    alone = ts.object_time_series(image, np.where(labels == IDS[0], labels, 0), sigma=sigma)[1]
    np.testing.assert_allclose(alone[0], values[0], rtol=1e-12)


def test_smoothing_keeps_constant_curves_and_can_be_off():
    constant = np.full((2, 9), 42.0)
    np.testing.assert_allclose(ts.smooth(constant, ts.DEFAULT_SIGMA), constant, rtol=1e-12)
    assert ts.DEFAULT_SIGMA == 3.0
    assert ts.SMOOTHING_MODE == "reflect"
    raw = np.arange(10.0)[None]
    for off in (0, 0.0, None):
        np.testing.assert_array_equal(ts.smooth(raw, off), raw)
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma"):
            ts.smooth(raw, bad)


# ------------------------------------------------------------------------ projection
def test_projections():
    image, _, _ = known_series(n_frames=5)
    mean = ts.projection(image)
    assert mean.shape == SHAPE and mean.dtype == np.float32
    np.testing.assert_allclose(mean, image.mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(ts.projection(image, 3), image[3])
    reader = FrameReader(image)
    np.testing.assert_allclose(ts.projection(reader), mean, rtol=1e-6)
    assert reader.reads == list(range(5))
    with pytest.raises(ValueError, match="frame 5 is out of range"):
        ts.projection(image, 5)
    with pytest.raises(ValueError, match="needs a 4D image"):
        ts.projection(image[0])


# ------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("image_shape", "labels", "message"),
    [
        ((6, 10, 12), np.ones(SHAPE, int), r"is 3D \(6, 10, 12\); .* needs a 4D image"),
        ((2, 6, 10, 12), np.ones((2, *SHAPE), int), "labels are 4D"),
        ((2, 6, 10, 12), np.ones((6, 10, 11), int), r"labels have shape \(6, 10, 11\) but"),
        ((2, 6, 10, 12), np.zeros(SHAPE, int), "no objects"),
        ((2, 6, 10, 12), np.ones(SHAPE, float), "integer ids"),
        ((0, 6, 10, 12), np.ones(SHAPE, int), "no frames"),
    ],
)
def test_bad_inputs_are_refused_with_one_line(image_shape, labels, message):
    image = np.zeros(image_shape, dtype=np.float32)
    with pytest.raises(ValueError, match=message) as info:
        ts.object_time_series(image, labels)
    assert "\n" not in str(info.value)


def test_non_finite_intensity_inside_an_object_is_refused():
    image, labels, _ = known_series(n_frames=3)
    image = image.astype(np.float32)
    image[1][labels == 0] = np.nan  # background NaN: fine
    assert np.isfinite(ts.object_time_series(image, labels)[1]).all()
    image[2][labels == IDS[2]] = np.inf
    with pytest.raises(ValueError, match="frame 2 has NaN or infinite"):
        ts.object_time_series(image, labels)


# ------------------------------------------------------------------------------- CSV
def test_csv_round_trip_with_pandas(tmp_path):
    image, labels, _ = known_series(n_frames=7)
    ids, values = ts.object_time_series(image, labels, sigma=1.3)
    path = tmp_path / "series.csv"
    ts.write_csv(path, ids, values)
    table = pd.read_csv(path)
    assert tuple(table.columns) == ts.CSV_COLUMNS
    assert len(table) == ids.size * 7
    assert table["object"].tolist() == np.repeat(ids, 7).tolist()
    assert table["frame"].tolist() == list(range(7)) * ids.size
    wide = table.pivot(index="object", columns="frame", values="value")
    np.testing.assert_array_equal(wide.index.to_numpy(), ids)
    np.testing.assert_array_equal(wide.to_numpy(), values)  # shortest repr: exact round trip
    assert [p.name for p in tmp_path.iterdir()] == ["series.csv"]  # no temporary file left


def test_csv_never_overwrites_unless_asked(tmp_path):
    path = tmp_path / "series.csv"
    path.write_text("mine\n")
    with pytest.raises(FileExistsError):
        ts.write_csv(path, np.array([1]), np.array([[1.0, 2.0]]))
    assert path.read_text() == "mine\n"
    with pytest.raises(ValueError, match="do not fit"):
        ts.write_csv(path, np.array([1, 2]), np.array([[1.0, 2.0]]), overwrite=True)
    assert path.read_text() == "mine\n"
    ts.write_csv(path, np.array([5]), np.array([[0.5, 2.0]]), overwrite=True)
    assert path.read_text().splitlines() == ["object,frame,value", "5,0,0.5", "5,1,2.0"]
    with pytest.raises(FileNotFoundError):
        ts.write_csv(tmp_path / "missing" / "a.csv", np.array([1]), np.array([[1.0]]))


# -------------------------------------------------------------------------- 4D files
def test_read_volume_keeps_4d_tiff_and_nifti_as_tzyx(tmp_path):
    image, labels, expected = known_series(n_frames=4)
    tifffile.imwrite(tmp_path / "movie.tif", image, metadata={"axes": "TZYX"})
    nib.save(nib.Nifti1Image(image.T, np.eye(4)), tmp_path / "movie.nii.gz")  # (X, Y, Z, T)
    for name in ("movie.tif", "movie.nii.gz"):
        data, meta = read_volume(tmp_path / name)
        assert data.shape == (4, *SHAPE) and meta.shape == data.shape
        np.testing.assert_array_equal(data, image)
        np.testing.assert_array_equal(ts.object_time_series(data, labels)[1], expected)
