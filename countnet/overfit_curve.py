"""The overfit curve of one trial in figures: how far it memorised, where val_loss turned.

For the `overfit` target (maximise gap = val_loss - train_loss_eval) the search summary, `countnet
report` and `countnet export` state the same figures of a trial's per-epoch history:

- train_loss_eval at the trial's last epoch as a % of baseline_mse (the MSE of predicting the mean
  count: 100 % learnt nothing, ~0 % memorised);
- the minimum val_loss and its epoch (where early stopping would have stopped);
- the final val_loss and its ratio to that minimum (> 1: val_loss passed its minimum and rose).

The rule of which epoch stands for a trial when trials are ranked is here too (`rank_scope`: an
overfit trial is its last epoch, any other its best), next to the target it is about.

Pure computation on plain rows: no Ray, no torch, no printing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from countnet.formatting import is_finite

T = TypeVar("T")

OVERFIT_TARGET = "overfit"
STEP = "epoch"
# Which epoch of a trial stands for it when trials are ranked (Ray's `scope` of
# `ResultGrid.get_best_result`): its best one over all epochs, or its last one.
SCOPE_ALL, SCOPE_LAST = "all", "last"


def rank_scope(target: str | None) -> str:
    """The epoch that stands for a trial of a search with `target`: SCOPE_LAST or SCOPE_ALL.

    The overfit baseline is the net that memorised its training set, which it is at the END of
    training: its best gap over all epochs is the transient of the first epochs, where an
    untrained net's losses are in the hundreds on both sets and their difference is sampling
    noise (a gap of 386 at val_acc 0.03). So an overfit trial is its last finite, non-diverged
    epoch. Any other target (generalise: min val_loss), or none (a foreign experiment), ranks a
    trial by its best epoch over all epochs.

    Args:
        target: the search's target (`tune.space.TARGETS`); None or "" when unknown.
    """
    return SCOPE_LAST if target == OVERFIT_TARGET else SCOPE_ALL


def standing(items: Sequence[T], key: Callable[[T], float], mode: str, scope: str) -> T:
    """The one of a trial's epochs (in epoch order, already filtered to usable ones) that stands
    for it: the last under SCOPE_LAST, else the best by `key` (the first on ties).

    Args:
        items: the trial's usable epochs, in epoch order; not empty.
        key: an item's value of the target metric.
        mode: "min" or "max" (unused under SCOPE_LAST).
        scope: SCOPE_ALL or SCOPE_LAST (`rank_scope` of the target).
    """
    if scope == SCOPE_LAST:
        return items[-1]
    pick = min if mode == "min" else max
    return pick(items, key=key)


def scope_word(scope: str) -> str:
    """"last" or "best": how messages name the epoch that stands for a trial under `scope`.

    Args:
        scope: SCOPE_ALL or SCOPE_LAST.
    """
    return "last" if scope == SCOPE_LAST else "best"


@dataclass(frozen=True)
class OverfitCurve:
    """A trial's overfit figures, from its per-epoch history."""

    final_epoch: int
    final_train_loss_eval: float
    baseline_mse: float
    min_val_epoch: int
    min_val_loss: float
    final_val_loss: float
    final_gap: float  # val_loss - train_loss_eval at the last epoch

    @property
    def train_pct_of_baseline(self) -> float:
        """Final train_loss_eval as a % of baseline_mse (nan without a positive baseline)."""
        if not is_finite(self.baseline_mse) or self.baseline_mse <= 0:
            return float("nan")
        return 100.0 * self.final_train_loss_eval / self.baseline_mse

    @property
    def val_ratio(self) -> float:
        """Final val_loss / minimum val_loss (nan when the minimum is not positive)."""
        if self.min_val_loss <= 0:
            return float("nan")
        return self.final_val_loss / self.min_val_loss


def overfit_curve(history: list[dict[str, Any]]) -> OverfitCurve | None:
    """The figures of a per-epoch history; None when no epoch has finite losses.

    Args:
        history: per-epoch rows in epoch order (`Trial.history`), each with `epoch`,
            `train_loss_eval`, `val_loss` and `baseline_mse`; rows with a non-finite loss
            (a diverged epoch) are skipped.
    """
    rows = [r for r in history
            if is_finite(r.get("val_loss")) and is_finite(r.get("train_loss_eval"))]
    if not rows:
        return None
    last = rows[-1]
    low = min(rows, key=lambda r: r["val_loss"])  # the first on ties: the early-stopping epoch
    return OverfitCurve(
        final_epoch=int(last[STEP]), final_train_loss_eval=float(last["train_loss_eval"]),
        baseline_mse=float(last.get("baseline_mse", float("nan"))),
        min_val_epoch=int(low[STEP]), min_val_loss=float(low["val_loss"]),
        final_val_loss=float(last["val_loss"]),
        final_gap=float(last["val_loss"]) - float(last["train_loss_eval"]))


def gap_growth(history: list[dict[str, Any]], last: int) -> list[float]:
    """The gap (val_loss - train_loss_eval) of the last `last` finite epochs, in epoch order.

    Args:
        history: per-epoch rows in epoch order.
        last: how many of the final epochs.
    """
    rows = [r for r in history
            if is_finite(r.get("val_loss")) and is_finite(r.get("train_loss_eval"))]
    return [float(r["val_loss"]) - float(r["train_loss_eval"]) for r in rows[-last:]]


def overfit_lines(trial_id: str, curve: OverfitCurve) -> list[str]:
    """The figures of a trial as text lines, for the search summary and report.md.

    Args:
        trial_id: the trial they belong to.
        curve: its figures (`overfit_curve`).
    """
    pct = curve.train_pct_of_baseline
    pct_text = f"{pct:.2f} % of baseline_mse {curve.baseline_mse:.4g}" if is_finite(pct) else \
        "no baseline_mse"
    return [
        f"overfit curve of trial {trial_id}: train_loss_eval at its end (epoch "
        f"{curve.final_epoch}) {curve.final_train_loss_eval:.4g} = {pct_text}",
        f"  min val_loss {curve.min_val_loss:.4g} at epoch {curve.min_val_epoch} (the "
        f"early-stopping point); final val_loss {curve.final_val_loss:.4g} = "
        f"{curve.val_ratio:.2f}x that minimum; final gap {curve.final_gap:.4g}",
    ]
