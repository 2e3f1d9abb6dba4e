"""Synthetic preview widget: time from the Generate click to updated layers (64^3 AS-Mix).

Run under a display: ``xvfb-run -a python benchmarks/bench_preview.py [--clicks 10]``.
Prints one JSON object on the last line: the median over clicks with new seeds (new layers), the
same for regenerating one seed (layers updated in place), the process CPU time per click (all
threads; a guide when the machine is shared), the first click (lazy imports) and generate() alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import napari
from qtpy.QtCore import QEventLoop, QTimer
from qtpy.QtWidgets import QApplication

from napari_anystar._widgets.preview import SyntheticPreviewWidget
from napari_anystar.synth import SynthSettings, generate

GENERATOR = "as-mix"


def _click_and_wait(
    widget: SyntheticPreviewWidget, seed: int, timeout_s: float = 120.0
) -> tuple[float, float]:
    """Wall and process CPU seconds from the Generate click to the layers updated and drawn."""
    loop = QEventLoop()
    done: list[float] = []

    def _on_generated(_layers: list) -> None:
        done.append(time.perf_counter())
        loop.quit()

    widget.generated.connect(_on_generated)
    timer = QTimer()
    timer.setSingleShot(True)
    timer.timeout.connect(loop.quit)
    timer.start(int(timeout_s * 1000))
    widget._seed.setValue(seed)
    start, start_cpu = time.perf_counter(), time.process_time()
    widget._generate_btn.click()
    if not done:
        loop.exec_()
    QApplication.processEvents()  # let the canvas draw the new layers
    elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    timer.stop()
    widget.generated.disconnect(_on_generated)
    if not done:
        raise RuntimeError(f"no layers after {timeout_s} s (seed {seed})")
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=10)
    args = parser.parse_args()

    viewer = napari.Viewer(show=True)
    widget = SyntheticPreviewWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Synthetic preview")
    widget._generator.setCurrentIndex(widget._generator.findData(GENERATOR))
    widget._size.setValue(64)

    load_before = os.getloadavg()[0]
    first, _ = _click_and_wait(widget, 1000)  # warm-up: first-use costs (imports, caches)
    clicks, clicks_cpu = zip(
        *(_click_and_wait(widget, 1001 + i) for i in range(args.clicks)), strict=True
    )  # a new seed: new layers
    in_place = [_click_and_wait(widget, 1000)[0] for _ in range(args.clicks)]  # same layers

    settings = SynthSettings(size=64)
    generate_only = []
    for i in range(args.clicks):
        start = time.perf_counter()
        generate(GENERATOR, 1001 + i, settings)
        generate_only.append(time.perf_counter() - start)
    viewer.close()

    print(json.dumps({
        "benchmark": "preview_click_to_layers",
        "generator": GENERATOR,
        "size": 64,
        "clicks": args.clicks,
        "click_to_layers_median_s": round(statistics.median(clicks), 4),
        "click_to_layers_min_s": round(min(clicks), 4),
        "click_to_layers_max_s": round(max(clicks), 4),
        "click_cpu_median_s": round(statistics.median(clicks_cpu), 4),
        "first_click_s": round(first, 4),
        "in_place_click_to_layers_median_s": round(statistics.median(in_place), 4),
        "generate_only_median_s": round(statistics.median(generate_only), 4),
        "target_median_s": 1.0,
        "loadavg_1min_before": round(load_before, 2),
        "cpu_count": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
