"""Matplotlib figures for the report: an Agg canvas (no display, no pyplot state), one look.

Every figure of `countnet report` uses these (`countnet.report_plots`, `countnet.rung_report`):
the same sizes, fonts and grid.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

DPI = 110
FONT_SIZE = 10


def figure(width: float, height: float) -> Any:
    """A matplotlib Figure on an Agg canvas, constrained layout.

    Args:
        width: inches.
        height: inches.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def panels(n: int, cols: int, width: float, height: float,
           extra_height: float = 0.0) -> tuple[Any, list[Any]]:
    """A figure of n panels in rows of `cols`; the unused cells of the last row are hidden.

    Args:
        n: panels wanted (>= 1).
        cols: panels per row.
        width, height: inches per panel.
        extra_height: inches added for a legend or title below or above the grid.

    Returns:
        (figure, the n axes in reading order, also holding every legend handle).
    """
    rows = math.ceil(n / cols)
    fig = figure(width * cols, height * rows + extra_height)
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def save(fig: Any, path: Path) -> Path:
    """Write the figure as a PNG with nothing cut off at the edges; returns path.

    Args:
        fig: the Figure.
        path: the PNG to write.
    """
    fig.savefig(path, dpi=DPI, bbox_inches="tight", pad_inches=0.15)
    return path


def style(ax: Any) -> None:
    """A light grid and the report's tick size.

    Args:
        ax: the Axes.
    """
    ax.grid(True, alpha=0.3)
    ax.grid(True, which="minor", alpha=0.12)
    ax.tick_params(labelsize=FONT_SIZE - 1)


def log_axis(ax: Any, which: str) -> None:
    """Log-scale one axis with plain tick labels (1, 2, 5, 10, not 2 x 10^0).

    Args:
        ax: the Axes.
        which: "x" or "y".
    """
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        """matplotlib's choice of the ticks to label, each as a plain number (0.04, not 4e-02)."""

        def __call__(self, x: float, pos: Any = None) -> str:
            return f"{x:g}" if super().__call__(x, pos) else ""

    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis = ax.xaxis if which == "x" else ax.yaxis
    # Minor ticks (matplotlib's defaults): all labelled on an axis spanning under 0.4 decades
    # (there may be no major tick), some up to one decade, none beyond (they would collide).
    axis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))

