"""Shared by the bench scripts: how smooth a val_loss curve is (issue 17, goal 1).

A curve is smooth when, after its first SMOOTH_AFTER epochs (the untrained transient and the
lr warm-up's start), no epoch's val_loss is above GOAL_JUMP times the best val_loss so far.
"""

from __future__ import annotations

SMOOTH_AFTER = 3  # epochs not judged
GOAL_JUMP = 1.5  # the largest val_loss / best-so-far allowed after them


def worst_jump(val_losses: list[float], after: int = SMOOTH_AFTER) -> float | None:
    """The largest val_loss / (best val_loss of the epochs before it) over epochs after+1..;
    <= 1 when the curve never rises after epoch `after`; None when it has no such epoch.

    Args:
        val_losses: one val_loss per epoch, epoch 1 first.
        after: epochs not judged (each still counts towards the best so far).
    """
    worst: float | None = None
    best = float("inf")
    for epoch, loss in enumerate(val_losses, start=1):
        if epoch > after and best > 0:
            worst = loss / best if worst is None else max(worst, loss / best)
        best = min(best, loss)
    return worst
