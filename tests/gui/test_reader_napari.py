"""File > Open through the plugin's reader in a real viewer: NIfTI and zarr stores."""

from __future__ import annotations

import dask.array as da
import nibabel as nib
import numpy as np
import pytest
import zarr
from napari.layers import Image, Labels

from napari_anystar.model.block_io import ATTRIBUTE

PLUGIN = "napari-anystar"


def nifti(path, data_ijk, sizes_ijk=(0.5, 0.8, 2.5), intent=None):
    img = nib.Nifti1Image(data_ijk, np.diag([*sizes_ijk[:3], 1.0]))
    img.header.set_zooms(sizes_ijk)
    if intent:
        img.header.set_intent(intent)
    nib.save(img, path)
    return str(path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_open_nifti_scale_and_orientation(make_napari_viewer, tmp_path, suffix):
    data = np.zeros((6, 7, 8), np.float32)  # (i, j, k) = (X, Y, Z)
    data[1, 2, 5] = 3.0
    viewer = make_napari_viewer()
    layers = viewer.open(nifti(tmp_path / f"vol{suffix}", data), plugin=PLUGIN)
    assert len(layers) == len(viewer.layers) == 1
    layer = layers[0]
    assert isinstance(layer, Image) and layer.name == "vol"
    assert layer.data.shape == (8, 7, 6)
    assert np.argwhere(np.asarray(layer.data) == 3.0).tolist() == [[5, 2, 1]]
    np.testing.assert_allclose(layer.scale, (2.5, 0.8, 0.5))


def test_open_nifti_4d_and_label_intent(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer()
    movie = np.zeros((4, 5, 6, 3), np.float32)
    path = nifti(tmp_path / "movie.nii.gz", movie, (1.0, 1.0, 2.0, 0.5))
    (image,) = viewer.open(path, plugin=PLUGIN)
    assert isinstance(image, Image) and image.data.shape == (3, 6, 5, 4)
    np.testing.assert_allclose(image.scale, (1.0, 2.0, 1.0, 1.0))

    labels = np.zeros((4, 5, 6), np.int32)
    labels[1:3, 1:3, 1:3] = 4
    (layer,) = viewer.open(nifti(tmp_path / "lab.nii", labels, intent="label"), plugin=PLUGIN)
    assert isinstance(layer, Labels) and layer.data.max() == 4


def test_open_zarr_labels_and_image_lazily(make_napari_viewer, tmp_path):
    lab_store = tmp_path / "labels.zarr"
    lab = zarr.open_array(lab_store, mode="w", shape=(4, 16, 16), chunks=(1, 16, 16), dtype="u4")
    lab[2, 3:6, 3:6] = 7
    lab.attrs[ATTRIBUTE] = {"kind": "labels", "voxel_size": [2.0, 0.5, 0.5]}
    img = zarr.open_array(tmp_path / "image.zarr", mode="w", shape=(4, 16, 16), dtype="float32")
    img[:] = 1.5

    viewer = make_napari_viewer()
    (labels,) = viewer.open(str(tmp_path / "labels.zarr"), plugin=PLUGIN)
    (image,) = viewer.open(str(tmp_path / "image.zarr"), plugin=PLUGIN)
    assert isinstance(labels, Labels) and isinstance(image, Image)
    assert isinstance(labels.data, da.Array) and isinstance(image.data, da.Array)
    np.testing.assert_allclose(labels.scale, (2.0, 0.5, 0.5))
    assert labels.data.shape == (4, 16, 16)
    assert labels.data[2].compute().max() == 7 and float(image.data[0, 0, 0]) == 1.5
    assert [layer.name for layer in viewer.layers] == ["labels", "image"]


def test_open_corrupt_nifti_names_the_file(make_napari_viewer, tmp_path):
    path = tmp_path / "broken.nii"
    path.write_bytes(b"not a nifti file" * 40)
    viewer = make_napari_viewer()
    with pytest.raises(ValueError, match=r"^broken\.nii: not a readable NIfTI file") as info:
        viewer.open(str(path), plugin=PLUGIN)
    assert "\n" not in str(info.value)  # napari shows it as a one-line notification
    assert len(viewer.layers) == 0
