"""Objects table: measuring 1,000 objects and one live filter change in the Objects widget.

Run under a display: ``xvfb-run -a python benchmarks/bench_objects.py [--changes 20]``.
The volume is synthetic: 1,000 ellipsoids (radii 2-7 voxels) on a 10 x 10 x 10 grid of
16^3 cells, 160 x 160 x 160 voxels, each with its own brightness plus noise.
Prints one JSON object on the last line: ``measure_objects`` alone (labels only, and with an
image and probabilities), the core filter (``keep_mask``), and a volume-filter change in the
widget end to end (slider value -> mask, table rows, colormap swap and napari's layer refresh;
then also the canvas redraw), in 2D and 3D display, median over changes after the first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import napari
import numpy as np
from qtpy.QtCore import QEventLoop, QTimer
from qtpy.QtWidgets import QApplication

from napari_anystar._widgets._segment_output import OBJECT_PROBABILITY
from napari_anystar._widgets.objects import ObjectsWidget
from napari_anystar.analysis.measure import measure_objects
from napari_anystar.analysis.object_filter import keep_mask

CELL, GRID = 16, 10  # 10^3 cells of 16^3 voxels: 1,000 objects


def synthetic_objects(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(labels int32, image float32, probability per id) with GRID**3 ellipsoids."""
    rng = np.random.default_rng(seed)
    shape = (CELL * GRID,) * 3
    labels = np.zeros(shape, dtype=np.int32)
    image = rng.normal(100.0, 5.0, shape).astype(np.float32)
    z, y, x = np.indices((CELL,) * 3) - (CELL - 1) / 2
    label = 0
    for corner in np.ndindex(GRID, GRID, GRID):
        label += 1
        radii = rng.uniform(2.0, 7.0, 3)
        inside = (z / radii[0]) ** 2 + (y / radii[1]) ** 2 + (x / radii[2]) ** 2 <= 1.0
        cell = tuple(slice(c * CELL, (c + 1) * CELL) for c in corner)
        labels[cell][inside] = label
        image[cell][inside] += rng.uniform(50.0, 500.0)
    probability = np.concatenate([[np.nan], rng.uniform(0.3, 1.0, label)])
    return labels, image, probability


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _wait_measured(widget: ObjectsWidget, timeout_s: float = 120.0) -> None:
    loop = QEventLoop()
    widget.measured.connect(loop.quit)
    QTimer.singleShot(int(timeout_s * 1000), loop.quit)
    widget.measure()
    loop.exec_()
    widget.measured.disconnect(loop.quit)


def _filter_changes(widget: ObjectsWidget, changes: int) -> dict[str, float]:
    """Move the volume filter's low handle; time each change without and with a redraw."""
    slider = widget.filters["volume_um3"]
    low, high = slider.minimum(), slider.maximum()
    steps = np.linspace(low, low + 0.6 * (high - low), changes + 1)[1:]
    sync, drawn = [], []
    for value in steps:
        start = time.perf_counter()
        slider.setValue((float(value), high))  # valueChanged -> the whole update, synchronously
        sync.append(time.perf_counter() - start)
        QApplication.processEvents()  # the canvas redraws with the new colormap
        drawn.append(time.perf_counter() - start)
    widget.reset_filters()
    QApplication.processEvents()
    return {"first_s": round(sync[0], 4), "median_s": round(statistics.median(sync[1:]), 4),
            "max_s": round(max(sync[1:]), 4),
            "with_draw_median_s": round(statistics.median(drawn[1:]), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    labels, image, probability = synthetic_objects()
    voxel_size = (2.0, 0.5, 0.5)
    load_before = os.getloadavg()[0]
    measure_labels = _median_time(lambda: measure_objects(labels, voxel_size=voxel_size),
                                  args.repeats)
    measure_all = _median_time(
        lambda: measure_objects(labels, image, voxel_size, probability), args.repeats)
    table = measure_objects(labels, image, voxel_size, probability)
    volume = table["volume_um3"]
    ranges = {"volume_um3": (float(np.median(volume)), None), "probability": (0.5, None)}
    core_filter = _median_time(lambda: keep_mask(table, ranges, True), 100)

    viewer = napari.Viewer(show=True)
    viewer.add_image(image, name="image", scale=voxel_size)
    viewer.add_labels(labels, name="labels", scale=voxel_size,
                      metadata={OBJECT_PROBABILITY: probability})
    widget = ObjectsWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Objects")
    widget.set_image_layer(viewer.layers["image"])
    _wait_measured(widget)
    QApplication.processEvents()
    if widget.model.rowCount() != len(table):
        raise RuntimeError(f"the widget shows {widget.model.rowCount()} rows, not {len(table)}")
    in_2d = _filter_changes(widget, args.changes)
    viewer.dims.ndisplay = 3
    QApplication.processEvents()
    in_3d = _filter_changes(widget, args.changes)
    viewer.close()

    print(json.dumps({
        "benchmark": "objects_measure_and_filter",
        "objects": len(table),
        "shape": list(labels.shape),
        "voxels": int(labels.size),
        "measure_labels_only_s": round(measure_labels, 4),
        "measure_with_image_and_probability_s": round(measure_all, 4),
        "core_filter_keep_mask_s": round(core_filter, 6),
        "widget_filter_change_2d": in_2d,
        "widget_filter_change_3d": in_3d,
        "target_per_change_s": 0.2,
        "loadavg_1min_before": round(load_before, 2),
        "cpu_count": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
