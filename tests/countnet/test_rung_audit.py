"""The rung audit's figures on hand-made trial histories; Spearman against SciPy's."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from countnet.overfit_curve import SCOPE_LAST
from countnet.rung_audit import (
    MIN_TRIALS,
    audit_lines,
    audit_rungs,
    average_ranks,
    noise_warning,
    rung_milestones,
    spearman,
)


def _history(values: list[float], **last: object) -> list[dict]:
    """One row per epoch (1-based) with these val_loss values; `last` added to the last row."""
    rows = [{"epoch": e, "val_loss": v} for e, v in enumerate(values, 1)]
    rows[-1].update(last)
    return rows


@pytest.mark.parametrize("seed", range(5))
def test_spearman_matches_scipy_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, size=12).astype(float)  # many ties
    y = x + rng.integers(-2, 3, size=12)
    assert spearman(list(x), list(y)) == pytest.approx(spearmanr(x, y).statistic)


def test_average_ranks_share_tied_places() -> None:
    assert list(average_ranks(np.array([3.0, 1.0, 3.0, 2.0]))) == [3.5, 1.0, 3.5, 2.0]


def test_spearman_is_undefined_without_variation() -> None:
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None
    assert spearman([1.0], [2.0]) is None
    assert spearman([1.0, 2.0, 3.0], [30.0, 20.0, 10.0]) == pytest.approx(-1.0)


@pytest.mark.parametrize(("grace", "factor", "max_t", "expected"), [
    (1, 2, 4, [1, 2]),  # 4 = max_t stops nothing
    (4, 3, 24, [4, 12]),
    (1, 3, 9, [1, 3]),
    (2, 2.5, 20, [2, 5, 12.5]),
    (4, 4, 4, []),
    (None, 3, 9, []),
])
def test_rung_milestones(grace, factor, max_t, expected) -> None:
    assert rung_milestones(grace, factor, max_t) == pytest.approx(expected)


def test_audit_of_hand_made_trials() -> None:
    histories = {
        "a": _history([9.0, 5.0, 3.0, 2.0]),   # ran all 4 epochs, best 2
        "b": _history([8.0, 6.0, 4.0, 1.0]),   # best 1
        "c": _history([7.0, 7.5, 2.5, 4.0]),   # best 2.5 (epoch 3, not the last)
        "d": _history([6.0, 9.0]),             # stopped at 2: best 6
        "e": _history([10.0]),                 # stopped at 1
        "f": _history([5.0, float("nan")], diverged=True),  # diverged: its best is epoch 1
    }
    r1, r2 = audit_rungs(histories, [1, 2], "val_loss", "min")
    assert (r1.epoch, r2.epoch) == (1, 2)
    # Rung 1: a b c d f ran past it; e ended there.
    assert r1.trial_ids == ("a", "b", "c", "d", "f") and r1.stopped == ("e",)
    assert r1.at_rung == (9.0, 8.0, 7.0, 6.0, 5.0) and r1.best == (2.0, 1.0, 2.5, 6.0, 5.0)
    assert r1.stopped_values == (10.0,)
    assert r1.rho == pytest.approx(spearmanr(r1.at_rung, r1.best).statistic)
    assert r1.rho == pytest.approx(-0.8)  # ranks (5,4,3,2,1) vs (2,1,3,5,4): 1 - 6*36/120
    # Rung 2: a b c ran past it; d ended there cleanly; f's epoch 2 diverged (not "ended").
    assert r2.trial_ids == ("a", "b", "c") and r2.stopped == ("d",)
    assert r2.at_rung == (5.0, 6.0, 7.5) and r2.best == (2.0, 1.0, 2.5)
    assert r2.rho == pytest.approx(0.5)
    assert r1.noisy and not r2.noisy
    assert noise_warning(r1) == "ASHA is stopping trials on noise at rung 1 (ρ = -0.80)"
    assert noise_warning(r2) is None


def test_too_few_trials_and_a_rung_between_epochs() -> None:
    histories = {"a": _history([3.0, 2.0, 1.0, 0.5]), "b": _history([4.0, 3.0, 2.5, 2.0]),
                 "c": _history([5.0, 4.0, 3.5])}
    (audit,) = audit_rungs(histories, [2.5], "val_loss", "min")
    assert audit.epoch == 3  # ASHA records the first epoch at or after the milestone
    assert audit.trial_ids == ("a", "b") and audit.stopped == ("c",)
    assert audit.rho is None and not audit.noisy
    assert audit.n < MIN_TRIALS
    assert audit.verdict == "too few trials (2) for a rank correlation"
    assert noise_warning(audit) is None


def test_max_mode_takes_the_highest_value_as_best() -> None:
    rows = {t: [{"epoch": 1, "gap": g1}, {"epoch": 2, "gap": g2}]
            for t, g1, g2 in (("a", 1.0, 4.0), ("b", 2.0, 5.0), ("c", 3.0, 6.0))}
    (audit,) = audit_rungs(rows, [1], "gap", "max")
    assert audit.best == (4.0, 5.0, 6.0) and audit.rho == pytest.approx(1.0)


def test_scope_last_takes_the_final_value_as_best() -> None:
    """The overfit target: a trial's final gap, not the spike of its first epochs."""
    rows = {t: [{"epoch": 1, "gap": g1}, {"epoch": 2, "gap": 300.0 - g1},
                {"epoch": 3, "gap": g3}, {"epoch": 4, "gap": float("nan")}]
            for t, g1, g3 in (("a", 1.0, 6.0), ("b", 2.0, 5.0), ("c", 3.0, 4.0))}
    (audit,) = audit_rungs(rows, [1], "gap", "max", SCOPE_LAST)
    assert audit.best == (6.0, 5.0, 4.0) and audit.rho == pytest.approx(-1.0)
    assert "vs the trial's last" in audit_lines([audit], "gap")[0]
    (audit,) = audit_rungs(rows, [1], "gap", "max")
    assert audit.best == (299.0, 298.0, 297.0)


def test_audit_lines() -> None:
    histories = {"a": _history([3.0, 2.0]), "b": _history([4.0, 1.0]),
                 "c": _history([5.0, 2.5]), "d": _history([6.0])}
    lines = audit_lines(audit_rungs(histories, [1], "val_loss", "min"), "val_loss")
    assert lines[0].startswith("ASHA's rungs: Spearman ρ of val_loss at the rung")
    assert lines[1] == "  rung epoch 1: ρ = 0.50 over 3 trials; 1 ended there"
    assert audit_lines([], "val_loss") == ["ASHA's rungs: none below max_epochs, so no "
                                           "val_loss audit"]
