"""The main search (conftest `main_search`): ASHA, the Optuna study, TensorBoard files, seeds."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.tune.conftest import MAIN_SEED
from tune.results import STUDY_FILE
from tune.search import make_searcher


def _study(outcome) -> optuna.Study:
    return optuna.load_study(study_name="main",
                             storage=f"sqlite:///{Path(outcome.exp_dir) / STUDY_FILE}")


def test_asha_stopped_some_trials_early(main_search) -> None:
    space, outcome = main_search
    trials = outcome.trials
    assert len(trials) == space.num_samples
    assert all(t.status == "TERMINATED" for t in trials)
    early = [t for t in trials if t.stopped_early]
    full = [t for t in trials if t.epochs_run == space.max_epochs]
    assert early, [t.outcome for t in trials]
    assert full
    for t in trials:  # one result per epoch, in order
        assert [r["epoch"] for r in t.history] == list(range(1, t.epochs_run + 1))


def test_study_has_pruned_trials_with_intermediate_values(main_search) -> None:
    _, outcome = main_search
    by_params = {json.dumps(t.params, sort_keys=True): t for t in outcome.trials}
    study = _study(outcome)
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.PRUNED in states
    assert optuna.trial.TrialState.COMPLETE in states
    for ot in study.trials:
        ray_trial = by_params[json.dumps(ot.params, sort_keys=True)]
        per_epoch = {r["epoch"]: r["val_loss"] for r in ray_trial.history}
        # Every epoch the trial ran is an intermediate value, pruned or not.
        assert ot.intermediate_values == pytest.approx(per_epoch)
        if ot.state == optuna.trial.TrialState.PRUNED:
            assert ray_trial.stopped_early
            assert ot.user_attrs["stopped_early_at_epoch"] == ray_trial.epochs_run
        else:
            assert ot.state == optuna.trial.TrialState.COMPLETE
            assert ot.value == pytest.approx(per_epoch[ray_trial.epochs_run])


def test_tensorboard_scalars_for_every_epoch_of_every_trial(main_search) -> None:
    _, outcome = main_search
    for t in outcome.trials:
        acc = EventAccumulator(t.path)
        acc.Reload()
        epochs = [r["epoch"] for r in t.history]
        for tag in ("train_loss", "train_loss_eval", "val_loss"):
            events = acc.Scalars(tag)
            assert [e.step for e in events] == epochs, (t.trial_id, tag)
            expected = [r[tag] for r in t.history]
            assert [round(e.value, 3) for e in events] == [round(v, 3) for v in expected]
        # hparams: the searched values, written when the trial ended
        assert any(k.startswith("_hparams_") for k in acc.summary_metadata)


def test_results_carry_node_and_host(main_search) -> None:
    _, outcome = main_search
    pids = set()
    for t in outcome.trials:
        row = json.loads(Path(t.path, "result.json").read_text().splitlines()[0])
        assert row["node_id"] and row["hostname"]
        pids.add(row["pid"])
    # reuse_actors: trials share worker processes, and so their cached datasets.
    assert len(pids) < len(outcome.trials)


def test_checkpoints_ranked_by_target(main_search) -> None:
    _, outcome = main_search
    for t in outcome.trials:
        # The best epoch's checkpoint is always kept (Ray keeps best-by-val_loss + latest).
        assert int(t.best["epoch"]) in t.checkpoints


def test_same_seed_same_configs(main_search) -> None:
    space, outcome = main_search
    sampled = [t.params for t in _study(outcome).trials]  # in the order they were asked

    def key(params: dict) -> str:
        return json.dumps(params, sort_keys=True)

    assert sorted(map(key, sampled)) == sorted(key(t.params) for t in outcome.trials)

    def replay(seed: int) -> list[dict]:
        searcher = make_searcher(space, seed)
        return [searcher.suggest(f"replay_{i}") for i in range(len(sampled))]

    assert replay(MAIN_SEED) == sampled
    assert replay(MAIN_SEED + 1) != sampled
