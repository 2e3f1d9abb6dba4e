"""Per-object measurements, the object filter and the CSV table, on volumes of known objects."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from napari_anystar.analysis import measure as measure_module
from napari_anystar.analysis.measure import measure_objects, write_csv
from napari_anystar.analysis.object_filter import filter_labels, keep_mask

SHAPE = (24, 40, 44)
SPHERE_CENTRE, SPHERE_RADIUS = (12, 20, 30), 6


def known_volume() -> tuple[np.ndarray, np.ndarray, dict]:
    """A box (id 3), a sphere (id 7) and a corner cube (id 9) with known brightness."""
    labels = np.zeros(SHAPE, dtype=np.uint16)
    labels[2:12, 5:9, 10:12] = 3  # 10 x 4 x 2 voxels
    z, y, x = np.indices(SHAPE)
    cz, cy, cx = SPHERE_CENTRE
    sphere = (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= SPHERE_RADIUS**2
    labels[sphere] = 7
    labels[0:3, 37:40, 41:44] = 9  # touches three faces
    image = np.full(SHAPE, 1000.0, dtype=np.float32)  # background must not count
    image[labels == 3] = 2.0
    image[sphere] = 5.0
    image[cz, cy, cx] = 50.0  # one bright voxel in the sphere
    image[labels == 9] = 1.0
    return labels, image, {"sphere_voxels": int(sphere.sum())}


def row(table, label: int) -> dict:
    index = int(np.flatnonzero(table.ids == label)[0])
    return {name: table[name][index] for name in table.names}


def test_box_sphere_and_corner_have_exact_measures():
    labels, image, facts = known_volume()
    table = measure_objects(labels, image, voxel_size=(2.0, 0.5, 1.0))
    assert list(table.ids) == [3, 7, 9]
    box = row(table, 3)
    assert box["volume_voxels"] == 80 and box["volume_um3"] == 80 * 2.0 * 0.5
    assert (box["centroid_z"], box["centroid_y"], box["centroid_x"]) == (6.5, 6.5, 10.5)
    assert (box["centroid_z_um"], box["centroid_y_um"], box["centroid_x_um"]) == (13, 3.25, 10.5)
    assert [box[f"bbox_{a}_start"] for a in "zyx"] == [2, 5, 10]
    assert [box[f"bbox_{a}_stop"] for a in "zyx"] == [12, 9, 12]
    assert [box[f"bbox_{a}_start_um"] for a in "zyx"] == [4.0, 2.5, 10.0]
    assert [box[f"bbox_{a}_stop_um"] for a in "zyx"] == [24.0, 4.5, 12.0]
    assert box["elongation"] == pytest.approx(10.0, rel=1e-12)  # sides 20, 2, 2 um
    assert box["equivalent_diameter_um"] == pytest.approx(math.cbrt(6 * 80.0 / math.pi))
    assert not box["touches_border"]
    assert (box["mean_intensity"], box["max_intensity"], box["integrated_intensity"]) == (
        2.0, 2.0, 160.0)

    sphere = row(table, 7)
    n = facts["sphere_voxels"]
    assert sphere["volume_voxels"] == n
    assert (sphere["centroid_z"], sphere["centroid_y"], sphere["centroid_x"]) == SPHERE_CENTRE
    starts = [sphere[f"bbox_{a}_start"] for a in "zyx"]
    stops = [sphere[f"bbox_{a}_stop"] for a in "zyx"]
    assert starts == [c - SPHERE_RADIUS for c in SPHERE_CENTRE]
    assert stops == [c + SPHERE_RADIUS + 1 for c in SPHERE_CENTRE]
    assert sphere["max_intensity"] == 50.0
    assert sphere["integrated_intensity"] == 5.0 * (n - 1) + 50.0
    assert sphere["mean_intensity"] == pytest.approx((5.0 * (n - 1) + 50.0) / n)

    corner = row(table, 9)
    assert corner["touches_border"] and corner["volume_voxels"] == 27
    assert corner["max_intensity"] == 1.0


def test_elongation_is_one_for_a_sphere_and_the_axis_ratio_for_boxes():
    labels, _, _ = known_volume()
    sphere = row(measure_objects(labels), 7)
    assert sphere["elongation"] == pytest.approx(1.0, abs=1e-12)
    # the same voxels with voxel size (2, 1, 1): a spheroid twice as long in Z
    assert row(measure_objects(labels, voxel_size=(2, 1, 1)), 7)["elongation"] == pytest.approx(2)
    box = np.zeros((8, 8, 8), np.int32)
    box[1:7, 2:5, 3:5] = 1  # 6 x 3 x 2 voxels
    assert measure_objects(box)["elongation"][0] == pytest.approx(3.0, rel=1e-12)
    dot = np.zeros((5, 5, 5), np.int32)
    dot[2, 2, 2] = 4  # one voxel: the ratio of the voxel's own sides
    assert measure_objects(dot)["elongation"][0] == pytest.approx(1.0)
    assert measure_objects(dot, voxel_size=(3, 1, 1))["elongation"][0] == pytest.approx(3.0)


def test_matches_skimage_regionprops_on_random_objects():
    from skimage.measure import label as connected
    from skimage.measure import regionprops

    rng = np.random.default_rng(3)
    labels = connected(rng.random((20, 24, 28)) > 0.7).astype(np.int32)
    image = rng.normal(10, 3, labels.shape)
    table = measure_objects(labels, image)
    props = regionprops(labels, intensity_image=image)
    assert list(table.ids) == [p.label for p in props]
    np.testing.assert_array_equal(table["volume_voxels"], [p.area for p in props])
    np.testing.assert_allclose(
        np.stack([table[f"centroid_{a}"] for a in "zyx"], 1), [p.centroid for p in props])
    bbox = np.stack([table[f"bbox_{a}_{e}"] for e in ("start", "stop") for a in "zyx"], 1)
    np.testing.assert_array_equal(bbox, [p.bbox for p in props])
    np.testing.assert_allclose(table["mean_intensity"], [p.intensity_mean for p in props])
    np.testing.assert_array_equal(table["max_intensity"], [p.intensity_max for p in props])


def test_slabs_sparse_ids_and_dtypes_give_the_same_table(monkeypatch):
    labels, image, _ = known_volume()
    reference = measure_objects(labels, image, (2, 1, 1))
    monkeypatch.setattr(measure_module, "SLAB_VOXELS", 3 * SHAPE[1] * SHAPE[2])  # 3 planes
    for variant, ids in ((labels, [3, 7, 9]), (labels.astype(np.int64) * 10**12, None),
                         (labels.astype(np.uint64), None), (labels.astype(np.int8), None)):
        table = measure_objects(variant, image, (2, 1, 1))
        expected = reference.ids * (10**12 if variant.dtype == np.int64 else 1)
        assert list(table.ids) == list(expected) and (ids is None or list(table.ids) == ids)
        for name in reference.names:
            if name != "label":
                np.testing.assert_array_equal(table[name], reference[name], err_msg=name)


def test_bool_labels_are_one_object_and_empty_labels_an_empty_table():
    mask = np.zeros((6, 6, 6), bool)
    mask[1:3, 1:3, 1:3] = True
    table = measure_objects(mask)
    assert list(table.ids) == [1] and table["volume_voxels"][0] == 8
    empty = measure_objects(np.zeros((4, 5, 6), np.uint32), np.ones((4, 5, 6)))
    assert len(empty) == 0 and "mean_intensity" in empty.names
    assert all(len(empty[name]) == 0 for name in empty.names)


def test_probability_column_by_label_id():
    labels, _, _ = known_volume()
    probability = np.full(8, np.nan)
    probability[3], probability[7] = 0.25, 0.875  # id 9 is past the end
    table = measure_objects(labels, probability=probability)
    np.testing.assert_array_equal(table["probability"], [0.25, 0.875, np.nan])
    assert "probability" not in measure_objects(labels).names
    assert "mean_intensity" not in measure_objects(labels).names


@pytest.mark.parametrize(
    ("labels", "image", "voxel_size", "message"),
    [
        (np.zeros((4, 4), np.int32), None, (1, 1, 1), "2D"),
        (np.zeros((2, 4, 4, 4), np.int32), None, (1, 1, 1), "4D"),
        (np.zeros((4, 4, 4), np.float32), None, (1, 1, 1), "integers"),
        (np.zeros((4, 4, 4), np.int32), np.zeros((4, 4, 5)), (1, 1, 1), "shape"),
        (np.full((4, 4, 4), -1, np.int32), None, (1, 1, 1), "negative"),
        (np.zeros((4, 4, 4), np.int32), None, (1, 0, 1), "voxel size"),
        (np.zeros((4, 4, 4), np.int32), None, (1, 1), "voxel size"),
    ],
)
def test_bad_input_is_a_one_line_value_error(labels, image, voxel_size, message):
    with pytest.raises(ValueError, match=message) as info:
        measure_objects(labels, image, voxel_size)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------- filter
def test_keep_mask_keeps_exactly_the_objects_in_range():
    labels = np.zeros((10, 10, 80), np.int32)
    for k in range(1, 9):  # object k: k voxels in X; object 8 ends at the border
        start = 80 - k if k == 8 else 10 * k - 9
        labels[5, 5, start: start + k] = k
    probability = np.array([np.nan, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    probability[5] = np.nan
    table = measure_objects(labels, voxel_size=(1, 1, 0.5), probability=probability)
    volume = table["volume_um3"]  # k * 0.5
    assert list(table.ids[keep_mask(table)]) == list(range(1, 9))
    assert list(table.ids[keep_mask(table, {"volume_um3": (1.0, 2.5)})]) == [2, 3, 4, 5]
    assert list(table.ids[keep_mask(table, {"volume_um3": (None, 1.0)})]) == [1, 2]
    assert list(table.ids[keep_mask(table, {"volume_um3": (3.5, None)})]) == [7, 8]
    both = keep_mask(table, {"volume_um3": (1.0, None), "probability": (0.3, 0.7)})
    assert list(table.ids[both]) == [3, 4, 6, 7]  # 5 has no probability
    assert list(table.ids[keep_mask(table, {"volume_um3": (None, None)}, True)]) == list(
        range(1, 8))
    assert volume[keep_mask(table, {"volume_um3": (9.0, None)})].size == 0
    with pytest.raises(ValueError, match="mean_intensity"):
        keep_mask(table, {"mean_intensity": (0, 1)})


@pytest.mark.parametrize("scale", [1, 10**12])
def test_filter_labels_zeroes_the_others_and_leaves_the_input(scale):
    labels, _, _ = known_volume()
    labels = labels.astype(np.int64) * scale
    before = labels.copy()
    kept = filter_labels(labels, np.array([3, 9]) * scale)
    assert kept.dtype == labels.dtype and kept.shape == labels.shape
    np.testing.assert_array_equal(kept, np.where(np.isin(labels, [3 * scale, 9 * scale]),
                                                 labels, 0))
    np.testing.assert_array_equal(labels, before)
    assert not filter_labels(labels, []).any()


# ---------------------------------------------------------------------------------- CSV
def test_csv_round_trips_through_pandas(tmp_path):
    labels, image, _ = known_volume()
    probability = np.array([np.nan, 0, 0, 1 / 3, 0, 0, 0, 0.1])
    table = measure_objects(labels, image, (2.0, 0.3, 0.7), probability)
    path = tmp_path / "objects.csv"
    write_csv(table, path)
    frame = pd.read_csv(path)
    assert tuple(frame.columns) == table.names
    assert len(frame) == len(table)
    for name in table.names:
        np.testing.assert_array_equal(frame[name].to_numpy(), table[name], err_msg=name)
    assert frame["touches_border"].dtype == bool
    assert frame["label"].dtype.kind == "i" and frame["volume_voxels"].dtype.kind == "i"
    assert np.isnan(frame["probability"].iloc[2])
    assert [p.name for p in tmp_path.iterdir()] == ["objects.csv"]  # no temporary left


def test_csv_never_replaces_a_file_unless_asked(tmp_path):
    labels, _, _ = known_volume()
    table = measure_objects(labels)
    path = tmp_path / "objects.csv"
    path.write_text("keep me")
    with pytest.raises(FileExistsError):
        write_csv(table, path)
    assert path.read_text() == "keep me"
    write_csv(table.take(np.array([2, 0])), path, overwrite=True)
    assert list(pd.read_csv(path)["label"]) == [9, 3]
    with pytest.raises(FileNotFoundError):
        write_csv(table, tmp_path / "missing" / "objects.csv")
