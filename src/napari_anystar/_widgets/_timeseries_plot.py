"""The Time series widget's plot: matplotlib curves of objects' values against the frame."""

from __future__ import annotations

import numpy as np
from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure

MAX_CURVES = 20  # curves drawn at once (the CSV always has every object)


class CurvePlot(FigureCanvasQTAgg):
    """Matplotlib curves (value against frame), coloured like the dock's palette."""

    def __init__(self) -> None:
        figure = Figure(figsize=(4, 2.6), layout="constrained")
        super().__init__(figure)
        self.axes = figure.add_subplot()
        self.setMinimumHeight(180)
        self.setToolTip(
            "Mean intensity of the selected objects against the frame (smoothed if sigma > 0; "
            "the faint lines are the raw means)."
        )
        self.show_curves(np.zeros(0), np.zeros((0, 0)), np.zeros((0, 0)))

    def show_curves(self, ids: np.ndarray, raw: np.ndarray, values: np.ndarray) -> None:
        """Draw ``values`` (one row per id) solid and ``raw`` faint when they differ."""
        palette = self.palette()
        fg = palette.color(palette.ColorRole.WindowText).name()
        bg = palette.color(palette.ColorRole.Window).name()
        ax = self.axes
        ax.clear()
        self.figure.set_facecolor(bg)
        ax.set_facecolor(bg)
        for object_id, raw_row, row in zip(ids.tolist(), raw, values, strict=True):
            frames = np.arange(row.size)
            (line,) = ax.plot(frames, row, lw=1.5, label=str(object_id))
            if not np.array_equal(raw_row, row):
                ax.plot(frames, raw_row, lw=0.8, alpha=0.35, color=line.get_color())
        ax.set_xlabel("frame", color=fg)
        ax.set_ylabel("mean intensity", color=fg)
        ax.tick_params(colors=fg)
        for spine in ax.spines.values():
            spine.set_color(fg)
        if ids.size:
            ax.legend(title="object", fontsize="small", title_fontsize="small", ncols=2)
        else:
            ax.text(0.5, 0.5, "no objects selected", ha="center", va="center", color=fg,
                    transform=ax.transAxes)
        self.draw()
