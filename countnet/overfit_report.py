"""The `overfit` section of `countnet report`: its two figures and their Markdown.

`countnet.report` calls `overfit_section` for an experiment whose target is `overfit` (maximise
gap); the figures are drawn by `countnet.overfit_plots`, the figures in text come from
`countnet.overfit_curve` (the search summary prints the same ones).
"""

from __future__ import annotations

from pathlib import Path

from countnet.experiment import Experiment, Trial
from countnet.overfit_curve import overfit_curve, overfit_lines
from countnet.overfit_plots import (
    PNG_LADDER,
    PNG_OVERFIT_CURVES,
    ladder_points,
    plot_capacity_ladder,
    plot_overfit_curves,
)

OVERFIT_METRIC = ("gap", "max")  # the (metric, mode) of the target `overfit` (tune.space.TARGETS)


def is_overfit(exp: Experiment) -> bool:
    """Whether the experiment's target is `overfit`.

    Args:
        exp: the experiment.
    """
    return exp.target == "overfit" or (exp.metric, exp.mode) == OVERFIT_METRIC


def overfit_section(exp: Experiment, ranked: list[Trial], top: int, out: Path) -> list[str]:
    """Write overfit_curves.png and capacity_ladder.png into `out`; return report.md's section.

    Args:
        exp: the experiment (all its trials go on the ladder).
        ranked: its trials best first (the top ones get curves).
        top: how many trials get curves.
        out: the report directory.
    """
    lines = ["## Overfit curve", ""]
    if ranked:
        best = ranked[0]
        curve = overfit_curve(best.history)
        if curve is not None:
            lines += [*(f"- {line.strip()}" for line in overfit_lines(best.trial_id, curve)), ""]
        plot_overfit_curves(ranked[:top], out / PNG_OVERFIT_CURVES)
        lines += ["train_loss, train_loss_eval and val_loss of the top trials (log y). Red: "
                  "the epoch of minimum val_loss, where early stopping would stop; the bracket "
                  "at the end: the final gap.", "",
                  f"![overfit curves]({PNG_OVERFIT_CURVES})", ""]
    points = ladder_points(exp.trials)
    if points:
        plot_capacity_ladder(points, out / PNG_LADDER)
        lines += ["## Capacity ladder", "",
                  f"Final gap against the model's parameter count, {len(points)} trials.", "",
                  f"![capacity ladder]({PNG_LADDER})", ""]
    else:
        lines += ["No capacity ladder: no trial has a finite final gap and a model config "
                  "that builds.", ""]
    return lines
