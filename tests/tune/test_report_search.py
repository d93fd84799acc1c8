"""`countnet report` on the real search of conftest `main_search`: the same trials and best
epochs as `tune.results` and `countnet export`."""

from __future__ import annotations

import csv
import json

from countnet.report import (
    PNG_CURVES,
    PNG_ERRORS,
    PNG_HISTORY,
    PNG_IMPORTANCES,
    TRIALS_CSV,
    load_experiment,
    write_report,
)
from tests.countnet.test_report import _assert_png
from tune.export import export_best, pick_best


def test_report_of_a_search(main_search, tmp_path) -> None:
    space, outcome = main_search
    md = write_report(outcome.exp_dir, tmp_path / "report")
    for name in (PNG_HISTORY, PNG_IMPORTANCES, PNG_CURVES):
        _assert_png(md.parent / name)
    rows = list(csv.DictReader((md.parent / TRIALS_CSV).open()))
    assert len(rows) == len(outcome.trials) == space.num_samples
    by_id = {r["trial_id"]: r for r in rows}
    assert set(by_id) == {t.trial_id for t in outcome.trials}
    for t in outcome.trials:
        row = by_id[t.trial_id]
        assert int(row["best_epoch"]) == int(t.best["epoch"])  # tune.results' best epoch
        assert int(row["epochs_run"]) == t.epochs_run
        assert row["stopped_early"] == str(t.stopped_early)
        assert row["outcome"] == t.outcome
    winner, epoch_row, _ = pick_best(outcome.exp_dir, outcome.trials, outcome.metric,
                                     outcome.mode)  # the export's
    ranked = load_experiment(outcome.exp_dir).ranked()
    assert ranked[0].trial_id == winner.trial_id
    assert int(ranked[0].best["epoch"]) == int(epoch_row["epoch"])


def test_report_draws_the_exported_winners_error_by_count(main_search, tmp_path) -> None:
    """The bundle's metrics.json keeps the test split's per-count figures (the suite record),
    so the search's report draws the winner's error by true count."""
    _, outcome = main_search
    bundle = tmp_path / "bundle"
    export_best(outcome.exp_dir, bundle)
    test_set = json.loads((bundle / "metrics.json").read_text())["suite"]["sets"]["test"]
    assert sum(r["n"] for r in test_set["by_count"]) == test_set["n"]
    md = write_report(outcome.exp_dir, tmp_path / "report", bundle=bundle)
    _assert_png(md.parent / PNG_ERRORS)
    assert f"]({PNG_ERRORS})" in md.read_text()
    assert "no error-by-count plot" not in md.read_text()
