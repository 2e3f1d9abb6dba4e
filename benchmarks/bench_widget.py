"""The Segment widget as a user meets it: first Run, Suggest, and every slider position.

Runs in a real napari viewer (use ``xvfb-run -a`` without a display) with the default model
on a 128^3 AS-Mix volume, raw voxels (manual scale 1, 1, 1):

* ``first_run_s``: Run pressed -> labels shown (StarDist's: with outline refinement on, a
  Run shows them first), with the model already loaded in the background (the widget preloads
  the selected model when it opens); ``first_refined_s`` until their refined outlines are
  shown (equal to ``first_run_s`` with ``--no-refine``);
* ``prob_update_median_s`` / ``nms_update_median_s``: a slider set to a new value -> the labels
  layer holds the labels of exactly those thresholds (end to end: debounce, solve, layer
  update), over a sweep of the probability slider at the model's NMS threshold and of the NMS
  slider at probability 0.2 and at the model's probability (0.1-0.6);
* ``update_max_s``: the slowest of all those updates; ``updates_s`` each of them; a position
  that does not answer within ``--position-timeout`` counts as that many seconds and in
  ``timeouts``;
* with outline refinement on (the widget's default; ``--no-refine`` turns it off) the labels
  above are StarDist's, shown at once; ``refined_update_median_s`` / ``refined_update_max_s``
  run until the refined outlines are shown and the widget is no longer busy;
* ``suggest_s``: Suggest pressed -> scale set; ``suggest_rerun_s`` until the labels at that
  scale are shown (Suggest re-solves them);
* ``auto_run_s``: a Run in the widget's default scale mode (*auto*: the scale estimate, then
  the network at that scale) at the model's thresholds on the volume with doubled
  intensities (the same network input, no cached network output) -> labels shown;
  ``auto_refined_s`` until their refined outlines are shown.

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
#: default wait for one slider position (s)
POSITION_TIMEOUT_S = 120.0


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


def _update_time(widget, slider, value: float, timeout_s: float) -> tuple[float, float] | None:
    """Seconds from setting ``slider`` to labels of exactly the sliders' thresholds, and to
    the widget no longer busy (refined outlines shown); ``timeout_s`` for a position that
    does not answer in time. None: the slider is at that value already."""
    if round(slider.value(), 2) == round(value, 2):
        return None
    shown: list = []
    slot = shown.append
    widget.labels_updated.connect(slot)
    start = time.perf_counter()
    slider.setValue(value)
    wanted = widget.thresholds()
    try:
        _wait(lambda: any((layer.metadata.get("prob_thresh"), layer.metadata.get("nms_thresh"))
                          == wanted for layer in shown), timeout_s)
        first = time.perf_counter() - start
        _wait(lambda: not widget.labels_pending() and widget.progress_bar.maximum() == 1,
              max(timeout_s - first, 0.0))
        final = time.perf_counter() - start
    except TimeoutError:
        first = final = timeout_s
        _wait(lambda: not widget.labels_pending())  # let it finish before the next position
    widget.labels_updated.disconnect(slot)
    return first, final


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="model name or folder (default: the default)")
    ap.add_argument("--size", type=int, default=128, help="volume edge length (default 128)")
    ap.add_argument("--step", type=float, default=0.05, help="slider sweep step (default 0.05)")
    ap.add_argument("--position-timeout", type=float, default=POSITION_TIMEOUT_S,
                    help=f"seconds to wait at one slider position "
                         f"(default {POSITION_TIMEOUT_S:g})")
    ap.add_argument("--refine", action=argparse.BooleanOptionalAction, default=None,
                    help="refine outlines (default: as the widget opens)")
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
    if args.refine is not None:
        widget.refine_check.setChecked(args.refine)
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
    first_refined_s = first_run_s + _wait(
        lambda: not widget.labels_pending() and widget.progress_bar.maximum() == 1)

    grid = np.round(np.arange(0.1, 0.6 + 1e-9, args.step), 2)
    probs = np.round(np.arange(0.1, 0.95 + 1e-9, args.step), 2)
    prob_times, nms_times = [], []
    wait = args.position_timeout
    widget.nms_slider.setValue(nms0)
    for p in probs:
        prob_times.append(_update_time(widget, widget.prob_slider, float(p), wait))
    for p in (0.2, prob0):
        _update_time(widget, widget.prob_slider, float(p), wait)
        for n in grid:
            nms_times.append(_update_time(widget, widget.nms_slider, float(n), wait))

    suggested: list = []
    widget.scale_suggested.connect(suggested.append)
    finished.clear()
    start = time.perf_counter()
    widget.suggest_scale()
    suggest_s = _wait(lambda: bool(suggested))
    _wait(lambda: bool(finished))
    suggest_rerun_s = time.perf_counter() - start
    # the default scale mode and thresholds on another volume (no cached network output)
    for slider, value in ((widget.prob_slider, prob0), (widget.nms_slider, nms0)):
        _update_time(widget, slider, value, TIMEOUT_S)
    # twice the intensities: exactly the same network input after normalisation, not cached
    viewer.add_image(image * np.float32(2), name="volume 2")
    widget.image_combo.setCurrentIndex(widget.image_combo.findData("volume 2"))
    widget.set_scale_mode("auto")
    finished.clear()
    start = time.perf_counter()
    widget.run()
    auto_run_s = _wait(lambda: bool(finished))
    auto_refined_s = auto_run_s + _wait(
        lambda: not widget.labels_pending() and widget.progress_bar.maximum() == 1)
    refine = widget.refine_check.isChecked()
    viewer.close()
    prob_both = [t for t in prob_times if t is not None]
    nms_both = [t for t in nms_times if t is not None]
    prob_times, nms_times = [t[0] for t in prob_both], [t[0] for t in nms_both]
    every = prob_times + nms_times
    refined = [t[1] for t in prob_both + nms_both]
    print(json.dumps({
        "model": entry.name, "shape": list(image.shape), "n_objects": n_objects,
        "threads": os.cpu_count(),
        "first_run_s": round(first_run_s, 3), "first_refined_s": round(first_refined_s, 3),
        "prob_update_median_s": round(statistics.median(prob_times), 3),
        "nms_update_median_s": round(statistics.median(nms_times), 3),
        "update_max_s": round(max(every), 3),
        "timeouts": sum(t >= wait for t in every),
        "refine": refine,
        "refined_update_median_s": round(statistics.median(refined), 3),
        "refined_update_max_s": round(max(refined), 3),
        "updates_s": {"prob": [round(t, 3) for t in prob_times],
                      "nms": [round(t, 3) for t in nms_times]},
        "suggest_s": round(suggest_s, 3), "suggest_rerun_s": round(suggest_rerun_s, 3),
        "suggested_scale": list(suggested[0].scale),
        "auto_run_s": round(auto_run_s, 3), "auto_refined_s": round(auto_refined_s, 3),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
