"""Which epoch stands for a trial (`countnet.experiment.best_epoch`, `make_trial`, `rank`) under
each target's scope (`countnet.overfit_curve.rank_scope`), on hand-written rows and files."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from countnet.experiment import TERMINATED, best_epoch, load_experiment, make_trial, rank
from countnet.overfit_curve import SCOPE_ALL, SCOPE_LAST, rank_scope

# An untrained net's first epochs: losses in the hundreds on both sets, their difference noise
# (the gap of 386 at val_acc 0.03 of the issue); then it memorises and the gap settles lower.
EARLY_SPIKE = [(1, 420.0, 34.0), (2, 120.0, 80.0), (3, 9.0, 1.0), (4, 11.0, 0.5)]


def rows(epochs: list[tuple[int, float, float]], **extra: Any) -> list[dict[str, Any]]:
    """Epoch rows (epoch, val_loss, train_loss_eval) with their gap and val_acc."""
    return [{"epoch": e, "val_loss": v, "train_loss_eval": t, "gap": v - t, "val_acc": 0.5,
             "diverged": False, **extra} for e, v, t in epochs]


def test_the_overfit_target_ranks_by_the_last_epoch() -> None:
    assert rank_scope("overfit") == SCOPE_LAST
    for target in ("generalise", "", None):
        assert rank_scope(target) == SCOPE_ALL


def test_last_takes_the_final_gap_all_the_early_spike() -> None:
    history = rows(EARLY_SPIKE)
    assert int(best_epoch(history, "gap", "max", scope=SCOPE_LAST)["epoch"]) == 4
    assert int(best_epoch(history, "gap", "max", scope=SCOPE_ALL)["epoch"]) == 1  # gap 386
    assert int(best_epoch(history, "gap", "max")["epoch"]) == 1  # "all" stays the default


def test_last_skips_non_finite_and_diverged_epochs() -> None:
    history = rows(EARLY_SPIKE)
    history.append({"epoch": 5, "val_loss": math.nan, "train_loss_eval": 0.4, "gap": math.nan,
                    "diverged": False})
    assert int(best_epoch(history, "gap", "max", scope=SCOPE_LAST)["epoch"]) == 4
    history.append({"epoch": 6, "val_loss": 12.0, "train_loss_eval": 0.3, "gap": 11.7,
                    "diverged": True})
    assert int(best_epoch(history, "gap", "max", scope=SCOPE_LAST)["epoch"]) == 4
    assert best_epoch(rows([]), "gap", "max", scope=SCOPE_LAST) is None


def test_make_trial_and_rank_under_each_scope() -> None:
    # "spike": the early transient, then it learns little; "memo": memorised, a larger final gap.
    spike = rows([*EARLY_SPIKE[:2], (3, 20.0, 15.0), (4, 21.0, 16.0)])
    memo = rows([(1, 50.0, 45.0), (2, 15.0, 5.0), (3, 14.0, 1.0), (4, 16.0, 0.2)])

    def trials(scope: str) -> list:
        return [make_trial(tid, f"/x/{tid}", TERMINATED, {"epochs": 4}, {}, r, "gap", "max",
                           scope=scope) for tid, r in (("spike", spike), ("memo", memo))]

    last = trials(SCOPE_LAST)
    assert [int(t.best["epoch"]) for t in last] == [4, 4]
    assert [t.trial_id for t in rank(last, "gap", "max")] == ["memo", "spike"]
    everything = trials(SCOPE_ALL)
    assert int(everything[0].best["epoch"]) == 1
    assert [t.trial_id for t in rank(everything, "gap", "max")] == ["spike", "memo"]


def _write_experiment(root: Path, target: str, metric: str, mode: str) -> Path:
    exp = root / target
    for i, (tid, history) in enumerate((("a", rows(EARLY_SPIKE)),
                                        ("b", rows([(1, 9.0, 8.0), (2, 12.0, 0.5)])))):
        d = exp / f"trial_{tid}"
        d.mkdir(parents=True)
        (d / "params.json").write_text(json.dumps({"epochs": len(history), "width": 8 + i}))
        for r in history:
            r.update(trial_id=tid, timestamp=100.0 * i + r["epoch"], time_this_iter_s=1.0,
                     done=r is history[-1])
        (d / "result.json").write_text("\n".join(json.dumps(r) for r in history) + "\n")
    info = {"target": target, "metric": metric, "mode": mode, "space": {"search": {}}}
    (exp / "countnet_search.json").write_text(json.dumps(info))
    return exp


def test_load_experiment_takes_the_scope_of_its_target(tmp_path) -> None:
    overfit = load_experiment(_write_experiment(tmp_path, "overfit", "gap", "max"))
    assert overfit.scope == SCOPE_LAST
    assert [(t.trial_id, int(t.best["epoch"])) for t in overfit.ranked()] == [("b", 2),
                                                                              ("a", 4)]
    # The same rows under a target that ranks by the best epoch: a's spike wins.
    other = load_experiment(_write_experiment(tmp_path, "generalise", "gap", "max"))
    assert other.scope == SCOPE_ALL
    assert [(t.trial_id, int(t.best["epoch"])) for t in other.ranked()] == [("a", 1), ("b", 2)]
