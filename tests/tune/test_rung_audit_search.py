"""The rung audit on the real search of conftest `main_search`: report.md's table, rungs.png and
the search summary match a hand computation from the trials' result.json rows; the rungs are
where Ray's ASHA puts them."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
from scipy.stats import spearmanr

from countnet.report import write_report
from countnet.rung_audit import audit_rungs, rung_milestones
from countnet.rung_report import PNG_RUNGS
from tests.countnet.test_report import _assert_png
from tune.cli import print_summary
from tune.scheduler import StartFromASHA

# MAIN_SPACE's ASHA: grace 1, factor 2, max_t 4: rungs at epochs 1 and 2 (the one at 4 = max_t
# stops nothing).
RUNGS = (1, 2)


@pytest.mark.parametrize(("grace", "factor", "max_t"), [(1, 2, 4), (4, 3, 24), (1, 3, 9),
                                                        (2, 2.5, 20), (3, 3, 3)])
def test_rungs_are_those_of_rays_asha(grace, factor, max_t) -> None:
    asha = StartFromASHA(time_attr="epoch", max_t=max_t, grace_period=grace,
                         reduction_factor=factor, starts=[], metric="val_loss", mode="min")
    (bracket,) = asha._brackets
    ray_rungs = sorted(m for m, _ in bracket._rungs if m < max_t)
    assert rung_milestones(grace, factor, max_t) == pytest.approx(ray_rungs)


def _result_rows(trial_dir: Path) -> dict[int, dict]:
    """A trial's result.json rows by epoch (the last report of an epoch wins)."""
    rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()
            if line.strip()]
    return {int(r["epoch"]): r for r in rows}


def _by_hand(exp_dir: Path) -> dict[int, tuple[int, int, float | None]]:
    """rung -> (trials past it, trials that ended there, Spearman ρ or None if < 3 past it)."""
    trials = [_result_rows(d) for d in sorted(exp_dir.glob("trial_*"))]
    out = {}
    for rung in RUNGS:
        at, best = [], []
        for rows in trials:
            if max(rows) > rung:
                at.append(rows[rung]["val_loss"])
                best.append(min(r["val_loss"] for r in rows.values()
                                if math.isfinite(r["val_loss"]) and not r.get("diverged")))
        ended = sum(max(rows) == rung for rows in trials)
        rho = float(spearmanr(at, best).statistic) if len(at) >= 3 else None
        out[rung] = (len(at), ended, rho)
    return out


def test_rung_audit_matches_a_hand_computation(main_search, tmp_path, capsys) -> None:
    _, outcome = main_search
    exp = Path(outcome.exp_dir)
    hand = _by_hand(exp)
    assert outcome.rungs == list(RUNGS)
    assert hand[1][0] >= 1 and hand[1][1] >= 1  # ASHA let some go on and stopped some

    audits = audit_rungs({t.trial_id: t.history for t in outcome.trials}, outcome.rungs,
                         outcome.metric, outcome.mode)
    for audit in audits:
        n, ended, rho = hand[audit.epoch]
        assert (audit.n, len(audit.stopped)) == (n, ended)
        assert audit.rho == (None if rho is None else pytest.approx(rho))

    md = write_report(exp, tmp_path / "report")
    _assert_png(md.parent / PNG_RUNGS)
    lines = md.read_text().splitlines()
    summary = io.StringIO()
    print_summary(outcome, out=summary)
    printed = summary.getvalue().splitlines()
    warnings = capsys.readouterr().err.splitlines()
    for rung, (n, ended, rho) in hand.items():
        verdict = f"{rho:.2f}" if rho is not None else f"too few trials ({n}) for a rank " \
                                                       f"correlation"
        assert f"| {rung} | {n} | {ended} | {verdict} |" in lines
        said = f"ρ = {rho:.2f} over {n} trials" if rho is not None else verdict
        assert f"  rung epoch {rung}: {said}; {ended} ended there" in printed
        noise = f"ASHA is stopping trials on noise at rung {rung} (ρ = {rho:.2f})" \
            if rho is not None else None
        assert (noise in warnings) == (rho is not None and rho < 0.5)
        assert (f"**Warning:** {noise}" in lines) == (rho is not None and rho < 0.5)
