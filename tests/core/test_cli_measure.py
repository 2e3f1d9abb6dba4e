"""``anystar measure``: TIFF / NIfTI labels to a CSV table, voxel sizes, and every user error."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import tifffile

from napari_anystar import cli
from napari_anystar.analysis.measure import measure_objects


def volumes() -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((12, 16, 20), np.uint16)
    labels[2:6, 3:7, 4:12] = 4  # 4 x 4 x 8 voxels
    labels[8:12, 10:16, 15:18] = 11  # touches the Y border
    image = np.zeros(labels.shape, np.float32)
    image[labels == 4] = 3.0
    image[labels == 11] = 7.5
    return labels, image


def imagej_tiff(path, array, voxel_size) -> None:
    z, y, x = voxel_size
    tifffile.imwrite(path, array, imagej=True, resolution=(1 / x, 1 / y),
                     metadata={"spacing": z, "unit": "um", "axes": "ZYX"})


def test_tif_labels_and_image_with_the_files_voxel_size(tmp_path, capsys):
    labels, image = volumes()
    imagej_tiff(tmp_path / "labels.tif", labels, (2.0, 0.5, 0.25))
    tifffile.imwrite(tmp_path / "image.tif", image)
    out = tmp_path / "objects.csv"
    code = cli.main(["measure", str(tmp_path / "labels.tif"), "--image",
                     str(tmp_path / "image.tif"), "--out", str(out)])
    assert code == 0
    frame = pd.read_csv(out)
    assert list(frame["label"]) == [4, 11]
    assert list(frame["volume_voxels"]) == [128, 72]
    np.testing.assert_allclose(frame["volume_um3"], [128 * 0.25, 72 * 0.25])
    assert list(frame["mean_intensity"]) == [3.0, 7.5]
    assert list(frame["integrated_intensity"]) == [3.0 * 128, 7.5 * 72]
    assert list(frame["touches_border"]) == [False, True]
    assert list(frame["bbox_x_stop_um"]) == [12 * 0.25, 18 * 0.25]
    expected = measure_objects(labels, image, (2.0, 0.5, 0.25))
    for name in expected.names:
        np.testing.assert_allclose(frame[name].to_numpy(dtype=float), expected[name],
                                   rtol=1e-6, err_msg=name)  # TIFF stores the size as a ratio
    captured = capsys.readouterr()
    assert captured.out.strip() == f"{out}\t2 objects"
    assert "2 x 0.5 x 0.25 um" in captured.err


def test_nifti_labels_voxel_size_and_the_override(tmp_path, capsys):
    labels, _ = volumes()
    # NIfTI stores (X, Y, Z): zooms 0.3, 0.6, 1.5 -> voxel size (Z, Y, X) = (1.5, 0.6, 0.3)
    nib.save(nib.Nifti1Image(labels.T.astype(np.int16), np.diag([0.3, 0.6, 1.5, 1.0])),
             tmp_path / "labels.nii.gz")
    out = tmp_path / "objects.csv"
    assert cli.main(["measure", str(tmp_path / "labels.nii.gz"), "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    np.testing.assert_allclose(frame["volume_um3"], np.array([128, 72]) * 1.5 * 0.6 * 0.3)
    assert "mean_intensity" not in frame.columns
    assert cli.main(["measure", str(tmp_path / "labels.nii.gz"), "--out", str(out),
                     "--voxel-size", "1", "2", "3", "--overwrite"]) == 0
    np.testing.assert_allclose(pd.read_csv(out)["volume_um3"], np.array([128, 72]) * 6.0)


def test_plain_tiff_defaults_to_unit_voxels(tmp_path, capsys):
    labels, _ = volumes()
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    out = tmp_path / "objects.csv"
    assert cli.main(["measure", str(tmp_path / "labels.tif"), "--out", str(out)]) == 0
    frame = pd.read_csv(out)
    assert list(frame["volume_um3"]) == [128.0, 72.0]
    assert "1 x 1 x 1 um" in capsys.readouterr().err


def expect_error(capsys, argv, fragment) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("anystar measure: error:") and fragment in err
    assert "\n" not in err and "Traceback" not in err


def test_user_errors_exit_2_and_write_nothing(tmp_path, capsys):
    labels, image = volumes()
    good = tmp_path / "labels.tif"
    tifffile.imwrite(good, labels)
    out = str(tmp_path / "objects.csv")
    tifffile.imwrite(tmp_path / "small.tif", image[:, :, :10])
    tifffile.imwrite(tmp_path / "flat.tif", labels[0])
    tifffile.imwrite(tmp_path / "float.tif", image)
    tifffile.imwrite(tmp_path / "empty.tif", np.zeros_like(labels))
    (tmp_path / "broken.tif").write_bytes(b"not a tiff")
    expect_error(capsys, ["measure", str(good), "--image", str(tmp_path / "small.tif"),
                          "--out", out], "shape")
    expect_error(capsys, ["measure", str(tmp_path / "flat.tif"), "--out", out], "2D")
    expect_error(capsys, ["measure", str(tmp_path / "float.tif"), "--out", out], "integers")
    expect_error(capsys, ["measure", str(tmp_path / "empty.tif"), "--out", out], "no objects")
    expect_error(capsys, ["measure", str(tmp_path / "broken.tif"), "--out", out], "cannot read")
    expect_error(capsys, ["measure", str(tmp_path / "missing.tif"), "--out", out], "missing.tif")
    expect_error(capsys, ["measure", str(good), "--out", str(tmp_path / "t.tif")], ".csv")
    expect_error(capsys, ["measure", str(good), "--out", str(tmp_path / "no" / "t.csv")],
                 "does not exist")
    expect_error(capsys, ["measure", str(good), "--out", out, "--voxel-size", "1", "0", "1"],
                 "voxel size")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "broken.tif", "empty.tif", "flat.tif", "float.tif", "labels.tif", "small.tif"]


def test_an_existing_table_is_kept_without_overwrite(tmp_path, capsys):
    labels, _ = volumes()
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    out = tmp_path / "objects.csv"
    out.write_text("mine")
    expect_error(capsys, ["measure", str(tmp_path / "labels.tif"), "--out", str(out)],
                 "already exists")
    assert out.read_text() == "mine"


@pytest.mark.parametrize("argv", [["measure"], ["measure", "x.tif"]])
def test_missing_arguments_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
