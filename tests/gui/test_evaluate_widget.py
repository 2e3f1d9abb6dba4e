"""Evaluate widget in a real viewer: scores, plot, error layer, regions, refused input."""

from __future__ import annotations

import numpy as np
import pytest
from stardist.matching import matching

from napari_anystar._widgets import evaluate as evaluate_module
from napari_anystar._widgets.evaluate import METRIC_TITLES, EvaluateWidget
from napari_anystar.analysis import IOU_THRESHOLDS
from napari_anystar.analysis.evaluate import BOTH, FALSE_NEGATIVE, FALSE_POSITIVE

TIMEOUT = 60_000
SHAPE = (12, 32, 48)
COLUMNS = list(METRIC_TITLES)


def cube(labels, corner, value, size=8):
    z, y, x = corner
    labels[z:z + size, y:y + size, x:x + size] = value


def known_pair():
    """Truth 1-3; prediction 5 = truth 1, 6 = truth 2 shifted 4 in x (IoU 1/3), truth 3
    missed, 8 spurious."""
    truth = np.zeros(SHAPE, np.int32)
    pred = np.zeros(SHAPE, np.int32)
    for value, corner in enumerate([(2, 2, 2), (2, 2, 20), (2, 20, 2)], start=1):
        cube(truth, corner, value)
    cube(pred, (2, 2, 2), 5)
    cube(pred, (2, 2, 24), 6)
    cube(pred, (2, 20, 36), 8)
    return truth, pred


@pytest.fixture
def errors(monkeypatch):
    shown: list[str] = []
    monkeypatch.setattr(evaluate_module, "show_error", shown.append)
    return shown


@pytest.fixture
def docked(make_napari_viewer, errors):
    viewer = make_napari_viewer()
    truth, pred = known_pair()
    viewer.add_labels(truth, name="gt")
    viewer.add_labels(pred, name="pred", scale=(2.0, 1.0, 1.0), translate=(0.0, 5.0, 0.0))
    widget = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Evaluate")
    widget.set_layers("pred", "gt")
    return viewer, widget


def evaluate(qtbot, widget):
    """The PairEvaluation of one Evaluate press (fails at once with the refusal, if any)."""
    outcome: list = []
    widget.evaluated.connect(outcome.append)
    widget.failed.connect(outcome.append)
    try:
        widget.evaluate()
        qtbot.waitUntil(lambda: bool(outcome) and widget.worker is None, timeout=TIMEOUT)
    finally:
        widget.evaluated.disconnect(outcome.append)
        widget.failed.disconnect(outcome.append)
    assert not isinstance(outcome[0], str), outcome[0]
    return outcome[0]


def refused(qtbot, widget):
    with qtbot.waitSignal(widget.failed, timeout=TIMEOUT) as blocker:
        widget.evaluate()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT)
    return blocker.args[0]


def table(widget):
    return [[float(widget.table.item(row, col).text()) for col in range(len(COLUMNS))]
            for row in range(widget.table.rowCount())]


def test_scores_plot_and_error_layer(qtbot, docked, errors):
    viewer, widget = docked
    truth, pred = known_pair()
    result = evaluate(qtbot, widget)
    reference = matching(truth, pred, thresh=list(IOU_THRESHOLDS))
    shown = table(widget)
    for col, metric in enumerate(COLUMNS):
        expected = [float(getattr(s, metric)) for s in reference]
        assert [row[col] for row in shown[:-1]] == pytest.approx(expected, abs=5e-4)
        assert shown[-1][col] == pytest.approx(np.mean(expected), abs=5e-4)
    assert shown[0][0] == pytest.approx(2 / 4, abs=5e-4)  # accuracy: 2 TP, 1 FP, 1 FN
    assert shown[4][0] == pytest.approx(1 / 5, abs=5e-4)
    assert widget.plot.scores is result.scores
    assert (result.false_positives, result.false_negatives) == ((6, 8), (2, 3))

    layer = viewer.layers["pred errors"]
    assert layer.metadata["false_positives"] == [6, 8]
    assert layer.metadata["false_negatives"] == [2, 3]
    assert tuple(layer.scale) == (2.0, 1.0, 1.0) and tuple(layer.translate) == (0.0, 5.0, 0.0)
    data = np.asarray(layer.data)
    assert data[5, 5, 5] == 0  # matched object
    assert data[5, 5, 21] == FALSE_NEGATIVE and data[5, 5, 26] == BOTH
    assert data[5, 5, 30] == FALSE_POSITIVE
    assert np.all(data[2:10, 20:28, 2:10] == FALSE_NEGATIVE)
    assert np.all(data[2:10, 20:28, 36:44] == FALSE_POSITIVE)
    assert "2 false positives" in widget.errors_label.text() and "ids 6, 8" in (
        widget.errors_label.text())
    assert widget.pred_combo.findData("pred errors") == -1  # our layer is no input
    assert errors == []

    # Re-evaluating after an edit updates our layer in place.
    viewer.layers["pred"].data = np.where(pred == 8, 0, pred)
    result = evaluate(qtbot, widget)
    assert result.false_positives == (6,)
    assert [lay.name for lay in viewer.layers] == ["gt", "pred", "pred errors"]
    assert viewer.layers["pred errors"] is layer
    assert not np.any(np.asarray(layer.data)[2:10, 20:28, 36:44])


def test_a_user_layer_with_our_name_is_never_touched(qtbot, docked):
    viewer, widget = docked
    mine = np.ones(SHAPE, np.uint8)
    viewer.add_labels(mine.copy(), name="pred errors")
    widget.set_layers("pred", "gt")
    evaluate(qtbot, widget)
    np.testing.assert_array_equal(viewer.layers["pred errors"].data, mine)
    assert "pred errors (AnyStar)" in viewer.layers


@pytest.mark.parametrize("case, message", [
    ("shape", "'pred' has shape (12, 32, 47) but 'gt' has shape (12, 32, 48)"),
    ("empty_truth", "'gt' is empty"),
    ("empty_pred", "'pred' is empty"),
    ("same", "two different layers"),
    ("no_shapes_layer", "Shapes layer"),
    ("no_shapes", "has no shapes"),
    ("outside", "object of 'gt' has its centre inside the region"),
])
def test_bad_input_is_refused_and_nothing_changes(qtbot, docked, errors, case, message):
    viewer, widget = docked
    region = "whole"
    if case == "shape":
        viewer.layers["pred"].data = viewer.layers["pred"].data[..., :-1].copy()
    elif case == "empty_truth":
        viewer.layers["gt"].data = np.zeros(SHAPE, np.int32)
    elif case == "empty_pred":
        viewer.layers["pred"].data = np.zeros(SHAPE, np.int32)
    elif case == "same":
        widget.set_layers("pred", "pred")
    elif case == "no_shapes":
        viewer.add_shapes(name="boxes", ndim=3)
        region = "shapes"
    elif case == "outside":
        viewer.add_shapes([np.array([[28.0, 40.0], [28.0, 46.0], [31.0, 46.0], [31.0, 40.0]])],
                          shape_type="rectangle", name="boxes")
        region = "shapes"
    else:
        region = "shapes"
    widget.set_layers("pred", "gt" if case != "same" else "pred", region, "boxes")
    before = [(layer.name, np.asarray(layer.data).copy()) for layer in viewer.layers]
    assert message in refused(qtbot, widget)
    assert message.lower() in widget.status_label.text().lower() and len(errors) == 1
    after = [(layer.name, np.asarray(layer.data)) for layer in viewer.layers]
    assert [n for n, _ in after] == [n for n, _ in before]
    for (_, old), (_, new) in zip(before, after, strict=True):
        np.testing.assert_array_equal(old, new)
    assert widget.table.item(0, 0) is None and widget.evaluate_button.isEnabled()


def test_annotated_region_ignores_predictions_outside_the_ground_truths_box(qtbot, docked):
    _viewer, widget = docked
    widget.set_layers("pred", "gt", "annotated")
    # The truth's box is x 2-27, y 2-27: the centres of predictions 6 (x 27.5) and 8 (x 39.5)
    # lie outside, so they count neither as matches nor as false positives.
    result = evaluate(qtbot, widget)
    assert (result.ignored_true, result.ignored_pred) == (0, 2)
    assert result.false_positives == () and result.false_negatives == (2, 3)
    assert result.scores.n_pred == 1 and result.scores.precision == (1.0,) * 9
    assert "ignored" in widget.status_label.text()


def test_shapes_rectangles_map_from_world_to_voxels(qtbot, docked):
    """A 2D rectangle (world y 5-40, x 14-47, drawn over the prediction translated by 5 in y)
    covers voxels y 0-35, x 14-47 through all Z: truth 2 and predictions 6 and 8 count."""
    viewer, widget = docked
    viewer.layers["gt"].scale = (2.0, 1.0, 1.0)
    viewer.layers["gt"].translate = (0.0, 5.0, 0.0)
    corners = np.array([[5.0, 14.0], [5.0, 47.0], [40.0, 47.0], [40.0, 14.0]])
    viewer.add_shapes([corners], shape_type="rectangle", name="boxes")
    widget.set_layers("pred", "gt", "shapes", "boxes")
    result = evaluate(qtbot, widget)
    assert (result.ignored_true, result.ignored_pred) == (2, 1)
    assert result.scores.n_true == 1 and result.scores.n_pred == 2
    assert result.scores.accuracy[0] == pytest.approx(1 / 2)  # 6 matches 2 at IoU 1/3

    # A rectangle drawn on one Z plane of a 3D Shapes layer also spans all Z.
    flat = np.array([[4.0, *c] for c in corners])
    viewer.add_shapes([flat], shape_type="rectangle", name="plane")
    widget.set_layers("pred", "gt", "shapes", "plane")
    again = evaluate(qtbot, widget)
    assert (again.ignored_true, again.ignored_pred) == (2, 1)
