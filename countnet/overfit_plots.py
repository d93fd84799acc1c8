"""`countnet report`'s figures for an `overfit` experiment: the overfit curves and the capacity
ladder.

- `overfit_curves.png`: per top trial, train_loss, train_loss_eval and val_loss per epoch on a log
  y axis, the epoch of minimum val_loss marked (where early stopping would have stopped) and the
  final gap (val_loss - train_loss_eval at the last epoch) drawn as a bracket;
- `capacity_ladder.png`: every trial's final gap against its model's parameter count (log x),
  the comparison the forum user built by hand with ResNet-18/34/50/101.

A parameter count comes from the trial's config: the model is built (`model_from_config`), its
parameters counted; nothing is trained.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from countnet.config import TrainConfig
from countnet.experiment import Trial
from countnet.formatting import is_finite
from countnet.overfit_curve import overfit_curve
from countnet.plotting import FONT_SIZE, figure, log_axis, panels, save, style

PNG_OVERFIT_CURVES, PNG_LADDER = "overfit_curves.png", "capacity_ladder.png"
CURVE_KEYS = ("train_loss", "train_loss_eval", "val_loss")
CURVE_STYLES = {"train_loss": dict(color="tab:orange", linestyle="--", marker=".",
                                   label="train_loss (train mode)"),
                "train_loss_eval": dict(color="tab:blue", linestyle="-", marker=".",
                                        label="train_loss_eval (eval mode)"),
                "val_loss": dict(color="tab:green", linestyle="-", marker="o", markersize=3,
                                 label="val_loss (eval mode)")}


def parameter_count(config: dict[str, Any]) -> int | None:
    """The number of parameters of a trial's model, built from its config (no training);
    None when the config does not build a model.

    Args:
        config: the trial's config (params.json); keys that are not TrainConfig fields (an
            optional field's switch) are dropped.
    """
    from countnet.models import model_from_config  # torch: only when a ladder is drawn

    fields = TrainConfig.__dataclass_fields__
    values = {k: v for k, v in config.items() if k in fields}
    try:
        model = model_from_config(TrainConfig.from_dict(values))
    except Exception:  # a config this version cannot build: no point on the ladder
        return None
    return sum(p.numel() for p in model.parameters())


def plot_overfit_curves(trials: list[Trial], path: Path) -> Path:
    """One panel per trial: its three loss curves (log y), the min-val_loss epoch and the
    final gap.

    Args:
        trials: the trials to draw (the top ones, best first), each with a history.
        path: the PNG to write.
    """
    n = len(trials)
    fig, axes = panels(n, 1 if n == 1 else 2, 6.2, 3.9, extra_height=0.6)
    for k, ax in enumerate(axes):
        trial = trials[k]
        history = trial.history
        for key in CURVE_KEYS:
            pts = [(int(r["epoch"]), r[key]) for r in history
                   if is_finite(r.get(key)) and r[key] > 0]
            if pts:
                ax.plot(*zip(*pts), **CURVE_STYLES[key])
        curve = overfit_curve(history)
        title = f"#{k + 1} trial {trial.trial_id}"
        if curve is not None:
            ax.axvline(curve.min_val_epoch, color="tab:red", linestyle=":", linewidth=1.5,
                       label="min val_loss (early-stopping point)")
            ax.plot([curve.min_val_epoch], [curve.min_val_loss], marker="v", color="tab:red",
                    markersize=8, linestyle="none")
            if curve.final_train_loss_eval > 0:
                ax.annotate("", xy=(curve.final_epoch, curve.final_val_loss),
                            xytext=(curve.final_epoch, curve.final_train_loss_eval),
                            arrowprops=dict(arrowstyle="<->", color="black", linewidth=1.3))
                ax.plot([], [], color="black", linewidth=1.3, label="final gap")
            ax.text(curve.final_epoch, math.sqrt(max(curve.final_val_loss, 1e-12)
                                                 * max(curve.final_train_loss_eval, 1e-12)),
                    f" gap {curve.final_gap:.3g}", fontsize=FONT_SIZE - 1, va="center",
                    ha="right")
            pct = curve.train_pct_of_baseline
            title += (f": train_loss_eval {pct:.2g} % of baseline at epoch {curve.final_epoch}"
                      f"\nmin val_loss {curve.min_val_loss:.3g} at epoch {curve.min_val_epoch},"
                      f" final {curve.val_ratio:.2f}x that")
        log_axis(ax, "y")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch", fontsize=FONT_SIZE)
        ax.set_ylabel("loss (log)", fontsize=FONT_SIZE)
        ax.set_title(title, fontsize=FONT_SIZE - 0.5, loc="left")
        style(ax)
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center",
               ncol=min(3, len(handles)), fontsize=FONT_SIZE - 1, frameon=False)
    return save(fig, path)


def ladder_points(trials: list[Trial]) -> list[tuple[int, float, Trial]]:
    """(parameter count, final gap, trial) of every trial with a finite final gap and a model
    that builds.

    Args:
        trials: all trials of the experiment.
    """
    points = []
    for t in trials:
        curve = overfit_curve(t.history)
        if curve is None or not is_finite(curve.final_gap):
            continue
        n = parameter_count(t.config)
        if n is not None:
            points.append((n, curve.final_gap, t))
    return points


def plot_capacity_ladder(points: list[tuple[int, float, Trial]], path: Path) -> Path:
    """Final gap against parameter count, one point per trial, labelled by its model.

    Args:
        points: `ladder_points`.
        path: the PNG to write.
    """
    fig = figure(7.0, 4.6)
    ax = fig.subplots()
    models = sorted({str(t.config.get("model", "?")) for _, _, t in points})
    colours = {m: f"C{i % 10}" for i, m in enumerate(models)}
    for model in models:
        xs = [(n, gap) for n, gap, t in points if str(t.config.get("model", "?")) == model]
        ax.scatter(*zip(*xs), color=colours[model], label=model, s=36, zorder=3)
    for n, gap, t in points:
        ax.annotate(t.trial_id, (n, gap), fontsize=FONT_SIZE - 3, xytext=(4, 3),
                    textcoords="offset points", alpha=0.8)
    log_axis(ax, "x")
    ax.axhline(0.0, color="gray", linewidth=0.8)
    ax.set_xlabel("model parameters (log)", fontsize=FONT_SIZE)
    ax.set_ylabel("final gap = val_loss - train_loss_eval", fontsize=FONT_SIZE)
    ax.set_title(f"Capacity ladder: final gap against model size ({len(points)} trials)",
                 fontsize=FONT_SIZE, loc="left")
    ax.legend(fontsize=FONT_SIZE - 1, frameon=False, title="model")
    style(ax)
    return save(fig, path)
