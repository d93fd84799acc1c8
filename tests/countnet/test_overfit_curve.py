"""The overfit figures of hand-written per-epoch histories (`countnet.overfit_curve`)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from countnet.overfit_curve import gap_growth, overfit_curve, overfit_lines


def rows(train: list[float], val: list[float], baseline: float = 40.0) -> list[dict[str, Any]]:
    """Epoch rows 1..n with these train_loss_eval and val_loss values."""
    return [{"epoch": i + 1, "train_loss_eval": t, "val_loss": v, "baseline_mse": baseline}
            for i, (t, v) in enumerate(zip(train, val))]


def test_a_curve_that_passes_its_minimum_and_rises() -> None:
    curve = overfit_curve(rows([20.0, 8.0, 2.0, 0.4], [25.0, 10.0, 12.0, 20.0]))
    assert curve is not None
    assert (curve.final_epoch, curve.min_val_epoch) == (4, 2)
    assert curve.min_val_loss == 10.0 and curve.final_val_loss == 20.0
    assert curve.final_gap == pytest.approx(19.6)
    assert curve.val_ratio == pytest.approx(2.0)
    assert curve.train_pct_of_baseline == pytest.approx(1.0)  # 0.4 of 40


def test_the_first_minimum_wins_a_tie_and_bad_epochs_are_skipped() -> None:
    history = rows([5.0, 4.0, 3.0, 2.0], [9.0, 7.0, 7.0, 8.0])
    history.append({"epoch": 5, "train_loss_eval": math.nan, "val_loss": math.inf,
                    "baseline_mse": 40.0})
    curve = overfit_curve(history)
    assert curve is not None
    assert curve.min_val_epoch == 2  # the early-stopping epoch: the first of the tie
    assert curve.final_epoch == 4 and curve.final_gap == pytest.approx(6.0)


def test_no_finite_epoch_gives_none() -> None:
    assert overfit_curve([]) is None
    assert overfit_curve(rows([math.nan], [1.0])) is None


def test_without_a_baseline_or_a_positive_minimum_the_ratios_are_nan() -> None:
    curve = overfit_curve([{"epoch": 1, "train_loss_eval": 1.0, "val_loss": 0.0}])
    assert curve is not None
    assert math.isnan(curve.train_pct_of_baseline) and math.isnan(curve.val_ratio)
    assert "no baseline_mse" in overfit_lines("t1", curve)[0]


def test_gap_growth_is_the_last_gaps_in_epoch_order() -> None:
    history = rows([9.0, 5.0, 2.0, 1.0, 0.5], [10.0, 8.0, 7.0, 9.0, 12.0])
    assert gap_growth(history, 3) == pytest.approx([5.0, 8.0, 11.5])
    assert gap_growth(history, 10) == pytest.approx([1.0, 3.0, 5.0, 8.0, 11.5])


def test_lines_state_the_figures() -> None:
    curve = overfit_curve(rows([20.0, 8.0, 2.0, 0.4], [25.0, 10.0, 12.0, 20.0]))
    assert curve is not None
    first, second = overfit_lines("abc_00001", curve)
    assert "trial abc_00001" in first and "(epoch 4) 0.4 = 1.00 % of baseline_mse 40" in first
    assert "min val_loss 10 at epoch 2" in second and "2.00x that minimum" in second
    assert "final gap 19.6" in second
