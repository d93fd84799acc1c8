"""The rung audit in `countnet report`: rungs.png and a report.md section.

The figures come from `countnet.rung_audit`; this module only draws and writes them. rungs.png
has one panel per rung: each trial that ran past the rung at (its value there, its best value),
log axes, the line where the two are equal, and the values of the trials that ended at the rung
as ticks along the bottom.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from countnet.overfit_curve import SCOPE_ALL, scope_word
from countnet.plotting import FONT_SIZE, log_axis, panels, save, style
from countnet.rung_audit import NOISE_RHO, RungAudit, audit_rungs, noise_warning

PNG_RUNGS = "rungs.png"
MAX_POINT_LABELS = 12  # trial ids written next to the points of a panel up to this many
MAX_COLUMNS = 3  # panels per row
LOG_MARGIN = 1.15  # axis limits this factor beyond the extreme values (log axes)
LINEAR_MARGIN = 0.06  # ... or this share of the range (linear axes)


def write_rung_audit(histories: Mapping[str, list[dict[str, Any]]], milestones: list[float],
                     metric: str, mode: str, out_dir: Path,
                     scope: str = SCOPE_ALL) -> tuple[list[RungAudit], list[str]]:
    """Audit the rungs, draw out_dir/rungs.png when a rung has a trial, and say it in Markdown.

    Args:
        histories: trial id -> its per-epoch result rows.
        milestones: ASHA's rungs (`rung_audit.rung_milestones`).
        metric: the search's target metric (what ASHA ranked by).
        mode: "min" or "max".
        out_dir: the report's folder.
        scope: which value of a trial the rung is compared with: its best (SCOPE_ALL) or its
            last (SCOPE_LAST; `countnet.overfit_curve.rank_scope` of the target).

    Returns:
        (the audits, the lines of report.md's section).
    """
    audits = audit_rungs(histories, milestones, metric, mode, scope)
    png = None
    if any(a.at_rung or a.stopped_values for a in audits):
        png = plot_rungs(audits, metric, out_dir / PNG_RUNGS).name
    return audits, rung_markdown(audits, metric, png)


def rung_markdown(audits: list[RungAudit], metric: str, png: str | None) -> list[str]:
    """report.md's section: what is measured, a table per rung, warnings, the plot.

    Args:
        audits: `audit_rungs`' result.
        metric: the metric ASHA ranked by.
        png: the plot's file name (relative to report.md), or None when there is none.
    """
    lines = ["## ASHA's rungs audited", ""]
    if not audits:
        return [*lines, "No rung below max_epochs: ASHA stopped no trial, nothing to audit.", ""]
    word = scope_word(audits[0].scope)
    lines += [f"ASHA stops a trial at a rung when its {metric} there ranks among the worst. For "
              f"each rung, over the trials that ran past it: Spearman's rank correlation ρ "
              f"between their {metric} at the rung and their {word} {metric} over the run. "
              f"Near 1, the rung ranks trials as their {word} epochs do; below {NOISE_RHO:g}, "
              f"ASHA stops trials on noise.", "",
              "| rung (epoch) | trials past it | ended there | Spearman ρ |",
              "| ---: | ---: | ---: | --- |"]
    for a in audits:
        rho = f"{a.rho:.2f}" if a.rho is not None else a.verdict
        lines.append(f"| {a.epoch} | {a.n} | {len(a.stopped)} | {rho} |")
    lines.append("")
    warnings = [w for w in map(noise_warning, audits) if w]
    lines += [*(f"**Warning:** {w}" for w in warnings), *([""] if warnings else [])]
    if png:
        lines += [f"![ASHA's rungs: {metric} at the rung vs {word}]({png})", ""]
    return lines


def plot_rungs(audits: list[RungAudit], metric: str, path: Path) -> Path:
    """One panel per rung: value at the rung (x) against the trial's best (or last) value (y).

    Args:
        audits: `audit_rungs`' result (at least one).
        metric: the metric ASHA ranked by.
        path: the PNG to write.
    """
    n = len(audits)
    fig, axes = panels(n, min(n, MAX_COLUMNS), 4.6, 4.4, extra_height=0.5)
    for ax, audit in zip(axes, audits):
        _panel(ax, audit, metric)
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncol=min(3, len(handles)) or 1, fontsize=FONT_SIZE - 1, frameon=False)
    fig.suptitle(f"ASHA's rungs: {metric} at the rung vs the trial's "
                 f"{scope_word(audits[0].scope)} (Spearman ρ)", fontsize=FONT_SIZE + 1)
    return save(fig, path)


def _panel(ax: Any, audit: RungAudit, metric: str) -> None:
    """One rung's scatter, its equality line and the values of the trials that ended there."""
    word = scope_word(audit.scope)
    values = [*audit.at_rung, *audit.best, *audit.stopped_values]
    log = bool(values) and min(values) > 0
    lo, hi = _limits(values, log)
    ax.plot([lo, hi], [lo, hi], color="0.6", linestyle="--", linewidth=1,
            label=f"{word} = value at the rung")
    if audit.at_rung:
        ax.scatter(audit.at_rung, audit.best, color="tab:blue", s=36, zorder=3,
                   label="trial that ran past the rung")
    if len(audit.trial_ids) <= MAX_POINT_LABELS:
        for tid, x, y in zip(audit.trial_ids, audit.at_rung, audit.best):
            ax.annotate(tid, (x, y), fontsize=FONT_SIZE - 3, xytext=(4, 3),
                        textcoords="offset points", color="0.35")
    if audit.stopped_values:  # no later value to plot: ticks on the x axis
        ax.plot(audit.stopped_values, [0.02] * len(audit.stopped_values), linestyle="none",
                marker="|", markersize=14, markeredgewidth=1.6, color="tab:orange",
                transform=ax.get_xaxis_transform(), label="trial that ended at the rung")
    if log:
        log_axis(ax, "x")
        log_axis(ax, "y")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal" if not log else "auto")
    ax.set_xlabel(f"{metric} at epoch {audit.epoch} (the rung)", fontsize=FONT_SIZE)
    ax.set_ylabel(f"{word} {metric} over the run" if word == "best"
                  else f"{word} {metric} of the run", fontsize=FONT_SIZE)
    verdict = f"ρ = {audit.rho:.2f}" if audit.rho is not None else audit.verdict
    ax.set_title(f"rung epoch {audit.epoch}: {audit.n} trials ran past it\n{verdict}",
                 fontsize=FONT_SIZE, loc="left", color="tab:red" if audit.noisy else "black")
    style(ax)


def _limits(values: list[float], log: bool) -> tuple[float, float]:
    """Common x and y limits around the values, so that the equality line is the diagonal."""
    if not values:
        return (0.1, 10.0) if log else (0.0, 1.0)
    lo, hi = min(values), max(values)
    if log:
        if hi / lo < LOG_MARGIN ** 2:  # one value, or nearly: still a readable span
            mid = math.sqrt(lo * hi)
            return mid / 2, mid * 2
        return lo / LOG_MARGIN, hi * LOG_MARGIN
    pad = (hi - lo) * LINEAR_MARGIN or max(abs(lo), 1.0) * LINEAR_MARGIN
    return lo - pad, hi + pad
