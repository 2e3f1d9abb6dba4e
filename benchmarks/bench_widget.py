"""The Segment widget as a user meets it: first Run, Suggest, and every slider position.

Runs in a real napari viewer (use ``xvfb-run -a`` without a display) with the default model
on a 128^3 AS-Mix volume, raw voxels (manual scale 1, 1, 1):

* ``first_run_s``: Run pressed -> labels shown, with the model already loaded in the
  background (the widget preloads the selected model when it opens);
* ``prob_update_median_s`` / ``nms_update_median_s``: a slider set to a new value -> the labels
  layer holds the labels of exactly those thresholds (end to end: debounce, solve, layer
  update), over a sweep of the probability slider at the model's NMS threshold and of the NMS
  slider at probability 0.2 and at the model's probability (0.1-0.6);
* ``update_max_s``: the slowest of all those updates; ``updates_s`` each of them;
* ``suggest_s``: Suggest pressed -> scale set; ``suggest_rerun_s`` until the labels at that
  scale are shown (Suggest re-solves them).

The sweep starts right after the first Run, while the background warm-up may still run, as a
user dragging the slider at once would. Usage: ``xvfb-run -a python benchmarks/bench_widget.py``.
Prints one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

TIMEOUT_S = 600.0


def _wait(condition, timeout_s: float = TIMEOUT_S) -> float:
    """Process Qt events until ``condition()``; seconds waited."""
    from qtpy.QtWidgets import QApplication

    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout_s:
            raise TimeoutError("the widget did not answer in time")
        QApplication.processEvents()
        time.sleep(0.001)
    return time.perf_counter() - start


def _update_time(widget, slider, value: float) -> float | None:
    """Seconds from setting ``slider`` to labels of exactly the sliders' thresholds (None: the
    slider is at that value already)."""
    if round(slider.value(), 2) == round(value, 2):
        return None
    shown: list = []
    slot = shown.append
    widget.labels_updated.connect(slot)
    start = time.perf_counter()
    slider.setValue(value)
    wanted = widget.thresholds()
    _wait(lambda: any((layer.metadata.get("prob_thresh"), layer.metadata.get("nms_thresh"))
                      == wanted for layer in shown))
    elapsed = time.perf_counter() - start
    widget.labels_updated.disconnect(slot)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model name or folder (default: the default)")
    ap.add_argument("--size", type=int, default=128, help="volume edge length (default 128)")
    ap.add_argument("--step", type=float, default=0.05, help="slider sweep step (default 0.05)")
    args = ap.parse_args(argv)

    import napari
    import numpy as np

    from napari_anystar._widgets.segment import SegmentWidget
    from napari_anystar.model import registry
    from napari_anystar.synth import SynthSettings, generate

    image = generate("as-mix", 0, SynthSettings(size=args.size, grid_size=args.size)).image
    viewer = napari.Viewer(show=False)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    if args.model:
        entry = registry.resolve_model(args.model)
        widget.model_chooser.combo.setCurrentIndex(
            next(i for i in range(widget.model_chooser.combo.count())
                 if getattr(widget.model_chooser.combo.itemData(i), "name", None) == entry.name))
    entry = widget.selected_model()
    _wait(lambda: widget.status_label.text() == f"Model '{entry.name}' ready.")
    viewer.add_image(image, name="volume")
    widget.set_scale_mode("manual")
    widget.set_scale((1.0, 1.0, 1.0))
    prob0, nms0 = widget.thresholds()

    finished: list = []
    widget.run_finished.connect(finished.append)
    widget.run()
    first_run_s = _wait(lambda: bool(finished))
    n_objects = int(np.max(finished[-1].data))

    grid = np.round(np.arange(0.1, 0.6 + 1e-9, args.step), 2)
    probs = np.round(np.arange(0.1, 0.95 + 1e-9, args.step), 2)
    prob_times, nms_times = [], []
    widget.nms_slider.setValue(nms0)
    for p in probs:
        prob_times.append(_update_time(widget, widget.prob_slider, float(p)))
    for p in (0.2, prob0):
        _update_time(widget, widget.prob_slider, float(p))
        for n in grid:
            nms_times.append(_update_time(widget, widget.nms_slider, float(n)))

    suggested: list = []
    widget.scale_suggested.connect(suggested.append)
    finished.clear()
    start = time.perf_counter()
    widget.suggest_scale()
    suggest_s = _wait(lambda: bool(suggested))
    _wait(lambda: bool(finished))
    suggest_rerun_s = time.perf_counter() - start
    viewer.close()
    prob_times = [t for t in prob_times if t is not None]
    nms_times = [t for t in nms_times if t is not None]
    every = prob_times + nms_times
    print(json.dumps({
        "model": entry.name, "shape": list(image.shape), "n_objects": n_objects,
        "threads": os.cpu_count(),
        "first_run_s": round(first_run_s, 3),
        "prob_update_median_s": round(statistics.median(prob_times), 3),
        "nms_update_median_s": round(statistics.median(nms_times), 3),
        "update_max_s": round(max(every), 3),
        "updates_s": {"prob": [round(t, 3) for t in prob_times],
                      "nms": [round(t, 3) for t in nms_times]},
        "suggest_s": round(suggest_s, 3), "suggest_rerun_s": round(suggest_rerun_s, 3),
        "suggested_scale": list(suggested[0].scale),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
