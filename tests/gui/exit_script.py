"""Opened by ``test_clean_exit.py`` in a fresh process: dock the plugin, start jobs, quit.

Usage: ``python exit_script.py MODE`` with MODE one of ``docked`` (quit while the docks'
start-up workers run), ``preview`` (only the Synthetic preview dock, quit during its
start-up), ``run`` (a segmentation in flight), ``warmup`` (the NMS warm-up after
a run), ``train`` (a fine-tune in flight). Prints ``closed`` once the viewer is closed.
"""

from __future__ import annotations

import sys
import time

import numpy as np


def _wait_for(condition, timeout_s: float = 120.0) -> None:
    from qtpy.QtWidgets import QApplication

    end = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > end:
            raise TimeoutError("the job did not reach the wanted state")
        QApplication.processEvents()
        time.sleep(0.01)


def main(mode: str) -> None:
    import napari

    from napari_anystar._widgets.finetune import FineTuneWidget
    from napari_anystar._widgets.preview import SyntheticPreviewWidget
    from napari_anystar._widgets.segment import SegmentWidget

    viewer = napari.Viewer(show=False)
    if mode == "preview":
        viewer.window.add_dock_widget(SyntheticPreviewWidget(viewer))
        viewer.close()
        print("closed", flush=True)
        return
    segment, preview, fine = (SegmentWidget(viewer), SyntheticPreviewWidget(viewer),
                              FineTuneWidget(viewer))
    for dock in (segment, preview, fine):
        viewer.window.add_dock_widget(dock)
    rng = np.random.default_rng(0)
    labels = np.zeros((32, 48, 48), np.uint16)
    labels[8:20, 10:22, 10:22], labels[14:26, 26:40, 24:38] = 1, 2
    viewer.add_image((labels > 0) + 0.1 * rng.random(labels.shape), name="cells")
    viewer.add_labels(labels, name="cells-labels")
    if mode in ("run", "warmup"):
        segment.set_scale_mode("manual")
        segment.set_scale((1.0, 1.0, 1.0))
        started = []
        segment.run_progress.connect(lambda *_: started.append(True))
        segment.run()
        if mode == "warmup":
            finished = []
            segment.run_finished.connect(lambda *_: finished.append(True))
            _wait_for(lambda: bool(finished) and segment._life.warmup is not None)
        else:
            _wait_for(lambda: bool(started))
    elif mode == "train":
        fine.image_combo.setCurrentIndex(fine.image_combo.findText("cells"))
        fine.labels_combo.setCurrentIndex(fine.labels_combo.findText("cells-labels"))
        fine.add_pair_button.click()
        fine.model_combo.setCurrentIndex(fine.model_combo.count() - 1)  # from scratch
        fine.steps_spin.setValue(10_000)
        fine.batch_spin.setValue(1)
        fine.tune_check.setChecked(False)
        steps = []
        fine.progress.connect(lambda step, total: steps.append(step))
        fine.start_button.click()
        _wait_for(lambda: bool(steps))
    viewer.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
