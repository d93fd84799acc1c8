"""ASHA's decisions audited: does a trial's value at a rung predict how good the trial gets?

ASHA stops a trial at a rung (an epoch) when its target value there ranks in the worst part of
the trials that reached the rung. That is sound only when the rank at the rung predicts the rank
at the end. For each rung, over the trials that ran past it (those ASHA let go on), this measures
the Spearman rank correlation between the value a trial reported at the rung and its best value
over its whole run (the epoch `countnet export` takes). ρ near 1: the rung ranks trials as
their best epochs do. ρ below NOISE_RHO: the ranking at the rung is mostly noise, and ASHA is
stopping trials on it. For the overfit target a trial's "best" is its last finite value instead
(scope "last", `countnet.overfit_curve.rank_scope`): what the rung predicts is the final gap.

Only trials that ran past a rung have a known best value, so ρ is measured on those: it says
whether the order the rung saw among them held up, not how the trials it stopped would have
ended. No Ray here: the input is each trial's per-epoch result rows.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from countnet.formatting import is_finite
from countnet.overfit_curve import SCOPE_ALL, scope_word, standing

STEP = "epoch"  # the result key counting epochs (ASHA's time_attr)
DIVERGED_KEY = "diverged"  # set True by the trainable on an epoch whose loss went non-finite
MIN_TRIALS = 3  # below this, a rank correlation is always +-1 or undefined: no evidence
NOISE_RHO = 0.5  # below: the rank at the rung explains under a quarter of the best's rank variance


@dataclass(frozen=True)
class RungAudit:
    """One rung: the trials that ran past it, their value there and their best value.

    Args:
        milestone: the rung as ASHA holds it (grace_period * reduction_factor**k epochs).
        epoch: the epoch whose reported value ASHA recorded (the first at or after milestone).
        trial_ids: the trials that ran past the rung with a finite value at it and at best.
        at_rung: each trial's value at `epoch`.
        best: each trial's best value over its whole run (its last one under scope "last").
        stopped: trials whose last epoch is `epoch`, not diverged (ASHA's stops there, and
            trials that ended there for another reason, e.g. still running).
        stopped_values: the finite values at `epoch` of the `stopped` trials.
        rho: the Spearman rank correlation of at_rung and best; None when there are fewer than
            MIN_TRIALS trials or one of them holds a single value (a tie of all).
        scope: SCOPE_ALL or SCOPE_LAST: which value of a trial `best` holds.
    """

    milestone: float
    epoch: int
    trial_ids: tuple[str, ...]
    at_rung: tuple[float, ...]
    best: tuple[float, ...]
    stopped: tuple[str, ...]
    stopped_values: tuple[float, ...]
    rho: float | None
    scope: str = SCOPE_ALL

    @property
    def n(self) -> int:
        """Trials that ran past the rung (with finite values)."""
        return len(self.trial_ids)

    @property
    def noisy(self) -> bool:
        """ρ is measured and below NOISE_RHO: ASHA stops trials on noise here."""
        return self.rho is not None and self.rho < NOISE_RHO

    @property
    def verdict(self) -> str:
        """ρ in words: the figure, or why there is none."""
        if self.n < MIN_TRIALS:
            return f"too few trials ({self.n}) for a rank correlation"
        if self.rho is None:
            return f"no rank correlation: all {self.n} trials share one value"
        return f"ρ = {self.rho:.2f} over {self.n} trials"


def rung_milestones(grace_period: float | None, reduction_factor: float | None,
                    max_epochs: float | None) -> list[float]:
    """ASHA's rungs below max_epochs, as Ray's ASHAScheduler places them.

    Ray's `_Bracket` has int(log(max_t / grace) / log(rf) + 1) rungs at grace * rf**k; the ones
    at or above max_t stop nothing (a trial ends there anyway).

    Args:
        grace_period: the first rung, in epochs (None: no rungs).
        reduction_factor: the factor between rungs (> 1; None: no rungs).
        max_epochs: the epochs of a full trial, ASHA's max_t (None: no rungs).
    """
    if not grace_period or not reduction_factor or not max_epochs or reduction_factor <= 1:
        return []
    n = int(math.log(max_epochs / grace_period) / math.log(reduction_factor) + 1)
    return sorted(r for r in (grace_period * reduction_factor ** k for k in range(n))
                  if r < max_epochs)


def rung_epoch(milestone: float) -> int:
    """The epoch ASHA records for a rung: the first whole epoch at or after the milestone."""
    return math.ceil(milestone - 1e-9)


def audit_rungs(histories: Mapping[str, list[dict[str, Any]]], milestones: list[float],
                metric: str, mode: str, scope: str = SCOPE_ALL) -> list[RungAudit]:
    """Per rung, the Spearman ρ between each surviving trial's value there and its best value.

    Args:
        histories: trial id -> its result rows, one per epoch, each with `epoch` and `metric`.
        milestones: the rungs (`rung_milestones`).
        metric: the value ASHA ranks trials by (the search's target metric).
        mode: "min" or "max": which value is a trial's best.
        scope: SCOPE_ALL, a trial's best value over its run; SCOPE_LAST, its last finite one
            (`countnet.overfit_curve.rank_scope` of the target).

    Returns:
        One RungAudit per milestone, in increasing order.
    """
    out = []
    for milestone in sorted(milestones):
        epoch = rung_epoch(milestone)
        ids, at, best, stopped, stopped_values = [], [], [], [], []
        for trial_id, rows in histories.items():
            by_epoch = {int(r[STEP]): r for r in rows if is_finite(r.get(STEP))}
            last = max(by_epoch, default=0)
            row = by_epoch.get(epoch)
            if last == epoch and row is not None and row.get(DIVERGED_KEY) is not True:
                stopped.append(trial_id)
                if _usable(row, metric):
                    stopped_values.append(float(row[metric]))
            if last <= epoch or row is None or not _usable(row, metric):
                continue
            values = [by_epoch[e][metric] for e in sorted(by_epoch)
                      if _usable(by_epoch[e], metric)]
            ids.append(trial_id)
            at.append(float(row[metric]))
            best.append(float(standing(values, float, mode, scope)))
        rho = spearman(at, best) if len(ids) >= MIN_TRIALS else None
        out.append(RungAudit(milestone, epoch, tuple(ids), tuple(at), tuple(best),
                             tuple(stopped), tuple(stopped_values), rho, scope))
    return out


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation: Pearson's r of the ranks, ties given their average rank.

    Args:
        x: values (n,).
        y: values (n,), paired with x.

    Returns:
        ρ in [-1, 1]; None when n < 2 or either side has a single distinct value.
    """
    if len(x) != len(y):
        raise ValueError(f"x ({len(x)}) and y ({len(y)}) must pair up")
    if len(x) < 2:
        return None
    rx, ry = average_ranks(np.asarray(x, float)), average_ranks(np.asarray(y, float))
    dx, dy = rx - rx.mean(), ry - ry.mean()
    denom = math.sqrt(float((dx * dx).sum() * (dy * dy).sum()))
    if denom == 0:
        return None
    return float(np.clip((dx * dy).sum() / denom, -1.0, 1.0))


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks (n,) of values (n,); equal values share the mean of their ranks."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=float)
    sorted_values = values[order]
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def noise_warning(audit: RungAudit) -> str | None:
    """The one-line warning for a rung whose ρ is below NOISE_RHO; None otherwise."""
    if not audit.noisy:
        return None
    return f"ASHA is stopping trials on noise at rung {audit.epoch} (ρ = {audit.rho:.2f})"


def audit_lines(audits: list[RungAudit], metric: str) -> list[str]:
    """The audit as text lines, for the search summary: a header and one line per rung.

    Args:
        audits: `audit_rungs`' result.
        metric: the metric it ranked by.
    """
    if not audits:
        return [f"ASHA's rungs: none below max_epochs, so no {metric} audit"]
    word = scope_word(audits[0].scope)
    lines = [f"ASHA's rungs: Spearman ρ of {metric} at the rung vs the trial's {word}, over the "
             f"trials that ran past it"]
    for a in audits:
        lines.append(f"  rung epoch {a.epoch}: {a.verdict}; {len(a.stopped)} ended there")
    return lines


def _usable(row: dict[str, Any], metric: str) -> bool:
    """A row whose metric can be ranked: finite, and not an epoch that diverged."""
    return is_finite(row.get(metric)) and row.get(DIVERGED_KEY) is not True
