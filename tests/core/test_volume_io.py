"""Volume reading and label writing: TIFF and NIfTI round trips, axes, affine, safety."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_anystar.volume_io import read_volume, split_suffix, volume_format, write_labels

AFFINE = np.array(
    [[0.0, -2.0, 0.0, 10.0], [1.5, 0.0, 0.0, -3.0], [0.0, 0.0, 3.0, 5.0], [0.0, 0.0, 0.0, 1.0]]
)


def labels_like(shape, dtype=np.int32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 7, size=shape).astype(dtype)


@pytest.mark.parametrize("suffix", [".tif", ".tiff"])
@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_tiff_round_trip(tmp_path, suffix, dtype):
    image = np.random.default_rng(1).random((5, 6, 7)).astype(np.float32)
    tifffile.imwrite(tmp_path / f"img{suffix}", image)
    array, meta = read_volume(tmp_path / f"img{suffix}")
    assert array.shape == (5, 6, 7)
    assert array.dtype == np.float32
    np.testing.assert_array_equal(array, image)

    labels = labels_like(array.shape, dtype)
    out = tmp_path / f"out{suffix}"
    write_labels(out, labels, meta)
    back = tifffile.imread(out)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"img{suffix}", f"out{suffix}"])


def test_tiff_voxel_size_from_imagej_metadata(tmp_path):
    image = np.arange(4 * 5 * 6, dtype=np.uint16).reshape(4, 5, 6)
    tifffile.imwrite(
        tmp_path / "ij.tif",
        image,
        imagej=True,
        resolution=(1 / 0.5, 1 / 0.25),
        metadata={"spacing": 2.0, "unit": "um", "axes": "ZYX"},
    )
    array, meta = read_volume(tmp_path / "ij.tif")
    assert array.shape == (4, 5, 6)
    assert meta.voxel_size == pytest.approx((2.0, 0.25, 0.5))
    # a TIFF image's voxel size becomes the NIfTI affine (x, y, z on the diagonal)
    write_labels(tmp_path / "ij_labels.nii.gz", labels_like(array.shape), meta)
    out = nib.load(tmp_path / "ij_labels.nii.gz")
    assert out.shape == (6, 5, 4)
    np.testing.assert_allclose(out.affine, np.diag([0.5, 0.25, 2.0, 1.0]))


def save_nifti(path, data, affine=AFFINE, qform_code=1, sform_code=2):
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine if qform_code else None, code=qform_code)
    img.set_sform(affine if sform_code else None, code=sform_code)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)
    return nib.load(path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize(("qform_code", "sform_code"), [(1, 2), (0, 2), (1, 0), (0, 0)])
def test_nifti_round_trip_keeps_shape_affine_and_axes(tmp_path, suffix, qform_code, sform_code):
    data = np.random.default_rng(2).random((9, 7, 5)).astype(np.float32)  # (i, j, k) = XYZ
    original = save_nifti(
        tmp_path / f"img{suffix}", data, qform_code=qform_code, sform_code=sform_code
    )
    array, meta = read_volume(tmp_path / f"img{suffix}")
    # ZYX convention: the array is the NIfTI data transposed
    assert array.shape == (5, 7, 9)
    np.testing.assert_array_equal(array, data.T)
    assert meta.voxel_size == pytest.approx(tuple(original.header.get_zooms()[::-1]))

    labels = labels_like(array.shape, np.int32)
    out = tmp_path / f"lab{suffix}"
    write_labels(out, labels, meta)
    written = nib.load(out)
    assert written.shape == data.shape
    assert written.get_data_dtype() == np.int32
    np.testing.assert_allclose(written.affine, original.affine)
    assert int(written.header["qform_code"]) == qform_code
    assert int(written.header["sform_code"]) == sform_code
    assert written.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_array_equal(np.asanyarray(written.dataobj), labels.T)
    again, _ = read_volume(out)
    assert again.dtype == np.int32
    np.testing.assert_array_equal(again, labels)


def test_nifti_trailing_singleton_axis_is_dropped(tmp_path):
    data = np.random.default_rng(3).random((6, 5, 4, 1)).astype(np.float32)
    save_nifti(tmp_path / "frame.nii.gz", data)
    array, meta = read_volume(tmp_path / "frame.nii.gz")
    assert array.shape == (4, 5, 6)
    write_labels(tmp_path / "frame_labels.nii.gz", labels_like(array.shape), meta)
    assert nib.load(tmp_path / "frame_labels.nii.gz").shape == (6, 5, 4)


def test_nifti_labels_written_as_tiff_stay_zyx(tmp_path):
    save_nifti(tmp_path / "img.nii.gz", np.zeros((9, 7, 5), np.float32))
    array, meta = read_volume(tmp_path / "img.nii.gz")
    labels = labels_like(array.shape)
    write_labels(tmp_path / "labels.tif", labels, meta)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "labels.tif"), labels)


def test_never_overwrites_without_permission(tmp_path):
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((3, 4, 5), np.uint8), photometric="minisblack")
    array, meta = read_volume(tmp_path / "img.tif")
    out = tmp_path / "out.tif"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="already exists"):
        write_labels(out, labels_like(array.shape), meta)
    assert out.read_bytes() == b"precious"
    write_labels(out, labels_like(array.shape), meta, overwrite=True)
    np.testing.assert_array_equal(tifffile.imread(out), labels_like(array.shape))
    with tifffile.TiffFile(out) as tif:  # a 3-slice stack, not an RGB image
        assert len(tif.pages) == 3
        assert tif.pages[0].photometric == tifffile.PHOTOMETRIC.MINISBLACK
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.tif", "out.tif"]


def test_bad_arguments(tmp_path):
    tifffile.imwrite(tmp_path / "img.tif", np.zeros((3, 4, 5), np.uint8), photometric="minisblack")
    _, meta = read_volume(tmp_path / "img.tif")
    with pytest.raises(ValueError, match="integer"):
        write_labels(tmp_path / "a.tif", np.zeros((3, 4, 5), np.float32), meta)
    with pytest.raises(ValueError, match="shape"):
        write_labels(tmp_path / "a.tif", np.zeros((3, 4, 6), np.int32), meta)
    with pytest.raises(ValueError, match="unsupported file type"):
        write_labels(tmp_path / "a.png", np.zeros((3, 4, 5), np.int32), meta)
    with pytest.raises(FileNotFoundError):
        write_labels(tmp_path / "missing" / "a.tif", np.zeros((3, 4, 5), np.int32), meta)
    with pytest.raises(FileNotFoundError):
        read_volume(tmp_path / "nothing.nii.gz")
    with pytest.raises(ValueError, match="unsupported file type"):
        read_volume(tmp_path / "img.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.tif"]


def test_suffix_helpers():
    assert split_suffix("a/b.nii.gz") == ("b", ".nii.gz")
    assert split_suffix("a/b.c.TIF") == ("b.c", ".TIF")
    assert volume_format("x.NII.GZ") == "nifti"
    assert volume_format("x.tiff") == "tiff"
    with pytest.raises(ValueError):
        volume_format("x.gz")


def test_a_tiff_without_image_data_is_refused_clearly(tmp_path):
    path = tmp_path / "corrupt.tif"
    path.write_bytes(b"II*\x00garbage")  # a TIFF header and nothing readable behind it
    with pytest.raises(ValueError, match="no image data"):
        read_volume(path)
