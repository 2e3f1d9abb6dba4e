"""The napari-free reader: NIfTI axes, scale, translate and laziness; zarr stores; bad input."""

from __future__ import annotations

import dask.array as da
import nibabel as nib
import numpy as np
import pytest
import zarr

from napari_anystar._reader import get_reader, open_nifti, read_paths
from napari_anystar.model.block_io import ATTRIBUTE
from napari_anystar.model.input_budget import BUDGET_ENV

SIZES_IJK = (0.5, 0.8, 2.5)  # NIfTI voxel sizes along i (X), j (Y), k (Z)
ORIGIN_IJK = (10.0, -20.0, 30.0)


def marked_nifti(path, shape_ijk=(6, 7, 8), marker=(1, 2, 5), affine=None, **header):
    """A float32 NIfTI of zeros with a 7 at the (i, j, k) ``marker``."""
    data = np.zeros(shape_ijk, np.float32)
    data[marker] = 7
    if affine is None:
        affine = np.diag([*SIZES_IJK, 1.0])
        affine[:3, 3] = ORIGIN_IJK
    img = nib.Nifti1Image(data, affine)
    for key, value in header.items():
        img.header[key] = value
    nib.save(img, path)
    return path


def read_one(path):
    reader = get_reader(str(path))
    assert reader is not None
    layers = reader(str(path))
    assert len(layers) == 1
    return layers[0]


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_axes_scale_translate(tmp_path, suffix):
    data, kwargs, layer_type = read_one(marked_nifti(tmp_path / f"vol{suffix}"))
    assert layer_type == "image"
    assert isinstance(data, np.ndarray)
    assert data.shape == (8, 7, 6)
    assert np.argwhere(data == 7).tolist() == [[5, 2, 1]]
    assert kwargs["scale"] == (2.5, 0.8, 0.5)
    assert kwargs["translate"] == (30.0, -20.0, 10.0)
    assert kwargs["name"] == "vol"


def test_nifti_rotated_affine_has_sizes_but_no_translate(tmp_path):
    affine = np.array([[0, -2.0, 0, 1], [1.5, 0, 0, 2], [0, 0, 3.0, 3], [0, 0, 0, 1]])
    _, kwargs, _ = read_one(marked_nifti(tmp_path / "rot.nii", affine=affine))
    assert kwargs["scale"] == (3.0, 2.0, 1.5)
    assert "translate" not in kwargs


def test_nifti_4d_is_tzyx_and_one_frame_4d_is_zyx(tmp_path):
    data = np.zeros((4, 5, 6, 3), np.int16)
    data[1, 2, 3, 2] = 9
    img = nib.Nifti1Image(data, np.diag([0.5, 0.8, 2.5, 1.0]))
    img.header.set_zooms((0.5, 0.8, 2.5, 0.0))  # no frame interval
    nib.save(img, tmp_path / "t.nii.gz")
    array, kwargs, _ = read_one(tmp_path / "t.nii.gz")
    assert array.shape == (3, 6, 5, 4)
    assert np.argwhere(array == 9).tolist() == [[2, 3, 2, 1]]
    assert kwargs["scale"] == (1.0, 2.5, 0.8, 0.5)
    assert kwargs["translate"] == (0.0, 0.0, 0.0, 0.0)

    nib.save(nib.Nifti1Image(data[..., 2:], np.eye(4)), tmp_path / "one.nii")
    array, kwargs, _ = read_one(tmp_path / "one.nii")
    assert array.shape == (6, 5, 4) and len(kwargs["scale"]) == 3


def test_nifti_over_budget_is_lazy(tmp_path, monkeypatch):
    path = marked_nifti(tmp_path / "big.nii.gz")
    monkeypatch.setenv(BUDGET_ENV, "1e-9")  # every volume is over a 1-byte budget
    data, kwargs = open_nifti(path)
    assert isinstance(data, da.Array)
    assert data.shape == (8, 7, 6) and data.dtype == np.float32
    assert data.numblocks == (8, 1, 1)  # one NIfTI slice (k) per chunk
    assert np.argwhere(data.compute() == 7).tolist() == [[5, 2, 1]]
    assert kwargs["scale"] == (2.5, 0.8, 0.5)


def test_nifti_scaled_data_is_float(tmp_path):
    path = marked_nifti(tmp_path / "s.nii")
    img = nib.load(path)
    scaled = nib.Nifti1Image(np.asarray(img.dataobj).astype(np.int16), img.affine)
    scaled.header.set_slope_inter(0.5, 1.0)
    nib.save(scaled, path)
    data, _, _ = read_one(path)
    assert data.dtype.kind == "f" and data.max() == pytest.approx(4.5)


def test_nifti_label_intent_opens_as_labels(tmp_path):
    img = nib.Nifti1Image(np.arange(24, dtype=np.int32).reshape(2, 3, 4), np.eye(4))
    img.header.set_intent("label")
    nib.save(img, tmp_path / "lab.nii.gz")
    data, _, layer_type = read_one(tmp_path / "lab.nii.gz")
    assert layer_type == "labels" and data.dtype == np.int32


@pytest.mark.parametrize("content", [b"not a nifti file" * 40, b""])
def test_corrupt_nifti_names_the_file(tmp_path, content):
    path = tmp_path / "broken.nii"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"^broken\.nii: not a readable NIfTI file") as info:
        read_paths(str(path))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("suffix", "keep"), [(".nii.gz", 200), (".nii", 1000)])
def test_truncated_nifti_names_the_file(tmp_path, suffix, keep):
    path = marked_nifti(tmp_path / f"cut{suffix}", shape_ijk=(20, 20, 20))
    path.write_bytes(path.read_bytes()[:keep])  # .nii: whole header, a sliver of the data
    with pytest.raises(ValueError, match=rf"^cut{suffix}: not a readable NIfTI file"):
        read_paths(str(path))


def test_zarr_labels_with_attributes(tmp_path):
    store = tmp_path / "labels.zarr"
    arr = zarr.open_array(store, mode="w", shape=(4, 6, 8), chunks=(2, 6, 8), dtype="uint16")
    arr[1, 2, 3] = 5
    # as the block-wise writer leaves it mid-run; its "scale" is the model's, not a voxel size
    arr.attrs[ATTRIBUTE] = {"kind": "labels", "complete": False, "scale": [9.0, 9.0, 9.0],
                            "voxel_size": [2.0, 0.5, 0.5]}
    (store / ".anystar-run").mkdir()
    data, kwargs, layer_type = read_one(store)
    assert layer_type == "labels"
    assert isinstance(data, da.Array) and data.numblocks == (2, 1, 1)
    assert kwargs == {"name": "labels", "scale": (2.0, 0.5, 0.5)}
    assert np.argwhere(data.compute() == 5).tolist() == [[1, 2, 3]]


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [("float32", "image"), ("uint16", "image"), ("uint8", "image"), ("int32", "labels"),
     ("uint64", "labels"), ("bool", "labels")],
)
def test_zarr_layer_type_from_dtype(tmp_path, dtype, expected):
    store = tmp_path / "plain.zarr"
    zarr.open_array(store, mode="w", shape=(3, 4, 5), dtype=dtype)
    data, kwargs, layer_type = read_one(store)
    assert layer_type == expected
    assert isinstance(data, da.Array) and "scale" not in kwargs


def test_zarr_short_scale_applies_to_trailing_axes(tmp_path):
    store = tmp_path / "t.zarr"
    arr = zarr.open_array(store, mode="w", shape=(2, 3, 4, 5), dtype="float32")
    arr.attrs[ATTRIBUTE] = {"voxel_size": [3, 1, 1], "name": "movie"}
    _, kwargs, layer_type = read_one(store)
    assert layer_type == "image"
    assert kwargs == {"name": "movie", "scale": (1.0, 3.0, 1.0, 1.0)}


def test_zarr_group_reads_the_marked_arrays(tmp_path):
    group = zarr.open_group(tmp_path / "run.zarr", mode="w")
    group.zeros(name="labels", shape=(3, 4, 5), dtype="int32").attrs[ATTRIBUTE] = {
        "kind": "labels"
    }
    group.zeros(name="image", shape=(3, 4, 5), dtype="float32").attrs[ATTRIBUTE] = {}
    group.zeros(name="blocks_done", shape=(2, 2, 2), dtype="bool")  # bookkeeping, unmarked
    layers = get_reader(str(tmp_path / "run.zarr"))(str(tmp_path / "run.zarr"))
    assert [(kw["name"], t) for _, kw, t in layers] == [("run/image", "image"),
                                                       ("run/labels", "labels")]


def test_zarr_bad_attributes_and_empty_group(tmp_path):
    arr = zarr.open_array(tmp_path / "a.zarr", mode="w", shape=(3, 4), dtype="float32")
    arr.attrs[ATTRIBUTE] = {"kind": "points"}
    with pytest.raises(ValueError, match=r"^a\.zarr: anystar\.kind is 'points'"):
        read_paths(str(tmp_path / "a.zarr"))
    arr.attrs[ATTRIBUTE] = {"voxel_size": [1, 1, 1]}
    with pytest.raises(ValueError, match=r"^a\.zarr: anystar\.voxel_size"):
        read_paths(str(tmp_path / "a.zarr"))
    zarr.open_group(tmp_path / "empty.zarr", mode="w")
    with pytest.raises(ValueError, match=r"^empty\.zarr: the zarr group holds no arrays"):
        read_paths(str(tmp_path / "empty.zarr"))


def test_non_matching_paths_get_no_reader(tmp_path):
    (tmp_path / "folder.zarr").mkdir()  # no zarr metadata inside
    (tmp_path / "vol.tif").write_bytes(b"")
    marked_nifti(tmp_path / "ok.nii")
    assert get_reader(str(tmp_path / "vol.tif")) is None
    assert get_reader(str(tmp_path / "folder.zarr")) is None
    assert get_reader(str(tmp_path / "missing.zarr")) is None
    assert get_reader([str(tmp_path / "ok.nii"), str(tmp_path / "vol.tif")]) is None
    assert get_reader([]) is None
    reader = get_reader([str(tmp_path / "ok.nii")] * 2)
    assert reader is not None and len(reader([str(tmp_path / "ok.nii")] * 2)) == 2
