"""The report's matplotlib figures: optimisation history, importances, learning curves, error
by true count.

Each function draws one PNG on an Agg canvas (`countnet.plotting`: no display, no pyplot state)
and returns its path; `countnet.report` decides what to draw and where.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from countnet.experiment import STEP, Experiment
from countnet.formatting import is_finite
from countnet.overfit_curve import scope_word
from countnet.plotting import FONT_SIZE, figure, save, style

CURVE_KEYS = ("train_loss", "train_loss_eval", "val_loss")
CURVE_LABELS = {"train_loss": "train_loss (train mode, running mean)",
                "train_loss_eval": "train_loss_eval (eval mode)",
                "val_loss": "val_loss (eval mode)"}
CURVE_STYLES = {"train_loss": dict(color="tab:orange", linestyle="--", marker="."),
                "train_loss_eval": dict(color="tab:blue", linestyle="-", marker="."),
                "val_loss": dict(color="tab:green", linestyle="-", marker="o", markersize=3)}
MAX_POINT_LABELS = 30  # history.png names each trial's point up to this many trials
MAX_EVAL_SERIES = 6  # per-count series drawn in error_by_count.png
LOG_SCALE_RATIO = 20.0  # a positive axis spanning more than this factor is drawn log-scaled


def _maybe_log(ax: Any, values: list[float]) -> None:
    """Log-scale the y axis when positive values span more than LOG_SCALE_RATIO.

    Not `countnet.plotting.log_axis`, which labels no minor tick on an axis spanning more than
    a decade: this axis spans at least 1.3 decades and may hold a single major tick, so the
    minor ticks at 2x and 5x keep their labels.
    """
    from matplotlib.ticker import FuncFormatter

    finite = [v for v in values if is_finite(v)]
    if finite and min(finite) > 0 and max(finite) / min(finite) > LOG_SCALE_RATIO:
        ax.set_yscale("log")
        # Plain numbers (1, 2, 5, 10, 20, 50), not 2 x 10^0; minor ticks at 2 and 5 only.
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_log_label))


def _minor_log_label(v: float, _pos: Any = None) -> str:
    """A minor log tick's label: 2x and 5x a power of ten get one, the rest none (legibility)."""
    if v <= 0:
        return ""
    mantissa = v / 10 ** math.floor(math.log10(v))
    return f"{v:g}" if round(mantissa) in (2, 5) and abs(mantissa - round(mantissa)) < 1e-6 \
        else ""


def plot_history(exp: Experiment, path: Path) -> Path:
    """Best-epoch target value per trial in start order, best so far, ASHA-stopped marked (the
    last epoch's value when the target ranks trials by their last epoch: `Experiment.scope`)."""
    fig = figure(8.0, 4.6)
    ax = fig.subplots()
    better = (lambda a, b: a < b) if exp.mode == "min" else (lambda a, b: a > b)
    xs_best, ys_best, best = [], [], None
    groups: dict[str, tuple[list[int], list[float]]] = {
        "ran all epochs": ([], []), "stopped early by ASHA": ([], []), "other": ([], [])}
    no_value = []
    for i, t in enumerate(exp.trials, 1):
        if t.best is None or t.diverged:
            no_value.append(i)
            continue
        v = float(t.best[exp.metric])
        key = ("stopped early by ASHA" if t.stopped_early
               else "ran all epochs" if t.outcome == "complete" else "other")
        groups[key][0].append(i)
        groups[key][1].append(v)
        if best is None or better(v, best):
            best = v
        xs_best.append(i)
        ys_best.append(best)
    ax.step(xs_best, ys_best, where="post", color="tab:red", linewidth=1.5, label="best so far")
    styles = {"ran all epochs": dict(marker="o", color="tab:blue", s=36),
              "stopped early by ASHA": dict(marker="X", color="tab:orange", s=50),
              "other": dict(marker="s", color="tab:gray", s=30)}
    for name, (xs, ys) in groups.items():
        if xs:
            label = "unfinished or failed" if name == "other" else name
            ax.scatter(xs, ys, label=f"{label} ({len(xs)})", zorder=3, **styles[name])
    _maybe_log(ax, [v for _, ys in groups.values() for v in ys])
    if len(exp.trials) <= MAX_POINT_LABELS:  # which trial is which, as in trials.csv
        for i, t in enumerate(exp.trials, 1):
            if t.best is not None and not t.diverged:
                ax.annotate(t.trial_id, (i, float(t.best[exp.metric])), fontsize=FONT_SIZE - 3,
                            xytext=(4, 4), textcoords="offset points", color="0.35")
    for i in no_value:  # diverged or no epoch: no value to plot; a tick at the bottom says so
        ax.axvline(i, color="tab:red", alpha=0.25, linewidth=4)
    if no_value:
        ax.plot([], [], color="tab:red", alpha=0.25, linewidth=4,
                label=f"diverged / no value ({len(no_value)})")
    ax.set_xlabel("trial, in the order the trials started", fontsize=FONT_SIZE)
    ax.set_ylabel(f"{exp.metric} at the trial's {scope_word(exp.scope)} epoch ({exp.mode})",
                  fontsize=FONT_SIZE)
    ax.set_title(f"Optimisation history: {len(exp.trials)} trials, "
                 f"{sum(t.stopped_early for t in exp.trials)} stopped early by ASHA",
                 fontsize=FONT_SIZE + 1)
    # Room on the right for the last point's trial-id label.
    ax.set_xlim(0.5, len(exp.trials) + (0.9 if len(exp.trials) <= MAX_POINT_LABELS else 0.5))
    ax.xaxis.get_major_locator().set_params(integer=True)
    style(ax)
    ax.legend(fontsize=FONT_SIZE - 1, loc="best")
    return save(fig, path)


def plot_importances(importances: dict[str, float], n_trials: int, n_stopped: int,
                     metric: str, path: Path, word: str = "best") -> Path:
    """Horizontal bars, most important on top.

    Args:
        importances: parameter -> importance, most important first.
        n_trials: the trials they were computed over.
        n_stopped: how many of them ASHA stopped.
        metric: the target metric.
        path: the PNG to write.
        word: which epoch of each trial the values are ("best" or "last": `scope_word`).
    """
    names = list(importances)[::-1]
    fig = figure(7.5, 1.4 + 0.42 * len(names))
    ax = fig.subplots()
    values = [importances[n] for n in names]
    bars = ax.barh(names, values, color="tab:blue")
    for bar, v in zip(bars, values):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {v:.2f}",
                va="center", fontsize=FONT_SIZE - 1)
    ax.set_xlim(0, max(values) * 1.18 if values else 1)
    ax.set_xlabel(f"importance for {metric} (fANOVA, sums to 1)", fontsize=FONT_SIZE)
    ax.set_ylabel("parameter", fontsize=FONT_SIZE)
    ax.set_title(f"Parameter importances over {n_trials} trials' {word} epochs\n"
                 f"({n_stopped} of them stopped early by ASHA)", fontsize=FONT_SIZE + 1)
    style(ax)
    ax.grid(False, axis="y")
    return save(fig, path)


def plot_curves(panels: list[tuple[str, str, list[dict[str, Any]], int | None]],
                rungs: list[float], path: Path, max_epochs: int | None = None,
                marker_label: str = "best epoch") -> Path:
    """Learning curves: one panel per (title, subtitle, history, best epoch).

    Args:
        panels: what each panel shows.
        rungs: ASHA's rung epochs, drawn as vertical dotted lines ([] for a single run).
        path: the PNG to write.
        max_epochs: the x axis' end (default: the longest history).
        marker_label: the legend of the marked epoch ("last epoch" when the target ranks a
            trial by its last epoch).
    """
    n = len(panels)
    cols = 1 if n == 1 else 2
    rows = math.ceil(n / cols)
    fig = figure(6.2 * cols, 3.9 * rows + 0.6)
    axes = fig.subplots(rows, cols, squeeze=False)
    last = max_epochs or max(int(h[-1][STEP]) for _, _, h, _ in panels)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.set_visible(False)
            continue
        title, subtitle, history, best = panels[k]
        epochs = [int(r[STEP]) for r in history]
        values = []
        for key in CURVE_KEYS:
            pts = [(e, r[key]) for e, r in zip(epochs, history) if is_finite(r.get(key))]
            if pts:
                ax.plot(*zip(*pts), label=CURVE_LABELS[key], **CURVE_STYLES[key])
                values += [v for _, v in pts]
        for i, r in enumerate(rungs):
            ax.axvline(r, color="gray", linestyle=":", linewidth=1.2,
                       label="ASHA rung" if i == 0 else None)
        if best is not None:
            row = next((r for r in history if int(r[STEP]) == best), None)
            if row is not None and is_finite(row.get("val_loss")):
                # Hollow: the val_loss point under it stays visible.
                ax.plot([best], [row["val_loss"]], marker="*", markersize=16,
                        markerfacecolor="none", markeredgecolor="tab:red", markeredgewidth=1.5,
                        linestyle="none", label=marker_label, zorder=4)
        _maybe_log(ax, values)
        ax.set_xlim(0.7, last + 0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch", fontsize=FONT_SIZE)
        ax.set_ylabel("loss", fontsize=FONT_SIZE)
        text = title + (f"\n{subtitle}" if subtitle else "")
        ax.set_title(text, fontsize=FONT_SIZE - 0.5, loc="left")
        style(ax)
    handles, labels = {}, []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    fig.legend([handles[lab] for lab in labels], labels, loc="outside lower center",
               ncol=min(3, len(labels)), fontsize=FONT_SIZE - 1, frameon=False)
    return save(fig, path)


def plot_errors(series: list[tuple[str, list[dict[str, Any]]]], title: str, path: Path) -> Path:
    """MAE and exact-count accuracy by true count, one line per evaluated set."""
    fig = figure(9.5, 4.2)
    ax_mae, ax_acc = fig.subplots(1, 2)
    for label, rows in series[:MAX_EVAL_SERIES]:
        rows = sorted(rows, key=lambda r: r["count"])
        counts = [r["count"] for r in rows]
        ax_mae.plot(counts, [r["mae"] for r in rows], marker=".", label=label)
        if all("acc" in r for r in rows):
            ax_acc.plot(counts, [r["acc"] for r in rows], marker=".", label=label)
    ax_mae.set_xlabel("true count", fontsize=FONT_SIZE)
    ax_mae.set_ylabel("mean absolute error (objects)", fontsize=FONT_SIZE)
    ax_mae.set_title("error by true count", fontsize=FONT_SIZE)
    ax_acc.set_xlabel("true count", fontsize=FONT_SIZE)
    ax_acc.set_ylabel("exact-count accuracy", fontsize=FONT_SIZE)
    ax_acc.set_ylim(-0.02, 1.02)
    ax_acc.set_title("accuracy by true count", fontsize=FONT_SIZE)
    for ax in (ax_mae, ax_acc):
        style(ax)
        ax.xaxis.get_major_locator().set_params(integer=True)  # counts are whole numbers
    handles, labels = ax_mae.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=FONT_SIZE - 1,
               frameon=False)
    fig.suptitle(title, fontsize=FONT_SIZE + 1)
    return save(fig, path)
