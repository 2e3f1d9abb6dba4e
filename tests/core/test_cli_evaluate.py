"""``anystar evaluate``: files and folders, pairing, table and JSON output, every user error."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import tifffile
from stardist.matching import matching, matching_dataset

from napari_anystar import cli
from napari_anystar.analysis import IOU_THRESHOLDS

SHAPE = (16, 24, 40)


def cubes(corners, size=8, shift=0):
    labels = np.zeros(SHAPE, np.uint16)
    for k, (z, y, x) in enumerate(corners, start=1):
        labels[z:z + size, y:y + size, x + shift:x + shift + size] = k
    return labels


@pytest.fixture
def volumes():
    """Two pairs: 'a' (3 true, one prediction shifted to IoU 0.6, one missed, one spurious)
    and 'b' (2 true, both found exactly)."""
    truth_a = cubes([(1, 1, 1), (1, 1, 20), (6, 14, 10)])
    pred_a = cubes([(1, 1, 1), (1, 1, 20)])
    pred_a[1:9, 1:9, 20:28] = 0
    pred_a[1:9, 1:9, 22:30] = 2  # IoU 6/10
    pred_a[6:14, 14:22, 30:38] = 9  # where there is no object
    truth_b = cubes([(2, 2, 2), (6, 12, 24)])
    return {"a": (truth_a, pred_a), "b": (truth_b, truth_b.copy())}


def write(folder, name, labels):
    folder.mkdir(exist_ok=True)
    path = folder / name
    tifffile.imwrite(path, labels)
    return path


def run_cli(capsys, *argv):
    code = cli.main(["evaluate", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def test_folders_json_equals_stardist_per_volume_and_pooled(volumes, tmp_path, capsys):
    for name, (truth, pred) in volumes.items():
        write(tmp_path / "gt", f"{name}.tif", truth)
        write(tmp_path / "pred", f"{name}_labels.tif", pred)
    code, out, err = run_cli(capsys, tmp_path / "pred", "--truth", tmp_path / "gt", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [v["prediction"] for v in result["volumes"]] == [
        str(tmp_path / "pred" / f"{n}_labels.tif") for n in "ab"]
    assert [v["truth"] for v in result["volumes"]] == [str(tmp_path / "gt" / f"{n}.tif")
                                                       for n in "ab"]
    for volume, (truth, pred) in zip(result["volumes"], volumes.values(), strict=True):
        reference = matching(truth, pred, thresh=list(IOU_THRESHOLDS))
        for metric in ("accuracy", "precision", "recall", "f1"):
            assert volume[metric] == pytest.approx([getattr(s, metric) for s in reference],
                                                   abs=1e-4)
    a = result["volumes"][0]
    assert a["accuracy"][4] == pytest.approx(2 / 4, abs=1e-4)  # TP 2 (exact, IoU 0.6), FP 1, FN 1
    assert a["accuracy"][6] == pytest.approx(1 / 5, abs=1e-4)  # at 0.7 the shifted one fails
    pooled = matching_dataset([t for t, _ in volumes.values()], [p for _, p in volumes.values()],
                              thresh=IOU_THRESHOLDS, by_image=False, show_progress=False)
    assert result["pooled"]["accuracy"] == pytest.approx([s.accuracy for s in pooled], abs=1e-4)
    assert result["pooled"]["accuracy"][4] == pytest.approx(4 / 6, abs=1e-4)
    assert (result["pooled"]["n_true"], result["pooled"]["n_pred"]) == (5, 5)
    assert result["region"] == "whole"


def test_table_lists_each_pair_and_a_pooled_line(volumes, tmp_path, capsys):
    paths = {}
    for name, (truth, pred) in volumes.items():
        paths[name] = (write(tmp_path, f"{name}_gt.tif", truth),
                       write(tmp_path, f"{name}_pred.tif", pred))
    code, out, err = run_cli(capsys, paths["a"][1], paths["b"][1], "--truth", paths["a"][0],
                             paths["b"][0])
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].split() == ["prediction", "truth", "n_true", "n_pred", "acc@0.5",
                                "prec@0.5", "rec@0.5", "f1@0.5", "mean_acc"]
    row_a = lines[1].split()
    assert row_a[:4] == [str(paths["a"][1]), str(paths["a"][0]), "3", "3"]
    assert [float(v) for v in row_a[4:8]] == pytest.approx([0.5, 2 / 3, 2 / 3, 2 / 3], abs=1e-3)
    assert lines[2].split()[4:8] == ["1.000"] * 4
    pooled = lines[3].split()
    assert pooled[0] == "pooled" and pooled[1:3] == ["5", "5"]
    assert float(pooled[3]) == pytest.approx(4 / 6, abs=1e-3)


def test_annotated_region_ignores_predictions_outside(volumes, tmp_path, capsys):
    truth, pred = volumes["b"]
    pred = pred.copy()
    pred[10:16, 0:6, 34:40] = 5  # outside the truth's bounding box (x <= 31)
    gt, pr = write(tmp_path, "gt.tif", truth), write(tmp_path, "pr.tif", pred)
    _, whole, _ = run_cli(capsys, pr, "--truth", gt, "--json")
    code, out, err = run_cli(capsys, pr, "--truth", gt, "--json", "--region", "annotated")
    assert code == 0, err
    assert json.loads(whole)["pooled"]["accuracy"][0] == pytest.approx(2 / 3, abs=1e-4)
    result = json.loads(out)
    assert result["pooled"]["accuracy"] == [1.0] * 9
    assert result["volumes"][0]["ignored_pred"] == 1 and result["region"] == "annotated"


def test_nifti_and_tiff_pairs_mix(volumes, tmp_path, capsys):
    truth, pred = volumes["a"]
    nib.save(nib.Nifti1Image(truth.T.astype(np.int16), np.eye(4)), tmp_path / "gt.nii.gz")
    pr = write(tmp_path, "pred.tif", pred)
    code, out, err = run_cli(capsys, pr, "--truth", tmp_path / "gt.nii.gz", "--json")
    assert code == 0, err
    assert json.loads(out)["pooled"]["accuracy"][4] == pytest.approx(0.5)


@pytest.mark.parametrize("case, message", [
    ("count", "2 prediction volume(s) but 1 ground-truth volume(s)"),
    ("shape", "has shape (16, 24, 39) but"),
    ("missing", "does not exist"),
    ("suffix", "unsupported file type"),
    ("empty_folder", "holds no .tif"),
    ("float", "values must be whole numbers"),
    ("no_truth", "no labelled objects"),
    ("annotated_empty", "no annotated region"),
])
def test_user_errors_are_one_line(volumes, tmp_path, capsys, case, message):
    truth, pred = volumes["a"]
    gt, pr = write(tmp_path, "gt.tif", truth), write(tmp_path, "pr.tif", pred)
    extra = []
    if case == "count":
        preds = [pr, pr]
    elif case == "shape":
        preds = [write(tmp_path, "small.tif", pred[..., :-1])]
    elif case == "missing":
        preds = [tmp_path / "nope.tif"]
    elif case == "suffix":
        (tmp_path / "p.png").write_bytes(b"x")
        preds = [tmp_path / "p.png"]
    elif case == "empty_folder":
        (tmp_path / "empty").mkdir()
        preds = [tmp_path / "empty"]
    elif case == "float":
        preds = [write(tmp_path, "f.tif", pred.astype(np.float32) + 0.5)]
    else:
        gt = write(tmp_path, "zero.tif", np.zeros_like(truth))
        preds = [pr]
        extra = ["--region", "annotated"] if case == "annotated_empty" else []
    code, out, err = run_cli(capsys, *preds, "--truth", gt, *extra)
    assert code == 2 and out == ""
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    if case in ("shape", "annotated_empty"):
        assert "vs" in err  # names the pair
